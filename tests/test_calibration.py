"""The engine's error rates on simulated tables of the shipped designs (a small
run of benchmarks/calibrate_engine.py; the full table is in docs/science.md).

Bands, from the Monte-Carlo SE of the run so that a correct engine passes
reliably: type-I error <= alpha + 3 SE (200 tables under the null, 49
permutations per p, SE 0.015); CI coverage within 2.5 points + 3 SE of its
level (300 tables at the effect of interest, SE about 0.013 at 95 %), only
from below for the exact intervals of a discrete statistic. Coverage runs
use 9 permutations per p (the interval does not depend on them). The seeds
are fixed, so a run is reproducible; the margins keep it passing when a change
to the engine draws other random numbers."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from sweeps.conjectures.calibration import DESIGNS, simulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from calibrate_engine import bands  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("design", DESIGNS, ids=[d.name.split(",")[0] + f"-{i}"
                                                 for i, d in enumerate(DESIGNS)])
def test_type_one_error_and_coverage_stay_in_their_bands(design):
    null = simulate(design, design.null, 200, n_perm=49, seed=7)
    assert not bands(null, type1_ses=3.0, cov_ses=3.0), null
    effect = simulate(design, design.alternative, 300, n_perm=9, seed=8)
    assert not bands({**effect, "scenario": "effect"}, cov_ses=3.0), effect
    if design.name.startswith("intersection"):
        assert effect["no_ci"] == 1.0          # the parts print theirs
    elif design.name.startswith("censored") or (design.discrete_ci and design.name.startswith("trend")):
        # a few tables whose seed blocks all hold the same mean (heavy censoring makes the
        # scores coarse; cells of 3 hold four values of rho) show no spread between them:
        # no interval rather than a zero-width one
        assert effect["no_ci"] <= 0.05, effect
    else:
        assert effect["no_ci"] == 0.0


def test_only_runs_the_named_designs_drawn_as_in_a_full_run(capsys, tmp_path):
    from calibrate_engine import main

    (design,) = [d for d in DESIGNS if d.name.startswith("sign test, 35")]
    assert main(["--sims", "20", "--only", "sign test, 35", "--out", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "2 rows, 20 tables each" in out and "sign flip" not in out
    at = DESIGNS.index(design)
    seeds = [r["seed"] for r in pd.read_csv(tmp_path / "c.csv").to_dict("records")]
    assert seeds == [1000 * at, 1000 * at + 1]
    with pytest.raises(SystemExit):
        main(["--only", "no such design"])
