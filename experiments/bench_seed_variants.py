"""How much room does the seed study's residual net leave? Cheaper variants, from scratch.

The baselines stage (`gaze-nas baselines`) found the 4-block residual net (resnet4) more
accurate and faster than every subnet the default space's search returned. Before asking a
search to be >= 2x faster at resnet4's error, this script measures whether such nets exist
near it: resnet4 with a lower input resolution, narrower stages, one family swapped in for
the late stages, the first stage downsampling (as the default space does), or inverted
residual (MBConv) blocks in its layout. Each net is
trained from scratch with the config's data and schedule (the baselines' protocol), then
all are timed end to end in one interleaved onnxruntime run.

    python experiments/bench_seed_variants.py [--config experiments/quickstart.yaml]
        [--only resnet4 resnet_w8 ...] [--out runs/bench_seed_variants]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.baselines import _merge_op, time_end_to_end  # noqa: E402
from nas.config import load_config  # noqa: E402
from nas.gaze.tasks import get_task  # noqa: E402
from nas.io import atomic_write_json  # noqa: E402
from nas.models import count_macs  # noqa: E402
from nas.pipeline import load_splits  # noqa: E402
from nas.ranking import train_from_scratch  # noqa: E402
from nas.space import Arch, SearchSpace  # noqa: E402
from nas.train import scratch_schedule  # noqa: E402

Stage = tuple[int, int, tuple[str, ...]]  # (width, stride, layer tokens)


def _stack(widths: tuple[int, ...], strides: tuple[int, ...], token: str) -> tuple[Stage, ...]:
    return tuple((w, s, (token,)) for w, s in zip(widths, strides))


SEED = (1, 2, 2, 2)
# name: (input resolution, stem stride, stages)
VARIANTS: dict[str, tuple[tuple[int, int], int, tuple[Stage, ...]]] = {
    "resnet4": ((36, 60), 2, _stack((16, 32, 64, 128), SEED, "rb_k3")),
    "resnet4@30x50": ((30, 50), 2, _stack((16, 32, 64, 128), SEED, "rb_k3")),
    "resnet4@24x40": ((24, 40), 2, _stack((16, 32, 64, 128), SEED, "rb_k3")),
    "resnet 16-24-48-96": ((36, 60), 2, _stack((16, 24, 48, 96), SEED, "rb_k3")),
    "resnet 16-32-48-64": ((36, 60), 2, _stack((16, 32, 48, 64), SEED, "rb_k3")),
    "resnet 16-24-48-96@30x50": ((30, 50), 2, _stack((16, 24, 48, 96), SEED, "rb_k3")),
    "resnet 8-16-32-64": ((36, 60), 2, _stack((8, 16, 32, 64), SEED, "rb_k3")),
    "resnet4, stride-2 first stage": ((36, 60), 2, _stack((16, 32, 64, 128), (2, 2, 2, 1),
                                                          "rb_k3")),
    "2 residual + 2 shuffle, to 128": ((36, 60), 2, ((16, 1, ("rb_k3",)), (32, 2, ("rb_k3",)),
                                                     (64, 2, ("sh_k3",)), (128, 2, ("sh_k3",)))),
    "2 residual + 2 shuffle, to 96": ((36, 60), 2, ((16, 1, ("rb_k3",)), (32, 2, ("rb_k3",)),
                                                    (64, 2, ("sh_k3",)), (96, 2, ("sh_k3",)))),
    # resnet4's layout (first stage at the stem's resolution) with inverted residuals: the
    # family every searched front is made of, where the default space cannot place it
    "mbconv k3 e3, resnet4's layout": ((36, 60), 2, _stack((16, 32, 64, 128), SEED,
                                                           "mb_k3_e3_hs")),
    "mbconv k5 e6, resnet4's layout": ((36, 60), 2, _stack((16, 32, 64, 128), SEED,
                                                           "mb_k5_e6_hs")),
}


def variant(space: SearchSpace, name: str) -> tuple[SearchSpace, Arch]:
    """A one-arch space with `space`'s stem and head and the variant's blocks."""
    res, stem_stride, stages = VARIANTS[name]
    raw = copy.deepcopy(space.raw)
    raw["name"] = "variant"
    raw["input"]["resolutions"] = [list(res)]
    raw["stem"]["strides"] = [stem_stride]
    raw["stages"] = [{"widths": [w], "depths": [len(ops)], "stride": s} for w, s, ops in stages]
    blocks: dict[str, dict] = {}
    for _, _, ops in stages:
        for tok in ops:
            _merge_op(blocks, tok)
    raw["blocks"] = blocks
    vspace = SearchSpace.from_dict(raw, source=f"variant {name}")
    text = f"r{res[0]}x{res[1]}_t{stem_stride}|" + "|".join(
        f"w{w}:" + ",".join(ops) for w, _, ops in stages)
    return vspace, vspace.parse(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_seed_variants")
    args = ap.parse_args()
    cfg = load_config(args.config)
    space = SearchSpace.load(cfg.space)
    task = get_task(space.task)
    key, unit = task.error_key, task.unit
    splits = load_splits(cfg, lambda _m: None)
    sched = scratch_schedule(cfg.train)
    val_images = cfg.search.val_images
    nets, rows = {}, {}
    for name in args.only:
        vspace, arch = variant(space, name)
        t0 = time.perf_counter()
        net, err = train_from_scratch(vspace, arch, splits, sched, args.seed, val_images)
        shape = (1, space.in_channels, *arch.resolution)
        nets[name] = (net, shape)
        rows[name] = {"arch": arch.to_string(), key: round(err, 3),
                      "macs": count_macs(net, shape),
                      "train_s": round(time.perf_counter() - t0, 1)}
        print(f"{name}: {task.format(err)}, {rows[name]['macs'] / 1e6:.2f} MMAC "
              f"({rows[name]['train_s']:.0f} s)", flush=True)
    lat = time_end_to_end(nets)
    ref = rows.get("resnet4")
    print(f"\n{'net':34s} {unit:>6s} {'ms':>7s} {'MMAC':>6s}"
          + ("  vs resnet4" if ref else ""))
    for name, row in rows.items():
        row["latency_ms"] = round(lat[name], 4)
        vs = ""
        if ref:
            vs = (f"  {row[key] - ref[key]:+.2f} {unit}, "
                  f"{lat['resnet4'] / lat[name]:.2f}x speed")
        print(f"{name:34s} {row[key]:6.2f} {row['latency_ms']:7.3f} "
              f"{row['macs'] / 1e6:6.2f}{vs}")
    atomic_write_json(Path(args.out) / "variants.json",
                      {"config": args.config, "seed": args.seed, "schedule": sched.__dict__,
                       "data": splits.fingerprint, "variants": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
