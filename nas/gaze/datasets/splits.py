"""Splits by subject, never by frame: frames of one person are near-duplicates, so a split
that shares a subject between train and test measures memory, not generalization."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from nas.errors import UserError, excerpt

__all__ = ["subject_split", "leave_one_subject_out", "check_disjoint", "unique_subjects"]


def unique_subjects(subjects: np.ndarray) -> list:
    """Subject ids in first-appearance order (as Python ints or strs)."""
    _, first = np.unique(subjects, return_index=True)
    return [subjects[i].item() for i in sorted(first)]


def _coerce(value: Any, subjects: np.ndarray, known: list, source: str | None) -> Any:
    """A user-given subject id in the dataset's id type; unknown -> "did you mean"."""
    if np.issubdtype(subjects.dtype, np.integer):
        try:
            v = int(value)
        except (TypeError, ValueError):
            v = value
    else:
        v = str(value)
    if v not in known:
        near = difflib.get_close_matches(str(v), [str(k) for k in known], n=1, cutoff=0.5)
        hint = f"did you mean {near[0]!r}? " if near else ""
        shown = ", ".join(map(str, known[:8])) + (", ..." if len(known) > 8 else "")
        raise UserError(f"unknown subject {excerpt(value)}; {hint}the dataset has "
                        f"{len(known)}: {shown}", source=source, field="held_out")
    return v


def subject_split(subjects: np.ndarray, held_out: Sequence | Mapping[str, Sequence],
                  source: str | None = None) -> dict[str, np.ndarray]:
    """Indices per split. `held_out` = subject ids -> {"train": rest, "test": those}; or
    {"val": ids, "test": ids, ...} -> those splits plus "train" for the rest."""
    subjects = np.asarray(subjects)
    known = unique_subjects(subjects)
    groups = dict(held_out) if isinstance(held_out, Mapping) else {"test": held_out}
    if "train" in groups:
        raise UserError("'train' is the rest; name only the held-out splits", source=source,
                        field="held_out")
    out: dict[str, np.ndarray] = {}
    taken: dict[Any, str] = {}
    for name, ids in groups.items():
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        vals = [_coerce(v, subjects, known, source) for v in ids]
        for v in vals:
            if v in taken and taken[v] != name:
                raise UserError(f"subject {v!r} is in both {taken[v]!r} and {name!r}",
                                source=source, field="held_out")
            taken[v] = name
        out[name] = np.flatnonzero(np.isin(subjects, vals))
    out["train"] = np.flatnonzero(~np.isin(subjects, list(taken)))
    if len(out["train"]) == 0:
        raise UserError("every subject is held out; nothing is left to train on",
                        source=source, field="held_out")
    return {"train": out.pop("train"), **out}


def leave_one_subject_out(subjects: np.ndarray) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
    """(subject, {"train", "test"}) for each subject in turn: the MPIIGaze protocol."""
    for s in unique_subjects(np.asarray(subjects)):
        yield s, subject_split(subjects, [s])


def check_disjoint(subjects: np.ndarray, splits: Mapping[str, Iterable[int]],
                   source: str | None = None) -> None:
    """Refuse splits that share a subject (an official split file that mixes them)."""
    seen: dict[Any, str] = {}
    for name, idx in splits.items():
        for s in np.unique(np.asarray(subjects)[np.asarray(idx, np.int64)]):
            s = s.item()
            if s in seen and seen[s] != name:
                raise UserError(f"subject {s!r} appears in both {seen[s]!r} and {name!r}; "
                                "splits must be by subject", source=source, field="split")
            seen[s] = name
