"""The seed study, automated: the hand-designed nets a user would otherwise pick, trained
standalone on the same data with the same budget and timed end to end on the same device
as the searched subnets, so the Pareto plot says what the search buys over them.

A baseline is a fixed GazeNet: the run's stem and head, and a short stack of one block
family written in the space's own arch grammar (a one-arch "space"), so every block the
search uses is a block a baseline can use, and MACs, ONNX export and timing are shared.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nas.gaze.tasks import get_task
from nas.space import Arch, SearchSpace

# The seed study's net: 4 residual basic blocks; then the same net with its blocks swapped.
SEED_WIDTHS = (16, 32, 64, 128)
SEED_STRIDES = (1, 2, 2, 2)
# MobileNetV3-small's block list, sized for a 36x60 eye patch behind a stride-2 stem:
# (width, stride, ops of the stage).
MNV3_STAGES = ((16, 2, ("mb_k3_e1_se_re",)),
               (24, 2, ("mb_k3_e4_re", "mb_k3_e3_re")),
               (40, 2, ("mb_k5_e4_se_hs", "mb_k5_e6_se_hs", "mb_k5_e6_se_hs")),
               (48, 1, ("mb_k5_e3_se_hs", "mb_k5_e3_se_hs")),
               (96, 2, ("mb_k5_e6_se_hs", "mb_k5_e6_se_hs", "mb_k5_e6_se_hs")))
LR_SWEEP = (1e-4, 5e-4, 1e-3, 2e-3)  # the seed study's sweep for the Ghost baseline


@dataclass
class Baseline:
    name: str
    description: str
    stages: tuple[tuple[int, int, tuple[str, ...]], ...]  # (width, stride, layer tokens)
    lr: float | None = None  # None: the config's learning rate
    tags: dict = field(default_factory=dict)

    def space_and_arch(self, space: SearchSpace) -> tuple[SearchSpace, Arch]:
        """A one-arch space with `space`'s input, stem and head, and this stack of blocks."""
        raw = copy.deepcopy(space.raw)
        raw["name"] = f"baseline-{self.name}"
        raw["input"]["resolutions"] = [list(space.resolutions[0])]
        raw["stem"]["strides"] = [max(space.stem_strides)]
        raw["stages"] = [{"widths": [w], "depths": [len(ops)], "stride": s}
                         for w, s, ops in self.stages]
        blocks: dict[str, dict] = {}
        for _, _, ops in self.stages:
            for tok in ops:
                _merge_op(blocks, tok)
        raw["blocks"] = blocks
        bspace = SearchSpace.from_dict(raw, source=f"baseline {self.name}")
        h, w = space.resolutions[0]
        text = f"r{h}x{w}_t{max(space.stem_strides)}|" + "|".join(
            f"w{wd}:" + ",".join(ops) for wd, _, ops in self.stages)
        return bspace, bspace.parse(text)


def _merge_op(blocks: dict[str, dict], token: str) -> None:
    """Add one layer token's choices to a `blocks:` mapping (the YAML form)."""
    from nas.blocks import GENES, get_family
    from nas.space import LayerOp

    op = LayerOp.from_token(token)
    fam = blocks.setdefault(op.family, {})
    for gene in get_family(op.family).genes:
        vals = fam.setdefault(gene, [])
        value = getattr(op, GENES[gene].attr)
        if value not in vals:
            vals.append(value)


def seed_study(space: SearchSpace, lr_sweep: bool = True) -> list[Baseline]:
    """The residual net, its ShuffleNetV2 and Ghost (d in 1, 3, 5, 7) twins, a
    MobileNetV3-small-style net and, optionally, the seed's learning-rate sweep on Ghost."""
    def stack(tok: str) -> tuple:
        return tuple((w, s, (tok,)) for w, s in zip(SEED_WIDTHS, SEED_STRIDES))

    out = [Baseline("resnet4", "4 residual basic blocks (3x3), widths 16-128", stack("rb_k3")),
           Baseline("shufflenet4", "the same net with ShuffleNetV2 units (3x3)", stack("sh_k3"))]
    for d in (1, 3, 5, 7):
        out.append(Baseline(f"ghost4-d{d}", f"the same net with Ghost bottlenecks "
                            f"(expansion 3, cheap-op kernel d={d})", stack(f"gh_k{d}_e3"),
                            tags={"d": d}))
    out.append(Baseline("mobilenetv3s", "MobileNetV3-small-style, 11 blocks", MNV3_STAGES))
    if lr_sweep:
        for lr in LR_SWEEP:
            out.append(Baseline(f"ghost4-d3-lr{lr:g}", f"Ghost d=3, learning rate {lr:g}",
                                stack("gh_k3_e3"), lr=lr, tags={"d": 3, "lr": lr}))
    return out


def train_baseline(b: Baseline, space: SearchSpace, splits, schedule, seed: int,
                   val_images: int) -> dict:
    """Train one baseline from scratch; returns its row (error, params, MACs, weights)."""
    import dataclasses

    from nas.models import count_macs, count_params
    from nas.ranking import train_from_scratch

    bspace, arch = b.space_and_arch(space)
    sched = dataclasses.replace(schedule, lr=b.lr or schedule.lr)
    net, err = train_from_scratch(bspace, arch, splits, sched, seed, val_images)
    return {"name": b.name, "arch": b.description, "arch_string": arch.to_string(),
            "space": json.dumps(bspace.raw), "lr": sched.lr, **b.tags,
            get_task(space.task).error_key: round(err, 4), "params": count_params(net),
            "macs": count_macs(net, (1, space.in_channels, *arch.resolution)),
            "state_dict": {k: v.clone() for k, v in net.state_dict().items()}}


def rebuild(row: dict):
    """The trained baseline GazeNet from a stored row (space JSON, arch, weights)."""
    from nas.models import GazeNet

    bspace = SearchSpace.from_dict(json.loads(row["space"]), source=f"baseline {row['name']}")
    net = GazeNet(bspace, bspace.parse(row["arch_string"]))
    net.load_state_dict(row["state_dict"])
    return net.eval(), bspace


def dominators(baseline: dict, front: list[dict], err_key: str,
               lat_key: str = "latency_ms") -> list[dict]:
    """Searched subnets with lower error AND lower latency than `baseline`."""
    return [p for p in front if p[err_key] < baseline[err_key]
            and p[lat_key] < baseline[lat_key]]


def speedup_at_error(baseline: dict, front: list[dict], err_key: str,
                     lat_key: str = "latency_ms") -> float | None:
    """How much faster the fastest searched subnet at least as accurate as `baseline` is."""
    ok = [p[lat_key] for p in front if p[err_key] <= baseline[err_key]]
    return baseline[lat_key] / min(ok) if ok else None


def _baseline_job(space_raw: dict, name: str, lr_sweep: bool, data: dict, seed: int,
                  sched: dict, val_images: int) -> dict:
    """One baseline trained in a worker process (data read from the shared cache)."""
    from nas.gaze.data import splits_from
    from nas.train import StandaloneConfig

    space = SearchSpace.from_dict(space_raw, source="run space")
    b = {x.name: x for x in seed_study(space, lr_sweep)}[name]
    splits = splits_from(data, seed, "config", lambda _m: None)
    return train_baseline(b, space, splits, StandaloneConfig(**sched), seed, val_images)


def run_baselines(space: SearchSpace, data: dict, splits, schedule, seed: int,
                  val_images: int, out_dir: str | Path, *, lr_sweep: bool = True,
                  workers: int = 2, log: Callable[[str], None] = print) -> list[dict]:
    """Train (or reuse) every seed-study baseline; each is saved to `out_dir/<name>.pt` as
    soon as it is done, so an interrupted stage resumes with the rest."""
    import dataclasses
    import time

    from nas.io import atomic_torch_save, json_hash
    from nas.parallel import map_spawned
    from nas.train import load_checkpoint

    out_dir = Path(out_dir)
    task = get_task(space.task)
    sched = dataclasses.asdict(schedule)
    todo, rows = [], {}
    plan = seed_study(space, lr_sweep)
    for b in plan:
        fp = json_hash([space.space_hash(), b.name, b.stages, b.lr, sched, seed,
                        splits.fingerprint, val_images])
        path = out_dir / f"{b.name}.pt"
        if path.exists():
            row = load_checkpoint(path)
            if row.get("fingerprint") == fp:
                rows[b.name] = row
                continue
        todo.append((b, fp))
    log(f"baselines: {len(plan)} nets, {len(todo)} to train ({schedule.epochs} epochs each, "
        f"{workers} worker(s))")
    t0, fps = time.time(), {b.name: fp for b, fp in todo}

    def keep(job: tuple, row: dict) -> None:
        row["fingerprint"] = fps[row["name"]]
        atomic_torch_save(out_dir / f"{row['name']}.pt", row)
        rows[row["name"]] = row
        n = sum(1 for b, _ in todo if b.name in rows)
        el = time.time() - t0
        log(f"baselines: {row['name']} {task.format(row[task.error_key])}, "
            f"{row['macs'] / 1e6:.2f} MMAC ({n}/{len(todo)}, "
            f"ETA {el / n * (len(todo) - n) / 60:.1f} min)")

    map_spawned(_baseline_job, [(space.raw, b.name, lr_sweep, data, seed, sched, val_images)
                                for b, _ in todo], workers, keep)
    return [rows[b.name] for b in plan]


def time_end_to_end(nets: dict[str, tuple], rounds: int = 5) -> dict[str, float]:
    """p50 latency (ms) of whole nets {name: (module, input_shape)} with the LUT's
    onnxruntime protocol, all interleaved in one timing run so they compare fairly."""
    from nas.export import onnx_bytes
    from nas.latency.runtime import make_feed, make_session, measure

    sessions = {}
    for name, (net, shape) in nets.items():
        sess = make_session(onnx_bytes(net.eval(), shape, dynamic_batch=False))
        sessions[name] = (sess, make_feed(sess))
    return {k: v["p50_ms"] for k, v in measure(sessions, rounds=rounds).items()}


def _front_job(space_raw: dict, arch_string: str, data: dict, seed: int, sched: dict,
               val_images: int) -> dict:
    """One searched arch trained from scratch in a worker process, as the baselines are."""
    from nas.gaze.data import splits_from
    from nas.ranking import scratch_error
    from nas.train import StandaloneConfig

    space = SearchSpace.from_dict(space_raw, source="run space")
    splits = splits_from(data, seed, "config", lambda _m: None)
    return scratch_error(space, space.parse(arch_string), splits, StandaloneConfig(**sched),
                         seed, val_images)


def train_front(space: SearchSpace, archs: list[Arch], data: dict, splits, schedule,
                seed: int, val_images: int, cache_path: str | Path, *, workers: int = 2,
                log: Callable[[str], None] = print) -> dict[str, float]:
    """From-scratch error of each searched arch with the baselines' schedule, so searched and
    hand-designed nets are compared as architectures, at equal training (cached per arch)."""
    import dataclasses
    import time

    from nas.io import json_hash
    from nas.parallel import map_spawned
    from nas.ranking import ScratchCache

    task = get_task(space.task)
    sched = dataclasses.asdict(schedule)
    cache = ScratchCache(cache_path)
    keys = {a.arch_id: json_hash([a.to_string(), splits.fingerprint, sched, seed, val_images])
            for a in archs}
    todo = [a for a in archs if cache.get(keys[a.arch_id]) is None]
    log(f"baselines: training {len(todo)} of {len(archs)} searched front subnets from scratch "
        f"with the same schedule")
    t0, done = time.time(), [0]

    def keep(job: tuple, row: dict) -> None:
        row["key"] = keys[row["arch_id"]]
        cache.put(row)
        done[0] += 1
        el = time.time() - t0
        log(f"baselines: front {row['arch_id']} from scratch {task.format(row['scratch_error'])} "
            f"({done[0]}/{len(todo)}, ETA {el / done[0] * (len(todo) - done[0]) / 60:.1f} min)")

    map_spawned(_front_job, [(space.raw, a.to_string(), data, seed, sched, val_images)
                             for a in todo], workers, keep)
    return {a.arch_id: cache.get(keys[a.arch_id])["scratch_error"] for a in archs}
