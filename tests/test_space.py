import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from nas.blocks import FAMILIES
from nas.errors import UserError
from nas.latency.keys import all_keys, arch_keys, layer_key
from nas.search.operators import crossover, mutate
from nas.space import Arch, LayerOp, LayerShape, SearchSpace

ROOT = Path(__file__).resolve().parents[1]


def test_default_space_is_large_enough(eye_space):
    assert eye_space.size() >= 10**9
    assert eye_space.in_channels == 1
    assert (36, 60) in eye_space.resolutions and len(eye_space.resolutions) >= 2
    fams = {o.family for o in eye_space.layer_options()}
    assert fams == {"mbconv", "ghost", "shuffle", "resblock"}


def test_size_matches_brute_force_count():
    d = {"version": 1, "name": "s", "task": "gaze3d",
         "input": {"channels": 1, "resolutions": [[24, 40], [36, 60]]},
         "stem": {"width": 8, "kernel": 3, "strides": [2], "act": "relu"},
         "stages": [{"widths": [8, 16], "depths": [1, 2], "stride": 2}],
         "blocks": {"shuffle": {"kernels": [3, 5]}, "ghost": {"kernels": [3], "expansions": [3],
                                                             "se": [False]}},
         "head": {"width": 16, "act": "relu", "outputs": 2}}
    sp = SearchSpace.from_dict(d)
    rng = np.random.default_rng(0)
    seen = {sp.sample(rng).to_string() for _ in range(3000)}
    # 2 res * 2 widths * (3 + 3^2) ops sequences = 48
    assert sp.size() == 48 == len(seen)


def test_string_and_json_round_trip(eye_space):
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = eye_space.sample(rng)
        s = a.to_string()
        b = eye_space.parse(s)
        assert b == a and b.arch_id == a.arch_id and b.to_string() == s
        c = Arch.from_json(a.to_json())
        assert c.ops == a.ops and c == a


def test_encoding_round_trip_fixed_length(eye_space):
    rng = np.random.default_rng(2)
    card = eye_space.gene_cardinalities()
    for _ in range(200):
        a = eye_space.sample(rng)
        enc = eye_space.encode(a)
        assert set(enc) == set(card)
        assert all(0 <= enc[k] < card[k] for k in enc)
        assert eye_space.decode(enc).ops == a.ops
        short = Arch.from_string(a.to_string())  # active layers only
        assert set(eye_space.encode(short)) == set(card)
        assert eye_space.decode(eye_space.encode(short)) == a


def test_arch_id_ignores_inactive_genes(eye_space):
    rng = np.random.default_rng(3)
    a = eye_space.sample(rng)
    a = Arch(a.resolution, a.stem_stride, (1,) * len(a.depths), a.widths, a.ops)
    ops = tuple((st[0],) + tuple(reversed(st[1:])) for st in a.ops)
    b = Arch(a.resolution, a.stem_stride, a.depths, a.widths, ops)
    assert a == b and a.arch_id == b.arch_id


def test_mutate_and_crossover_stay_in_space(eye_space):
    rng = np.random.default_rng(4)
    a, b = eye_space.sample(rng), eye_space.sample(rng)
    for _ in range(100):
        c = mutate(eye_space, a, rng)
        assert c != a
        eye_space.contains(c)
        eye_space.contains(crossover(a, c, rng))
        eye_space.contains(crossover(c, b, rng))


def test_largest_smallest_order(eye_space):
    from nas.models import GazeNet, count_macs
    rng = np.random.default_rng(5)
    big, small = eye_space.largest(), eye_space.smallest()
    m = lambda a: count_macs(GazeNet(eye_space, a), (1, 1, *a.resolution))  # noqa: E731
    mb, ms = m(big), m(small)
    for _ in range(10):
        x = m(eye_space.sample(rng))
        assert ms <= x <= mb


def test_keys_cover_every_arch(eye_space):
    keys = all_keys(eye_space)
    rng = np.random.default_rng(6)
    for _ in range(300):
        a = eye_space.sample(rng)
        for k in arch_keys(eye_space, a):
            assert k in keys, k
    k = arch_keys(eye_space, eye_space.largest())[1]
    assert k.startswith("mbconv|cin=16|cout=24|s=2|hw=18x30|k=7|e=6|se=1|act=hswish")
    assert eye_space.arch_keys(a) == arch_keys(eye_space, a)  # compatibility method
    assert eye_space.all_keys() == keys


SHIPPED_LUT = ROOT / "latency_tables" / "amd-epyc-2c.yaml"


def test_existing_tokens_and_keys_unchanged(eye_space):
    """Strings stored in LUTs, trial logs and run dirs keep their meaning."""
    sh = LayerShape(24, 40, 2, (18, 30))
    cases = [
        (LayerOp("mbconv", 5, 4, True, "hswish"), "mb_k5_e4_se_hs",
         "mbconv|cin=24|cout=40|s=2|hw=18x30|k=5|e=4|se=1|act=hswish"),
        (LayerOp("mbconv", 3, 6, False, "relu"), "mb_k3_e6_re",
         "mbconv|cin=24|cout=40|s=2|hw=18x30|k=3|e=6|se=0|act=relu"),
        (LayerOp("ghost", 3, 3, True), "gh_k3_e3_se",
         "ghost|cin=24|cout=40|s=2|hw=18x30|k=3|e=3|se=1"),
        (LayerOp("ghost", 5, 6, False), "gh_k5_e6",
         "ghost|cin=24|cout=40|s=2|hw=18x30|k=5|e=6|se=0"),
        (LayerOp("shuffle", 3), "sh_k3", "shuffle|cin=24|cout=40|s=2|hw=18x30|k=3"),
        (LayerOp("resblock", 3), "rb_k3", "resblock|cin=24|cout=40|s=2|hw=18x30|k=3"),
    ]
    for op, tok, key in cases:
        assert op.token() == tok and LayerOp.from_token(tok) == op
        assert layer_key(op, sh) == key
    # the shipped table's keys are all still keys of the default space
    entries = yaml.safe_load(SHIPPED_LUT.read_text())["entries"]
    every = all_keys(eye_space)
    assert len(entries) > 4000 and not [k for k in entries if k not in every]
    assert {k.split("|")[0] for k in every} - {k.split("|")[0] for k in entries} == {"resblock"}


def test_layer_options_order_is_stable(eye_space):
    """Registry order, then each family's gene product: encodings index into this list."""
    toks = [o.token() for o in eye_space.layer_options()]
    assert list(FAMILIES)[:4] == ["mbconv", "ghost", "shuffle", "resblock"]
    assert toks[:4] == ["mb_k3_e3_re", "mb_k3_e3_hs", "mb_k3_e3_se_re", "mb_k3_e3_se_hs"]
    assert toks[36:40] == ["gh_k3_e3", "gh_k3_e3_se", "gh_k3_e4", "gh_k3_e4_se"]
    assert toks[48:] == ["sh_k3", "sh_k5", "sh_k7", "rb_k3"]


@pytest.mark.parametrize("tok", ["sh_k3_e4", "rb_k3_se", "mb_k3_hs", "rb", "xx_k3", "rb_k3_k5"])
def test_bad_layer_tokens(tok):
    with pytest.raises(ValueError):
        LayerOp.from_token(tok)


def _write(tmp_path, d):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d) if not isinstance(d, str) else d)
    return p


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.pop("stages"), "stages"),
    (lambda d: d["stages"][0].update(widths=[12]), "stages[0].widths"),
    (lambda d: d["blocks"]["mbconv"].update(kernels=[4]), "blocks.mbconv.kernels"),
    (lambda d: d["blocks"].update(resnet={"kernels": [3]}), "blocks.resnet"),
    (lambda d: d["blocks"]["resblock"].update(kernels=[7]), "blocks.resblock.kernels"),
    (lambda d: d["blocks"]["resblock"].update(expansions=[2]), "blocks.resblock.expansions"),
    (lambda d: d["blocks"]["shuffle"].update(kernels=[1, 3]), "blocks.shuffle.kernels"),
    (lambda d: d["blocks"]["ghost"].pop("se"), "blocks.ghost.se"),
    (lambda d: d["input"].update(resolutions=[[36]]), "input.resolutions[0]"),
    (lambda d: d.update(task="segmentation"), "task"),
    (lambda d: d["head"].update(dropout=2), "head.dropout"),
    (lambda d: d["stem"].update(strides=[3]), "stem.strides"),
])
def test_malformed_space_names_file_and_field(tmp_path, eye_space, mutate, field):
    d = yaml.safe_load(open(eye_space.source))
    mutate(d)
    p = _write(tmp_path, d)
    with pytest.raises(UserError) as e:
        SearchSpace.load(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and "\n" not in msg


def test_bad_yaml_and_missing_file(tmp_path):
    p = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(UserError, match="malformed YAML"):
        SearchSpace.load(p)
    with pytest.raises(UserError, match="not found"):
        SearchSpace.load(tmp_path / "nope.yaml")


def test_parse_rejects_foreign_arch(eye_space, tiny_space):
    a = eye_space.sample(np.random.default_rng(0))
    with pytest.raises(UserError):
        tiny_space.parse(a.to_string())
    with pytest.raises(UserError):
        eye_space.parse("garbage")


def test_space_hash_stable_and_sensitive(eye_space, tmp_path):
    d = yaml.safe_load(open(eye_space.source))
    assert SearchSpace.from_dict(d).space_hash() == eye_space.space_hash()
    d["stages"][0]["widths"] = [16, 32]
    assert SearchSpace.from_dict(d).space_hash() != eye_space.space_hash()
    assert math.log10(eye_space.size()) > 9


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_space_loads(path):
    space = SearchSpace.load(path)
    rng = np.random.default_rng(0)
    arch = space.sample(rng)
    assert space.parse(arch.to_string()) == arch


REAL_DATA = {"ethxgaze.yaml", "mpiifacegaze.yaml", "mpiigaze.yaml"}  # need data.path


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "experiments").rglob("*.yaml")
                                        if p.name not in REAL_DATA),
                         ids=lambda p: str(p.relative_to(ROOT / "experiments")))
def test_every_shipped_config_loads(path):
    from nas.config import load_config
    cfg = load_config(path)
    assert Path(cfg.space).is_file()


def test_hires_space_contains_the_seed_studys_residual_net():
    """The baselines config searches this space so that the seed net is a candidate: its
    stage layout (stride 1 first, widths 16-128) must parse as an arch of the space."""
    from nas.baselines import SEED_STRIDES, SEED_WIDTHS, seed_study
    space = SearchSpace.load(ROOT / "search_spaces" / "gaze_eye_hires.yaml")
    assert tuple(s.stride for s in space.stages) == SEED_STRIDES
    resnet4 = next(b for b in seed_study(space, lr_sweep=False) if b.name == "resnet4")
    _, seed_arch = resnet4.space_and_arch(space)
    arch = space.parse(seed_arch.to_string())
    assert arch.widths == SEED_WIDTHS and arch.depths == (1, 1, 1, 1)
    assert {o.family for st in arch.active_ops() for o in st} == {"resblock"}
