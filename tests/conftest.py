"""Shared fixtures: spaces and a private data cache so tests never touch ~/.cache."""

from pathlib import Path

import pytest

from nas.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GAZE_NAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def eye_space() -> SearchSpace:
    return SearchSpace.load(ROOT / "search_spaces" / "gaze_eye.yaml")


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace.load(ROOT / "search_spaces" / "tiny.yaml")


TINY_CONFIG = {
    "version": 1, "name": "tiny", "seed": 0, "space": str(ROOT / "search_spaces" / "tiny.yaml"),
    "data": {"source": "synthetic", "train": 512, "val": 128, "workers": 1},
    "train": {"epochs": 1, "batch_size": 64, "warmup_steps": 2, "threads": 1,
              "eval_images": 64},
    "latency": {"validate_samples": 5, "rounds": 2, "workers": 2},
    "search": {"strategy": "evolution", "evals": 16, "batch": 4, "budgets_ms": [],
               "recal_images": 128, "val_images": 128, "threads": 1},
    "finetune": {"epochs": 1, "lr": 0.001, "batch_size": 64, "warmup_steps": 2, "threads": 1},
}


@pytest.fixture
def tiny_config() -> dict:
    """A fresh copy of the tiny end-to-end config (about 25 s for a whole run)."""
    import copy

    return copy.deepcopy(TINY_CONFIG)
