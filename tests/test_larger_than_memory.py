"""Training on a dataset larger than the memory budget (issue 6): `gaze-nas train` on a
prepared cache of 40,000 eye patches (86 MB on disk) with `data.in_memory_mb: 1` must read
the training split batch by batch from the memory map, never whole. test_datasets shows a
large cache opens memory-mapped; this shows the train stage keeps it that way."""

import copy
import json
import math
import tracemalloc

import numpy as np
import yaml
from conftest import TINY_CONFIG
from test_datasets import _fake_cache  # tests/ is on sys.path

N, HW = 40_000, (36, 60)        # 40 subjects of 1,000 gray 36x60 patches: 86 MB of images
TRAIN, BATCH = 8_192, 128       # the training split alone is 17 MB, 17x the 1 MB budget


def _config(tmp_path, name: str, data_dir, train: int) -> str:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["name"] = name
    cfg["data"] = {"source": "cache", "path": str(data_dir), "train": train, "val": 0,
                   "in_memory_mb": 1}
    cfg["train"]["batch_size"] = BATCH
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_training_on_a_cache_larger_than_memory_reads_per_batch(tmp_path, monkeypatch,
                                                               capsys):
    from nas.cli import main
    from nas.gaze.datasets.dataset import _Take
    from nas.gaze.datasets.lazy import LazyArray
    from nas.train import load_checkpoint

    # A small run first, so the lazy imports of the train stage (torch and its optimizers:
    # tens of MB of code objects) are not counted as data below.
    _fake_cache(tmp_path / "small", 2_000, HW)
    assert main(["train", _config(tmp_path, "warm", tmp_path / "small", 256),
                 "--out", str(tmp_path / "warm")]) == 0
    capsys.readouterr()

    _fake_cache(tmp_path / "big", N, HW)
    reads = []  # rows per read from the memory map, through the subset's LazyArray
    real_take = _Take.__call__
    monkeypatch.setattr(_Take, "__call__", lambda self, j: reads.append(len(j))
                        or real_take(self, j))

    def whole(self, dtype=None, copy=None):
        raise AssertionError(f"{self!r} was read whole (np.asarray)")

    monkeypatch.setattr(LazyArray, "__array__", whole)
    out = tmp_path / "run"
    tracemalloc.start()  # numpy registers its buffers with tracemalloc; mmap pages are not
    try:
        base = tracemalloc.get_traced_memory()[0]
        rc = main(["train", _config(tmp_path, "big", tmp_path / "big", TRAIN),
                   "--out", str(out)])
        grown = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert rc == 0, err

    train_bytes = TRAIN * HW[0] * HW[1]
    assert "the training images (17 MB, over data.in_memory_mb 1) stay on disk and are " \
        "read per batch" in err
    assert "the validation images (2 MB, over data.in_memory_mb 1) stay on disk" in err
    assert f"{TRAIN} training and 1000 validation samples" in err
    assert max(reads) <= 256, reads  # a batch, or the 256 images of BN recalibration
    assert sum(reads) >= TRAIN // BATCH * BATCH  # every step read its batch from disk
    # Measured: 2.5-2.7 MiB whatever the split's size (batches, recalibration, the step's
    # Python objects); read whole, the split alone would add its 17 MB (21.5 MiB measured).
    assert grown < train_bytes / 2, \
        f"peak {grown / 2**20:.1f} MiB for {train_bytes / 2**20:.0f} MiB of training images"

    ck = load_checkpoint(out / "supernet.pt")
    history = json.loads(ck["history"])
    assert [h["epoch"] for h in history] == [1]
    assert all(math.isfinite(h[k]) for h in history
               for k in ("loss", "err_largest", "err_smallest"))
    assert np.isfinite(ck["throughput_img_s"]) and ck["throughput_img_s"] > 0
