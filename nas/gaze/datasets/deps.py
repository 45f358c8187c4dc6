"""The optional packages that real-dataset readers need, imported only when a reader runs,
so the base install (synthetic data only) works without them."""

from __future__ import annotations

import importlib
from types import ModuleType

from nas.errors import UserError

_PIP_NAMES = {"h5py": "h5py", "scipy.io": "scipy", "PIL.Image": "pillow"}


def need(module: str, dataset: str) -> ModuleType:
    """Import `module` or say, in one line, which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = _PIP_NAMES.get(module, module.split(".")[0])
        raise UserError(f"reading {dataset} needs `pip install gaze-nas[data]` ({pkg} is not "
                        "installed)", field="data.source") from None
