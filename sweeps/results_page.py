"""The verdict tables of `docs/results.md`, generated from the verdict files.

Each shipped sweep's judgement is kept as the JSON that `dynsweep conjectures
NAME --json` prints, in `docs/verdicts/NAME.json`: the sweep, what it ran on
(commit, torch version, threads per trial), its plans and every verdict. The
page marks where each sweep's table goes:

    <!-- verdicts: breakeven -->
    (generated: one row a verdict, then what the sweep ran on)
    <!-- /verdicts -->

`python -m sweeps.results_page` (`make results-page`) rewrites every marked
block from its file; `--check` changes nothing and exits 1, naming the
blocks, where the page and the files disagree. Prose around the blocks is
the author's; numbers inside them are the files'.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from sweeps.conjectures import Verdict
from sweeps.judge import verdict_label

PAGE = Path("docs/results.md")
VERDICTS = Path("docs/verdicts")
BLOCK = re.compile(r"(<!-- verdicts: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /verdicts -->)", re.S)
COLUMNS = ("conjecture", "verdict", "statistic", "effect", "CI", "p raw", "p adj", "n", "reason",
           "plan", "history")


def load(path: Path) -> dict[str, Any]:
    """One verdict file, as `dynsweep conjectures --json` printed it."""
    return json.loads(path.read_text())


def table(judged: dict[str, Any]) -> str:
    """The markdown of one sweep's block: a row a verdict, then its provenance."""
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for v in (Verdict(**d) for d in judged["verdicts"]):
        cells = (v.name, verdict_label(v), num(v.statistic), num(v.effect), ci(v), num(v.p_raw),
                 num(v.p_adjusted), str(v.n), v.reason, v.registered_hash or "none registered",
                 v.history or "–")
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n\n" + provenance(judged) + "\n"


def provenance(judged_doc: dict[str, Any]) -> str:
    """One line: the sweep's run, what it ran on, what judged it, its plans."""
    ran = judged_doc.get("ran_on") or {}
    threads = ", ".join(str(t) for t in ran.get("threads") or []) or "not recorded"
    torch = ", ".join(ran.get("torch") or []) or "not recorded"
    registered = (f"registered {judged_doc['registered_plans_hash']} at {judged_doc['registered_at']}"
                  if judged_doc.get("registered_plans_hash") else "none registered")
    judged = (judged_doc.get("judged_with") or {}).get("commit") or "not recorded"
    return (f"*Sweep `{judged_doc['sweep']}` (run {judged_doc['sweep_run_id']}): ran at commit "
            f"{(ran.get('commit') or 'not recorded')[:12]}, torch {torch}, threads per trial {threads}; "
            f"judged at commit {judged[:12]}; plans {judged_doc['plans_hash']} ({registered}).*")


def num(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


def ci(v: Verdict) -> str:
    if not all(math.isfinite(x) for x in (v.ci_level, v.ci_low, v.ci_high)):
        return "–"
    return f"{v.ci_level:.0%} [{num(v.ci_low)}, {num(v.ci_high)}]"


def render(page: str, verdicts: Path) -> tuple[str, list[str]]:
    """The page with every marked block generated from `verdicts/<name>.json`,
    and the names of the blocks that changed. A block without its file is an
    error (FileNotFoundError names it)."""
    changed = []

    def fill(m: re.Match) -> str:
        path = verdicts / f"{m['name']}.json"
        if not path.exists():
            raise FileNotFoundError(f"the page has a block for {m['name']!r} but there is no {path}")
        body = table(load(path))
        if body != m["body"]:
            changed.append(m["name"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, page), changed


def blocks(page: str) -> list[str]:
    """The sweep names the page has blocks for, in order."""
    return [m["name"] for m in BLOCK.finditer(page)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.results_page", description=__doc__.split("\n")[0])
    parser.add_argument("--page", type=Path, default=PAGE)
    parser.add_argument("--verdicts", type=Path, default=VERDICTS)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where the page differs")
    args = parser.parse_args(argv)
    page = args.page.read_text()
    try:
        new, changed = render(page, args.verdicts)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unused = sorted({p.stem for p in args.verdicts.glob("*.json")} - set(blocks(page)))
    if unused:
        print(f"note: no block on {args.page} for {', '.join(unused)}", file=sys.stderr)
    if args.check:
        if changed:
            print(f"{args.page} differs from {args.verdicts} in: {', '.join(changed)} "
                  f"(`make results-page` regenerates it)", file=sys.stderr)
        return 1 if changed else 0
    if changed:
        args.page.write_text(new)
    print(f"{args.page}: {len(changed)} of {len(blocks(page))} verdict tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
