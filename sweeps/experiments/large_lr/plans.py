"""The registered plans of the large-learning-rate experiment.

Plans (`PLANS`). The crossover and the control are family `large_lr` (Holm
over the 2), alpha 0.05. Both are paired by seed, so a permutation test has
2^seeds arrangements: 6 seeds give a smallest two-sided p of 2/64 = 0.031,
which Holm over 2 doubles past 0.05, hence at least 7 per arm; detecting the
effect of interest, 0.02 (two accuracy points), at 80 % power with the
seed-to-seed spread the first 8-seed run showed takes about 12 (the spec). The
calibration stands alone (family `large_lr.calibration`): 6 seeds per η
(2/64 < 0.05).
"""
from __future__ import annotations

from sweeps.conjectures.plan import AnalysisPlan, Check

CAL, NAME, CONTROL = "large_lr.calibration", "large_lr.anneal_crossover", "large_lr.patch_hurts_small"
FITS = Check("small_fits_as_fast", "over the epochs before annealing the small arm's mean "
             "train/loss is at most the large arm's")
LEARNS = Check("small_learns_patch", "over the epochs before annealing the small arm's mean "
               "patch/acc is higher than the large arm's")
PLANS = {
    CAL: AnalysisPlan(
        conjecture=CAL,
        statement="the calibrated small LR ends the pre-annealing budget with a lower train "
                  "loss than the largest LR that trains",
        metric="train/loss", statistic="difference_of_means", predicted_sign=-1,
        exclusions=("diverged",), family="large_lr.calibration", alpha=0.05, min_n=12,
        min_per_stratum=6, effect_of_interest=0.05,
        checks=(Check("edge_bracketed", "the grid holds an η that trains and a larger one that "
                      "does not (diverges or misses the train-accuracy target)"),
                Check("small_lr_found", "some η at most η_large / min_ratio trains and reaches "
                      "the target in at most as many steps as η_large")),
        options={"target_train_acc": 0.85, "min_ratio": 10}),
    NAME: AnalysisPlan(
        conjecture=NAME,
        statement="small LR reaches higher test accuracy before annealing and lower after",
        metric="val/acc", statistic="intersection_union", predicted_sign=+1,
        exclusions=("unfinished", "no_patch"), family="large_lr", alpha=0.05, min_n=14,
        min_per_stratum=7, effect_of_interest=0.02, checks=(FITS, LEARNS),
        options={"before_epochs": 3, "anneal_epoch": None, "part_signs": [+1, -1],
                 "parts": "val/acc before annealing (small − large), final test accuracy"}),
    CONTROL: AnalysisPlan(
        conjecture=CONTROL,
        statement="the patch lowers the small LR's final test accuracy more than the large LR's",
        metric="final/val_acc", statistic="paired_sign_flip", predicted_sign=-1,
        exclusions=("unfinished", "incomplete_seed"), family="large_lr", alpha=0.05, min_n=7,
        min_per_stratum=1, effect_of_interest=0.02, checks=(LEARNS,),
        options={"before_epochs": 3, "anneal_epoch": None})}
# anneal_epoch: the epoch after which the large arm's η drops; null: its first
# milestone × its epochs (`anneal_epoch()`)

