"""The verdict engine's error rates, measured (sweeps/conjectures/calibration.py).

Simulates tables in every design the shipped specs and plans use, under the
null and at the plans' effect of interest, runs the engine's own tests, and
prints per design: the rejection rate (type-I error under the null, power at
the effect) with its Monte-Carlo SE, and the coverage of the printed CI at
its level with its SE.

Band rule (`bands`), with SE the Monte-Carlo SE of the row:
- type-I error <= alpha + 2 SE, SE = sqrt(alpha (1 - alpha) / tables);
- coverage within 2.5 points of the CI's level, both ways; for an exact
  interval of a discrete statistic (Clopper–Pearson: the sign test, trend
  cells of 2) only from below, since at small n it cannot sit at its level
  and over-covers by design (10 trials: no interval of a share covers
  between 89 % and 97.9 % at p = 1/2);
- a row out of its band is rerun once with 4 times the tables and a fresh
  seed, and fails only if the rerun is out of its band too. With some 40
  checks a correct engine leaves a band by Monte-Carlo noise alone now and
  then (e.g. a 2.6-SE excursion at a 90 % level, 1000 tables); a real
  miscalibration stays out at 4 times the tables, where the SE is halved.
Exit status 1 when a confirmed row is out of its band, else 0.

    nice python benchmarks/calibrate_engine.py --sims 1000 --perm 499 --out calib.csv
    nice python benchmarks/calibrate_engine.py --only v2 stages     # some designs only
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import pandas as pd

from sweeps.conjectures.calibration import DESIGNS, calibrate, simulate

CONFIRM = 4                 # a row out of band is rerun with this many times the tables


def bands(row: dict, type1_ses: float = 2.0, cov_slack: float = 0.025,
          cov_ses: float = 0.0, alpha: float = 0.05) -> list[str]:
    """What a row breaks: type-I above alpha + `type1_ses` SE; coverage off its level by
    more than `cov_slack` + `cov_ses` SE (only below it for an exact interval of a
    discrete statistic, `row["discrete_ci"]`)."""
    out = []
    se = math.sqrt(alpha * (1 - alpha) / row["n_sims"])
    if row["scenario"] == "null" and row["reject"] > alpha + type1_ses * se:
        out.append(f"type-I {row['reject']:.3f} > {alpha} + {type1_ses:g} SE")
    cov, level = row["coverage"], row["ci_level"]
    if cov == cov:
        tol = cov_slack + cov_ses * row["coverage_se"]
        if cov < level - tol or (not row.get("discrete_ci") and cov > level + tol):
            out.append(f"coverage {cov:.3f} outside {level:.2f} ± {tol:.3f}")
    return out


def show(r: dict) -> None:
    print(f"{r['design'][:62]:62s} {r['scenario']:18s} reject {r['reject']:.3f} "
          f"(SE {r['reject_se']:.3f})  coverage {r['coverage']:.3f} (SE {r['coverage_se']:.3f}) "
          f"at {r['ci_level']:.2f}  {r['seconds']:.0f} s", flush=True)


def confirm(row: dict, n_perm: int) -> dict:
    """The row again with `CONFIRM` times the tables and a fresh seed."""
    design = next(d for d in DESIGNS if d.name == row["design"])
    effect = design.null if row["scenario"] == "null" else design.alternative
    return simulate(design, effect, CONFIRM * row["n_sims"], n_perm=n_perm,
                    seed=row["seed"] + 500_000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulated tables per design and scenario")
    ap.add_argument("--perm", type=int, default=499, help="Monte-Carlo permutations per p")
    ap.add_argument("--out", help="write the table (with any confirmation reruns) as CSV here")
    ap.add_argument("--only", nargs="+", metavar="TEXT",
                    help="only the designs whose name or 'used by' contains one of these "
                         "(each drawn as in a full run)")
    args = ap.parse_args(argv)
    designs = DESIGNS if not args.only else tuple(
        d for d in DESIGNS if any(t in d.name or t in d.used_by for t in args.only))
    if not designs:
        ap.error(f"--only {' '.join(args.only)}: no design matches")
    t0 = time.perf_counter()
    df = calibrate(args.sims, designs, n_perm=args.perm, progress=show)
    rows = df.to_dict("records")
    broken = []
    for r in list(rows):
        first = bands(r)
        if not first:
            continue
        print(f"out of band, rerun with {CONFIRM}x the tables:", r["design"], r["scenario"],
              *first)
        again = confirm(r, args.perm)
        again["confirmation"] = True
        show(again)
        rows.append(again)
        broken += [(r["design"], r["scenario"], b) for b in bands(again)]
    print(f"\n{len(df)} rows, {args.sims} tables each, {args.perm} permutations per p; "
          f"{platform.machine()}, {os.cpu_count()} cores, {time.perf_counter() - t0:.0f} s")
    for b in broken:
        print("OUT OF BAND (confirmed):", *b)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
