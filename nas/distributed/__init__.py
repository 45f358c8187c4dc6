"""Scaling out with Ray, all optional (`pip install -e .[ray]`), local by default.

- `executor.RayExecutor`: a search evaluates each batch of asked subnets on Ray actors that
  each hold the supernet once (`search.executor: ray`, `search.workers`).
- `tune.tune_finetune`: Ray Tune picks learning rate, epochs and distillation weight per
  exported subnet, with ASHA early stopping (`python -m nas.distributed.tune`).
- `train.train_supernet_ray`: Ray Train data-parallel supernet training, gradients averaged
  over gloo (`python -m nas.distributed.train`).

This module imports neither ray nor torch (the config imports `RayConfig` from here); Ray is
imported inside the functions that use it. Without `ray.address`, gaze-nas starts a private
Ray on this machine (no dashboard unless `ray.dashboard`, and then on `ray.dashboard_host`,
127.0.0.1 by default; worker output goes to Ray's session logs) and stops it when the job
ends; with `ray.address` it joins that cluster and leaves it running. A Ray the caller
already started (`ray.init(...)` before calling in) is used as it is and left running.

Ray's own processes (GCS, raylet, workers) listen on every interface in Ray 2.60, with no
setting to bind them to localhost; Ray's token authentication (on by default) guards them.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from nas.errors import UserError

EXECUTORS = ("sequential", "ray")
INSTALL_HINT = "pip install -e '.[ray]'"


@dataclass
class RayConfig:
    """The `ray:` section of an experiment config."""

    address: str | None = None     # None: a private Ray on this machine, started and stopped
                                   # by gaze-nas; "auto", "HOST:6379" or "ray://HOST:10001":
                                   # join that cluster (every node needs gaze-nas installed)
    dashboard: bool = False        # start Ray's dashboard with the private Ray
    dashboard_host: str = "127.0.0.1"  # where that dashboard listens ("0.0.0.0": everywhere)
    storage: str | None = None     # Ray Train / Tune results and checkpoints: default inside
                                   # the output folder; on a multi-node cluster a folder every
                                   # node sees (NFS) or a URI (s3://..., gs://...)


def require_ray(what: str = "this") -> Any:
    """The ray module, or a one-line UserError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"{what} needs Ray, which is not installed; install it with "
                        f"{INSTALL_HINT}", field="search.executor") from None
    return ray


def supernet_blob(spec) -> bytes:
    """The bytes of a spec's supernet.pt, to ship through Ray's object store: workers on
    other machines need no shared file system."""
    from pathlib import Path

    return Path(spec.supernet).read_bytes()


def local_spec(spec, blob: bytes | None, folder: str):
    """`spec` with its supernet written from `blob` into `folder` (a worker's own temporary
    folder), or `spec` itself without a blob."""
    if blob is None:
        return spec
    from dataclasses import replace
    from pathlib import Path

    path = Path(folder) / "supernet.pt"
    path.write_bytes(blob)
    return replace(spec, supernet=str(path))


@contextmanager
def ray_session(cfg: RayConfig | None = None, num_cpus: int = 2,
                log: Callable[[str], Any] = print, what: str = "this") -> Iterator[Any]:
    """Ray for the length of a `with` block: the caller's if one is running (left running),
    the cluster at `cfg.address` (left running), or a private local one with `num_cpus`
    CPUs, bound to localhost, shut down at the end."""
    ray = require_ray(what)
    if ray.is_initialized():
        yield ray
        return
    cfg = cfg or RayConfig()
    if cfg.address:
        log(f"ray: joining the cluster at {cfg.address}")
        ray.init(address=cfg.address)
    else:
        kw: dict[str, Any] = {"include_dashboard": bool(cfg.dashboard)}
        if cfg.dashboard:
            kw["dashboard_host"] = cfg.dashboard_host
        # worker output stays in Ray's session logs (/tmp/ray/session_latest/logs); errors
        # still reach the caller as exceptions
        ray.init(num_cpus=num_cpus, log_to_driver=False, **kw)
        log(f"ray: started a local Ray with {num_cpus} CPUs"
            + (f", dashboard on http://{cfg.dashboard_host}:8265" if cfg.dashboard else ""))
    try:
        yield ray
    finally:
        ray.shutdown()


__all__ = ["EXECUTORS", "INSTALL_HINT", "RayConfig", "local_spec", "ray_session", "require_ray",
           "supernet_blob"]
