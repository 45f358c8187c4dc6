import numpy as np
import pytest
import torch
from torch import nn

from nas.blocks import FAMILIES, BlockFamily, register_family, unregister_family
from nas.errors import UserError
from nas.export import onnx_bytes, onnx_parity
from nas.latency.build import module_for_key
from nas.latency.keys import all_keys, arch_keys, layer_key
from nas.models import ConvBNAct, GazeNet
from nas.space import Arch, LayerOp, LayerShape, SearchSpace
from nas.supernet import EConvBN, Supernet


def _perturb_bn(net, seed=0):
    """Non-trivial BN statistics so parity is tested on more than identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def eye_supernet(eye_space):
    torch.manual_seed(0)
    net = Supernet(eye_space)
    _perturb_bn(net)
    return net.eval()


def test_supernet_vs_extracted_parity_many_archs(eye_space, eye_supernet):
    rng = np.random.default_rng(0)
    archs = [eye_space.largest(), eye_space.smallest()] + [eye_space.sample(rng) for _ in range(60)]
    for a in archs:
        sub = eye_supernet.extract(a).eval()
        x = torch.rand(3, 1, *a.resolution)
        with torch.no_grad():
            d = (eye_supernet(x, a) - sub(x)).abs().max().item()
        assert d <= 1e-5, (a.to_string(), d)


def test_extracted_onnx_parity(eye_space, eye_supernet):
    rng = np.random.default_rng(1)
    for a in [eye_space.largest()] + [eye_space.sample(rng) for _ in range(8)]:
        sub = eye_supernet.extract(a).eval()
        shape = (1, 1, *a.resolution)
        assert onnx_parity(sub, onnx_bytes(sub, shape), shape) <= 1e-4, a.to_string()


def test_extract_copies_weights_not_views(eye_space, eye_supernet):
    a = eye_space.largest()
    sub = eye_supernet.extract(a)
    w = sub.stem.conv.weight
    before = eye_supernet.stem.conv.weight.clone()
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(eye_supernet.stem.conv.weight, before)


def test_supernet_trains_subnets_through_shared_weights(tiny_space):
    torch.manual_seed(0)
    net = Supernet(tiny_space).train()
    a = tiny_space.smallest()
    x, y = torch.rand(8, 1, 36, 60), torch.zeros(8, 2)
    loss = (net(x, a) - y).abs().mean()
    loss.backward()
    # the smallest subnet only touches leading channels of the stem conv
    g = net.stem.conv.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_elastic_resolution_resizes_input(eye_space, eye_supernet):
    rng = np.random.default_rng(2)
    a = next(a for a in (eye_space.sample(rng) for _ in range(100)) if a.resolution != (36, 60))
    x = torch.rand(2, 1, 36, 60)
    with torch.no_grad():
        out = eye_supernet(x, a)
    assert out.shape == (2, 2)


def test_resnet_baseline_runs_and_exports():
    from nas.models import ResBlock, ResNetGaze, count_macs

    net = ResNetGaze().eval()
    assert all(isinstance(b, ResBlock) for b in net.layers)
    x = torch.rand(2, 1, 36, 60)
    assert net(x).shape == (2, 2)
    assert count_macs(net, (1, 1, 36, 60)) > 0
    assert onnx_parity(net, onnx_bytes(net, (1, 1, 36, 60)), (1, 1, 36, 60)) <= 1e-4


# ---------------------------------------------------------------- every block family
def _with_ops(space, base: Arch, pick) -> Arch:
    """`base` whose n-th active layer (forward order) takes `pick(n)`; inactive ones pick(0)."""
    ops, n = [], 0
    for d, md in zip(base.depths, space.max_depths):
        ops.append(tuple(pick(n + j) if j < d else pick(0) for j in range(md)))
        n += d
    arch = Arch(base.resolution, base.stem_stride, base.depths, base.widths, tuple(ops))
    space.contains(arch)
    return arch


def _family_archs(space, rng) -> dict[str, list[Arch]]:
    """Per family: the widest, deepest arch and a random-shaped one, stepping through the
    family's ops (step 5, coprime to every option count here, so kernels, expansions, SE
    and activations all vary); plus "all": the same two shapes mixing every family."""
    opts = space.layer_options()
    by_fam = {f: [o for o in opts if o.family == f] for f in FAMILIES if f in space.blocks}
    fams = list(by_fam)

    def one(fam: str, n: int) -> LayerOp:
        return by_fam[fam][(5 * n) % len(by_fam[fam])]

    shapes = (space.largest(), space.sample(rng))
    out = {f: [_with_ops(space, base, lambda n, f=f: one(f, n)) for base in shapes]
           for f in fams}
    out["all"] = [_with_ops(space, base, lambda n: one(fams[n % len(fams)], n // len(fams)))
                  for base in shapes]
    return out


def _check_parity(space, supernet, archs, onnx: bool = True) -> None:
    for a in archs:
        sub = supernet.extract(a).eval()
        x = torch.rand(3, space.in_channels, *a.resolution)
        with torch.no_grad():
            d = (supernet(x, a) - sub(x)).abs().max().item()
        assert d <= 1e-5, (a.to_string(), d)
        if onnx:
            shape = (1, space.in_channels, *a.resolution)
            assert onnx_parity(sub, onnx_bytes(sub, shape), shape) <= 1e-4, a.to_string()


def test_every_family_alone_and_mixed_parity(eye_space, eye_supernet):
    """Supernet path == extracted GazeNet == its ONNX, for each registered family on its own
    and for archs mixing all of them."""
    archs = _family_archs(eye_space, np.random.default_rng(7))
    assert set(archs) == set(FAMILIES) | {"all"}, "put every registered family in gaze_eye.yaml"
    for fam, group in archs.items():
        want = set(FAMILIES) if fam == "all" else {fam}
        assert all({o.family for st in a.active_ops() for o in st} == want for a in group), fam
        _check_parity(eye_space, eye_supernet, group)


RES_SPACE = {
    "version": 1, "name": "res", "task": "gaze3d",
    "input": {"channels": 1, "resolutions": [[36, 60], [24, 40]]},
    "stem": {"width": 8, "kernel": 3, "strides": [1, 2], "act": "relu"},
    "stages": [{"widths": [8, 16], "depths": [1, 2], "stride": 2},
               {"widths": [16, 24], "depths": [1, 2], "stride": 1}],
    "blocks": {"resblock": {"kernels": [3, 5]}, "shuffle": {"kernels": [3]}},
    "head": {"width": 16, "act": "relu", "outputs": 2}}


def test_resblock_elastic_kernel_and_width():
    """Kernel 3 is the centre crop of the shared 5x5; widths and the 1x1 shortcut slice."""
    space = SearchSpace.from_dict(RES_SPACE)
    assert [o.token() for o in space.layer_options()] == ["sh_k3", "rb_k3", "rb_k5"]
    torch.manual_seed(1)
    net = Supernet(space)
    _perturb_bn(net, seed=1)
    net.eval()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(12)] + [space.largest(), space.smallest()]
    _check_parity(space, net, archs[:12], onnx=False)
    _check_parity(space, net, archs[12:])
    static = net.extract(space.parse("r36x60_t2|w16:rb_k3,rb_k5|w24:rb_k3")).layers
    assert static[0].down is not None and static[1].down is None and static[2].down is not None
    assert static[0].conv1.conv.weight.shape == (16, 8, 3, 3)


# ---------------------------------------------------------------- registry: one place
class DwPw(nn.Module):
    """Test family: depthwise kxk (+ act) then pointwise; no residual."""

    def __init__(self, cin, cout, stride, op):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, op.kernel, stride, groups=cin, act=op.act)
        self.pw = ConvBNAct(cin, cout, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class EDwPw(nn.Module):
    def __init__(self, cin, cout, options):
        super().__init__()
        self.dw = EConvBN(cin, cin, max(options["kernels"]), depthwise=True)
        self.pw = EConvBN(cin, cout, 1)

    def forward(self, x, op, cout, stride):
        return self.pw(self.dw(x, k=op.kernel, stride=stride, act=op.act), cout)


@pytest.fixture
def dwpw_family():
    fam = register_family(BlockFamily(
        "dwpw", "dp", ("kernels", "acts"), f"{__name__}:DwPw", f"{__name__}:EDwPw",
        cost=lambda op, c: c * c + op.kernel ** 2 * c, kernels=(3, 5)))
    try:
        yield fam
    finally:
        unregister_family("dwpw")
    assert "dwpw" not in FAMILIES


def test_new_family_is_one_descriptor(dwpw_family):
    """A family defined only here (descriptor + static + elastic module) works through the
    YAML, tokens, layer options, LUT keys, GazeNet, the supernet, extraction and ONNX."""
    d = {**RES_SPACE, "blocks": {"shuffle": {"kernels": [3]},
                                 "dwpw": {"kernels": [3, 5], "acts": ["relu", "hswish"]}}}
    space = SearchSpace.from_dict(d)
    assert [o.token() for o in space.layer_options()] == [
        "sh_k3", "dp_k3_re", "dp_k3_hs", "dp_k5_re", "dp_k5_hs"]
    op = LayerOp.from_token("dp_k5_hs")
    assert op == LayerOp("dwpw", 5, act="hswish") and op.token() == "dp_k5_hs"
    assert layer_key(op, LayerShape(8, 16, 2, (18, 30))) == \
        "dwpw|cin=8|cout=16|s=2|hw=18x30|k=5|act=hswish"
    with pytest.raises(UserError, match="blocks.dwpw.se"):
        SearchSpace.from_dict({**d, "blocks": {"dwpw": {"kernels": [3], "acts": ["relu"],
                                                        "se": [True]}}})
    with pytest.raises(UserError, match="blocks.dwpw.kernels"):
        SearchSpace.from_dict({**d, "blocks": {"dwpw": {"kernels": [7], "acts": ["relu"]}}})

    arch = space.parse("r36x60_t1|w16:dp_k5_hs,sh_k3|w24:dp_k3_re")
    assert space.parse(arch.to_string()) == arch
    every = all_keys(space)
    keys = arch_keys(space, arch)
    assert all(k in every for k in keys) and keys[1].startswith("dwpw|cin=8|cout=16|s=2|")
    mod, shape = module_for_key(space, *every[keys[1]])
    assert isinstance(mod, DwPw) and mod(torch.zeros(shape)).shape[1] == 16

    net = GazeNet(space, arch)
    assert isinstance(net.layers[0], DwPw) and space.largest().ops[0][0].family == "dwpw"
    torch.manual_seed(2)
    sup = Supernet(space)
    _perturb_bn(sup, seed=2)
    sup.eval()
    assert hasattr(sup.layers[0], "dwpw") and hasattr(sup.layers[0], "shuffle")
    rng = np.random.default_rng(3)
    _check_parity(space, sup, [arch, space.largest(), space.smallest()]
                  + [space.sample(rng) for _ in range(6)], onnx=False)
    _check_parity(space, sup, [arch])
