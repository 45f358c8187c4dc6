"""The LUT correction's two forms side by side on tables' own validation measurements.

Each validated table stores its whole subnets' measured times, parts' raw sums and part
counts (`validation.per_sample`). This refits both correction forms of `nas.latency.fit`
(linear `a * sum + b * parts + c`, power `scale * sum^exponent * exp(per_part * parts)`)
leave-one-out on those measurements (and `auto`, the default: the form chosen by an inner
leave-one-out on each fold's training samples) and prints MAPE, the share within 10 %, Kendall tau,
the fastest subnet's predicted / measured ratio and the worst error, per table.

    python experiments/bench_correction.py latency_tables/*.yaml runs/*/latency/*.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from nas.latency.fit import FORMS, fidelity, loo_predictions  # noqa: E402
from nas.latency.table import LatencyTable  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="+")
    args = ap.parse_args()
    print(f"{'table':<48}{'n':>4}  {'form':<7}{'MAPE %':>8}{'<=10 %':>8}{'tau':>7}"
          f"{'fastest':>9}{'max %':>7}")
    for path in args.tables:
        samples = (LatencyTable.load(path).validation or {}).get("per_sample") or []
        if len(samples) < 8:
            print(f"{path[-48:]:<48}  (fewer than 8 validated subnets: skipped)")
            continue
        s = np.array([r["raw_sum_ms"] for r in samples])
        p = np.array([r["parts"] for r in samples], dtype=float)
        y = np.array([r["measured_ms"] for r in samples])
        fastest = int(np.argmin(y))
        for form in ("auto", *FORMS):
            pred = loo_predictions(s, p, y, form)
            f = fidelity(pred, y)
            print(f"{path[-48:]:<48}{len(y):>4}  {form:<7}{f['mape']:>8.1f}"
                  f"{100 * f['within_10']:>8.0f}{f['kendall_tau']:>7.3f}"
                  f"{pred[fastest] / y[fastest]:>8.2f}x{f['max_err']:>7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
