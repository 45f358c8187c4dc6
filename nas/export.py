"""Export a searched subnet for deployment: ONNX + PyTorch weights + a model card.

The exported net is the extracted, BN-recalibrated subnet that was evaluated; the ONNX file
is checked against torch in onnxruntime before the card is written. A multi-input net
(pog2d: face, left_eye, right_eye, face_grid) is exported with its inputs NAMED as the
space's layout names them, so a deployment feeds them by name, not by position.
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
from nas.models import GazeNet, NetInput, build_net, count_macs, count_params, example_input
from nas.space import SearchSpace

OPSET = 17


class _Positional(torch.nn.Module):
    """A dict-input net called with its inputs as positional tensors (what the ONNX exporter
    traces), in `names` order."""

    def __init__(self, net: torch.nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.net, self.names = net, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.net(dict(zip(self.names, tensors)))


def trace_args(net: torch.nn.Module, x: NetInput) -> tuple[torch.nn.Module, tuple, list[str]]:
    """(module to trace, its positional args, the ONNX input names)."""
    if isinstance(x, torch.Tensor):
        return net, (x,), ["input"]
    names = tuple(x)
    return _Positional(net, names), tuple(x[k] for k in names), list(names)


def onnx_bytes(net: torch.nn.Module, input_shape: tuple[int, ...] | NetInput,
               dynamic_batch: bool = True) -> bytes:
    """ONNX of `net` for inputs shaped `input_shape` (a shape, or an example input: a
    tensor, or a dict whose keys become the ONNX input names); output `gaze`."""
    net.eval()
    x = torch.zeros(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
    mod, args, names = trace_args(net, x)
    buf = io.BytesIO()
    axes = ({**{n: {0: "batch"} for n in names}, "gaze": {0: "batch"}} if dynamic_batch
            else None)
    torch.onnx.export(mod, args, buf, dynamo=False, opset_version=OPSET, input_names=names,
                      output_names=["gaze"], dynamic_axes=axes)
    return buf.getvalue()


def random_input(example: NetInput, batch: int, seed: int = 0) -> NetInput:
    """Uniform [0, 1) inputs shaped like `example` with `batch` rows (a face grid gets 0/1)."""
    rng = np.random.default_rng(seed)

    def draw(t: torch.Tensor, grid: bool) -> torch.Tensor:
        a = rng.random((batch, *t.shape[1:]), dtype=np.float32)
        return torch.from_numpy((a > 0.5).astype(np.float32) if grid else a)

    if isinstance(example, torch.Tensor):
        return draw(example, False)
    return {k: draw(v, v.ndim == 3) for k, v in example.items()}


def onnx_parity(net: torch.nn.Module, model: bytes, input_shape: tuple[int, ...] | NetInput,
                batch: int = 4, seed: int = 0) -> float:
    """Max |torch - onnxruntime| on random inputs: the export must compute the same net.
    Named inputs are fed to onnxruntime by name."""
    import onnxruntime as ort

    example = (torch.zeros(input_shape) if isinstance(input_shape, (tuple, list))
               else input_shape)
    x = random_input(example, batch, seed)
    with torch.no_grad():
        ref = net.eval()(x).numpy()
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feed = ({"input": x.numpy()} if isinstance(x, torch.Tensor)
            else {k: v.numpy() for k, v in x.items()})
    out = sess.run(None, feed)[0]
    return float(np.abs(out - ref).max())


def input_card(space: SearchSpace, example: NetInput) -> dict | list:
    """The card's `input`: one entry, or one per named input (name, shape, meaning)."""
    task = get_task(space.task)
    if isinstance(example, torch.Tensor):
        return {"name": "input", "shape": ["batch", *example.shape[1:]], "dtype": "float32",
                "preprocessing": task.input_meaning}
    meaning = {i.name: i.meaning for i in space.layout.inputs}
    return [{"name": k, "shape": ["batch", *v.shape[1:]], "dtype": "float32",
             "meaning": meaning.get(k, ""),
             "preprocessing": ("values scaled to [0, 1]" if v.ndim == 4 else "fed as is")}
            for k, v in example.items()]


def export_subnet(net: GazeNet, space: SearchSpace, out_dir: str | Path,
                  extra: dict[str, Any] | None = None) -> dict:
    """Write model.onnx, model.pt and card.json for `net` into `out_dir`; return the card."""
    out_dir = Path(out_dir)
    arch = space.parse(net.arch_string)
    shape = example_input(space, arch)
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
        "input": input_card(space, shape),
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
        net = build_net(space, space.parse(ck["arch"]))
        net.load_state_dict(ck["state_dict"])
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"not a readable gaze-nas subnet ({type(exc).__name__})",
                        source=str(path)) from None
    return net.eval()
