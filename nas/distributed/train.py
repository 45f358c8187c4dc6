"""Data-parallel supernet training with Ray Train (TorchTrainer, gloo, CPU workers).

Each of `workers` processes runs `nas.train.sandwich_step`, the single-process recipe's own
step, on its share of every batch: all workers draw the same subnets from the same
(seed, epoch, step) generator and see disjoint slices of the same global batch (and of each
random subnet's image slice), then their gradients are averaged over gloo before the AdamW
step. A global batch of `train.batch_size` images is therefore trained as in
`gaze-nas train`, with BatchNorm statistics per worker as in DDP (the search recalibrates
every subnet's BN anyway). We average gradients with one all-reduce of a flat buffer rather
than wrapping the net in `DistributedDataParallel`: a sandwich step runs several forward /
backward passes over different subnets, and a parameter no subnet of the step touched must
keep no gradient (so AdamW skips it, exactly as in single-process training).

The result is `supernet.pt` in the usual format, with the same training fingerprint as
`gaze-nas train` would give the same config (so `gaze-nas run` on the folder reuses it) and
`trainer: "ray-train"`, `workers: N` recorded. Rank 0 reports a checkpoint after every
epoch to Ray's storage (`<out>/train/ray`, or `ray.storage` on a cluster); the run is named
after the training fingerprint, so running the same command again resumes from the last
finished epoch.

    python -m nas.distributed.train experiments/quickstart.yaml --out runs/qs-ray --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from nas.distributed import RayConfig, ray_session
from nas.errors import UserError

STATE_FILE = "train_state.pt"


def _average_gradients(params: list, world: int) -> None:
    """Mean of every parameter's gradient over the workers, in one all-reduce. A parameter
    that has no gradient on any worker keeps none (AdamW then skips it, as in one process)."""
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flags = torch.tensor([float(p.grad is not None) for p in params])
    flat = torch.cat([g.reshape(-1) for g in grads] + [flags])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for p, g, used in zip(params, grads, flat[-len(params):].tolist()):
        n = p.numel()
        if used > 0:
            g.copy_(flat[offset:offset + n].view_as(g))
            p.grad = g
        else:
            p.grad = None
        offset += n


def _worker_loop(config: dict) -> None:
    """One Ray Train worker (module level, so Ray pickles it by reference)."""
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist

    from nas.gaze.data import Batches, splits_from
    from nas.space import SearchSpace
    from nas.supernet import Supernet
    from nas.train import TrainConfig, _quick_eval, begin_step, family_tops, sandwich_step

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if config.get("cache_dir"):
        os.environ["GAZE_NAS_CACHE"] = config["cache_dir"]
    torch.set_num_threads(config["threads"])
    space = SearchSpace.from_dict(config["space"], source=config["source"])
    cfg = TrainConfig(**config["train"])
    seed = config["seed"]
    splits = splits_from(config["data"], seed, config["source"], lambda _m: None)
    if splits.fingerprint != config["data_fingerprint"]:
        raise UserError(f"the data on this worker ({splits.fingerprint}) is not the "
                        f"driver's ({config['data_fingerprint']})", source=config["source"],
                        field="data")
    torch.manual_seed(seed)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = Supernet(space).to(memory_format=mf)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, history, imgs, secs = 0, [], 0, 0.0
    ck = ray.train.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            st = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        if st.get("fingerprint") == config["fingerprint"]:
            net.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            epoch, history = st["epoch"], json.loads(st["history"])
            imgs, secs = st["images"], st["seconds"]
    params = list(net.parameters())
    for t in params + list(net.buffers()):  # one start for all, whatever each rank loaded
        dist.broadcast(t.data, 0)

    train_x = Batches(splits.train_x, mf)  # read per batch: the set may not fit in memory
    train_y = torch.from_numpy(splits.train_y)
    n = len(train_x)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    local = cfg.batch_size // world
    part = cfg.random_subnet_images // world or local
    big = space.largest()
    smalls = ([space.smallest()] if cfg.smallest == "global"
              else [space.smallest(f) for f in space.blocks])
    tops = family_tops(space, big) if cfg.family_largest else [None]
    while epoch < cfg.epochs:
        t0 = time.time()
        perm = torch.from_numpy(np.random.default_rng([seed, epoch, 7]).permutation(n))
        net.train()
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            g, rng, idx = begin_step(cfg, opt, perm, seed, epoch, step, steps_per_epoch,
                                     total)
            idx = idx[rank * local:(rank + 1) * local]
            opt.zero_grad(set_to_none=True)
            loss_sum += sandwich_step(net, space, train_x[idx], train_y[idx], cfg, rng, big,
                                      smalls[g % len(smalls)], part=part,
                                      top=tops[g % len(tops)])
            _average_gradients(params, world)
            opt.step()
        loss = torch.tensor([loss_sum / max(steps_per_epoch, 1)])
        dist.all_reduce(loss)
        secs += time.time() - t0
        imgs += steps_per_epoch * cfg.batch_size
        rec = {"epoch": epoch + 1, "loss": loss.item() / world,
               "lr": opt.param_groups[0]["lr"], "elapsed_s": round(secs, 1),
               "workers": world}
        epoch += 1
        if rank == 0:
            rec.update(_quick_eval(net, space, splits, cfg))
        history.append(rec)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                state = {k: v.contiguous() for k, v in net.state_dict().items()}
                torch.save({"model": state, "optimizer": opt.state_dict(), "epoch": epoch,
                            "history": json.dumps(history), "images": imgs, "seconds": secs,
                            "fingerprint": config["fingerprint"]}, Path(tmp) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({k: v for k, v in rec.items() if isinstance(v, (int, float))},
                             checkpoint=checkpoint)


def train_supernet_ray(cfg, out_dir: str | Path, *, workers: int = 2,
                       ray: RayConfig | None = None, threads: int = 1, splits=None,
                       log: Callable[[str], Any] = print) -> Path:
    """Train the supernet of experiment config `cfg` on `workers` Ray Train workers
    (`threads` torch threads each) and write `out_dir/supernet.pt`; returns its path.
    A supernet.pt already made from the same inputs is reused. `splits`: the config's
    data, if the caller has loaded it already."""
    from nas.pipeline import load_splits
    from nas.space import SearchSpace
    from nas.train import load_checkpoint, supernet_record, train_fingerprint

    tc = cfg.train
    if workers < 1:
        raise UserError(f"expected an integer >= 1, got {workers!r}", field="--workers")
    for name, v in (("train.batch_size", tc.batch_size),
                    ("train.random_subnet_images", tc.random_subnet_images)):
        if v % workers:
            raise UserError(f"{v} does not split evenly over {workers} workers (each takes "
                            "an equal share of every batch); give a multiple of the worker "
                            "count", source=cfg.source, field=name)
    out = Path(out_dir)
    space = SearchSpace.load(cfg.space)
    if splits is None:
        splits = load_splits(cfg, log)  # rendered once here, so local workers only load it
    fingerprint = train_fingerprint(space, splits, tc, cfg.seed)
    path = out / "supernet.pt"
    if path.exists() and load_checkpoint(path).get("fingerprint") == fingerprint:
        log(f"train: {path} was made from the same inputs; reused")
        return path
    storage = (ray.storage if ray and ray.storage else None) or str((out / "train" / "ray")
                                                                     .resolve())
    loop_config = {"space": space.raw, "source": str(cfg.source), "train": asdict(tc),
                   "seed": cfg.seed, "data": asdict(cfg.data),
                   "data_fingerprint": splits.fingerprint, "fingerprint": fingerprint,
                   "threads": threads, "cache_dir": os.environ.get("GAZE_NAS_CACHE")}
    t0 = time.time()
    with ray_session(ray, num_cpus=workers, log=log, what="Ray Train"):
        import torch
        from ray.train import CheckpointConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        trainer = TorchTrainer(
            _worker_loop, train_loop_config=loop_config,
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                         resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=f"supernet-{fingerprint[:16]}", storage_path=storage,
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)))
        log(f"train: Ray Train, {workers} workers, {tc.epochs} epochs of "
            f"{len(splits.train_x) // tc.batch_size} steps (checkpoints in {storage})")
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train finished without a checkpoint ({result.error})")
        with result.checkpoint.as_directory() as d:
            st = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    from nas.io import atomic_torch_save, atomic_write_text

    history = json.loads(st["history"])
    atomic_write_text(out / "train" / "log.jsonl",
                      "".join(json.dumps(r) + "\n" for r in history))
    atomic_torch_save(path, supernet_record(
        space, st["model"], tc, cfg.seed, splits.fingerprint, fingerprint, history,
        st["images"] / st["seconds"] if st["seconds"] else 0.0,
        trainer="ray-train", workers=workers))
    last = history[-1] if history else {}
    log(f"train: Ray Train done in {time.time() - t0:.1f} s: {path} (val error largest "
        f"{last.get('err_largest', float('nan')):.2f} deg, smallest "
        f"{last.get('err_smallest', float('nan')):.2f} deg)")
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m nas.distributed.train CONFIG --out DIR --workers N [--address A]`."""
    from nas.cli import log
    from nas.config import load_config
    from nas.io import atomic_write_json
    from nas.rundir import RunLock

    p = argparse.ArgumentParser(prog="python -m nas.distributed.train",
                                description="Train a config's supernet with Ray Train "
                                "(data-parallel over gloo); then `gaze-nas run CONFIG --out "
                                "DIR` reuses it for the other stages.")
    p.add_argument("config")
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (1 CPU each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--address", help="a Ray cluster to join (default: a private local Ray)")
    p.add_argument("--storage", help="checkpoint storage every node sees (cluster runs)")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
        out = Path(a.out or Path("runs") / cfg.name)
        ray_cfg = RayConfig(**{**asdict(getattr(cfg, "ray", None) or RayConfig()),
                               **({"address": a.address} if a.address else {}),
                               **({"storage": a.storage} if a.storage else {})})
        with RunLock(out):
            atomic_write_json(out / "run_config.json", cfg.to_dict())
            path = train_supernet_ray(cfg, out, workers=a.workers, ray=ray_cfg,
                                      threads=a.threads, log=log)
    except UserError as exc:
        print(f"gaze-nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gaze-nas: interrupted; run the same command to resume from the last epoch",
              file=sys.stderr)
        return 130
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
