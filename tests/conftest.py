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
