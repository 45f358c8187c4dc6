"""Training throughput, side by side in one run: a supernet sandwich step vs one step of the
largest extracted subnet (and the supernet running only the largest path), with and without
channels_last. Prints img/s; the ratio is what the README quotes.

    .venv/bin/python experiments/bench_train_throughput.py [--space search_spaces/gaze_eye.yaml]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from nas.space import SearchSpace
from nas.supernet import Supernet


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):  # min over 3 blocks of `reps` steps: robust to a noisy neighbour
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="search_spaces/gaze_eye.yaml")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sp = SearchSpace.load(a.space)
    big, small = sp.largest(), sp.smallest()
    x = torch.rand(a.batch, sp.in_channels, *big.resolution)
    y = torch.rand(a.batch, sp.outputs) - 0.5
    print(f"space {sp.name}, batch {a.batch}, {a.threads} threads, input {tuple(x.shape[1:])}")
    for cl in (False, True):
        mf = torch.channels_last if cl else torch.contiguous_format
        net = Supernet(sp).train().to(memory_format=mf)
        sub = net.extract(big).train().to(memory_format=mf)
        xx = x.to(memory_format=mf)
        opt = torch.optim.AdamW(net.parameters(), 1e-3)
        opt_s = torch.optim.AdamW(sub.parameters(), 1e-3)
        rng = np.random.default_rng(0)

        def step_sub():
            opt_s.zero_grad()
            F.l1_loss(sub(xx), y).backward()
            opt_s.step()

        def step_super_largest():
            opt.zero_grad()
            F.l1_loss(net(xx, big), y).backward()
            opt.step()

        def step_sandwich():
            opt.zero_grad()
            t = net(xx, big)
            F.l1_loss(t, y).backward()
            for arch in (small, sp.sample(rng), sp.sample(rng)):
                F.l1_loss(net(xx, arch), t.detach()).backward()
            opt.step()

        ts = timed(step_sub, a.reps)
        tl = timed(step_super_largest, a.reps)
        tw = timed(step_sandwich, a.reps)
        print(f"channels_last={cl!s:5}  extracted largest {a.batch / ts:6.0f} img/s | "
              f"supernet largest path {a.batch / tl:6.0f} img/s ({ts / tl:.2f}x) | "
              f"sandwich step (4 subnets) {a.batch / tw:6.0f} img/s ({tw / ts:.2f}x the time of "
              f"one extracted-largest step)")


if __name__ == "__main__":
    main()
