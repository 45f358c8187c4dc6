"""Turn one LUT key into the module it times, and modules into ONNX bytes.

The modules are the very blocks `GazeNet` is built from (`nas.models`), so a LUT entry times
exactly the layer that a deployed subnet runs, with the same shapes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Any

import torch
from torch import nn

from nas.latency.runtime import OPSET
from nas.models import ConvBNAct, FeatureHead, FusionHead, GazeHead, InputEncoder, make_block
from nas.space import LayerOp, LayerShape, SearchSpace


def _seed_for(kind: str, spec: Any) -> int:
    """Stable per-part seed so a rebuilt module has the same weights on every machine."""
    return int.from_bytes(hashlib.sha256(repr((kind, spec)).encode()).digest()[:4], "little")


def module_for_key(space: SearchSpace, kind: str, spec: Any) -> tuple[nn.Module, tuple[int, ...]]:
    """The eval-mode module of one LUT key (as `nas.latency.keys.all_keys` describes it) and the
    input shape (batch 1) it runs on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_for(kind, spec))
        if kind == "stem":
            (h, w), stride = spec
            mod: nn.Module = ConvBNAct(space.in_channels, space.stem_width, space.stem_kernel,
                                       stride, act=space.stem_act)
            shape: tuple[int, ...] = (1, space.in_channels, h, w)
        elif kind == "layer":
            op, ls = spec
            if not isinstance(op, LayerOp) or not isinstance(ls, LayerShape):
                raise TypeError(f"layer spec must be (LayerOp, LayerShape), got {spec!r}")
            mod = make_block(op, ls.cin, ls.cout, ls.stride)
            shape = (1, ls.cin, ls.hw[0], ls.hw[1])
        elif kind == "head":
            cin, (h, w) = spec
            mod = GazeHead(cin, space.head_width, space.outputs, space.head_act,
                           space.head_dropout)
            shape = (1, cin, h, w)
        elif kind == "feat":  # a multi-input net's branch end
            cin, (h, w) = spec
            mod = FeatureHead(cin, space.head_width, space.head_act)
            shape = (1, cin, h, w)
        elif kind == "enc":  # a grid / vector input's MLP (fed flat)
            mod = InputEncoder(spec, space.head_width, space.head_act)
            shape = (1, spec)
        elif kind == "fusion":
            n_in = len(space.inputs) * space.head_width
            mod = FusionHead(n_in, space.head_fusion, space.outputs, space.head_act,
                             space.head_dropout)
            shape = (1, n_in)
        else:
            raise ValueError(f"unknown LUT key kind {kind!r}")
    return mod.eval(), shape


def export_onnx(module: nn.Module, input_shape: tuple[int, ...] | dict) -> bytes:
    """ONNX (opset 17, static shapes) of `module` in eval mode, via the TorchScript exporter:
    the graph onnxruntime sees is the same whether a layer is alone or inside a subnet. A
    dict of example inputs (a multi-input net) gives named inputs."""
    from nas.export import trace_args

    module = module.eval()
    x = (torch.zeros(input_shape, dtype=torch.float32) if isinstance(input_shape, (tuple, list))
         else input_shape)
    module, args, names = trace_args(module, x)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["output"])
    return buf.getvalue()
