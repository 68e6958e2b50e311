"""Probes: measurements of training dynamics with no side effects on training.

Every probe takes a model, a loss function and tensors and returns plain
Python floats / numpy arrays. It saves and restores the train/eval flags of
every submodule and every buffer, never writes `.grad`, uses its own
`torch.Generator` (a fixed-seed one when `generator=None`) and runs with
BatchNorm on running statistics and dropout off by default (`bn_mode`).

Modes (modes.py)
    probe_mode(model, train=False, bn_mode=None)         context manager
Curvature (curvature.py)
    hessian_top_eigen(model, loss_fn, inputs, targets, tol=1e-3, v0=None,
                      maxiter=None, ncv=50)
        -> EigenResult(value, vector, n_hvp, converged)   largest algebraic
        eigenvalue by our own Lanczos (full reorthogonalisation), stopping
        after the first HVP whose relative Ritz residual is ≤ tol
    lanczos_top(matvec, v0, tol=1e-3, maxiter=200, ncv=50) -> (θ, x, n, converged)
        (numpy vectors, or torch tensors: then in torch on v0's device)
    hessian_trace(model, loss_fn, inputs, targets, samples=20, generator=None)
    hessian_hvp(model, loss_fn, inputs, targets, vector)
Per-example gradients (pergrad.py)
    per_example_gradients(model, loss_fn, inputs, targets, *, chunk_size=None,
                          method="auto") -> (n, p)
        method: "layers" (analytic Linear/Conv/BatchNorm rules), "vmap"
        (torch.func), or "auto" (layers where every layer has a rule, else vmap)
    per_example_gram(model, loss_fn, inputs, targets, *, chunk_size=None, exact=None)
        -> GGᵀ (n×n float64) without forming G where a layer allows (Linear:
        (g gᵀ) ⊙ (a aᵀ + 1)); stack two sets' inputs for their joint Gram;
        float64-accumulated for the first `exact` rows among themselves (all
        when None), float32 products elsewhere
Gradient covariance K (covariance.py)
    gradient_covariance(model, loss_fn, inputs, targets, unit="example",
                        minibatch=128, grads=None, gram=None) -> dict top, trace,
        smallest_nonzero, trace_over_top, smallest_over_top, rank, n
    covariance_spectrum(grads=None, *, gram=None, unit="example", minibatch=128)
        -> the same dict, from precomputed gradients or their Gram
    gram_matrix(grads) -> GGᵀ (n×n float64, uncentred); pass it as `gram=` to
        gradient_covariance (unit="example": centred exactly) and stiffness
Gradient covariance in the mini-batch unit (minibatch.py)
    minibatch_gradients(model, loss_fn, inputs, targets, batch_size, bn_mode="eval")
        -> (M, p) mean gradients of M consecutive mini-batches
    minibatch_covariance(model, loss_fn, inputs, targets, batch_size=128,
                         bn_mode="eval") -> the covariance_spectrum dict of
        K_mb = (1/M) Σ_j (g_j − ḡ)(g_j − ḡ)ᵀ over those M gradients (M×M Gram)
SGD noise along a direction (sgd_noise.py)
    directional_derivatives(model, loss_fn, inputs, targets, vector)
        -> (g_i·v, vᵀH_i v) per example, one nested forward-mode pass
    sgd_noise(model, loss_fn, inputs, targets, vector) -> dict s2 (variance of
        the per-example curvatures vᵀH_i v: the s² of stability_breakeven),
        curv_mean, grad_var (variance of g_i·v)
Stiffness (stiffness.py)
    stiffness(model, loss_fn, inputs, targets, num_classes, other=None,
              grads=None, other_grads=None, gram=None) -> dict sign, cos,
        class_sign, class_cos, sign_within, sign_between, cos_within,
        cos_between (gram: GGᵀ, or with other the Gram of the stacked sets)
    stiffness_from(targets, num_classes, grads=None, *, other_grads=None,
              other_targets=None, gram=None) -> the same dict, from precomputed
        gradients (within a set, or between it and another) or their Gram
        (between sets: of [G; G_other], with other_targets)
    stiffness_by_distance(grads, inputs, grads_other=None, inputs_other=None,
              targets=None, targets_other=None, same_class_mask=None, bins=10,
              kind="sign", *, gram=None, distances=None) -> binned stiffness
        against input distance 1 − cos(x₁, x₂), from gradients or their Gram
Fisher (fisher.py)
    fisher_trace(model, inputs, samples=1, generator=None, exact=False, grads=None)
    sample_labels(model, inputs, samples=1, generator=None)
Frequency principle (frequency.py)
    pc1_projection(train_inputs) -> (p1, z)
    nudft(values, projections, frequencies) -> complex (m, d)
    label_peaks(targets_onehot, projections, num=4, grid=None, min_rel=1e-6, min_sep=None)
    grid_step(projections) -> the default grid's bin 1/L
    frequency_errors(outputs, targets, projections, frequencies, magnitude=False)
    low_high_errors(outputs, targets, inputs, widths, *, filters=None)
        -> dict widths, e_low, e_high (filters: precomputed Gaussian kernels)
Break-even detectors (breakeven.py)
    stability_breakeven(steps, lam_h, lr, batch_size=None, n_train=None, s=None)
    saturation_breakeven(steps, values, window=3, eps=0.05) -> (step, reached)
Timeline (timeline.py)
    distance_from_init(model, init_params), gradient_norm(model_or_grad, ...),
    sign_flip_fraction(params, reference_params)
"""
from .breakeven import saturation_breakeven, stability_breakeven
from .covariance import covariance_spectrum, gradient_covariance, gram_matrix
from .curvature import EigenResult, hessian_hvp, hessian_top_eigen, hessian_trace
from .fisher import fisher_trace, sample_labels
from .frequency import (default_grid, frequency_errors, gaussian_smooth, grid_step, label_peaks,
                        low_high_errors, nudft, pc1_projection)
from .minibatch import minibatch_covariance, minibatch_gradients
from .modes import probe_mode
from .pergrad import per_example_gradients, per_example_gram
from .sgd_noise import directional_derivatives, sgd_noise
from .stiffness import critical_length, stiffness, stiffness_by_distance, stiffness_from
from .timeline import distance_from_init, gradient_norm, sign_flip_fraction

__all__ = [
    "EigenResult", "covariance_spectrum", "critical_length", "default_grid", "distance_from_init",
    "fisher_trace", "frequency_errors", "gaussian_smooth", "gradient_covariance",
    "gradient_norm", "gram_matrix", "grid_step", "hessian_hvp", "hessian_top_eigen", "hessian_trace",
    "label_peaks", "low_high_errors", "minibatch_covariance", "minibatch_gradients", "nudft",
    "pc1_projection", "directional_derivatives", "sgd_noise",
    "per_example_gradients", "per_example_gram", "probe_mode", "sample_labels",
    "saturation_breakeven", "sign_flip_fraction", "stability_breakeven",
    "stiffness", "stiffness_by_distance", "stiffness_from",
]
