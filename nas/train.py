"""Train the supernet once: sandwich rule + in-place distillation, resumable to the step.

Every step's randomness (batch order, sampled subnets, dropout) is derived from
(seed, epoch, step), so a run resumed from any checkpoint continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from nas import __version__
from nas.errors import UserError
from nas.evaluation import gaze_error, predict, recalibrate_bn
from nas.gaze.data import Batches, GazeSplits, first_rows, n_rows, to_input
from nas.gaze.tasks import get_task
from nas.io import atomic_torch_save, json_hash, load_torch_dict, package_versions
from nas.models import NetInput, fit_input, input_len, move_input, take_rows
from nas.space import Arch, SearchSpace
from nas.supernet import Supernet, build_supernet

SUPERNET_FORMAT = "gaze-nas-supernet/1"
SAMPLINGS = ("uniform", "single_family", "mixed", "stage")
SMALLEST = ("global", "per_family")
DEVICES = ("cpu", "cuda")


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    random_subnets: int = 2          # sandwich: largest + smallest + this many random
    random_subnet_images: int = 0    # images of the batch each random subnet sees (0: all):
                                     # more subnets per step at the same compute
    sampling: str = "single_family"  # how random subnets are drawn: one of SAMPLINGS
    layer_pool: str = "op"           # per-layer draws (`uniform`, and `mixed`'s third):
                                     # `op` any op alike, `family` a family first
    kd_weight: float = 0.5           # child loss = kd * L1(child, teacher) + (1-kd) * L1(child, y)
    feature_kd: float = 0.0          # + this * stage-output distillation from the largest subnet
    smallest: str = "global"         # sandwich's small end: `global` (the space's cheapest
                                     # arch every step) or `per_family` (each family's
                                     # cheapest in turn, so every family is trained every
                                     # few steps on a full batch)
    family_largest: bool = False     # one more full-batch student per step: the largest
                                     # subnet of each other family in turn, so families
                                     # beside the teacher's train their widest weights too
    channels_last: bool = True       # 1.5-2x faster on this CPU (measured)
    threads: int = 2
    checkpoint_every_s: float = 120.0
    eval_images: int = 500           # per-epoch check of largest/smallest on val
    device: str = "cpu"              # `cuda`: train on the GPU (same recipe; not hashed, so a
                                     # run moved between devices resumes; recorded in supernet.pt)


# fields added after supernets were trained: at their default they stay out of the
# fingerprint, so those supernets (trained that way) are still recognised and resumed
_UNHASHED_DEFAULTS = {"layer_pool": "op", "family_largest": False}


def train_fingerprint(space: SearchSpace, splits: GazeSplits, cfg: TrainConfig, seed: int) -> str:
    """What a trained supernet depends on; a checkpoint made from other inputs is not reused."""
    recipe = {k: v for k, v in asdict(cfg).items()
              if k != "device" and not (k in _UNHASHED_DEFAULTS and v == _UNHASHED_DEFAULTS[k])}
    return json_hash({"space": space.space_hash(), "data": splits.fingerprint,
                      "cfg": recipe, "seed": seed, "version": SUPERNET_FORMAT})


def train_device(cfg: TrainConfig) -> torch.device:
    """The torch device `cfg.device` names, refused in one line where torch cannot use it."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"expected cpu: this torch ({torch.__version__}) sees no CUDA device, "
                        "got cuda", field="train.device")
    return torch.device(cfg.device)


_SAMPLING_MIX = {"uniform": ("layer",), "single_family": ("none",), "stage": ("stage",),
                 "mixed": ("none", "stage", "layer")}


def _sample_subnet(space: SearchSpace, rng: np.random.Generator, cfg: TrainConfig,
                   k: int):
    """The k-th random subnet of a step, drawn as `cfg.sampling` says: `uniform` (any op at
    any layer), `single_family` (one family per subnet), `stage` (one family per stage) or
    `mixed` (cycling through the three)."""
    mixes = _SAMPLING_MIX[cfg.sampling]
    return space.sample(rng, family_mix=mixes[k % len(mixes)], layer_pool=cfg.layer_pool)


def feature_distillation(child: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over stages of the child's stage output vs the teacher's (its leading channels,
    pooled to the child's size), each normalised by the teacher's energy. Pulling every
    block family towards the same stage outputs is what lets a subnet mix families."""
    loss = child[0].new_zeros(())
    for c, t in zip(child, teacher):
        t = t[:, :c.shape[1]]
        if t.shape[-2:] != c.shape[-2:]:
            t = F.adaptive_avg_pool2d(t, c.shape[-2:])
        loss = loss + (c - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-6)
    return loss / len(child)


def sandwich_step(net: Supernet, space: SearchSpace, x: NetInput, y: torch.Tensor,
                  cfg: TrainConfig, rng: np.random.Generator, big, small,
                  part: int | None = None, top: Arch | None = None) -> float:
    """Forward and backward of one sandwich step on the batch (x, y); gradients accumulate
    in `net` (the caller zeroes them and steps the optimizer). The largest subnet learns
    the labels; the small end (`small`) and `cfg.random_subnets` random subnets drawn from
    `rng` learn its outputs (and stage outputs with `cfg.feature_kd`), each random one on
    its own `part` images of the batch (default `cfg.random_subnet_images`, 0: all);
    `top` (another family's largest subnet) joins them on the whole batch.
    The supernet's `teacher_only_parameters()` (a fusion head shared whole by all subnets)
    keep the largest subnet's gradient only. Returns the largest subnet's loss."""
    feat = cfg.feature_kd > 0
    teacher, t_feats = net(x, big, return_features=True)
    loss = F.l1_loss(teacher, y)
    loss.backward()
    kept = [(p, None if p.grad is None else p.grad.clone())
            for p in net.teacher_only_parameters()]
    target = teacher.detach()
    t_feats = [f.detach() for f in t_feats]
    n = input_len(x)
    part = (cfg.random_subnet_images if part is None else part) or n
    children = [(small, slice(None))] + ([(top, slice(None))] if top is not None else [])
    for k in range(cfg.random_subnets):
        lo = (k * part) % n
        children.append((_sample_subnet(space, rng, cfg, k), slice(lo, lo + part)))
    for arch, rows in children:
        out, feats = net(take_rows(x, rows), arch, return_features=True)
        child = cfg.kd_weight * F.l1_loss(out, target[rows])
        if cfg.kd_weight < 1:
            child = child + (1 - cfg.kd_weight) * F.l1_loss(out, y[rows])
        if feat:
            child = child + cfg.feature_kd * feature_distillation(
                feats, [f[rows] for f in t_feats])
        child.backward()
    for p, g in kept:
        p.grad = g
    return loss.item()


def family_tops(space: SearchSpace, big: Arch) -> list[Arch]:
    """The largest subnet of every family but the teacher's (`big`), or `[None]` when the
    space has one family."""
    teacher = {o.family for st in big.active_ops() for o in st}
    tops = [space.largest(f) for f in space.blocks if f not in teacher]
    return tops or [None]


def _step_seed(seed: int, epoch: int, step: int) -> list[int]:
    return [seed, epoch, step]


def begin_step(cfg: TrainConfig, opt: torch.optim.Optimizer, perm: torch.Tensor, seed: int,
               epoch: int, step: int, steps_per_epoch: int, total: int
               ) -> tuple[int, np.random.Generator, torch.Tensor]:
    """Set the step's learning rate and seeds; (global step, the step's generator, the
    batch's indices). Every trainer (here, Ray Train) starts a step with this, so they
    draw the same subnets and batches and a 1-worker run matches exactly."""
    g = epoch * steps_per_epoch + step
    for group in opt.param_groups:
        group["lr"] = _lr_at(cfg, g, total)
    rng = np.random.default_rng(_step_seed(seed, epoch, step))
    torch.manual_seed(int(rng.integers(2**31)))
    return g, rng, perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@contextmanager
def deferred_interrupt() -> Iterator[dict]:
    """Turn the first Ctrl-C into a flag checked at step boundaries, so a checkpoint never
    holds a half-done step (BN statistics already updated by its forward pass); a second
    Ctrl-C interrupts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def load_checkpoint(path: Path) -> dict:
    """A torch file of ours as a dict (a torn, corrupt or foreign file: one-line error)."""
    return load_torch_dict(path)


def train_supernet(space: SearchSpace, splits: GazeSplits, cfg: TrainConfig, seed: int,
                   out_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Train (or resume training) and write `out_dir/supernet.pt`; returns its path."""
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "train" / "checkpoint.pt"
    log_path = out_dir / "train" / "log.jsonl"
    torch.set_num_threads(cfg.threads)
    splits = splits.for_space(space)  # named inputs where the space takes a head pose
    fingerprint = train_fingerprint(space, splits, cfg, seed)
    dev = train_device(cfg)
    torch.manual_seed(seed)
    net = build_supernet(space)
    net.set_output_stats(splits.train_y)  # a resumed checkpoint brings its own
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(device=dev, memory_format=mf)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = n_rows(splits.train_x)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    epoch, step, history = 0, 0, []
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        if ck.get("fingerprint") != fingerprint:
            stale = ckpt_path.with_suffix(f".stale-{int(time.time())}.pt")
            ckpt_path.rename(stale)
            log(f"train: checkpoint was made with other inputs; kept it as {stale.name}, "
                "starting over")
        else:
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            epoch, step, history = ck["epoch"], ck["step"], json.loads(ck["history"])
            log(f"train: resuming at epoch {epoch + 1} step {step}/{steps_per_epoch}")

    def save_ckpt(e: int, s: int) -> None:
        # on CPU whatever the training device, so any machine can resume or load it
        atomic_torch_save(ckpt_path, {"model": to_cpu(net.state_dict()),
                                      "optimizer": to_cpu(opt.state_dict()),
                                      "epoch": e, "step": s, "fingerprint": fingerprint,
                                      "history": json.dumps(history)})

    train_x = Batches(splits.train_x, mf, space=space)  # read per batch: may not fit in memory
    train_y = torch.from_numpy(splits.train_y)
    big = space.largest()
    smalls = ([space.smallest()] if cfg.smallest == "global"
              else [space.smallest(f) for f in space.blocks])
    tops = family_tops(space, big) if cfg.family_largest else [None]
    t_start, last_log, last_ckpt, done_imgs = time.time(), time.time(), time.time(), 0
    steps_done_at_start = epoch * steps_per_epoch + step
    with deferred_interrupt() as interrupt:
        try:
            while epoch < cfg.epochs:
                perm = torch.from_numpy(np.random.default_rng([seed, epoch, 7]).permutation(n))
                net.train()
                loss_sum, loss_n = 0.0, 0
                while step < steps_per_epoch:
                    g, rng, idx = begin_step(cfg, opt, perm, seed, epoch, step,
                                             steps_per_epoch, total)
                    x, y = move_input(train_x[idx], dev), train_y[idx].to(dev)
                    opt.zero_grad(set_to_none=True)
                    loss = sandwich_step(net, space, x, y, cfg, rng, big, smalls[g % len(smalls)],
                                         top=tops[g % len(tops)])
                    loss_sum, loss_n = loss_sum + loss, loss_n + 1
                    opt.step()
                    step += 1
                    done_imgs += len(idx)
                    now = time.time()
                    if now - last_log > 10:
                        rate = done_imgs / (now - t_start)
                        left = (total - g - 1) * cfg.batch_size / max(rate, 1e-9)
                        log(f"train: epoch {epoch + 1}/{cfg.epochs} step {step}/{steps_per_epoch} "
                            f"loss {loss_sum / loss_n:.4f} {rate:.0f} img/s ETA {left / 60:.1f} min")
                        last_log = now
                    if interrupt["stop"]:
                        raise KeyboardInterrupt
                    if now - last_ckpt > cfg.checkpoint_every_s:
                        save_ckpt(epoch, step)
                        last_ckpt = now
                rec = {"epoch": epoch + 1, "loss": loss_sum / max(loss_n, 1),
                       "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t_start, 1)}
                rec.update(_quick_eval(net if dev.type == "cpu" else _cpu_copy(net),
                                       space, splits, cfg))
                history.append(rec)
                unit = get_task(space.task).unit
                log(f"train: epoch {epoch + 1}/{cfg.epochs} done: loss {rec['loss']:.4f}, val error "
                    f"largest {rec['err_largest']:.2f} {unit}, smallest {rec['err_smallest']:.2f} "
                    f"{unit}")
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                epoch, step = epoch + 1, 0
                save_ckpt(epoch, step)
                last_ckpt = time.time()
        except KeyboardInterrupt:
            save_ckpt(epoch, step)
            log(f"train: interrupted; checkpoint at epoch {epoch + 1} step {step} "
                f"({ckpt_path}); run the same command again to resume")
            raise
    elapsed = time.time() - t_start
    steps_run = total - steps_done_at_start
    out = out_dir / "supernet.pt"
    state = to_cpu(net.to(memory_format=torch.contiguous_format).state_dict())
    atomic_torch_save(out, supernet_record(
        space, state, cfg, seed, splits.fingerprint, fingerprint, history,
        (steps_run * cfg.batch_size / elapsed) if steps_run else 0.0, device=str(dev)))
    return out


def to_cpu(obj: Any) -> Any:
    """`obj` (a state dict, nested) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _cpu_copy(net: Supernet) -> Supernet:
    """A CPU copy for the per-epoch check (its BN recalibration must not touch `net`)."""
    return copy.deepcopy(net).cpu()


def supernet_record(space: SearchSpace, state: dict, cfg: TrainConfig, seed: int, data: str,
                    fingerprint: str, history: list, throughput_img_s: float, **extra) -> dict:
    """What `supernet.pt` holds (format SUPERNET_FORMAT), however it was trained; `extra`
    adds fields (e.g. Ray Train's worker count)."""
    return {
        "format": SUPERNET_FORMAT, "space": json.dumps(space.raw), "space_hash": space.space_hash(),
        "state_dict": state, "weights_hash": weights_hash(state),
        "train_config": json.dumps(asdict(cfg)), "seed": seed, "data": data,
        "fingerprint": fingerprint,
        "history": json.dumps(history), "tool_version": __version__,
        "versions": json.dumps(package_versions()), "throughput_img_s": throughput_img_s,
        **extra}


@torch.no_grad()
def _quick_eval(net: Supernet, space: SearchSpace, splits: GazeSplits, cfg: TrainConfig) -> dict:
    """Largest and smallest subnet error on a val slice (after BN recalibration)."""
    out = {}
    kinds = space.input_kinds()
    val_x = to_input(first_rows(splits.val_x, cfg.eval_images), kinds)
    recal = to_input(first_rows(splits.train_x, 256), kinds)
    for name, arch in (("err_largest", space.largest()), ("err_smallest", space.smallest())):
        sub = net.extract(arch)
        recalibrate_bn(sub, fit_input(space, recal, arch.resolution))
        pred = predict(sub, fit_input(space, val_x, arch.resolution))
        out[name] = gaze_error(pred, splits.val_y[:cfg.eval_images], space.task)
    net.train()
    return out


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of a model's weights (names, dtypes, shapes, bytes). Stages downstream of
    training are keyed on it, not on the checkpoint file's bytes, which also carry timings."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def supernet_id(path: str | Path) -> str:
    """The weights hash stored in `supernet.pt` (computed for files that predate it)."""
    ck = load_checkpoint(Path(path))
    return ck.get("weights_hash") or weights_hash(ck["state_dict"])


def load_supernet(path: str | Path) -> tuple[Supernet, dict]:
    """Supernet + its training metadata from `supernet.pt` (weights_only load)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("supernet checkpoint not found (run `gaze-nas train` first)",
                        source=str(path))
    ck = load_torch_dict(path, "supernet", SUPERNET_FORMAT, ("space", "state_dict"))
    space = SearchSpace.from_dict(json.loads(ck["space"]), source=f"{path}:space")
    net = build_supernet(space)
    try:
        net.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"weights do not fit the stored space ({str(exc).splitlines()[0]})",
                        source=str(path), field="state_dict") from None
    bad = [k for k, v in ck["state_dict"].items() if v.is_floating_point()
           and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"non-finite weights in {len(bad)} tensors (e.g. {bad[0]})",
                        source=str(path), field="state_dict")
    net.eval()
    meta = {k: v for k, v in ck.items() if k != "state_dict"}
    return net, meta


@dataclass
class StandaloneConfig:
    """Schedule for training one static net (from scratch, or fine-tuning inherited weights).

    The defaults mirror the supernet's schedule so a from-scratch net and a subnet of the
    supernet have seen the same data for the same number of epochs (ranking benchmark)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    channels_last: bool = True
    threads: int = 1


def scratch_schedule(cfg: TrainConfig) -> StandaloneConfig:
    """The supernet's own schedule for one static net: same epochs, batch, lr, warmup."""
    return StandaloneConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                            weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                            channels_last=cfg.channels_last, threads=1)


def train_standalone(net: torch.nn.Module, splits: GazeSplits, cfg: StandaloneConfig,
                     seed: int, resolution: tuple[int, int] | None = None,
                     teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     kd_weight: float = 0.0, log: Callable[[str], None] | None = None,
                     on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
                     space: SearchSpace | None = None) -> torch.nn.Module:
    """Train `net` in place with AdamW + warmup + cosine and an L1 loss on (pitch, yaw);
    with `teacher` (called on the unresized batch), the loss mixes in L1 to the teacher's
    outputs (`kd_weight`). `on_epoch(epoch, net)` is called after each epoch (e.g. to
    report a validation error to Ray Tune); it may put `net` in eval mode. `space`: needed
    for named inputs (their kinds and sizes at `resolution`)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    splits = splits.for_space(space) if space is not None else splits
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(memory_format=mf)
    x_all = Batches(splits.train_x, mf, resolution, space)  # read per batch
    y_all = torch.from_numpy(splits.train_y)
    n = len(x_all)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"batch_size {cfg.batch_size} exceeds the {n} training images",
                        field="batch_size")
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = TrainConfig(lr=cfg.lr, warmup_steps=cfg.warmup_steps)
    t0 = last = time.time()
    for epoch in range(cfg.epochs):
        perm = torch.from_numpy(np.random.default_rng([seed, epoch, 11]).permutation(n))
        net.train()
        for step in range(steps_per_epoch):
            g = epoch * steps_per_epoch + step
            for group in opt.param_groups:
                group["lr"] = _lr_at(sched, g, total)
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            out = net(x)
            loss = F.l1_loss(out, y)
            if teacher is not None and kd_weight > 0:
                with torch.no_grad():
                    t = teacher(x_all.raw(idx))  # the teacher resizes to its own resolution
                loss = (1 - kd_weight) * loss + kd_weight * F.l1_loss(out, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log is not None and time.time() - last > 10:
                last = time.time()
                rate = (g + 1) / (last - t0)
                log(f"standalone: epoch {epoch + 1}/{cfg.epochs} step {step + 1}/"
                    f"{steps_per_epoch} loss {loss.item():.4f} ETA {(total - g - 1) / rate:.0f} s")
        if on_epoch is not None:
            on_epoch(epoch, net)
    net.eval()
    return net.to(memory_format=torch.contiguous_format)
