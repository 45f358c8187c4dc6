"""Run folders with one owner and a clear life cycle.

A run folder is written by one process at a time (`RunLock`, an advisory `flock` the
kernel drops when the holder dies, even by kill -9). Each stage records the key of the
inputs it was made from in `stages.json` (`StageLedger`); when a key changes, that stage's
outputs and everything downstream of it are moved aside into `stale/<time>/` before the
stage runs again, so a folder never mixes artifacts of two configurations and nothing
already computed is deleted."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from nas.errors import UserError
from nas.io import atomic_write_json

LOCK_NAME = ".lock"
LEDGER_NAME = "stages.json"
STALE_DIR = "stale"


class RunLock:
    """Exclusive ownership of a run folder for the life of a `with` block.

    The lock file holds the owner's pid, host, start time and command line, so a second
    process is refused with a message naming the holder. `flock` is released by the
    kernel when the owner exits in any way, so a killed run never leaves a stale lock."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fh = None

    def __enter__(self) -> "RunLock":
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as exc:
            raise UserError(f"cannot create the run folder's lock file ({exc.strerror})",
                            source=str(self.folder)) from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _describe_holder(fh.read())
            fh.close()
            raise UserError(f"is in use by another gaze-nas process ({holder}); wait for it "
                            "to finish or give another --out", source=str(self.folder)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join(sys.argv)[:200]}))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock; the file stays, harmlessly
            self._fh = None


def _describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


class StageLedger:
    """The key each stage of a run folder was made from, in pipeline order.

    `enter(stage, key)` before a stage runs: if the folder holds that stage made from
    another key, the outputs of it and of every later stage are moved aside first. A
    stage with no recorded key (a folder from an older version) is taken as it is."""

    def __init__(self, folder: str | Path, outputs: dict[str, Sequence[str]],
                 log: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.outputs = outputs  # stage -> paths relative to the folder, in pipeline order
        self.order = list(outputs)
        self.log = log
        self.path = self.folder / LEDGER_NAME
        self.keys: dict[str, str] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if isinstance(data, dict):
                    self.keys = {k: v for k, v in data.items() if isinstance(v, str)}
            except (OSError, ValueError):
                self.log(f"warning: {self.path} is unreadable; treating every stage as new")

    def enter(self, stage: str, key: str) -> None:
        """Record that `stage` is about to make (or resume making) its outputs from `key`;
        outputs made from another key, and everything downstream, are moved aside first.
        Recording before the stage runs means a half-made stage is also recognised."""
        old = self.keys.get(stage)
        if old == key:
            return
        if old is not None:
            later = self.order[self.order.index(stage):]
            moved = self.move_aside([p for s in later for p in self.outputs[s]])
            if moved:
                self.log(f"{stage}: inputs changed since the last run; moved its outputs and "
                         f"those downstream ({', '.join(moved)}) to {self._stale}/")
            for s in later:
                self.keys.pop(s, None)
        self.keys[stage] = key
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, self.keys)

    def move_aside(self, rel_paths: Sequence[str]) -> list[str]:
        """Move the listed outputs that exist into one `stale/<time>/` folder."""
        present = [p for p in rel_paths if (self.folder / p).exists()]
        if not present:
            return []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.folder / STALE_DIR / stamp
        n = 1
        while dest.exists():
            n += 1
            dest = self.folder / STALE_DIR / f"{stamp}-{n}"
        for p in present:
            target = dest / p
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.folder / p), str(target))
        self._stale = dest.relative_to(self.folder)
        return present
