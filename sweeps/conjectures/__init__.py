"""Conjecture engine: one module per paper, each conjecture a pure function
`(SweepTable, **options) -> list[Verdict]`, found by name in one registry.

    from sweeps.conjectures import evaluate
    for v in evaluate(["breakeven.c1_lr", "regimes.momentum"], table):
        print(v.summary())
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from sweeps.conjectures import breakeven, large_lr, regimes
from sweeps.conjectures.verdict import Verdict

Conjecture = Callable[..., list[Verdict]]

REGISTRY: dict[str, Conjecture] = {
    **breakeven.CONJECTURES,
    **regimes.CONJECTURES,
    **large_lr.CONJECTURES,
}


def names() -> list[str]:
    """Every registered conjecture name, sorted."""
    return sorted(REGISTRY)


def get(name: str) -> Conjecture:
    """The conjecture function called `name`; KeyError listing the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown conjecture {name!r}; valid names: {', '.join(names())}") from None


def evaluate(conjecture_names: Iterable[str], table: Any,
             options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Verdict]:
    """Run the named conjectures on one table, in order; `options[name]` are its kwargs.

    Every name is looked up before anything runs, so a typo fails fast.
    """
    conjecture_names = list(conjecture_names)
    funcs = [get(n) for n in conjecture_names]
    options = options or {}
    out: list[Verdict] = []
    for n, f in zip(conjecture_names, funcs):
        out.extend(f(table, **dict(options.get(n, {}))))
    return out


__all__ = ["REGISTRY", "Verdict", "evaluate", "get", "names"]
