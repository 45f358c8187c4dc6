"""Fine-tune a searched subnet standalone, starting from its inherited supernet weights.

Inherited weights rank subnets; they are not the best weights a subnet can have. A few
epochs of standalone training (optionally distilled from the supernet's largest subnet)
before export recover most of the gap to training from scratch, at a fraction of its cost.
Each fine-tuned net is saved as soon as it is done, so an interrupted stage resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nas.evaluation import SubnetEvaluator
from nas.gaze.tasks import Task
from nas.io import atomic_torch_save, json_hash
from nas.space import Arch
from nas.train import StandaloneConfig, load_checkpoint, train_standalone

FINETUNE_FORMAT = "gaze-nas-finetuned/1"


@dataclass
class FinetuneConfig:
    epochs: int = 2              # 0: export inherited weights as they are
    lr: float = 1e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    kd_weight: float = 0.0       # > 0: L1 to the supernet's largest subnet mixed into the loss
    threads: int = 2

    def schedule(self) -> StandaloneConfig:
        return StandaloneConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                weight_decay=self.weight_decay, warmup_steps=self.warmup_steps,
                                threads=self.threads)


def finetune_subnet(ev: SubnetEvaluator, arch: Arch, splits, cfg: FinetuneConfig, seed: int,
                    out_dir: str | Path, tag: str,
                    log: Callable[[str], None] = print,
                    on_epoch: Callable[[int, torch.nn.Module], None] | None = None,
                    ) -> tuple[torch.nn.Module, dict]:
    """The fine-tuned subnet and a record {error_inherited, error_finetuned, ...}; reuses
    `out_dir/<arch_id>.pt` when it was made from the same inputs (`tag`). `on_epoch` goes to
    `train_standalone` (Ray Tune reports each epoch's validation error through it)."""
    space = ev.space
    fingerprint = json_hash([tag, asdict(cfg), seed, arch.to_string(), FINETUNE_FORMAT])
    path = Path(out_dir) / f"{arch.arch_id}.pt"
    inherited = ev.evaluate(arch)[ev.task.error_key]
    net = ev.subnet(arch)
    if path.exists():
        ck = load_checkpoint(path)
        if ck.get("fingerprint") == fingerprint:
            net.load_state_dict(ck["state_dict"])
            return net.eval(), {"error_inherited": inherited,
                                "error_finetuned": ck["error_finetuned"], "reused": True}
    teacher = None
    if cfg.kd_weight > 0:
        big = space.largest()
        ev.supernet.eval()
        teacher = lambda x: ev.supernet(x, big)  # noqa: E731
    log(f"finetune: {arch.arch_id} ({cfg.epochs} epochs from inherited weights, "
        f"inherited error {inherited:.2f})")
    train_standalone(net, splits, cfg.schedule(), seed, resolution=arch.resolution,
                     teacher=teacher, kd_weight=cfg.kd_weight, log=log, on_epoch=on_epoch,
                     space=space)
    err = round(ev.error_of(net, arch), 5)
    atomic_torch_save(path, {"format": FINETUNE_FORMAT, "fingerprint": fingerprint,
                             "arch": arch.to_string(), "state_dict": net.state_dict(),
                             "error_finetuned": err})
    log(f"finetune: {arch.arch_id} {inherited:.2f} -> {err:.2f}")
    return net, {"error_inherited": inherited, "error_finetuned": err, "reused": False}


def card_errors(task: Task, inherited: float, finetuned: float | None) -> dict[str, float | None]:
    """A model card's errors, named in the task's unit: the exported weights' (fine-tuned
    where that beat the inherited weights), the inherited and the fine-tuned error (None
    when not fine-tuned). One place, so `run`, `finetune` and Tune cards say the same."""
    best = finetuned if finetuned is not None and finetuned < inherited else inherited
    return {task.error_key: best, task.key("error_inherited"): inherited,
            task.key("error_finetuned"): finetuned}
