"""Block families: one descriptor per family, one registry, one dispatch.

Everything that tells block families apart (YAML options, layer token, LUT-key fields, rough
cost, static and elastic module) lives in a `BlockFamily` descriptor, so adding a family is
one `register_family` call plus its static block (`nas.models`) and elastic twin
(`nas.supernet`); the space, the LUT keys, `GazeNet` and the supernet only ever dispatch
through here. Modelled on timm's `_efficientnet_builder.py`: one block grammar, one
dispatch by block type. Imports nothing of the project but `nas.errors` (`nas.space` builds
on it); modules are named by "module:attribute" strings and imported on first use.
"""

from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from nas.errors import UserError

ACTS = ("relu", "hswish")
_ACT_TOKEN = {"relu": "re", "hswish": "hs"}
_TOKEN_ACT = {v: k for k, v in _ACT_TOKEN.items()}


def se_channels(mid: int) -> int:
    """Squeeze-excite bottleneck width for `mid` channels (a quarter, multiple of 8, >= 8)."""
    return max(8, int(round(mid / 4 / 8)) * 8)


def ghost_init(channels: int) -> int:
    """Primary-conv channels of a ghost module with ratio 2."""
    return (channels + 1) // 2


class Op(Protocol):
    """What a descriptor reads of a layer op (`nas.space.LayerOp`)."""

    family: str
    kernel: int
    expansion: int
    se: bool
    act: str


class OptionChecker(Protocol):
    """The YAML field checks a descriptor may use (`nas.space._Validator`): each raises a
    one-line UserError naming file and field."""

    def int_list(self, d: dict, key: str, prefix: str = "", lo: int | None = None,
                 hi: int | None = None, allowed: Any = None) -> list[int]: ...

    def bool_list(self, d: dict, key: str, prefix: str = "") -> list[bool]: ...

    def str_list(self, d: dict, key: str, prefix: str = "", allowed: Any = ()) -> list[str]: ...

    def fail(self, msg: str, field_name: str) -> None: ...


@dataclass(frozen=True)
class Gene:
    """One per-layer hyper-parameter: its YAML option, `LayerOp` attribute, token part and
    LUT-key field. A family that does not use a gene leaves the attribute at `default`."""

    option: str
    attr: str
    default: Any
    token: Callable[[Any], str]       # "" leaves the part out (se off)
    parse: Callable[[str], Any]       # token part -> value, or None when not this gene's
    key: Callable[[Any], str]
    read: Callable[[OptionChecker, dict, str, "BlockFamily"], list]  # validated YAML list
    absent: Any = None                # value when the part is missing (None: required)


def _int_part(prefix: str) -> Callable[[str], Any]:
    return lambda p: int(p[1:]) if p[:1] == prefix and p[1:].isdigit() else None


# Canonical gene order: the order of token parts, key fields and the layer_options product.
GENES: dict[str, Gene] = {g.option: g for g in (
    Gene("kernels", "kernel", 1, lambda v: f"k{v}", _int_part("k"), lambda v: f"k={v}",
         lambda c, d, p, fam: c.int_list(d, "kernels", p, allowed=fam.kernels)),
    Gene("expansions", "expansion", 1, lambda v: f"e{v}", _int_part("e"), lambda v: f"e={v}",
         lambda c, d, p, fam: c.int_list(d, "expansions", p, lo=1, hi=8)),
    Gene("se", "se", False, lambda v: "se" if v else "", lambda p: True if p == "se" else None,
         lambda v: f"se={int(v)}", lambda c, d, p, fam: c.bool_list(d, "se", p), absent=False),
    Gene("acts", "act", "relu", lambda v: _ACT_TOKEN[v], lambda p: _TOKEN_ACT.get(p),
         lambda v: f"act={v}", lambda c, d, p, fam: c.str_list(d, "acts", p, allowed=ACTS)),
)}


@dataclass(frozen=True)
class BlockFamily:
    """Descriptor of one block family.

    `genes` are the YAML options it searches over (a subset of `GENES`, canonical order);
    `static` / `elastic` name its modules as "module:attribute": the static block is built
    `static(cin, cout, stride, op)`, the elastic twin `elastic(cin, cout, options)` (options:
    the family's validated YAML section, for the max sizes) and called `(x, op, cout,
    stride)`, with the same child names so extraction is one generic slice-and-crop copy.
    `cost(op, c)` is a rough per-pixel MAC count at c channels, only used to order ops.
    Subclass and override `parse_options` for validation beyond the generic checks.
    """

    name: str
    token: str
    genes: tuple[str, ...]
    static: str
    elastic: str
    cost: Callable[[Op, int], float]
    kernels: tuple[int, ...] = (1, 3, 5, 7)  # kernel sizes its YAML may list

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.token.isalnum():
            raise ValueError(f"family {self.name!r} / token {self.token!r}: expected an "
                             "identifier and an alphanumeric token")
        order = [g for g in GENES if g in self.genes]
        if list(self.genes) != order or len(order) != len(self.genes):
            raise ValueError(f"family {self.name!r}: genes must be a subset of "
                             f"{tuple(GENES)} in that order, got {self.genes}")

    # ---------------------------------------------------------------- YAML options
    def parse_options(self, spec: Any, check: OptionChecker, prefix: str) -> dict[str, tuple]:
        """Validated `blocks.<name>` section: one tuple of choices per gene."""
        for key in spec:
            if key not in self.genes:
                check.fail(f"unknown option {key!r}; {self.name} takes "
                           f"{', '.join(self.genes) or 'no options'}", prefix + str(key))
        return {g: tuple(GENES[g].read(check, spec, prefix, self)) for g in self.genes}

    def op_genes(self, options: Mapping[str, tuple]) -> list[dict[str, Any]]:
        """Every op of this family the options allow, as LayerOp keyword arguments, in the
        fixed order (the product over genes in canonical order)."""
        attrs = [GENES[g].attr for g in self.genes]
        return [{**_defaults(), **dict(zip(attrs, vals))}
                for vals in itertools.product(*(options[g] for g in self.genes))]

    # ---------------------------------------------------------------- token and LUT key
    def render_token(self, op: Op) -> str:
        """`mb_k5_e4_se_hs`: the family token, then each gene's part in canonical order."""
        parts = [GENES[g].token(getattr(op, GENES[g].attr)) for g in self.genes]
        return "_".join([self.token] + [p for p in parts if p])

    def parse_token(self, parts: list[str], tok: str) -> dict[str, Any]:
        """The parts after the family token -> LayerOp keyword arguments."""
        found: dict[str, Any] = {}
        for p in parts:
            for g in self.genes:
                v = GENES[g].parse(p)
                if v is not None and GENES[g].attr not in found:
                    found[GENES[g].attr] = v
                    break
            else:
                raise ValueError(f"bad part {p!r} in layer token {tok!r}")
        for g in self.genes:
            gene = GENES[g]
            if gene.attr not in found:
                if gene.absent is None:
                    raise ValueError(f"layer token {tok!r} has no {gene.attr}")
                found[gene.attr] = gene.absent
        return {**_defaults(), **found}

    def key_fields(self, op: Op) -> list[str]:
        """The op's part of a LUT key, e.g. ["k=5", "e=4", "se=1", "act=hswish"]."""
        return [GENES[g].key(getattr(op, GENES[g].attr)) for g in self.genes]

    # ---------------------------------------------------------------- modules (lazy)
    def static_module(self) -> Callable[..., Any]:
        return _resolve(self.static)

    def elastic_module(self) -> Callable[..., Any]:
        return _resolve(self.elastic)


def _defaults() -> dict[str, Any]:
    """Values of the genes a family does not search (a shuffle unit has expansion 1)."""
    return {g.attr: g.default for g in GENES.values()}


def _resolve(entry: str) -> Any:
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------- the registry
# name -> descriptor, in registration order: the order of layer_options (keep it: existing
# encodings index into it).
FAMILIES: dict[str, BlockFamily] = {}


def register_family(family: BlockFamily) -> BlockFamily:
    """Add a block family; its name and token must be new."""
    if family.name in FAMILIES:
        raise ValueError(f"block family {family.name!r} is already registered")
    if any(f.token == family.token for f in FAMILIES.values()):
        raise ValueError(f"block token {family.token!r} is already taken")
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove a family (tests that register a throw-away one)."""
    FAMILIES.pop(name, None)


def get_family(name: str) -> BlockFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown block family {name!r}; known: {', '.join(FAMILIES)}") from None


def family_of_token(token: str) -> BlockFamily:
    for f in FAMILIES.values():
        if f.token == token:
            return f
    raise ValueError(f"unknown block token {token!r}")


def check_family_name(name: Any, source: str, field: str) -> BlockFamily:
    """The descriptor of a `blocks:` entry, or a UserError naming file and field."""
    if name not in FAMILIES:
        raise UserError(f"unknown block family {name!r}; expected one of {', '.join(FAMILIES)}",
                        source=source, field=field)
    return FAMILIES[name]


# ---------------------------------------------------------------- built-in families
def _mbconv_cost(op: Op, c: int) -> float:
    mid = c * op.expansion
    se = 2 * mid * se_channels(mid) / 100 if op.se else 0
    return 2 * c * mid + op.kernel ** 2 * mid + se + 0.1 * (op.act == "hswish")


def _ghost_cost(op: Op, c: int) -> float:
    k2, mid = op.kernel ** 2, c * op.expansion
    se = 2 * mid * se_channels(mid) / 100 if op.se else 0
    return c * mid / 2 + k2 * mid / 2 + mid * c / 2 + k2 * c / 2 + se + 0.1 * (op.act == "hswish")


def _shuffle_cost(op: Op, c: int) -> float:
    return 2 * (c / 2) ** 2 + op.kernel ** 2 * c / 2


def _resblock_cost(op: Op, c: int) -> float:
    return 2 * op.kernel ** 2 * c * c


register_family(BlockFamily("mbconv", "mb", ("kernels", "expansions", "se", "acts"),
                            "nas.models:MBConv", "nas.supernet:EMBConv", _mbconv_cost))
register_family(BlockFamily("ghost", "gh", ("kernels", "expansions", "se"),
                            "nas.models:GhostBottleneck", "nas.supernet:EGhostBottleneck",
                            _ghost_cost))
register_family(BlockFamily("shuffle", "sh", ("kernels",), "nas.models:ShuffleUnit",
                            "nas.supernet:EShuffleUnit", _shuffle_cost, kernels=(3, 5, 7)))
register_family(BlockFamily("resblock", "rb", ("kernels",), "nas.models:ResBlock",
                            "nas.supernet:EResBlock", _resblock_cost, kernels=(3, 5)))
