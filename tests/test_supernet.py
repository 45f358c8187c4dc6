import numpy as np
import pytest
import torch

from nas.export import onnx_bytes, onnx_parity
from nas.supernet import Supernet


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
    from nas.models import ResNetGaze, count_macs

    net = ResNetGaze().eval()
    x = torch.rand(2, 1, 36, 60)
    assert net(x).shape == (2, 2)
    assert count_macs(net, (1, 1, 36, 60)) > 0
    assert onnx_parity(net, onnx_bytes(net, (1, 1, 36, 60)), (1, 1, 36, 60)) <= 1e-4
