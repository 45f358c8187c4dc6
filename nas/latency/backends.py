"""Measurement backends: who times a model on this machine, how, and who they say measured.

A backend turns a LUT key or a whole subnet into a *session*, anything with
`.run(None, feed)` that `nas.latency.runtime.time_runs` can time, so the interleaved,
gated protocol (`nas.latency.timing`) is the same whatever runs the model. It also gives
the identity recorded in a table's `meta` (device, runtime, provider, threads, ...) and the
protocol it measured with.

| name | what runs the model |
|---|---|
| `onnxruntime` (default) | onnxruntime, CPU provider, 1 thread, every graph optimization |
| `onnxruntime-noopt` | the same with graph optimizations off |
| `onnxruntime-2t` | the same with 2 intra-op threads |
| `torch` | PyTorch eager on the CPU (`inference_mode`), 1 thread, the `nas.models` blocks |
| `bundle` | another device: `gaze-nas lut bundle`, the standalone runner there, `lut import` |

Backends are registered by "module:factory" names (`register_backend`), so torch and
onnxruntime load only when a backend is used. The check that refuses mixing measurements
(`check_measuring_into`) applies when a backend *adds measurements* to a table (profiling,
validation): a table made anywhere can be *used* (predicted from, searched with) anywhere.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from nas.errors import UserError, excerpt

DEFAULT_BACKEND = "onnxruntime"

# name -> ("module:factory", one-line description)
_REGISTRY: dict[str, tuple[str, str]] = {}


def register_backend(name: str, target: str, help: str = "") -> None:
    """Register a backend under `name`: `target` is "module:factory", a callable with no
    arguments returning a `Backend`, imported only when the backend is asked for."""
    if ":" not in target:
        raise ValueError(f"expected 'module:factory', got {target!r}")
    _REGISTRY[name] = (target, help)


def known_backends() -> list[str]:
    return list(_REGISTRY)


def backend_help() -> str:
    return "; ".join(f"{n}: {h}" for n, (_, h) in _REGISTRY.items())


def get_backend(name: "str | Backend | None" = None) -> "Backend":
    """The backend registered as `name` (default onnxruntime); an unknown name is a
    one-line UserError listing the known ones."""
    if isinstance(name, Backend):
        return name
    name = name or DEFAULT_BACKEND
    if name not in _REGISTRY:
        raise UserError(f"unknown backend {excerpt(name)}; expected one of "
                        f"{', '.join(_REGISTRY)}", field="--backend")
    module, _, attr = _REGISTRY[name][0].partition(":")
    factory: Callable[[], Backend] = getattr(importlib.import_module(module), attr)
    be = factory()
    be.name = name
    return be


def table_backend(meta: dict[str, Any]) -> str:
    """The backend a table's entries were measured with. Tables made before backends
    existed were all measured by onnxruntime with the default protocol."""
    b = meta.get("backend")
    if isinstance(b, str) and b:
        return b
    return DEFAULT_BACKEND if meta.get("runtime", "onnxruntime") == "onnxruntime" else \
        str(meta.get("runtime"))


def check_measuring_into(table, info: dict[str, Any]) -> list[str]:
    """Before measurements made by `info`'s backend on this machine are added to `table` or
    compared with it: raise if the table holds another backend's, another CPU's or another
    protocol's measurements; return warnings for softer differences. Using a table (predict,
    search) never calls this."""
    mine, theirs = table_backend(table.meta), info.get("backend", DEFAULT_BACKEND)
    where = str(table.path or table.device)
    # run_bundle.py times with onnxruntime: a bundle run on this very machine (same CPU,
    # provider, threads, graph optimizations) compares with the onnxruntime backends
    same_runtime = mine == "bundle" and theirs.startswith("onnxruntime")
    if mine != theirs and not same_runtime:
        raise UserError(f"table was measured with backend {mine!r}, this measurement would use "
                        f"{theirs!r}; pass --backend {mine} or use another table",
                        source=where, field="meta.backend")
    lvl = (table.meta.get("graph_optimization_level"), info.get("graph_optimization_level"))
    if None not in lvl and lvl[0] != lvl[1]:
        raise UserError(f"table was measured with graph optimizations {lvl[0]!r}, this "
                        f"measurement would use {lvl[1]!r}", source=where,
                        field="meta.graph_optimization_level")
    return table.check_device(info)


class Backend:
    """What a measurement backend provides. Subclasses set `needs_onnx` (profiling exports
    the ONNX models first, in parallel, into a cache) and implement `identity`, `protocol`,
    `open_key` and `open_arch`."""

    name = "?"
    needs_onnx = False
    remote = False  # measures on another device (the bundle): nothing to open here

    def identity(self) -> dict[str, Any]:
        """Fields of a table's meta that say what measured: runtime, version, provider,
        threads (`backend` is added by `info`)."""
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        raise NotImplementedError

    def info(self, device: str | None = None) -> dict[str, Any]:
        """This machine's identity as this backend measures it: `meta` of a new table."""
        from nas.latency.runtime import device_info

        d = device_info(device)
        d.update(self.identity())
        d["backend"] = self.name
        return {k: v for k, v in d.items() if v is not None}

    def open_key(self, space, kind: str, spec: Any, onnx_path: Path | None = None) -> tuple:
        """(session, feed) of one LUT key; `onnx_path` is its cached ONNX file when
        `needs_onnx` (rebuilt there if damaged)."""
        raise NotImplementedError

    def open_arch(self, space, arch_text: str, onnx: bytes | None = None) -> tuple:
        """(session, feed) of a whole subnet; `onnx` its exported bytes when `needs_onnx`."""
        raise NotImplementedError

    def refuse_remote(self) -> None:
        if self.remote:
            raise UserError(f"backend {self.name!r} measures on another device: write a bundle "
                            "with `gaze-nas lut bundle`, run its run_bundle.py there, then "
                            "`gaze-nas lut import`", field="--backend")


# ---------------------------------------------------------------------- onnxruntime
class OnnxRuntimeBackend(Backend):
    needs_onnx = True

    def __init__(self, threads: int = 1, optimization: str = "all"):
        self.threads, self.optimization = threads, optimization

    def identity(self) -> dict[str, Any]:
        import onnxruntime as ort

        from nas.latency.runtime import PROVIDER

        return {"runtime": "onnxruntime", "runtime_version": ort.__version__,
                "provider": PROVIDER, "threads": self.threads,
                "graph_optimization_level": self.optimization}

    def protocol(self) -> dict[str, Any]:
        from nas.latency.runtime import OPT_LEVELS, PROTOCOL

        return dict(PROTOCOL, intra_op_num_threads=self.threads,
                    graph_optimization_level=OPT_LEVELS[self.optimization])

    def _session(self, model: bytes | Path) -> tuple:
        from nas.latency.runtime import make_feed, make_session

        sess = make_session(model, threads=self.threads, optimization=self.optimization)
        return sess, make_feed(sess)

    def open_key(self, space, kind: str, spec: Any, onnx_path: Path | None = None) -> tuple:
        from nas.latency.build import export_onnx, module_for_key
        from nas.io import atomic_write_bytes

        if onnx_path is None:
            return self._session(export_onnx(*module_for_key(space, kind, spec)))
        try:
            return self._session(Path(onnx_path))
        except Exception:  # a truncated or stale cache file: export it again, here
            atomic_write_bytes(onnx_path, export_onnx(*module_for_key(space, kind, spec)))
            return self._session(Path(onnx_path))

    def open_arch(self, space, arch_text: str, onnx: bytes | None = None) -> tuple:
        if onnx is None:
            from nas.latency.export import build_onnx

            onnx = build_onnx(space, "arch", arch_text)
        return self._session(onnx)


def _ort_default() -> Backend:
    return OnnxRuntimeBackend()


def _ort_noopt() -> Backend:
    return OnnxRuntimeBackend(optimization="off")


def _ort_2t() -> Backend:
    return OnnxRuntimeBackend(threads=2)


# ---------------------------------------------------------------------- torch eager
class TorchSession:
    """A module and its input behind onnxruntime's `run(None, feed)` call."""

    def __init__(self, module, shape: tuple[int, ...] | dict):
        import torch

        self.module = module.eval()
        self.x = (torch.from_numpy(_feed_array(shape)) if isinstance(shape, tuple)  # named
                  else {k: torch.from_numpy(_feed_array(tuple(v.shape))) for k, v in shape.items()})
        self._mode = torch.inference_mode

    def run(self, _outputs: Any, _feed: Any) -> Any:
        with self._mode():
            return self.module(self.x)


def _feed_array(shape: tuple[int, ...]):
    import numpy as np

    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


class TorchBackend(Backend):
    needs_onnx = False

    def __init__(self, threads: int = 1):
        self.threads = threads

    def _threads(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def identity(self) -> dict[str, Any]:
        import torch

        return {"runtime": "torch", "runtime_version": str(torch.__version__),
                "provider": "torch-eager-cpu", "threads": self.threads, "opset": None}

    def protocol(self) -> dict[str, Any]:
        from nas.latency.runtime import BATCH, DTYPE, PROTOCOL

        return {"runtime": "torch", "provider": "torch-eager-cpu", "mode": "eager, eval, "
                "torch.inference_mode, contiguous float32", "threads": self.threads,
                "batch": BATCH, "dtype": DTYPE,
                "build": "the nas.models blocks with the LUT's seeded weights",
                "timing": PROTOCOL["timing"], "gate": PROTOCOL["gate"]}

    def open_key(self, space, kind: str, spec: Any, onnx_path: Path | None = None) -> tuple:
        from nas.latency.build import module_for_key

        self._threads()
        mod, shape = module_for_key(space, kind, spec)
        return TorchSession(mod, shape), {}

    def open_arch(self, space, arch_text: str, onnx: bytes | None = None) -> tuple:
        import torch

        from nas.models import build_net, example_input

        self._threads()
        arch = space.parse(arch_text)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = build_net(space, arch).eval()
        x = example_input(space, arch)
        return TorchSession(net, tuple(x.shape) if isinstance(x, torch.Tensor) else x), {}


def _torch() -> Backend:
    return TorchBackend()


# ---------------------------------------------------------------------- bundle
class BundleBackend(Backend):
    """Another device: nothing is opened here. Its measurements arrive as the results file
    of `run_bundle.py` (`nas.latency.bundle`), whose device identity becomes the table's."""

    remote = True

    def identity(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime"}

    def protocol(self) -> dict[str, Any]:
        from nas.latency.bundle import RUNNER_PROTOCOL

        return dict(RUNNER_PROTOCOL)

    def open_key(self, *a: Any, **k: Any) -> tuple:
        self.refuse_remote()
        raise AssertionError

    def open_arch(self, *a: Any, **k: Any) -> tuple:
        self.refuse_remote()
        raise AssertionError


def _bundle() -> Backend:
    return BundleBackend()


register_backend("onnxruntime", "nas.latency.backends:_ort_default",
                 "onnxruntime CPU, 1 thread, all graph optimizations (default)")
register_backend("onnxruntime-noopt", "nas.latency.backends:_ort_noopt",
                 "onnxruntime CPU, 1 thread, graph optimizations off")
register_backend("onnxruntime-2t", "nas.latency.backends:_ort_2t",
                 "onnxruntime CPU, 2 intra-op threads")
register_backend("torch", "nas.latency.backends:_torch", "PyTorch eager CPU, 1 thread")
register_backend("bundle", "nas.latency.backends:_bundle",
                 "another device, via `lut bundle` + run_bundle.py + `lut import`")
