"""Static blocks and GazeNet: the plain nn.Modules that users deploy.

Every block's module tree uses the same child names as its elastic twin in `nas.supernet`,
so extraction is one generic copy: slice leading dims and centre-crop kernels.
"""

from __future__ import annotations

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


class GazeNet(nn.Module):
    """A searched subnet: stem, the arch's layers, gaze head (pitch, yaw or PoG)."""

    def __init__(self, space: SearchSpace, arch: Arch):
        super().__init__()
        self.arch_string = arch.to_string()
        self.resolution = tuple(arch.resolution)
        self.stem = ConvBNAct(space.in_channels, space.stem_width, space.stem_kernel,
                              arch.stem_stride, act=space.stem_act)
        self.layers = nn.ModuleList(make_block(op, sh.cin, sh.cout, sh.stride)
                                    for op, sh in space.layer_shapes(arch))
        self.head = GazeHead(arch.widths[-1], space.head_width, space.outputs, space.head_act,
                             space.head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


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


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass, via torch's own FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(input_shape))
    model.train(was)
    return int(fc.get_total_flops() // 2)
