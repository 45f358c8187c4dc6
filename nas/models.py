"""Static blocks and GazeNet: the plain nn.Modules that users deploy.

Every block's module tree uses the same child names as its elastic twin in `nas.supernet`,
so extraction is one generic copy: slice leading dims and centre-crop kernels.

A network input is a tensor (single-input layouts: an eye patch, a face crop) or a dict
of named tensors (multi-input layouts, `nas.gaze.tasks.Layout`); `fit_input`, `take_rows`
and `input_len` treat both alike, and `build_net` builds the space's layout's net.
"""

from __future__ import annotations

import importlib
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from nas.blocks import get_family, ghost_init, se_channels
from nas.space import Arch, LayerOp, SearchSpace


def activation(name: str | None, x: torch.Tensor) -> torch.Tensor:
    if name is None:
        return x
    if name == "relu":
        return F.relu(x)
    if name == "hswish":
        return F.hardswish(x)
    raise ValueError(f"unknown activation {name!r}")


def resize_to(x: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """Elastic input resolution: area-style (antialiased bilinear) resize when needed."""
    if tuple(x.shape[-2:]) == tuple(resolution):
        return x
    return F.interpolate(x, size=tuple(resolution), mode="bilinear", align_corners=False,
                         antialias=True)


NetInput = Union[torch.Tensor, dict[str, torch.Tensor]]


def fit_input(space: SearchSpace, x: NetInput, resolution: tuple[int, int]) -> NetInput:
    """`x` at the searched resolution `resolution`: a tensor resized to it, or each image
    input of a dict resized to its own size at that gene (grids and vectors as they are)."""
    if isinstance(x, torch.Tensor):
        return resize_to(x, resolution)
    sizes = space.input_sizes(resolution)
    return {k: resize_to(v, sizes[k]) if k in sizes else v for k, v in x.items()}


def take_rows(x: NetInput, rows) -> NetInput:
    """Rows (a slice or index tensor) of every input."""
    if isinstance(x, torch.Tensor):
        return x[rows]
    return {k: v[rows] for k, v in x.items()}


def move_input(x: NetInput, device: torch.device) -> NetInput:
    """Every input on `device` (a no-op where it is there already)."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return {k: v.to(device) for k, v in x.items()}


def input_len(x: NetInput) -> int:
    return len(x) if isinstance(x, torch.Tensor) else len(next(iter(x.values())))


def example_input(space: SearchSpace, arch: Arch, batch: int = 1) -> NetInput:
    """Zeros shaped like the input of `arch`'s net (what export and MAC counting trace)."""
    if space.layout.single:
        return torch.zeros(batch, space.in_channels, *arch.resolution)
    sizes = space.input_sizes(arch.resolution)
    out = {}
    for i in space.inputs:
        shape = {"image": (space.in_channels, *sizes.get(i.name, (0, 0))),
                 "grid": (i.size, i.size), "vector": (i.size,)}[i.kind]
        out[i.name] = torch.zeros(batch, *shape)
    return out


def import_target(target: str):
    mod, attr = target.split(":")
    return getattr(importlib.import_module(mod), attr)


def build_net(space: SearchSpace, arch: Arch) -> nn.Module:
    """The static net of `arch` in the space's input layout (GazeNet for one input)."""
    return import_target(space.layout.model)(space, arch)


class ConvBNAct(nn.Module):
    """Conv (no bias) + BatchNorm + optional activation, 'same' padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 act: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(self.act, self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel attention (MobileNetV3 style: ReLU bottleneck, hard-sigmoid gate)."""

    def __init__(self, channels: int):
        super().__init__()
        r = se_channels(channels)
        self.reduce = nn.Conv2d(channels, r, 1)
        self.expand = nn.Conv2d(r, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = F.hardsigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2/V3): expand 1x1, depthwise kxk, SE, project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, op: LayerOp):
        super().__init__()
        mid = cin * op.expansion
        self.expand = ConvBNAct(cin, mid, 1, act=op.act)
        self.dw = ConvBNAct(mid, mid, op.kernel, stride, groups=mid, act=op.act)
        self.se = SqueezeExcite(mid) if op.se else None
        self.project = ConvBNAct(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class GhostModule(nn.Module):
    """Half the channels from a 1x1 conv, the other half from a cheap depthwise op on them."""

    def __init__(self, cin: int, cout: int, k: int, act: str | None):
        super().__init__()
        init = ghost_init(cout)
        self.cout = cout
        self.primary = ConvBNAct(cin, init, 1, act=act)
        self.cheap = ConvBNAct(init, init, k, groups=init, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], 1)[:, : self.cout]


class GhostBottleneck(nn.Module):
    """GhostNet bottleneck; `op.kernel` is the cheap op's kernel (also used when striding)."""

    def __init__(self, cin: int, cout: int, stride: int, op: LayerOp):
        super().__init__()
        mid = cin * op.expansion
        self.ghost1 = GhostModule(cin, mid, op.kernel, "relu")
        self.dw = ConvBNAct(mid, mid, op.kernel, stride, groups=mid) if stride > 1 else None
        self.se = SqueezeExcite(mid) if op.se else None
        self.ghost2 = GhostModule(mid, cout, op.kernel, None)
        if stride == 1 and cin == cout:
            self.shortcut_dw = self.shortcut_pw = None
        else:
            self.shortcut_dw = ConvBNAct(cin, cin, op.kernel, stride, groups=cin)
            self.shortcut_pw = ConvBNAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.dw is not None:
            y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.ghost2(y)
        sc = x if self.shortcut_dw is None else self.shortcut_pw(self.shortcut_dw(x))
        return y + sc


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split (or two branches when striding / changing width) + shuffle."""

    def __init__(self, cin: int, cout: int, stride: int, op: LayerOp):
        super().__init__()
        if cout % 2:
            raise ValueError("shuffle unit needs an even output width")
        half = cout // 2
        self.split = stride == 1 and cin == cout
        b2_in = half if self.split else cin
        if self.split:
            self.b1_dw = self.b1_pw = None
        else:
            self.b1_dw = ConvBNAct(cin, cin, op.kernel, stride, groups=cin)
            self.b1_pw = ConvBNAct(cin, half, 1, act="relu")
        self.b2_pw1 = ConvBNAct(b2_in, half, 1, act="relu")
        self.b2_dw = ConvBNAct(half, half, op.kernel, stride, groups=half)
        self.b2_pw2 = ConvBNAct(half, half, 1, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            # Even/odd split undoes the previous unit's shuffle; unlike halves it gives each
            # channel the same role at every width, which weight sharing needs.
            a, b = x[:, 0::2], x[:, 1::2]
        else:
            a, b = self.b1_pw(self.b1_dw(x)), x
        b = self.b2_pw2(self.b2_dw(self.b2_pw1(b)))
        return channel_shuffle(torch.cat([a, b], 1))


class ResBlock(nn.Module):
    """ResNet basic block (the backbone of the seed study this tool automates): two kxk
    conv + BN, ReLU after the first and after the residual sum; 1x1 conv + BN shortcut when
    the shape changes. Without `op` it is ResNet-18's 3x3 block."""

    def __init__(self, cin: int, cout: int, stride: int, op: LayerOp | None = None):
        super().__init__()
        k = op.kernel if op is not None else 3
        self.conv1 = ConvBNAct(cin, cout, k, stride, act="relu")
        self.conv2 = ConvBNAct(cout, cout, k)
        self.down = ConvBNAct(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = x if self.down is None else self.down(x)
        return F.relu(self.conv2(self.conv1(x)) + sc)


def make_block(op: LayerOp, cin: int, cout: int, stride: int) -> nn.Module:
    """The static block of `op`'s family (named by its `nas.blocks` descriptor)."""
    return get_family(op.family).static_module()(cin, cout, stride, op)


class GazeHead(nn.Module):
    """1x1 conv to the head width, global pool, dropout, linear regressor."""

    def __init__(self, cin: int, width: int, outputs: int, act: str, dropout: float):
        super().__init__()
        self.conv = ConvBNAct(cin, width, 1, act=act)
        self.dropout = dropout
        self.fc = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        x = F.dropout(x, self.dropout, self.training)
        return self.fc(x)


def make_stem(space: SearchSpace, arch: Arch) -> ConvBNAct:
    return ConvBNAct(space.in_channels, space.stem_width, space.stem_kernel, arch.stem_stride,
                     act=space.stem_act)


def make_layers(space: SearchSpace, arch: Arch) -> nn.ModuleList:
    """The arch's searched layers, in forward order."""
    return nn.ModuleList(make_block(op, sh.cin, sh.cout, sh.stride)
                         for op, sh in space.layer_shapes(arch))


class GazeNet(nn.Module):
    """A searched subnet: stem, the arch's layers, gaze head (pitch, yaw or PoG)."""

    input_names = ("input",)

    def __init__(self, space: SearchSpace, arch: Arch):
        super().__init__()
        self.arch_string = arch.to_string()
        self.resolution = tuple(arch.resolution)
        self.stem = make_stem(space, arch)
        self.layers = make_layers(space, arch)
        self.head = GazeHead(arch.widths[-1], space.head_width, space.outputs, space.head_act,
                             space.head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class FeatureHead(nn.Module):
    """A branch's end: 1x1 conv to the feature width, global pool (a LUT part, `feat`)."""

    def __init__(self, cin: int, width: int, act: str):
        super().__init__()
        self.conv = ConvBNAct(cin, width, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


class Backbone(nn.Module):
    """The searched arch as one branch of a multi-input net: stem, layers, pooled features."""

    def __init__(self, space: SearchSpace, arch: Arch):
        super().__init__()
        self.stem = make_stem(space, arch)
        self.layers = make_layers(space, arch)
        self.feat = FeatureHead(arch.widths[-1], space.head_width, space.head_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.feat(x)


class InputEncoder(nn.Module):
    """Two linear layers for a non-image input (the face grid, a head pose): iTracker's
    face-grid MLP. Same module in the supernet (nothing in it is searched)."""

    def __init__(self, n_in: int, width: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(n_in, width)
        self.fc2 = nn.Linear(width, width)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(self.act, self.fc2(activation(self.act, self.fc1(x.flatten(1)))))


class FusionHead(nn.Module):
    """Concatenated branch features -> fusion layer -> linear regressor (`fc`, the layer
    the evaluator refits per subnet, as GazeHead's) -> output scale and shift.

    The scale and shift (buffers, exported with the net) are the training labels' std and
    mean (`set_output_stats`): a point of gaze lies ~10 cm from the camera, which a head
    starting at 0 would take thousands of optimizer steps to reach; in these units the
    regressor learns, as for gaze angles, outputs of order one."""

    def __init__(self, n_in: int, width: int, outputs: int, act: str, dropout: float):
        super().__init__()
        self.fuse = nn.Linear(n_in, width)
        self.act, self.dropout = act, dropout
        self.fc = nn.Linear(width, outputs)
        self.register_buffer("out_scale", torch.ones(outputs))
        self.register_buffer("out_shift", torch.zeros(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = activation(self.act, self.fuse(x))
        return self.fc(F.dropout(x, self.dropout, self.training)) * self.out_scale + self.out_shift

    @torch.no_grad()
    def set_output_stats(self, labels) -> None:
        """Scale and shift from training labels (N, outputs)."""
        y = torch.as_tensor(labels, dtype=torch.float64)
        self.out_shift.copy_(y.mean(0))
        self.out_scale.copy_(y.std(0).clamp_min(1e-3) if len(y) > 1 else torch.ones(y.shape[1]))

    def fc_target(self, y: torch.Tensor) -> torch.Tensor:
        """What `fc` must output for the net to output `y` (the head refit's target)."""
        return (y - self.out_shift.to(y.dtype)) / self.out_scale.to(y.dtype)


def branch_names(space: SearchSpace) -> list[str]:
    """The backbone branches of a multi-input space, in input order (eye shared by both eyes)."""
    return list(dict.fromkeys(i.branch for i in space.inputs if i.kind == "image"))


def fusion_width_in(space: SearchSpace) -> int:
    """Features entering the fusion layer: one head width per input."""
    return len(space.inputs) * space.head_width


def fusion_parts(space: SearchSpace) -> tuple[list[tuple[str, bool, str]], nn.ModuleDict,
                                               "FusionHead"]:
    """What a multi-input net has besides its image branches, the same in a subnet and in
    the supernet: the routes (input name, is an image, branch or encoder key) in input
    order, the encoders of grid / vector inputs and the fusion head."""
    routes = [(i.name, i.kind == "image", i.branch or i.name) for i in space.inputs]
    encoders = nn.ModuleDict({
        i.name: InputEncoder(i.size * i.size if i.kind == "grid" else i.size,
                             space.head_width, space.head_act)
        for i in space.inputs if i.kind != "image"})
    head = FusionHead(fusion_width_in(space), space.head_fusion, space.outputs,
                      space.head_act, space.head_dropout)
    return routes, encoders, head


class FusionNet(nn.Module):
    """A searched subnet of a multi-input layout (iTracker-style for pog2d): each image
    input runs its branch's Backbone (inputs of one branch share its weights; every branch
    is the same searched arch), each grid / vector input an InputEncoder; their features,
    concatenated in input order, go through the FusionHead. Takes a dict of named inputs."""

    def __init__(self, space: SearchSpace, arch: Arch):
        super().__init__()
        self.arch_string = arch.to_string()
        self.resolution = tuple(arch.resolution)
        self.input_names = tuple(i.name for i in space.inputs)
        self.branches = nn.ModuleDict({b: Backbone(space, arch) for b in branch_names(space)})
        self._routes, self.encoders, self.head = fusion_parts(space)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [(self.branches if image else self.encoders)[key](x[name])
                 for name, image, key in self._routes]
        return self.head(torch.cat(parts, 1))


class ResNetGaze(nn.Module):
    """Residual basic-block baseline sized for eye patches (the seed study's backbone)."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128),
                 depths: tuple[int, ...] = (1, 1, 1, 1), outputs: int = 2):
        super().__init__()
        self.stem = ConvBNAct(in_channels, widths[0], 3, 1, act="relu")
        layers, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                layers.append(ResBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...] | NetInput) -> int:
    """Multiply-accumulates of one forward pass, via torch's own FLOP counter; the input is
    a shape (zeros) or an example input (`example_input`, for multi-input nets)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was)
    return int(fc.get_total_flops() // 2)
