"""patch/acc: accuracy on inputs that hold only the patch (patch data sets)."""
from __future__ import annotations

from dynamics_core.hooks import Schedule, StepContext
from dynamics_core.train import evaluate


class PatchAccuracy:
    """At each epoch end, eval mode, on `data.x_patch_only` with the train labels."""

    name = "patch"
    schedule = Schedule(kind="epoch_end")

    def __call__(self, ctx: StepContext) -> dict[str, float]:
        data = ctx.data
        return {"patch/acc": evaluate(ctx.model, data.x_patch_only, data.y_train, ctx.loss_fn, data.task)[1]}
