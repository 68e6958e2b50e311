"""docs/results.md's verdict tables are generated from the verdict files under
docs/verdicts/ (what `dynsweep conjectures NAME --json` printed for each
shipped sweep): the page cannot drift from them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sweeps import results_page
from sweeps.conjectures import Verdict
from sweeps.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
PAGE, VERDICTS = ROOT / "docs" / "results.md", ROOT / "docs" / "verdicts"


def judged(*verdicts: Verdict) -> dict:
    return {"sweep": "toy", "sweep_run_id": "abc", "plans_hash": "p1", "registered_plans_hash": "p1",
            "registered_at": "2026-12-07 05:00:00", "verdicts": [v.to_dict() for v in verdicts],
            "ran_on": {"commit": "0123456789abcdef", "torch": ["2.14.1"], "threads": [1]},
            "judged_with": {"commit": "fedcba9876543210"}}


def test_the_page_agrees_with_its_verdict_files():
    assert results_page.main(["--page", str(PAGE), "--verdicts", str(VERDICTS), "--check"]) == 0


def test_every_shipped_sweep_with_conjectures_has_its_verdict_file_and_table():
    """All but the cluster-sized variants of the page's specs, and CIFAR-10
    (which must be on disk: the page is on MNIST-1D)."""
    with_conjectures = {p.stem for p in (ROOT / "sweeps" / "specs").glob("*.yaml")
                        if not p.stem.endswith("-cluster") and load_spec(p).conjectures}
    files = {p.stem for p in VERDICTS.glob("*.json")}
    assert with_conjectures - {"breakeven-cifar"} == files
    assert files == set(results_page.blocks(PAGE.read_text()))
    for path in VERDICTS.glob("*.json"):
        data = results_page.load(path)
        assert data["sweep"] == path.stem and data["ran_on"]["torch"] and data["ran_on"]["threads"]
        assert data["ran_on"]["commit"] and data["judged_with"]["commit"]


def test_a_table_shows_every_field_a_referee_reads():
    rows = results_page.table(judged(
        Verdict("toy.a", "s", "negligible", statistic=0.5, effect=0.0123456, ci_low=0.01, ci_high=0.02,
                p_raw=1e-4, p_adjusted=2e-4, n=12, ci_level=0.95, reason="CI below 0.1 | of interest",
                registered_hash="h1", history="first"),
        Verdict("toy.b", "s", "inconclusive", n=0, reason="no trial", registered_hash="h2",
                exploratory=True, exploratory_reason="seeds seen",
                history="repeats h2 after toy@1; same seeds")))
    lines = rows.splitlines()
    assert lines[0] == "| conjecture | verdict | statistic | effect | CI | p raw | p adj | n | reason | plan | history |"
    assert lines[2] == ("| toy.a | negligible | 0.5 | 0.0123 | 95% [0.01, 0.02] | 0.0001 | 0.0002 | 12 | "
                        "CI below 0.1 \\| of interest | h1 | first |")
    assert lines[3] == ("| toy.b | inconclusive (exploratory: seeds seen) | – | – | – | – | – | 0 | no trial | h2 | "
                        "repeats h2 after toy@1; same seeds |")
    assert lines[5] == ("*Sweep `toy` (run abc): ran at commit 0123456789ab, torch 2.14.1, threads per trial 1; "
                        "judged at commit fedcba987654; plans p1 (registered p1 at 2026-12-07 05:00:00).*")


def test_a_changed_number_fails_the_check_and_regenerating_fixes_it(tmp_path):
    verdicts = tmp_path / "verdicts"
    verdicts.mkdir()
    data = judged(Verdict("toy.a", "s", "supported", effect=0.2, p_raw=0.01, p_adjusted=0.01, n=8))
    (verdicts / "toy.json").write_text(json.dumps(data))
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nprose\n<!-- verdicts: toy -->\nold table\n<!-- /verdicts -->\nmore prose\n")
    args = ["--page", str(page), "--verdicts", str(verdicts)]
    assert results_page.main(args + ["--check"]) == 1
    assert results_page.main(args) == 0 and results_page.main(args + ["--check"]) == 0
    text = page.read_text()
    assert text.startswith("# Results\n\nprose\n<!-- verdicts: toy -->\n| conjecture |")
    assert text.endswith("<!-- /verdicts -->\nmore prose\n") and "| toy.a | supported | – | 0.2 |" in text
    data["verdicts"][0]["effect"] = 0.21
    (verdicts / "toy.json").write_text(json.dumps(data))
    assert results_page.main(args + ["--check"]) == 1


def test_a_block_without_its_file_is_refused(tmp_path, capsys):
    page = tmp_path / "results.md"
    page.write_text("<!-- verdicts: gone -->\n<!-- /verdicts -->\n")
    assert results_page.main(["--page", str(page), "--verdicts", str(tmp_path), "--check"]) == 2
    assert "no " + str(tmp_path / "gone.json") in capsys.readouterr().err


@pytest.mark.parametrize("x, text", [(float("nan"), "–"), (None, "–"), (math.inf, "–"), (-0.0421, "-0.0421"),
                                      (5e-5, "5e-05"), (1234.5, "1.23e+03")])
def test_numbers_keep_three_significant_digits(x, text):
    assert results_page.num(x) == text


def test_the_verdict_files_are_what_the_cli_prints():
    """A file's keys are those of `dynsweep conjectures --json` (a Judgement's
    dict plus the sweep's name): the files are saved output, not another format."""
    from sweeps.judge import Judgement

    keys = {"sweep", *Judgement([], "r", 1).to_dict()}
    for path in VERDICTS.glob("*.json"):
        assert set(results_page.load(path)) == keys, path.name
