"""The verdict engine's error rates, measured (sweeps/conjectures/calibration.py).

Simulates tables in every design the shipped specs and plans use, under the
null and at the plans' effect of interest, runs the engine's own tests, and
prints per design: the rejection rate (type-I error under the null, power at
the effect) with its Monte-Carlo SE, and the coverage of the printed CI at
its level. Bands: type-I <= alpha + 2 SE; coverage within 2.5 points of the
nominal level (exact intervals of a discrete statistic may cover more: their
excess is reported, not a failure). Exit status 1 when a band is left.

    nice python benchmarks/calibrate_engine.py --sims 1000 --perm 499 --out calib.csv
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

from sweeps.conjectures.calibration import calibrate

DISCRETE = ("cells of 2", "sign test")      # exact intervals of a discrete statistic


def bands(row: dict, type1_ses: float = 2.0, cov_slack: float = 0.025,
          cov_ses: float = 0.0, alpha: float = 0.05) -> list[str]:
    """What a row breaks: type-I above alpha + k SE, coverage off nominal by more than
    `cov_slack` + `cov_ses` SE (only below it, for the exact discrete intervals)."""
    out = []
    se = math.sqrt(alpha * (1 - alpha) / row["n_sims"])
    if row["scenario"] == "null" and row["reject"] > alpha + type1_ses * se:
        out.append(f"type-I {row['reject']:.3f} > {alpha} + {type1_ses:g} SE")
    cov, level = row["coverage"], row["ci_level"]
    if cov == cov:
        tol = cov_slack + cov_ses * row["coverage_se"]
        discrete = any(k in row["design"] for k in DISCRETE)
        if cov < level - tol or (not discrete and cov > level + tol):
            out.append(f"coverage {cov:.3f} outside {level:.2f} ± {tol:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulated tables per design and scenario")
    ap.add_argument("--perm", type=int, default=499, help="Monte-Carlo permutations per p")
    ap.add_argument("--out", help="write the table as CSV here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def show(r: dict) -> None:
        print(f"{r['design'][:62]:62s} {r['scenario']:18s} reject {r['reject']:.3f} "
              f"(SE {r['reject_se']:.3f})  coverage {r['coverage']:.3f} at {r['ci_level']:.2f}  "
              f"{r['seconds']:.0f} s", flush=True)

    df = calibrate(args.sims, n_perm=args.perm, progress=show)
    broken = [(r["design"], r["scenario"], b) for r in df.to_dict("records") for b in bands(r)]
    print(f"\n{len(df)} rows, {args.sims} tables each, {args.perm} permutations per p; "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.perf_counter() - t0:.0f} s")
    for b in broken:
        print("OUT OF BAND:", *b)
    if args.out:
        df.to_csv(args.out, index=False)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
