"""User-facing errors: one line naming the file and field, exit code 2 from the CLI; and the
one reader of user YAML (bounded: size, nesting, alias expansion, no duplicate keys)."""

from __future__ import annotations

import difflib
import functools
import math
import re
import reprlib
from pathlib import Path
from typing import Any, Iterable

EXCERPT = 80          # characters of a bad value an error message may show
MAX_MESSAGE = 600     # a whole message, paths included
MAX_YAML_DEPTH = 64   # nesting of mappings / sequences in a user YAML file
MAX_ALIAS_NODES = 100_000  # nodes that alias expansion may add ("billion laughs")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class UserError(Exception):
    """A mistake in what the user handed us (file, field, value); shown without traceback."""

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        parts = []
        if source:
            parts.append(str(source))
        if field:
            parts.append(str(field))
        prefix = ": ".join(parts)
        text = _CONTROL.sub(" ", f"{prefix}: {message}" if prefix else str(message))
        if len(text) > MAX_MESSAGE:  # one line, bounded, whatever the parts held
            text = text[:MAX_MESSAGE - 3] + "..."
        super().__init__(text)


def with_source(exc: UserError, source: str, fields: Iterable[str]) -> UserError:
    """`exc` naming `source` too when it names a field of that file (a top-level key in
    `fields`, or below one) but no file: a stage that checks a config field deep inside the
    pipeline knows the field, not which config it came from."""
    top = (exc.field or "").split(".")[0]
    if exc.source is not None or top not in set(fields):
        return exc
    return UserError(exc.message, source=source, field=exc.field)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, EXCERPT, EXCERPT, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 5


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """repr of a bad value for an error message, never longer than `limit` characters (and
    cheap for huge or self-referencing values)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too long for str()
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def find_non_finite(obj: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN/inf anywhere in `obj`, else None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "<top>"
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = find_non_finite(v, f"{path}.{k}" if path else str(k))
            if hit:
                return hit
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = find_non_finite(v, f"{path}[{i}]")
            if hit:
                return hit
    return None


def check_keys(d: dict, allowed: Iterable[str], source: str | None, prefix: str = "") -> None:
    """Refuse a key not in `allowed`, suggesting the nearest one ("did you mean")."""
    allowed = list(allowed)
    for k in d:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise UserError(f"unknown field; {hint}expected one of {', '.join(allowed)}",
                            source=source, field=prefix + str(k)[:EXCERPT])


def safe_name(x: Any) -> bool:
    """A plain file name: no folder separators, not hidden ('.', '..'), printable, short."""
    return (isinstance(x, str) and 0 < len(x) <= 100 and x[0] not in ".-" and x == x.strip()
            and x.isprintable() and not any(c in x for c in "/\\:"))


# ---------------------------------------------------------------------- YAML
@functools.lru_cache(maxsize=1)
def _user_loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        source = "<yaml>"

        def construct_mapping(self, node, deep=False):  # noqa: ANN001
            if isinstance(node, yaml.MappingNode):
                seen: set = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        dup = key in seen
                        seen.add(key)
                    except TypeError:  # unhashable: the base class says so
                        continue
                    if dup:
                        raise UserError(f"duplicate key at line {key_node.start_mark.line + 1} "
                                        "(each key may appear once)", source=self.source,
                                        field=str(key)[:EXCERPT])
            return super().construct_mapping(node, deep)

    # YAML 1.2 floats: `1e-3` is a number, not the string PyYAML's YAML 1.1 makes of it
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return Loader


def _expansion(node: Any, source: str) -> None:
    """Refuse recursive aliases and alias expansion beyond MAX_ALIAS_NODES extra nodes."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: Any, depth: int) -> int:
        k = id(n)
        if k in sizes:
            return sizes[k]
        if k in active:
            raise UserError(f"recursive alias at line {n.start_mark.line + 1}", source=source)
        if depth > 4 * MAX_YAML_DEPTH:
            raise UserError(f"aliases nest deeper than {4 * MAX_YAML_DEPTH} levels",
                            source=source)
        active.add(k)
        if isinstance(n, yaml.SequenceNode):
            s = 1 + sum(size(c, depth + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            s = 1 + sum(size(a, depth + 1) + size(b, depth + 1) for a, b in n.value)
        else:
            s = 1
        active.discard(k)
        sizes[k] = s
        if s - len(sizes) > MAX_ALIAS_NODES:
            raise UserError(f"aliases expand to more than {MAX_ALIAS_NODES} extra values "
                            f"(line {n.start_mark.line + 1}); write the values out",
                            source=source)
        return s

    size(node, 0)


def parse_user_yaml(text: str, source: str) -> Any:
    """Parse YAML text with the safe (C where available) loader; every defect, including
    deep nesting, alias bombs and duplicate keys, is a one-line UserError naming `source`."""
    import yaml

    Loader = _user_loader()
    try:
        # pass 1, on events only (cheap, no recursion): nesting depth
        loader, depth = Loader(text), 0
        try:
            while loader.check_event():
                ev = loader.get_event()
                if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                    depth += 1
                    if depth > MAX_YAML_DEPTH:
                        raise UserError(f"nested deeper than {MAX_YAML_DEPTH} levels at line "
                                        f"{ev.start_mark.line + 1}", source=source)
                elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                    depth -= 1
        finally:
            loader.dispose()
        # pass 2: compose, bound alias expansion, construct
        loader = Loader(text)
        loader.source = source
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expansion(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"malformed YAML{where}: {problem[:200]}", source=source) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise UserError(f"malformed YAML: bad value ({type(exc).__name__}: "
                        f"{str(exc)[:EXCERPT]})", source=source) from None


def read_user_yaml(path: str | Path, expected: str, max_bytes: int = 1 << 20) -> Any:
    """Parse a YAML file the user handed us (see `parse_user_yaml`); a missing, unreadable,
    oversized, binary or non-UTF-8 file is a one-line UserError naming the file."""
    path = Path(path)
    src = str(path)
    try:
        if not path.is_file():
            raise UserError(f"file not found (expected {expected})", source=src)
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"file is {size} bytes; expected {expected} of at most "
                            f"{max_bytes} bytes", source=src)
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the file ({getattr(exc, 'strerror', None) or exc}; "
                        f"expected {expected})", source=src) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        f"expected {expected}", source=src) from None
    if "\x00" in text:
        raise UserError(f"binary file (NUL byte at offset {text.index(chr(0))}); expected "
                        f"{expected}", source=src)
    return parse_user_yaml(text, src)
