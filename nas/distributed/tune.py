"""Fine-tune a run's exported subnets with Ray Tune: learning rate, epochs and distillation
weight per subnet, with ASHA early stopping (the seed study's learning-rate sweep, done
properly).

Each trial is `nas.finetune.finetune_subnet` (the same code as `gaze-nas finetune`: the
subnet's inherited weights, BN recalibrated, trained standalone by `train_standalone`, AdamW
+ warmup + cosine, optionally distilled from the largest subnet) with the trial's `lr`,
`epochs` and `kd_weight`; it reports the validation error of every epoch to Tune (the run's
search validation images, so errors compare with the inherited ones), and ASHA stops the
trials that trail at 1, 2, 4, ... epochs. Each trial process rebuilds the run's evaluator
once from an `EvaluatorSpec` (one torch thread) and the supernet's bytes, shipped through
Ray's object store. The pick is the finished trial (one that ran all its epochs) with the
lowest final error; its weights are saved as a fine-tuned subnet and exported (model.onnx,
model.pt, card.json with the chosen settings).

Random configurations are drawn from the run's seed, and each training is seeded, so a
trial's error is reproducible; which trials ASHA stops depends on the order in which their
results arrive, so two runs with several workers can stop different trials. ASHA compares
trials at equal epochs, so a trial with fewer epochs (its cosine schedule already decayed)
looks better early than a longer one at the same point; the chosen epochs lean short.

    python -m nas.distributed.tune --run runs/quickstart --samples 8 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from nas.distributed import RayConfig, ray_session, supernet_blob
from nas.errors import UserError

SUBNET_FILE = "subnet.pt"


@dataclass
class TuneSettings:
    """What Tune searches per subnet, and how."""

    samples: int = 8                   # trials per subnet
    lr_min: float = 1e-4               # learning rate: log-uniform in [lr_min, lr_max]
    lr_max: float = 1e-2
    max_epochs: int = 4                # epochs: one of 1..max_epochs (ASHA's max_t)
    kd_weights: tuple = (0.0, 0.25, 0.5)   # distillation weight: one of these
    reduction_factor: int = 2          # ASHA: keep the best 1/rf at each rung
    grace_period: int = 1              # ASHA: epochs before a trial may be stopped

    def check(self) -> None:
        if self.samples < 1:
            raise UserError(f"expected an integer >= 1, got {self.samples!r}", field="--samples")
        if not 0 < self.lr_min <= self.lr_max:
            raise UserError(f"expected 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}",
                            field="--lr")
        if self.max_epochs < 1:
            raise UserError(f"expected an integer >= 1, got {self.max_epochs!r}",
                            field="--max-epochs")
        if not self.kd_weights or not all(0 <= k <= 1 for k in self.kd_weights):
            raise UserError(f"expected weights in [0, 1], got {list(self.kd_weights)}",
                            field="--kd")


def _trial(config: dict, spec=None, blob: bytes | None = None, arch_text: str = "",
           base: dict | None = None, seed: int = 0) -> None:
    """One Tune trial: fine-tune `arch_text` with the trial's settings, reporting every
    epoch's validation error; the last epoch also reports the weights as a checkpoint."""
    import torch
    from ray import tune

    from nas.distributed import local_spec
    from nas.finetune import FinetuneConfig, finetune_subnet
    from nas.pipeline import evaluator_from_spec

    torch.set_num_threads(spec.threads)
    with tempfile.TemporaryDirectory() as tmp:  # the supernet, from the object store
        ev, splits = evaluator_from_spec(local_spec(spec, blob, tmp))
    arch = ev.space.parse(arch_text)
    ft = FinetuneConfig(**{**(base or {}), "lr": float(config["lr"]),
                           "epochs": int(config["epochs"]),
                           "kd_weight": float(config["kd_weight"]), "threads": spec.threads})

    def on_epoch(epoch: int, net: torch.nn.Module) -> None:
        err = ev.error_of(net, arch)
        metrics = {ev.task.error_key: err, "epoch": epoch + 1}
        if epoch + 1 < ft.epochs:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"state_dict": {k: v.contiguous() for k, v in net.state_dict().items()},
                        ev.task.error_key: err, "finetune": asdict(ft)},
                       Path(tmp) / SUBNET_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    with tempfile.TemporaryDirectory() as work:
        finetune_subnet(ev, arch, splits, ft, seed, work, ev.cache_tag, log=lambda _m: None,
                        on_epoch=on_epoch)


def _trial_rows(grid, err_key: str) -> list[dict]:
    """One row per Tune trial: its settings and last reported error (`err_key`)."""
    rows = []
    for r in grid:
        if r.error is not None and not r.metrics:
            rows.append({"config": r.config, "error": str(r.error)[:200]})
            continue
        cfg = r.config
        epochs_run = int((r.metrics or {}).get("epoch", 0))
        rows.append({"lr": float(cfg["lr"]), "epochs": int(cfg["epochs"]),
                     "kd_weight": float(cfg["kd_weight"]), "epochs_run": epochs_run,
                     err_key: round(float(r.metrics[err_key]), 5),
                     "stopped_early": epochs_run < int(cfg["epochs"]),
                     "_checkpoint": r.checkpoint})
    return rows


def tune_finetune(run_dir: str | Path, archs: Sequence[str] = (), *,
                  out_dir: str | Path | None = None, settings: TuneSettings | None = None,
                  workers: int = 2, ray: RayConfig | None = None, export: bool = True,
                  log: Callable[[str], Any] = print) -> list[dict]:
    """Tune the fine-tuning of each subnet of `run_dir` named in `archs` (arch_ids from the
    run, or canonical strings; default: every subnet in `run_dir/export/`) with
    `settings.samples` trials on `workers` Ray workers, ASHA stopping the trailing ones.
    Writes `out_dir` (default `run_dir/finetune-tune`): `summary.json`, the chosen
    weights `<arch_id>.pt` and, with `export`, `<arch_id>/` (model.onnx, model.pt,
    card.json). Returns one record per subnet with the chosen `lr`, `epochs`, `kd_weight`."""
    from nas.config import config_from_dict
    from nas.io import atomic_torch_save, atomic_write_json, json_hash
    from nas.pipeline import build_evaluator, evaluator_spec, find_arch, splits_from
    from nas.space import SearchSpace
    from nas.train import load_checkpoint

    settings = settings or TuneSettings()
    settings.check()
    run_dir = Path(run_dir)
    sup = run_dir / "supernet.pt"
    if not sup.is_file() or not (run_dir / "run_config.json").is_file():
        raise UserError("expected a run folder with supernet.pt and run_config.json",
                        source=str(run_dir), field="--run")
    cfg = config_from_dict(json.loads((run_dir / "run_config.json").read_text()),
                           str(run_dir / "run_config.json"))
    meta = load_checkpoint(sup)
    space = SearchSpace.from_dict(json.loads(meta["space"]), source=f"{sup}:space")
    if not archs:
        archs = sorted(p.parent.name for p in (run_dir / "export").glob("*/card.json"))
        if not archs:
            raise UserError("no exported subnets here (run `gaze-nas run` first, or name "
                            "subnets with --arch)", source=str(run_dir / "export"))
    targets = [find_arch(run_dir, space, a) for a in archs]
    out = Path(out_dir) if out_dir else run_dir / "finetune-tune"
    storage = (ray.storage if ray and ray.storage else None) or str((out / "tune").resolve())
    spec = evaluator_spec(sup, cfg, meta["data"], threads=1,
                          source=str(run_dir / "run_config.json"))
    splits = splits_from(spec.data, spec.seed, spec.source, log)
    ev = build_evaluator(sup, splits, recal_images=spec.recal_images,
                         val_images=spec.val_images, threads=1, space=space,
                         head_refit_images=spec.head_refit_images)
    task = ev.task
    base = asdict(cfg.finetune)
    blob = supernet_blob(spec)  # trials on other machines need no shared file system
    records = []
    with ray_session(ray, num_cpus=workers, log=log, what="Ray Tune fine-tuning"):
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.basic_variant import BasicVariantGenerator
        import torch

        from nas.export import export_subnet
        from nas.finetune import FINETUNE_FORMAT, FinetuneConfig, card_errors

        for arch in targets:
            t0 = time.perf_counter()
            inherited = ev.evaluate(arch)[task.error_key]
            trainable = tune.with_resources(
                tune.with_parameters(_trial, spec=spec, blob=blob, arch_text=arch.to_string(),
                                     base=base, seed=cfg.seed), {"cpu": 1})
            tuner = tune.Tuner(
                trainable,
                param_space={"lr": tune.loguniform(settings.lr_min, settings.lr_max),
                             "epochs": tune.choice(list(range(1, settings.max_epochs + 1))),
                             "kd_weight": tune.choice([float(k) for k in settings.kd_weights])},
                tune_config=tune.TuneConfig(
                    metric=task.error_key, mode="min", num_samples=settings.samples,
                    search_alg=BasicVariantGenerator(random_state=cfg.seed,
                                                     max_concurrent=workers),
                    scheduler=ASHAScheduler(time_attr="training_iteration",
                                            max_t=settings.max_epochs,
                                            grace_period=settings.grace_period,
                                            reduction_factor=settings.reduction_factor)),
                run_config=tune.RunConfig(name=f"finetune-{arch.arch_id}", storage_path=storage,
                                          verbose=0))
            log(f"tune: {arch.arch_id}: {settings.samples} trials on {workers} workers "
                f"(lr {settings.lr_min:g}-{settings.lr_max:g}, epochs 1-{settings.max_epochs}, "
                f"kd {list(settings.kd_weights)}), ASHA")
            trials = _trial_rows(tuner.fit(), task.error_key)
            done = [t for t in trials if t.get("_checkpoint") is not None
                    and not t["stopped_early"]]
            if not done:
                raise RuntimeError(f"no Tune trial of {arch.arch_id} finished: "
                                   + "; ".join(t.get("error", "?") for t in trials)[:400])
            best = min(done, key=lambda t: (t[task.error_key], t["lr"], t["epochs"],
                                            t["kd_weight"]))
            with best["_checkpoint"].as_directory() as d:
                ck = torch.load(Path(d) / SUBNET_FILE, map_location="cpu", weights_only=True)
            net = ev.subnet(arch)
            net.load_state_dict(ck["state_dict"])
            net.eval()
            err = round(ev.error_of(net, arch), 5)
            ft = FinetuneConfig(**ck["finetune"])
            chosen = {"lr": best["lr"], "epochs": best["epochs"], "kd_weight": best["kd_weight"]}
            rec = {"arch_id": arch.arch_id, "arch": arch.to_string(),
                   "error_inherited": inherited, "error_finetuned": err,
                   "error_unit": task.unit, **chosen,
                   "n_trials": len(trials),
                   "stopped_early": sum(bool(t.get("stopped_early")) for t in trials),
                   "seconds": round(time.perf_counter() - t0, 1),
                   "trials": [{k: v for k, v in t.items() if not k.startswith("_")}
                              for t in trials]}
            # the same file `finetune_subnet` writes, so a run fine-tuning with these
            # settings (and one thread) reuses it
            atomic_torch_save(out / f"{arch.arch_id}.pt", {
                "format": FINETUNE_FORMAT,
                "fingerprint": json_hash([ev.cache_tag, asdict(ft), cfg.seed,
                                          arch.to_string(), FINETUNE_FORMAT]),
                "arch": arch.to_string(), "state_dict": net.state_dict(),
                "error_finetuned": err})
            if export:
                better = err < inherited
                card = export_subnet(net if better else ev.subnet(arch), space,
                                     out / arch.arch_id, extra={
                                         **card_errors(task, inherited, err),
                                         "weights": "finetuned" if better else "inherited",
                                         "finetune": asdict(ft),
                                         "tuned_by": "ray-tune ASHA", "tune": chosen})
                rec["export"] = str(out / arch.arch_id)
                rec["weights"] = card["weights"]
            records.append(rec)
            log(f"tune: {arch.arch_id} chose lr {best['lr']:.2e}, {best['epochs']} epoch(s), "
                f"kd {best['kd_weight']:g}: {inherited:.2f} -> {task.format(err)} "
                f"({len(trials)} trials, {rec['stopped_early']} stopped early by ASHA, "
                f"{rec['seconds']:.0f} s)")
            atomic_write_json(out / "summary.json", {"settings": asdict(settings),
                                                     "workers": workers, "subnets": records})
    return records


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def main(argv: list[str] | None = None) -> int:
    """`python -m nas.distributed.tune --run DIR [--arch ID ...] [--samples N] ...`."""
    from nas.cli import log
    from nas.rundir import RunLock

    d = TuneSettings()
    p = argparse.ArgumentParser(prog="python -m nas.distributed.tune",
                                description="Fine-tune a run's exported subnets with Ray Tune "
                                "(learning rate, epochs, distillation weight; ASHA) and export "
                                "the best of each.")
    p.add_argument("--run", required=True, help="run folder holding supernet.pt")
    p.add_argument("--arch", nargs="*", default=[],
                   help="arch_ids or canonical strings (default: every subnet in RUN/export)")
    p.add_argument("--samples", type=int, default=d.samples, help="trials per subnet")
    p.add_argument("--max-epochs", type=int, default=d.max_epochs)
    p.add_argument("--lr", type=_finite, nargs=2, default=[d.lr_min, d.lr_max],
                   metavar=("MIN", "MAX"), help="log-uniform learning-rate range")
    p.add_argument("--kd", type=_finite, nargs="+", default=list(d.kd_weights),
                   help="distillation weights to choose from")
    p.add_argument("--workers", type=int, default=2, help="concurrent trials (1 CPU each)")
    p.add_argument("--address", help="a Ray cluster to join (default: a private local Ray)")
    p.add_argument("--storage", help="trial storage every node sees (cluster runs)")
    p.add_argument("--out", help="output folder (default RUN/finetune-tune)")
    a = p.parse_args(argv)
    settings = TuneSettings(samples=a.samples, lr_min=a.lr[0], lr_max=a.lr[1],
                            max_epochs=a.max_epochs, kd_weights=tuple(a.kd))
    ray_cfg = RayConfig(address=a.address, storage=a.storage)
    try:
        out = Path(a.out) if a.out else Path(a.run) / "finetune-tune"
        with ExitStack() as locks:  # the run (its evaluation cache) and the output folder
            locks.enter_context(RunLock(Path(a.run)))
            if not out.resolve().is_relative_to(Path(a.run).resolve()):
                locks.enter_context(RunLock(out))
            recs = tune_finetune(a.run, a.arch, out_dir=out, settings=settings,
                                 workers=a.workers, ray=ray_cfg, log=log)
    except UserError as exc:
        print(f"gaze-nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gaze-nas: interrupted", file=sys.stderr)
        return 130
    for r in recs:
        print(f"{r['arch_id']}: lr {r['lr']:.2e}, {r['epochs']} epoch(s), kd {r['kd_weight']:g}"
              f" -> {r['error_finetuned']:.2f} {r['error_unit']} "
              f"(inherited {r['error_inherited']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
