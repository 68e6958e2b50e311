"""The shared verdict engine: the statistics every experiment's conjectures
use, and the `Verdict` they return. The conjectures themselves live with
their experiment (`sweeps.experiments`)."""
from sweeps.conjectures.verdict import Verdict

__all__ = ["Verdict"]
