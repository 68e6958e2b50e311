"""The scheduled probe round: `ProbesConfig` -> one hook the loop calls.

At each scheduled step it measures, on a fixed probe set drawn once from the
training data (seeded, no augmentation, no deficit), whatever the config
switches on. Per-example gradients are computed once per step and shared by
the gradient covariance and stiffness; with `gradcov_unit="example"` so is
their float64 Gram GGᵀ (K centres it exactly, train-train stiffness uses it
as is), the largest cost of a round on small models. Metric names:

  probe/loss, probe/acc, probe/delta_loss      loss on the probe set, ΔL since last round
  hessian/top, hessian/n_hvp, hessian/lr_x_top λ_H¹ (Lanczos), its HVP count, η·λ_H¹
  hessian/trace                                Hutchinson
  gradcov/top, gradcov/trace, gradcov/smallest_nonzero,
  gradcov/trace_over_top, gradcov/smallest_over_top
  stiffness/{train_train,train_val,val_val}/{sign,cos,sign_within,sign_between,cos_within,cos_between}
  fisher/trace
  freq/delta_k{i}                              Δ_F at the i-th tracked label peak
  timeline/dist_init, timeline/grad_norm, timeline/sign_flips
  artifact "weights" (probes.snapshots)        flattened parameters at the probe step

All losses are the mean cross-entropy (MSE for regression) over the probe
set, weight decay excluded. BatchNorm is measured in eval mode (running
statistics); `probes.bn_mode: train` applies to the loss and curvature
probes (per-example gradients need eval mode) and is recorded with the config.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynamics_core import probes as P
from dynamics_core.config import ProbesConfig, TrialConfig
from dynamics_core.data import Dataset, probe_indices
from dynamics_core.hooks import Schedule, StepContext


def default_hooks(cfg: TrialConfig, data: Dataset) -> list["ProbeHook"]:
    p = cfg.probes
    wanted = (p.hessian, p.hessian_trace, p.gradcov, p.stiffness, p.fisher, p.frequency,
              p.timeline, p.snapshots)
    return [ProbeHook(p, data)] if any(wanted) else []


def probe_schedule(cfg: ProbesConfig) -> Schedule:
    s = cfg.schedule
    return Schedule(kind=s.kind, every=s.every, steps=tuple(s.steps), points=s.points)


class ProbeHook:
    name = "probes"

    def __init__(self, cfg: ProbesConfig, data: Dataset):
        self.cfg = cfg
        self.schedule = probe_schedule(cfg)
        self.classification = data.task == "classification"
        self.num_classes = data.num_classes
        idx = probe_indices(data.n_train, cfg.probe_size, cfg.probe_seed)
        self.x, self.y = data.x_train[idx], data.y_train[idx]
        vidx = probe_indices(len(data.y_test), cfg.val_probe_size, cfg.probe_seed + 1)
        self.xv, self.yv = data.x_test[vidx], data.y_test[vidx]
        h = cfg.hessian_size or cfg.probe_size
        self.xh, self.yh = self.x[:h], self.y[:h]
        self.v0: torch.Tensor | None = None          # Lanczos warm start
        self.prev_loss: float | None = None
        if cfg.frequency:
            p1, _ = P.pc1_projection(data.x_train.cpu())
            self.z = self.x.reshape(len(self.x), -1).cpu().double().numpy() @ p1
            self.freqs = P.label_peaks(self._label_repr(self.y), self.z, num=cfg.frequencies)

    # ---------------------------------------------------------- resume state
    def state_dict(self) -> dict[str, Any]:
        return {"v0": self.v0, "prev_loss": self.prev_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.v0 = state.get("v0")
        self.prev_loss = state.get("prev_loss")

    # ------------------------------------------------------------- the round
    def __call__(self, ctx: StepContext) -> dict[str, float]:
        cfg, model, loss_fn = self.cfg, ctx.model, ctx.loss_fn
        out: dict[str, float] = {}
        with P.probe_mode(model, bn_mode=cfg.bn_mode):
            with torch.no_grad():
                logits = model(self.x).float()
                loss = float(loss_fn(logits, self.y))
        out["probe/loss"] = loss
        if self.classification:
            out["probe/acc"] = float((logits.argmax(1) == self.y).float().mean())
        if self.prev_loss is not None:
            out["probe/delta_loss"] = loss - self.prev_loss
        self.prev_loss = loss

        if cfg.hessian:
            res = P.hessian_top_eigen(model, loss_fn, self.xh, self.yh, tol=cfg.hessian_tol, v0=self.v0,
                                      bn_mode=cfg.bn_mode)
            self.v0 = res.vector
            out.update({"hessian/top": res.value, "hessian/n_hvp": float(res.n_hvp),
                        "hessian/lr_x_top": ctx.lr * res.value})
        if cfg.hessian_trace:
            g = torch.Generator().manual_seed(cfg.probe_seed * 1_000_003 + ctx.step)
            out["hessian/trace"] = P.hessian_trace(model, loss_fn, self.xh, self.yh, bn_mode=cfg.bn_mode,
                                                   samples=cfg.hutchinson_samples, generator=g)
        grads = gram = None
        stiff = cfg.stiffness and self.classification
        if cfg.gradcov or stiff or cfg.timeline:
            grads = P.per_example_gradients(model, loss_fn, self.x, self.y)
        if stiff or (cfg.gradcov and cfg.gradcov_unit == "example"):
            g64 = grads.double()  # converted once for the Gram and the train-val products
            gram = P.gram_matrix(g64)  # one n×n float64 product for K and stiffness
        if cfg.gradcov:
            if cfg.gradcov_unit == "example":
                k = P.gradient_covariance(None, None, None, None, gram=gram)
            else:
                k = P.gradient_covariance(None, None, None, None, unit=cfg.gradcov_unit,
                                          minibatch=cfg.gradcov_minibatch, grads=grads)
            for key in ("top", "trace", "smallest_nonzero", "trace_over_top", "smallest_over_top"):
                out[f"gradcov/{key}"] = float(k[key])
        if stiff:
            out.update(self._stiffness(ctx, model, loss_fn, g64, gram))
        if cfg.fisher and self.classification:
            g = torch.Generator().manual_seed(cfg.probe_seed * 7_368_787 + ctx.step)
            out["fisher/trace"] = P.fisher_trace(model, self.x, samples=cfg.fisher_samples, generator=g)
        if cfg.frequency:
            out.update(self._frequency(model))
        if cfg.timeline:
            params = [p.detach() for p in model.parameters()]
            out["timeline/dist_init"] = float(P.distance_from_init(params, ctx.init_params))
            out["timeline/grad_norm"] = float(grads.mean(0).norm())
            out["timeline/sign_flips"] = float(P.sign_flip_fraction(params, ctx.init_params))
        if cfg.snapshots:      # the trajectory itself, for PCA pictures (paper Fig. 7/8)
            flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            ctx.log_artifact("weights", flat.float().cpu().numpy())
        return out

    def _stiffness(self, ctx: StepContext, model, loss_fn, grads, gram) -> dict[str, float]:
        gv = P.per_example_gradients(model, loss_fn, self.xv, self.yv).double()
        pairs = {
            "train_train": P.stiffness(None, None, self.x, self.y, self.num_classes, gram=gram),
            "train_val": P.stiffness(None, None, self.x, self.y, self.num_classes,
                                     other=(self.xv, self.yv), grads=grads, other_grads=gv),
            "val_val": P.stiffness(None, None, self.xv, self.yv, self.num_classes, grads=gv),
        }
        out = {}
        for pair, s in pairs.items():
            for key in ("sign", "cos", "sign_within", "sign_between", "cos_within", "cos_between"):
                out[f"stiffness/{pair}/{key}"] = float(s[key])
            ctx.log_artifact(f"stiffness_{pair}", {"class_sign": np.asarray(s["class_sign"]).tolist(),
                                                   "class_cos": np.asarray(s["class_cos"]).tolist()})
        return out

    def _frequency(self, model) -> dict[str, float]:
        with P.probe_mode(model, bn_mode=self.cfg.bn_mode), torch.no_grad():
            outputs = model(self.x).float()
        if self.classification:
            outputs = outputs.softmax(1)
        errs = P.frequency_errors(outputs, self._label_repr(self.y), self.z, self.freqs)
        return {f"freq/delta_k{i}": float(e) for i, e in enumerate(errs)}

    def _label_repr(self, y: torch.Tensor) -> torch.Tensor:
        if self.classification:
            return torch.nn.functional.one_hot(y, self.num_classes).float()
        return y.float()
