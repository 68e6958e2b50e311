"""README's table of shipped specs names every spec in sweeps/specs/, once,
with its trial count and a line on what it is for, so it cannot drift."""
from __future__ import annotations

import re
from pathlib import Path

from sweeps.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `(?P<file>[^`]+\.yaml)` \| (?P<trials>\d+) \| (?P<what>.*) \|$")


def spec_table() -> list[dict[str, str]]:
    """The rows of the table under README's "### Shipped specs", up to the next heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### Shipped specs\n", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `")]
    rows = [ROW.match(line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows) if not row]
    return [row.groupdict() for row in rows]


def test_readme_lists_every_shipped_spec_with_its_trials_and_purpose():
    rows = spec_table()
    names = [row["file"] for row in rows]
    shipped = sorted(p.name for p in (ROOT / "sweeps" / "specs").glob("*.yaml"))
    assert len(names) == len(set(names)), "a spec listed twice"
    assert sorted(names) == shipped
    for row in rows:
        assert len(row["what"].split()) >= 5, row
        spec = load_spec(ROOT / "sweeps" / "specs" / row["file"])
        assert int(row["trials"]) == spec.n_trials(), row["file"]
