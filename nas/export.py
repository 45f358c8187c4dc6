"""Export a searched subnet for deployment: ONNX + PyTorch weights + a model card.

The exported net is the extracted, BN-recalibrated subnet that was evaluated; the ONNX file
is checked against torch in onnxruntime before the card is written.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas import __version__
from nas.errors import UserError
from nas.gaze.tasks import get_task
from nas.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, file_hash
from nas.models import GazeNet, count_macs, count_params
from nas.space import SearchSpace

OPSET = 17


def onnx_bytes(net: torch.nn.Module, input_shape: tuple[int, ...], dynamic_batch: bool = True) -> bytes:
    net.eval()
    buf = io.BytesIO()
    axes = {"input": {0: "batch"}, "gaze": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(net, (torch.zeros(input_shape),), buf, dynamo=False, opset_version=OPSET,
                      input_names=["input"], output_names=["gaze"], dynamic_axes=axes)
    return buf.getvalue()


def onnx_parity(net: torch.nn.Module, model: bytes, input_shape: tuple[int, ...],
                batch: int = 4, seed: int = 0) -> float:
    """Max |torch - onnxruntime| on random inputs: the export must compute the same net."""
    import onnxruntime as ort

    x = torch.from_numpy(np.random.default_rng(seed).random((batch, *input_shape[1:]),
                                                            dtype=np.float32))
    with torch.no_grad():
        ref = net.eval()(x).numpy()
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    return float(np.abs(out - ref).max())


def export_subnet(net: GazeNet, space: SearchSpace, out_dir: str | Path,
                  extra: dict[str, Any] | None = None) -> dict:
    """Write model.onnx, model.pt and card.json for `net` into `out_dir`; return the card."""
    out_dir = Path(out_dir)
    arch = space.parse(net.arch_string)
    shape = (1, space.in_channels, *arch.resolution)
    model = onnx_bytes(net, shape)
    diff = onnx_parity(net, model, shape)
    if not diff <= 1e-4:
        raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} for {arch.arch_id}")
    atomic_write_bytes(out_dir / "model.onnx", model)
    atomic_torch_save(out_dir / "model.pt", {
        "format": "gaze-nas-subnet/1", "arch": arch.to_string(), "space": json.dumps(space.raw),
        "state_dict": net.state_dict()})
    task = get_task(space.task)
    card = {
        "arch_id": arch.arch_id, "arch": arch.to_string(), "space": space.name,
        "space_hash": space.space_hash(), "task": space.task,
        "input": {"name": "input", "shape": ["batch", space.in_channels, *arch.resolution],
                  "dtype": "float32",
                  "preprocessing": task.input_meaning},
        "output": {"name": "gaze", "shape": ["batch", space.outputs],
                   "meaning": task.output_meaning, "error_unit": task.unit},
        "params": count_params(net), "macs": count_macs(net, shape),
        "onnx": {"opset": OPSET, "sha256_16": file_hash(out_dir / "model.onnx"),
                 "max_abs_diff_vs_torch": diff},
        "tool_version": __version__,
    }
    card.update(extra or {})
    atomic_write_json(out_dir / "card.json", card)
    return card


def load_subnet(path: str | Path) -> GazeNet:
    """Rebuild an exported GazeNet from model.pt (weights_only)."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        space = SearchSpace.from_dict(json.loads(ck["space"]), source=f"{path}:space")
        net = GazeNet(space, space.parse(ck["arch"]))
        net.load_state_dict(ck["state_dict"])
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"not a readable gaze-nas subnet ({type(exc).__name__})",
                        source=str(path)) from None
    return net.eval()
