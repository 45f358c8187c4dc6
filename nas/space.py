"""Search space and architecture genotype.

A `SearchSpace` is loaded from YAML and validated; an `Arch` is an immutable genotype with a
fixed-length encoding (every layer always carries its genes, depth masks the unused ones) so
genetic operators and Optuna samplers always see the same parameter set. Layer signatures
(LUT keys, built in `nas.latency.keys`) depend only on shapes, never on positions. Block
families are descriptors in `nas.blocks`; besides it and `nas.errors` nothing of the project
is imported here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from nas.blocks import ACTS, FAMILIES, check_family_name, family_of_token, get_family
from nas.errors import UserError, check_keys, excerpt, read_user_yaml
from nas.gaze.tasks import SINGLE, TASKS, Layout
from nas.inputs import SpaceInput, inputs_hash_part, parse_inputs, single_input

FAMILY_MIXES = ("layer", "stage", "none")  # how finely a random arch mixes block families
LAYER_POOLS = ("op", "family")  # how a layer draws its op: any op alike, or a family first
SPACE_FORMAT_VERSION = 2  # 2: named inputs of multi-input tasks (`input.inputs`, nas.inputs)


@dataclass(frozen=True, order=True)
class LayerOp:
    """One layer's operator: block family plus its own hyper-parameters."""

    family: str
    kernel: int
    expansion: int = 1
    se: bool = False
    act: str = "relu"

    def token(self) -> str:
        """Canonical token, e.g. `mb_k5_e4_se_hs`; its grammar is the family descriptor's."""
        return get_family(self.family).render_token(self)

    @staticmethod
    def from_token(tok: str) -> "LayerOp":
        fam_tok, *parts = tok.split("_")
        fam = family_of_token(fam_tok)
        return LayerOp(fam.name, **fam.parse_token(parts, tok))


@dataclass(frozen=True, eq=False)
class Arch:
    """Immutable genotype. Equality, hashing and `arch_id` use only the active part."""

    resolution: tuple[int, int]
    stem_stride: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    ops: tuple[tuple[LayerOp, ...], ...]  # per stage, max-depth long (fixed length)

    def active_ops(self) -> list[list[LayerOp]]:
        return [list(stage[:d]) for stage, d in zip(self.ops, self.depths)]

    def to_string(self) -> str:
        """Canonical human-readable form, e.g. `r36x60_t1|w16:mb_k3_e4_hs|w24:sh_k5,gh_k3_e3_se`."""
        head = f"r{self.resolution[0]}x{self.resolution[1]}_t{self.stem_stride}"
        stages = [f"w{w}:" + ",".join(op.token() for op in ops)
                  for w, ops in zip(self.widths, self.active_ops())]
        return "|".join([head] + stages)

    __str__ = to_string

    @staticmethod
    def from_string(text: str) -> "Arch":
        """Parse the canonical form; unused layer slots are filled by `SearchSpace.complete`."""
        try:
            parts = text.strip().split("|")
            r, t = parts[0].split("_")
            h, w = r[1:].split("x")
            widths, ops = [], []
            for st in parts[1:]:
                wtok, optoks = st.split(":", 1)
                widths.append(int(wtok[1:]))
                ops.append(tuple(LayerOp.from_token(o) for o in optoks.split(",")))
            return Arch((int(h), int(w)), int(t[1:]), tuple(len(o) for o in ops),
                        tuple(widths), tuple(ops))
        except (ValueError, IndexError) as exc:
            raise UserError(f"not a canonical arch string ({str(exc)[:80]}): {excerpt(text)}",
                            field="arch") from None

    @property
    def arch_id(self) -> str:
        return hashlib.sha1(self.to_string().encode()).hexdigest()[:10]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self.to_string() == other.to_string()

    def __hash__(self) -> int:
        return hash(self.to_string())

    def to_json(self) -> dict[str, Any]:
        """Full genotype (inactive genes included) as JSON-able dict."""
        return {"resolution": list(self.resolution), "stem_stride": self.stem_stride,
                "depths": list(self.depths), "widths": list(self.widths),
                "ops": [[op.token() for op in st] for st in self.ops]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Arch":
        return Arch(tuple(d["resolution"]), int(d["stem_stride"]), tuple(d["depths"]),
                    tuple(d["widths"]),
                    tuple(tuple(LayerOp.from_token(t) for t in st) for st in d["ops"]))


@dataclass(frozen=True)
class StageSpec:
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    stride: int


@dataclass(frozen=True)
class LayerShape:
    """Where a layer sits, by shape only: the part of its LUT key that is not the op."""

    cin: int
    cout: int
    stride: int
    hw: tuple[int, int]  # input spatial size


def conv_out(n: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with this stride."""
    return (n - 1) // stride + 1


@dataclass
class SearchSpace:
    """A validated search space; see search_spaces/*.yaml for the format."""

    name: str
    task: str
    in_channels: int
    resolutions: tuple[tuple[int, int], ...]
    stem_width: int
    stem_kernel: int
    stem_strides: tuple[int, ...]
    stem_act: str
    stages: tuple[StageSpec, ...]
    blocks: dict[str, dict[str, tuple]]
    head_width: int
    head_act: str
    head_dropout: float
    outputs: int
    version: int = SPACE_FORMAT_VERSION
    source: str = "<dict>"
    raw: dict = field(default_factory=dict, repr=False)
    layout: Layout = SINGLE
    inputs: tuple[SpaceInput, ...] = ()  # empty: the one image input `input` (single_input)
    head_fusion: int = 0                 # multi-input: width of the fusion layer

    def __post_init__(self) -> None:
        if not self.inputs:
            self.inputs = single_input(self.resolutions)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        data = read_user_yaml(path, "a search-space YAML")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "SearchSpace":
        v = _Validator(source)
        if not isinstance(data, dict):
            raise UserError(f"expected a mapping at the top level, got {excerpt(data)}",
                            source=source)
        check_keys(data, ("version", "name", "task", "input", "stem", "stages", "blocks",
                          "head"), source)
        version = v.int_(data, "version", lo=1)
        if version > SPACE_FORMAT_VERSION:
            raise UserError(f"version {version} is newer than this tool reads "
                            f"({SPACE_FORMAT_VERSION})", source=source, field="version")
        name = v.str_(data, "name")
        task = v.choice(data, "task", tuple(TASKS))
        inp = v.map_(data, "input", keys=("channels", "resolutions", "inputs"))
        in_ch = v.int_(inp, "channels", "input.", lo=1, hi=16)
        res = v.list_(inp, "resolutions", "input.")
        resolutions = []
        for i, r in enumerate(res):
            if (not isinstance(r, list) or len(r) != 2 or not all(
                    isinstance(x, int) and not isinstance(x, bool) and 8 <= x <= 1024 for x in r)):
                raise UserError(f"expected [height, width] integers in [8, 1024], got "
                                f"{excerpt(r)}", source=source, field=f"input.resolutions[{i}]")
            resolutions.append((r[0], r[1]))
        layout, inputs = parse_inputs(inp.get("inputs"), TASKS[task], tuple(resolutions),
                                      version, source)
        stem = v.map_(data, "stem", keys=("width", "kernel", "strides", "act"))
        stem_width = v.int_(stem, "width", "stem.", lo=1, hi=4096)
        stem_kernel = v.choice(stem, "kernel", (1, 3, 5, 7), "stem.")
        stem_strides = tuple(v.int_list(stem, "strides", "stem.", allowed=(1, 2)))
        stem_act = v.choice(stem, "act", ACTS, "stem.")
        stages = []
        for i, st in enumerate(v.list_(data, "stages")):
            p = f"stages[{i}]."
            if not isinstance(st, dict):
                raise UserError("expected a mapping with widths, depths, stride",
                                source=source, field=f"stages[{i}]")
            check_keys(st, ("widths", "depths", "stride"), source, p)
            widths = tuple(v.int_list(st, "widths", p, lo=8, hi=4096))
            for w in widths:
                if w % 8:
                    raise UserError(f"widths must be multiples of 8, got {w}",
                                    source=source, field=p + "widths")
            depths = tuple(v.int_list(st, "depths", p, lo=1, hi=32))
            stride = v.choice(st, "stride", (1, 2), p)
            stages.append(StageSpec(widths, depths, stride))
        blocks_in = v.map_(data, "blocks")
        blocks: dict[str, dict[str, tuple]] = {}
        for fam, spec in blocks_in.items():
            desc = check_family_name(fam, source, f"blocks.{fam}")
            spec = spec if isinstance(spec, dict) else v.map_(blocks_in, fam, "blocks.")
            blocks[fam] = desc.parse_options(spec, v, f"blocks.{fam}.")
        if not blocks:
            raise UserError("expected at least one block family", source=source, field="blocks")
        head = v.map_(data, "head", keys=("width", "act", "dropout", "outputs", "fusion"))
        head_width = v.int_(head, "width", "head.", lo=1, hi=8192)
        if "fusion" in head and layout.single:
            raise UserError("a single-input space has no fusion layer (head.fusion is for "
                            "input.inputs)", source=source, field="head.fusion")
        fusion = v.int_(head, "fusion", "head.", lo=1, hi=8192) if "fusion" in head else (
            0 if layout.single else head_width)
        head_act = v.choice(head, "act", ACTS, "head.")
        dropout = head.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise UserError(f"expected a number in [0, 1), got {excerpt(dropout)}",
                            source=source, field="head.dropout")
        outputs = v.int_(head, "outputs", "head.", lo=2, hi=2)  # (pitch, yaw) or (x, y)
        return cls(name, task, in_ch, tuple(resolutions), stem_width, stem_kernel,
                   stem_strides, stem_act, tuple(stages), blocks, head_width, head_act,
                   float(dropout), outputs, version, source, data, layout, inputs, fusion)

    # ------------------------------------------------------------------ identity
    def space_hash(self) -> str:
        """Stable content hash of everything that shapes the networks."""
        d = {"task": self.task, "in": self.in_channels, "res": self.resolutions,
             "stem": [self.stem_width, self.stem_kernel, self.stem_strides, self.stem_act],
             "stages": [[s.widths, s.depths, s.stride] for s in self.stages],
             "blocks": {k: {kk: list(vv) for kk, vv in sorted(b.items())}
                        for k, b in sorted(self.blocks.items())},
             "head": [self.head_width, self.head_act, self.head_dropout, self.outputs]}
        extra = inputs_hash_part(self.layout, self.inputs)
        if extra is not None:  # classic spaces keep their hash
            d["inputs"] = {**extra, "fusion": self.head_fusion}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ inputs
    def input_sizes(self, resolution: tuple[int, int]) -> dict[str, tuple[int, int]]:
        """Image input name -> (H, W) for the searched resolution `resolution` (each image
        input's own resolution at the same gene index)."""
        gene = self.resolutions.index(tuple(resolution))
        return {i.name: i.resolution_at(gene) for i in self.inputs if i.kind == "image"}

    def input_kinds(self) -> dict[str, str]:
        """Input name -> kind ("image", "grid", "vector")."""
        return {i.name: i.kind for i in self.inputs}

    # ------------------------------------------------------------------ choices
    def layer_options(self) -> list[LayerOp]:
        """Every operator a layer can take, in a fixed order (the categorical gene)."""
        out: list[LayerOp] = []
        for fam in FAMILIES.values():  # registry order: existing encodings index into it
            if fam.name in self.blocks:
                out += [LayerOp(fam.name, **g) for g in fam.op_genes(self.blocks[fam.name])]
        return out

    @property
    def max_depths(self) -> tuple[int, ...]:
        return tuple(max(s.depths) for s in self.stages)

    def size(self) -> int:
        """Number of distinct subnets (distinct canonical strings)."""
        n = len(self.layer_options())
        total = len(self.resolutions) * len(self.stem_strides)
        for s in self.stages:
            total *= len(s.widths) * sum(n ** d for d in s.depths)
        return total

    def contains(self, arch: Arch) -> None:
        """Raise UserError naming the first gene that lies outside this space."""
        opts = set(self.layer_options())
        if arch.resolution not in self.resolutions:
            raise UserError(f"resolution {arch.resolution} not in {list(self.resolutions)}",
                            source=self.source, field="arch.resolution")
        if arch.stem_stride not in self.stem_strides:
            raise UserError(f"stem stride {arch.stem_stride} not in {list(self.stem_strides)}",
                            source=self.source, field="arch.stem_stride")
        if len(arch.depths) != len(self.stages):
            raise UserError(f"arch has {len(arch.depths)} stages, space has {len(self.stages)}",
                            source=self.source, field="arch.stages")
        for i, (st, d, w, ops) in enumerate(zip(self.stages, arch.depths, arch.widths, arch.ops)):
            if d not in st.depths:
                raise UserError(f"depth {d} not in {list(st.depths)}", source=self.source,
                                field=f"arch.stage{i + 1}.depth")
            if w not in st.widths:
                raise UserError(f"width {w} not in {list(st.widths)}", source=self.source,
                                field=f"arch.stage{i + 1}.width")
            for j, op in enumerate(ops[:d]):
                if op not in opts:
                    raise UserError(f"layer op {op.token()} not in this space",
                                    source=self.source, field=f"arch.stage{i + 1}.layer{j + 1}")

    def complete(self, arch: Arch) -> Arch:
        """Pad a parsed arch's stages to max depth (inactive genes = first option)."""
        fill = self.layer_options()[0]
        ops = tuple(tuple(st) + (fill,) * (md - len(st)) if len(st) < md else tuple(st[:md])
                    for st, md in zip(arch.ops, self.max_depths))
        return Arch(arch.resolution, arch.stem_stride, arch.depths, arch.widths, ops)

    def parse(self, text: str) -> Arch:
        """Canonical string -> Arch of this space (validated)."""
        arch = Arch.from_string(text)
        if len(arch.ops) != len(self.stages):
            raise UserError(f"arch has {len(arch.ops)} stages, space {self.name} has "
                            f"{len(self.stages)}", field="arch")
        arch = self.complete(arch)
        self.contains(arch)
        return arch

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, single_family: bool = False,
               family_mix: str = "layer", layer_pool: str = "op") -> Arch:
        """A random arch: uniform over each gene's choices (`family_mix="layer"`: every
        layer picks any op). `family_mix="stage"` draws one block family per stage and each
        layer its op from that family; `"none"` (or `single_family=True`) one family for
        the whole arch. The coarser modes give coherent subnets of every size, which
        supernet training needs to sample often. With `family_mix="layer"`,
        `layer_pool="family"` draws each layer's family first, then an op of it: uniform
        over ops gives the family with the most options (36 of the default space's 52 are
        MBConv) most layers, and a 1-op family almost none next to another family."""
        if single_family:
            family_mix = "none"
        if family_mix not in FAMILY_MIXES:
            raise ValueError(f"family_mix must be one of {FAMILY_MIXES}, got {family_mix!r}")
        if layer_pool not in LAYER_POOLS:
            raise ValueError(f"layer_pool must be one of {LAYER_POOLS}, got {layer_pool!r}")
        opts = self.layer_options()
        fams = sorted({o.family for o in opts})
        by_fam = {f: [o for o in opts if o.family == f] for f in fams}
        arch_fam = fams[rng.integers(len(fams))] if family_mix == "none" else None

        def stage_pool() -> list[LayerOp]:
            if family_mix == "layer":
                return opts
            return by_fam[arch_fam or fams[rng.integers(len(fams))]]

        def layer_op(pool: list[LayerOp]) -> LayerOp:
            if family_mix == "layer" and layer_pool == "family":
                pool = by_fam[fams[rng.integers(len(fams))]]
            return pool[rng.integers(len(pool))]

        res = self.resolutions[rng.integers(len(self.resolutions))]
        stem = self.stem_strides[rng.integers(len(self.stem_strides))]
        depths = tuple(int(s.depths[rng.integers(len(s.depths))]) for s in self.stages)
        widths = tuple(int(s.widths[rng.integers(len(s.widths))]) for s in self.stages)
        ops = []
        for md in self.max_depths:
            pool = stage_pool()
            ops.append(tuple(layer_op(pool) for _ in range(md)))
        return Arch(tuple(res), int(stem), depths, widths, tuple(ops))

    def pull_size(self, arch: Arch, rng: np.random.Generator, toward: str,
                  prob: float = 0.75) -> Arch:
        """`arch` with each stage's depth and width, and the resolution, moved to the
        smallest (`toward="small"`) or largest choice with probability `prob` each: uniform
        sampling averages many genes and rarely reaches either end of the size range."""
        pick = min if toward == "small" else max

        def choose(options, current, key=None):
            return pick(options, key=key) if rng.random() < prob else current

        res = choose(self.resolutions, arch.resolution, key=lambda r: r[0] * r[1])
        depths = tuple(choose(st.depths, d) for st, d in zip(self.stages, arch.depths))
        widths = tuple(choose(st.widths, w) for st, w in zip(self.stages, arch.widths))
        return Arch(tuple(res), arch.stem_stride, depths, widths, arch.ops)

    def _extreme(self, biggest: bool, family: str | None = None) -> Arch:
        """All layers one op: the one whose rough cost, summed over the extreme arch's
        layers (each at its width and spatial size), is the largest / smallest. Costs grow
        differently with width (a ResNet block is quadratic, a depthwise block nearly
        linear), so a single reference width would misorder families."""
        pick = max if biggest else min
        res = pick(self.resolutions, key=lambda r: r[0] * r[1])
        stem = min(self.stem_strides) if biggest else max(self.stem_strides)
        depths = tuple(pick(s.depths) for s in self.stages)
        widths = tuple(pick(s.widths) for s in self.stages)
        shapes = self._shapes(res, stem, depths, widths)
        options = [o for o in self.layer_options() if family in (None, o.family)]
        if not options:
            raise ValueError(f"block family {family!r} is not in space {self.name!r}")
        op = pick(options,
                  key=lambda o: sum(_op_cost(o, sh.cout) * sh.hw[0] * sh.hw[1] for sh in shapes))
        return Arch(res, stem, depths, widths, tuple((op,) * md for md in self.max_depths))

    def largest(self, family: str | None = None) -> Arch:
        """The costliest arch (of one block family if `family` is given)."""
        return self._extreme(True, family)

    def smallest(self, family: str | None = None) -> Arch:
        """The cheapest arch (of one block family if `family` is given)."""
        return self._extreme(False, family)

    # ------------------------------------------------------------------ encodings
    def encode(self, arch: Arch) -> dict[str, int]:
        """Fixed-length categorical encoding: gene name -> choice index (an arch parsed from
        its string is padded first, so every arch yields the same gene set)."""
        arch = self.complete(arch)
        opts = {o: i for i, o in enumerate(self.layer_options())}
        enc = {"resolution": self.resolutions.index(arch.resolution),
               "stem_stride": self.stem_strides.index(arch.stem_stride)}
        for i, s in enumerate(self.stages):
            enc[f"s{i + 1}_depth"] = s.depths.index(arch.depths[i])
            enc[f"s{i + 1}_width"] = s.widths.index(arch.widths[i])
            for j, op in enumerate(arch.ops[i]):
                enc[f"s{i + 1}_l{j + 1}_op"] = opts[op]
        return enc

    def gene_cardinalities(self) -> dict[str, int]:
        n = len(self.layer_options())
        card = {"resolution": len(self.resolutions), "stem_stride": len(self.stem_strides)}
        for i, s in enumerate(self.stages):
            card[f"s{i + 1}_depth"] = len(s.depths)
            card[f"s{i + 1}_width"] = len(s.widths)
            for j in range(max(s.depths)):
                card[f"s{i + 1}_l{j + 1}_op"] = n
        return card

    def decode(self, enc: dict[str, int]) -> Arch:
        opts = self.layer_options()
        depths, widths, ops = [], [], []
        for i, s in enumerate(self.stages):
            depths.append(int(s.depths[enc[f"s{i + 1}_depth"]]))
            widths.append(int(s.widths[enc[f"s{i + 1}_width"]]))
            ops.append(tuple(opts[enc[f"s{i + 1}_l{j + 1}_op"]] for j in range(max(s.depths))))
        return Arch(tuple(self.resolutions[enc["resolution"]]),
                    int(self.stem_strides[enc["stem_stride"]]), tuple(depths), tuple(widths),
                    tuple(ops))

    # ------------------------------------------------------------------ shapes
    def _shapes(self, resolution: tuple[int, int], stem_stride: int, depths: tuple[int, ...],
                widths: tuple[int, ...]) -> list[LayerShape]:
        h, w = conv_out(resolution[0], stem_stride), conv_out(resolution[1], stem_stride)
        cin, out = self.stem_width, []
        for st, d, width in zip(self.stages, depths, widths):
            for j in range(d):
                s = st.stride if j == 0 else 1
                out.append(LayerShape(cin, width, s, (h, w)))
                h, w, cin = conv_out(h, s), conv_out(w, s), width
        return out

    def layer_shapes(self, arch: Arch) -> list[tuple[LayerOp, LayerShape]]:
        """Active layers with their shapes, in forward order."""
        ops = [op for stage in arch.active_ops() for op in stage]
        return list(zip(ops, self._shapes(arch.resolution, arch.stem_stride, arch.depths,
                                          arch.widths)))

    def final_shape(self, arch: Arch) -> tuple[int, tuple[int, int]]:
        h, w = arch.resolution
        h, w = conv_out(h, arch.stem_stride), conv_out(w, arch.stem_stride)
        for st in self.stages:
            h, w = conv_out(h, st.stride), conv_out(w, st.stride)
        return arch.widths[-1], (h, w)

    # ------------------------------------------------------------------ LUT keys (compat)
    def arch_keys(self, arch: Arch) -> list[str]:
        """Compatibility for callers outside `nas.latency`: see `nas.latency.keys.arch_keys`."""
        from nas.latency.keys import arch_keys

        return arch_keys(self, arch)

    def all_keys(self) -> dict[str, tuple[str, Any]]:
        """Compatibility for callers outside `nas.latency`: see `nas.latency.keys.all_keys`."""
        from nas.latency.keys import all_keys

        return all_keys(self)


def _op_cost(op: LayerOp, c: int) -> float:
    """Rough MAC count of an op at c channels (the family's own formula): only used to order
    ops for largest/smallest."""
    return get_family(op.family).cost(op, c)


class _Validator:
    """Field checks that raise a one-line UserError naming file and field."""

    def __init__(self, source: str):
        self.source = source

    def _get(self, d: dict, key: str, prefix: str) -> Any:
        if not isinstance(d, dict) or key not in d:
            raise UserError("missing required field", source=self.source, field=prefix + key)
        return d[key]

    def fail(self, msg: str, field_name: str) -> None:
        raise UserError(msg, source=self.source, field=field_name)

    def int_(self, d: dict, key: str, prefix: str = "", lo: int | None = None,
             hi: int | None = None) -> int:
        x = self._get(d, key, prefix)
        if not isinstance(x, int) or isinstance(x, bool) or (lo is not None and x < lo) \
                or (hi is not None and x > hi):
            want = (f" in [{lo}, {hi}]" if lo is not None and hi is not None
                    else f" >= {lo}" if lo is not None else "")
            self.fail(f"expected an integer{want}, got {excerpt(x)}", prefix + key)
        return x

    def str_(self, d: dict, key: str, prefix: str = "") -> str:
        x = self._get(d, key, prefix)
        if not isinstance(x, str) or not x or len(x) > 100:
            self.fail(f"expected a non-empty string (at most 100 characters), got {excerpt(x)}",
                      prefix + key)
        return x

    def choice(self, d: dict, key: str, allowed: Iterable, prefix: str = "") -> Any:
        x = self._get(d, key, prefix)
        allowed = tuple(allowed)
        if x not in allowed or isinstance(x, bool):
            self.fail(f"expected one of {', '.join(map(str, allowed))}, got {excerpt(x)}",
                      prefix + key)
        return x

    def map_(self, d: dict, key: str, prefix: str = "", keys: Iterable[str] | None = None
             ) -> dict:
        """A mapping field; with `keys`, any other key in it is refused ("did you mean")."""
        x = self._get(d, key, prefix)
        if not isinstance(x, dict):
            self.fail(f"expected a mapping, got {type(x).__name__}", prefix + key)
        if keys is not None:
            check_keys(x, keys, self.source, f"{prefix}{key}.")
        return x

    def list_(self, d: dict, key: str, prefix: str = "") -> list:
        x = self._get(d, key, prefix)
        if not isinstance(x, list) or not x or len(x) > 64:
            self.fail(f"expected a non-empty list (at most 64 values), got {excerpt(x)}",
                      prefix + key)
        return x

    def int_list(self, d: dict, key: str, prefix: str = "", lo: int | None = None,
                 hi: int | None = None, allowed: Iterable | None = None) -> list[int]:
        xs = self.list_(d, key, prefix)
        allowed = tuple(allowed) if allowed is not None else None
        for x in xs:
            bad = not isinstance(x, int) or isinstance(x, bool)
            bad = bad or (lo is not None and x < lo) or (hi is not None and x > hi)
            bad = bad or (allowed is not None and x not in allowed)
            if bad:
                want = (f"one of {', '.join(map(str, allowed))}" if allowed
                        else f"integers in [{lo}, {hi}]" if lo is not None and hi is not None
                        else "integers" + (f" >= {lo}" if lo is not None else "")
                        + (f" <= {hi}" if hi is not None else ""))
                self.fail(f"expected a list of {want}, got {excerpt(x)}", prefix + key)
        if len(set(xs)) != len(xs):
            self.fail(f"duplicate values in {excerpt(xs)}", prefix + key)
        return xs

    def bool_list(self, d: dict, key: str, prefix: str = "") -> list[bool]:
        xs = self.list_(d, key, prefix)
        if not all(isinstance(x, bool) for x in xs) or len(set(xs)) != len(xs):
            self.fail(f"expected a list of distinct true/false, got {excerpt(xs)}", prefix + key)
        return xs

    def str_list(self, d: dict, key: str, prefix: str = "", allowed: Iterable = ()) -> list[str]:
        xs = self.list_(d, key, prefix)
        allowed = tuple(allowed)
        for x in xs:
            if x not in allowed:
                self.fail(f"expected a list of {', '.join(allowed)}, got {excerpt(x)}",
                          prefix + key)
        if len(set(xs)) != len(xs):
            self.fail(f"duplicate values in {excerpt(xs)}", prefix + key)
        return xs
