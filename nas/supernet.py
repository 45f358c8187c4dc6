"""Weight-sharing supernet: one weight set per block family per layer slot.

Width and expansion by channel slicing (leading channels), kernel by centre crop of the
largest kernel, depth as the first d layers of a stage, resolution by resizing the input.
Each elastic module has the same child names as its static twin in `nas.models`, so
`extract(arch)` copies weights with one generic slice-and-crop rule. `build_supernet`
builds the twin of the space's input layout: `Supernet` for one input, `FusionSupernet`
for named inputs (one elastic backbone per branch, shared by that branch's inputs).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nas.blocks import FAMILIES, ghost_init, se_channels
from nas.models import (Backbone, FusionNet, GazeNet, SqueezeExcite, activation, branch_names,
                        channel_shuffle, fit_input, fusion_parts, import_target, resize_to)
from nas.space import Arch, LayerOp, SearchSpace


def _crop(w: torch.Tensor, k: int) -> torch.Tensor:
    kmax = w.shape[-1]
    if k == kmax:
        return w
    a = (kmax - k) // 2
    return w[..., a:a + k, a:a + k]


class EConvBN(nn.Module):
    """Elastic conv + BN: output channels, input channels and kernel chosen per call."""

    def __init__(self, cin: int, cout: int, k: int, depthwise: bool = False):
        super().__init__()
        self.depthwise = depthwise
        self.conv = nn.Conv2d(cin, cout, k, groups=cin if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, cout: int | None = None, k: int | None = None,
                stride: int = 1, act: str | None = None) -> torch.Tensor:
        cin = x.shape[1]
        k = k or self.conv.weight.shape[-1]
        if self.depthwise:
            cout, w, groups = cin, self.conv.weight[:cin], cin
        else:
            w, groups = self.conv.weight[:cout, :cin], 1
        y = F.conv2d(x, _crop(w, k), None, stride, k // 2, 1, groups)
        bn = self.bn
        y = F.batch_norm(y, bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout],
                         bn.bias[:cout], self.training, bn.momentum or 0.0, bn.eps)
        return activation(act, y)


class ESqueezeExcite(SqueezeExcite):
    """Max-size SE weights; a call on c channels uses the leading slices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = se_channels(c)
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.reduce.weight[:r, :c], self.reduce.bias[:r]))
        s = F.hardsigmoid(F.conv2d(s, self.expand.weight[:c, :r], self.expand.bias[:c]))
        return x * s


Options = Mapping[str, tuple]  # a family's validated `blocks:` section: the max sizes


class EMBConv(nn.Module):
    def __init__(self, cin: int, cout: int, options: Options):
        super().__init__()
        mid, kmax = cin * max(options["expansions"]), max(options["kernels"])
        self.expand = EConvBN(cin, mid, 1)
        self.dw = EConvBN(mid, mid, kmax, depthwise=True)
        self.se = ESqueezeExcite(mid)
        self.project = EConvBN(mid, cout, 1)

    def forward(self, x: torch.Tensor, op: LayerOp, cout: int, stride: int) -> torch.Tensor:
        cin = x.shape[1]
        y = self.expand(x, cin * op.expansion, act=op.act)
        y = self.dw(y, k=op.kernel, stride=stride, act=op.act)
        if op.se:
            y = self.se(y)
        y = self.project(y, cout)
        return x + y if stride == 1 and cin == cout else y


class EGhostModule(nn.Module):
    def __init__(self, cin: int, cout: int, kmax: int):
        super().__init__()
        init = ghost_init(cout)
        self.primary = EConvBN(cin, init, 1)
        self.cheap = EConvBN(init, init, kmax, depthwise=True)

    def forward(self, x: torch.Tensor, cout: int, k: int, act: str | None) -> torch.Tensor:
        y = self.primary(x, ghost_init(cout), act=act)
        return torch.cat([y, self.cheap(y, k=k, act=act)], 1)[:, :cout]


class EGhostBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, options: Options):
        super().__init__()
        mid, kmax = cin * max(options["expansions"]), max(options["kernels"])
        self.ghost1 = EGhostModule(cin, mid, kmax)
        self.dw = EConvBN(mid, mid, kmax, depthwise=True)
        self.se = ESqueezeExcite(mid)
        self.ghost2 = EGhostModule(mid, cout, kmax)
        self.shortcut_dw = EConvBN(cin, cin, kmax, depthwise=True)
        self.shortcut_pw = EConvBN(cin, cout, 1)

    def forward(self, x: torch.Tensor, op: LayerOp, cout: int, stride: int) -> torch.Tensor:
        cin = x.shape[1]
        y = self.ghost1(x, cin * op.expansion, op.kernel, "relu")
        if stride > 1:
            y = self.dw(y, k=op.kernel, stride=stride)
        if op.se:
            y = self.se(y)
        y = self.ghost2(y, cout, op.kernel, None)
        if stride == 1 and cin == cout:
            return y + x
        return y + self.shortcut_pw(self.shortcut_dw(x, k=op.kernel, stride=stride), cout)


class EShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, options: Options):
        super().__init__()
        half, kmax = cout // 2, max(options["kernels"])
        self.b1_dw = EConvBN(cin, cin, kmax, depthwise=True)
        self.b1_pw = EConvBN(cin, half, 1)
        self.b2_pw1 = EConvBN(max(cin, half), half, 1)
        self.b2_dw = EConvBN(half, half, kmax, depthwise=True)
        self.b2_pw2 = EConvBN(half, half, 1)

    def forward(self, x: torch.Tensor, op: LayerOp, cout: int, stride: int) -> torch.Tensor:
        cin, half, k = x.shape[1], cout // 2, op.kernel
        if stride == 1 and cin == cout:
            a, b = x[:, 0::2], x[:, 1::2]  # same split as the static unit (see models.py)
        else:
            a, b = self.b1_pw(self.b1_dw(x, k=k, stride=stride), half, act="relu"), x
        b = self.b2_pw1(b, half, act="relu")
        b = self.b2_pw2(self.b2_dw(b, k=k, stride=stride), half, act="relu")
        return channel_shuffle(torch.cat([a, b], 1))


class EResBlock(nn.Module):
    """Elastic ResNet basic block: width by leading channels, kernel by centre crop."""

    def __init__(self, cin: int, cout: int, options: Options):
        super().__init__()
        kmax = max(options["kernels"])
        self.conv1 = EConvBN(cin, cout, kmax)
        self.conv2 = EConvBN(cout, cout, kmax)
        self.down = EConvBN(cin, cout, 1)

    def forward(self, x: torch.Tensor, op: LayerOp, cout: int, stride: int) -> torch.Tensor:
        cin = x.shape[1]
        y = self.conv2(self.conv1(x, cout, k=op.kernel, stride=stride, act="relu"), cout,
                       k=op.kernel)
        sc = x if stride == 1 and cin == cout else self.down(x, cout, stride=stride)
        return F.relu(y + sc)


class ElasticLayer(nn.Module):
    """One layer slot: a max-size block per family the space offers, as a child named after
    the family (so `extract` finds it by `op.family`), in registry order."""

    def __init__(self, space: SearchSpace, cin: int, cout: int):
        super().__init__()
        for fam in FAMILIES.values():
            if fam.name in space.blocks:
                self.add_module(fam.name, fam.elastic_module()(cin, cout, space.blocks[fam.name]))

    def forward(self, x: torch.Tensor, op: LayerOp, cout: int, stride: int) -> torch.Tensor:
        return getattr(self, op.family)(x, op, cout, stride)


class EGazeHead(nn.Module):
    def __init__(self, cin: int, width: int, outputs: int, act: str, dropout: float):
        super().__init__()
        self.conv = EConvBN(cin, width, 1)
        self.width, self.act, self.dropout = width, act, dropout
        self.fc = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, self.width, act=self.act).mean((2, 3))
        return self.fc(F.dropout(x, self.dropout, self.training))


def elastic_stages(space: SearchSpace) -> tuple[nn.ModuleList, list[list[int]], int]:
    """Every layer slot of the space (max depth per stage): the layers, each stage's slot
    indices, and the widest output."""
    slots: list[list[int]] = []
    layers, cin_max = [], space.stem_width
    for st in space.stages:
        idx = []
        for j in range(max(st.depths)):
            cin = cin_max if j == 0 else max(st.widths)
            idx.append(len(layers))
            layers.append(ElasticLayer(space, cin, max(st.widths)))
        slots.append(idx)
        cin_max = max(st.widths)
    return nn.ModuleList(layers), slots, cin_max


class _Body:
    """Stem + searched layers of one set of elastic weights (mixed into Supernet and
    EBackbone, which keep `stem`, `layers`, `slots` as attributes)."""

    space: SearchSpace
    stem: EConvBN
    layers: nn.ModuleList
    slots: list[list[int]]

    def run_body(self, x: torch.Tensor, arch: Arch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x, self.space.stem_width, stride=arch.stem_stride, act=self.space.stem_act)
        feats = []
        for st, slots, d, w, ops in zip(self.space.stages, self.slots, arch.depths,
                                        arch.widths, arch.ops):
            for j in range(d):
                x = self.layers[slots[j]](x, ops[j], w, st.stride if j == 0 else 1)
            feats.append(x)
        return x, feats

    def active_slots(self, arch: Arch) -> list[int]:
        return [slots[j] for slots, d in zip(self.slots, arch.depths) for j in range(d)]

    def copy_body(self, stem: nn.Module, layers: nn.ModuleList, arch: Arch) -> None:
        """Copy this arch's stem and layer weights into static `stem` / `layers`."""
        ops = [op for op, _ in self.space.layer_shapes(arch)]
        for static, slot, op in zip(layers, self.active_slots(arch), ops):
            _copy_sliced(static, getattr(self.layers[slot], op.family))
        _copy_sliced(stem, self.stem)


class Supernet(_Body, nn.Module):
    """All subnets of a space in one set of shared weights; `forward(x, arch)` runs one."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.stem = EConvBN(space.in_channels, space.stem_width, space.stem_kernel)
        self.layers, self.slots, cin_max = elastic_stages(space)
        self.head = EGazeHead(cin_max, space.head_width, space.outputs, space.head_act,
                              space.head_dropout)

    def forward(self, x: torch.Tensor, arch: Arch, return_features: bool = False):
        """The subnet `arch` on `x`; with `return_features`, also every stage's output
        (what stage-wise distillation aligns across block families)."""
        x, feats = self.run_body(resize_to(x, arch.resolution), arch)
        out = self.head(x)
        return (out, feats) if return_features else out

    def set_output_stats(self, labels) -> None:
        """Nothing to set: the eye and face heads regress radians directly (FusionSupernet
        scales its outputs to the labels)."""

    def teacher_only_parameters(self) -> list[nn.Parameter]:
        """None: every subnet trains the head (see FusionSupernet for when not to)."""
        return []

    @torch.no_grad()
    def extract(self, arch: Arch) -> GazeNet:
        """A standalone GazeNet with this arch's weights copied out of the supernet."""
        net = GazeNet(self.space, arch)
        self.copy_body(net.stem, net.layers, arch)
        _copy_sliced(net.head, self.head)
        net.train(self.training)
        return net


class EFeatureHead(nn.Module):
    def __init__(self, cin: int, width: int, act: str):
        super().__init__()
        self.conv = EConvBN(cin, width, 1)
        self.width, self.act = width, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.width, act=self.act).mean((2, 3))


class EBackbone(_Body, nn.Module):
    """One branch's elastic weights: stem, layer slots, feature head (twin of Backbone)."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.stem = EConvBN(space.in_channels, space.stem_width, space.stem_kernel)
        self.layers, self.slots, cin_max = elastic_stages(space)
        self.feat = EFeatureHead(cin_max, space.head_width, space.head_act)

    def forward(self, x: torch.Tensor, arch: Arch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, feats = self.run_body(x, arch)
        return self.feat(x), feats

    def copy_into(self, static: Backbone, arch: Arch) -> None:
        self.copy_body(static.stem, static.layers, arch)
        _copy_sliced(static.feat, self.feat)


class FusionSupernet(nn.Module):
    """The weight-sharing twin of FusionNet: one EBackbone per branch (the eye branch runs
    both eyes), the input encoders and the fusion head; `forward(x, arch)` takes a dict of
    named inputs and resizes each image input to its size at `arch.resolution`.

    The features for distillation are every image input's stage outputs and its pooled
    branch features, in input order. The pooled features are what the shared fusion head
    reads, and they have the same width in every subnet: distilling them towards the
    largest subnet's keeps them consistent across subnets, without which the shared head
    learns to ignore image features that differ from subnet to subnet and leans on any
    input that does not (measured: with a head-pose input, every subnet ignored the face
    and predicted from head pose alone, 20 deg; `train.feature_kd` > 0 enables it)."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.branches = nn.ModuleDict({b: EBackbone(space) for b in branch_names(space)})
        self._routes, self.encoders, self.head = fusion_parts(space)

    def forward(self, x: dict[str, torch.Tensor], arch: Arch, return_features: bool = False):
        x = fit_input(self.space, x, arch.resolution)
        parts, feats = [], []
        for name, image, key in self._routes:
            if image:
                f, stage_outs = self.branches[key](x[name], arch)
                feats += stage_outs
            else:
                f = self.encoders[key](x[name])
            parts.append(f)
        out = self.head(torch.cat(parts, 1))
        return (out, feats) if return_features else out

    def set_output_stats(self, labels) -> None:
        """Output scale and shift from the training labels (see FusionHead)."""
        self.head.set_output_stats(labels)

    def teacher_only_parameters(self) -> list[nn.Parameter]:
        """The fusion head and the grid / vector encoders: shared whole by every subnet,
        they learn from the largest subnet alone, and the other subnets learn features that
        fit them. Trained by every subnet, they learned to ignore image features that differ
        from subnet to subnet and to lean on the inputs that do not: with a head-pose input
        and 4 random subnets a step, every subnet (the largest too) predicted from head pose
        alone (20 deg; the face alone gives 8 deg)."""
        return [*self.head.parameters(), *self.encoders.parameters()]

    @torch.no_grad()
    def extract(self, arch: Arch) -> FusionNet:
        """A standalone FusionNet with this arch's weights copied out of the supernet."""
        net = FusionNet(self.space, arch)
        for b, static in net.branches.items():
            self.branches[b].copy_into(static, arch)
        for k, static in net.encoders.items():
            _copy_sliced(static, self.encoders[k])
        _copy_sliced(net.head, self.head)
        net.train(self.training)
        return net


def build_supernet(space: SearchSpace) -> nn.Module:
    """The weight-sharing twin of the space's input layout (Supernet for one input)."""
    return import_target(space.layout.supernet)(space)


def _copy_sliced(static: nn.Module, elastic: nn.Module) -> None:
    """Copy every tensor of `static` from the same-named one in `elastic`: leading-slice
    each dim to the static shape, centre-cropping the two kernel dims of 4-D weights."""
    src = elastic.state_dict()
    for name, dst in static.state_dict().items():
        if name not in src:
            raise KeyError(f"supernet has no tensor {name!r} for {type(static).__name__}")
        s = src[name]
        if dst.dim() == 0:
            dst.copy_(s)
            continue
        if dst.dim() == 4:
            s = _crop(s, dst.shape[-1])
        s = s[tuple(slice(0, n) for n in dst.shape)]
        if s.shape != dst.shape:
            raise ValueError(f"cannot slice {name}: supernet {tuple(src[name].shape)} -> "
                             f"{tuple(dst.shape)}")
        dst.copy_(s)
