"""Measurement as hooks: `ProbesConfig` -> one probe hook per probe family.

`default_hooks(cfg, data)` is what the sweeps trial passes to
`dynamics_core.train.run`: the loss on the probe set (`probe/loss`,
`probe/acc`, `probe/delta_loss`) whenever any probe is on, one hook per
probe family the config switches on, built from the registry
(`registry.py`), and the patch-only accuracy for patch data. The families
share one `ProbeSet` (fixed probe data) and, at each step, one `ProbeRound`
(`base.py`): one Gram of the per-example gradients of the probe and
validation probe sets, computed once for K and stiffness
(`probes.per_example_gram`: Linear layers from their factors, G never
formed; float64-accumulated where K's eigen-solve reads it, float32
products for the cosines only stiffness reads). The loss probe and the
timeline need no per-example gradients (a forward; one gradient of the mean
loss), and in a pack they run batched over the members (`base.py`,
`dynamics_core.packed`). Metric names:

  probe/loss, probe/acc, probe/delta_loss      loss on the probe set, ΔL since last round
  hessian/top, hessian/n_hvp, hessian/lr_x_top λ_H¹ (Lanczos), its HVP count, η·λ_H¹  [hessian]
  hessian/trace                                Hutchinson                           [hessian_trace]
  gradcov/top, gradcov/trace, gradcov/smallest_nonzero,
  gradcov/trace_over_top, gradcov/smallest_over_top                                 [gradcov]
                                               K per example (gradcov_unit: example, the
                                               default) or of probe-set minibatch means
  gradcov_mb/top, gradcov_mb/trace, gradcov_mb/trace_over_top
                                               K of gradcov_mb_batches mini-batch mean
                                               gradients of gradcov_mb_size examples  [gradcov_mb]
  sgd_noise/s2, sgd_noise/curv_mean, sgd_noise/grad_var, sgd_noise/noise_term
                                               per-example curvature variance s² along
                                               e_H¹ (and mean), gradient variance along
                                               e_H¹, s²η²(N−S)/(S(N−1))               [sgd_noise]
  stiffness/{train_train,train_val,val_val}/{sign,cos,sign_within,sign_between,cos_within,cos_between}
                                               (+ artifacts stiffness_<pair>)       [stiffness]
  fisher/trace                                                                      [fisher]
  freq/delta_k{i}                              Δ_F at the i-th tracked label peak   [frequency]
  timeline/dist_init, timeline/grad_norm, timeline/sign_flips                       [timeline]
                                               ‖θ − θ₀‖, ‖∇ of the mean probe-set loss‖,
                                               fraction of signs flipped since θ₀
  artifact "weights"                           flattened parameters at the step     [snapshots]
  patch/acc                                    at each epoch end, patch data only

All losses are the mean cross-entropy (MSE for regression) over the probe
set, weight decay excluded. BatchNorm is measured in eval mode (running
statistics); `probes.bn_mode: train` applies to the loss and curvature
probes (per-example gradients need eval mode) and is recorded with the config.

Adding a probe family is one file in this package (and its math in a
module of `dynamics_core/probes/`, imported from that module: no export
needed); nothing else is edited. The file defines a hook
(usually a `ProbeFamily` subclass: `self.cfg`, `self.probes`,
`self.probes.at(ctx)` for the shared gradients) and ends with

    register_probe("<name>", TheHook,
                   summaries=[Peak("<name>/top")],          # optional, logged at a trial's end
                   columns={"<name>/top": "short label"})   # optional, in status and progress

This package imports every module in it (below, `pkgutil`), so the file
registers itself: no import line, no export, no list to keep in step. A trial
enables it with `probes: {extra: [<name>]}`. Its metric keys belong in its
module docstring (and the README's table of metrics). What must stay
readable without torch (`dynsweep validate` and `status` never import it) is
not declared here: a config field with its `--smoke` rule (`Smoke` metadata
in `dynamics_core.config`), and the columns, which the driver records in the
sweep's manifest at launch. The older families' bool flags (`probes:
{sgd_noise: true}`) and settings stay fields of `ProbesConfig` so that specs
and stored `run_hash()`es keep working; a new family needs a `ProbesConfig`
field only for a setting of its own. A true flag without a registered probe
is an error, never silence.

A plugin outside dynamics_core adds one the same way without editing
anything here: `register_probe("toy", factory, summaries=..., columns=...)`
in its own module, where `factory(probes_config, probe_set)` returns a probe
hook, and a trial config enables it with `probes: {extra: [toy]}`. The module
must be imported before the hooks are built: in a sweep, list it in the
spec's `plugins:` (imported in the driver, which records the columns, and in
every trial process); outside one, import it. Its hook is named by the
factory (its state, if any, is checkpointed under that name), runs on the
hook's own schedule (`probe_schedule(cfg)` for the probe schedule) and, like
every probe hook, cannot change training.
"""
import importlib
import pkgutil

from dynamics_core.measure.base import ProbeFamily, ProbeRound, ProbeSet, probe_schedule
from dynamics_core.measure.registry import (Probe, ProbeFactory, default_hooks, enabled, flags, get, names,
                                            probe, probe_columns, probe_summaries, register_probe)
from dynamics_core.measure.summary import Peak, Summary

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):    # each registers its probes
    importlib.import_module(f"{__name__}.{_module}")
del _module

__all__ = ["Peak", "Probe", "ProbeFactory", "ProbeFamily", "ProbeRound", "ProbeSet", "Summary", "default_hooks",
           "enabled", "flags", "get", "names", "probe", "probe_columns", "probe_schedule", "probe_summaries",
           "register_probe"]
