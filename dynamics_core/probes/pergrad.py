"""Per-example gradients: analytic layer rules, with `torch.func` as fallback.

Two exact methods give the same (n, p) rows, flattened over the trainable
parameters in `model.parameters()` order; nothing on the module changes and
`.grad` is never written.

- "layers" (what BackPACK's `BatchGrad` does): one batched forward with
  temporary forward hooks that keep each layer's input and output, one
  backward of Σᵢ lossᵢ to the layer outputs, then per example
  Linear   ∇W_i = Σ_positions g_i ⊗ a_i,    ∇b_i = Σ_positions g_i
  Conv1d/2d the same on the unfolded input patches (zero padding, groups=1)
  BatchNorm (running statistics) ∇γ_i = Σ g_i x̂_i,  ∇β_i = Σ g_i.
  It assumes that example i's output depends only on x_i, which holds in eval
  mode for every model in `dynamics_core.models` (no layer mixes examples).
- "vmap": vmap(grad(loss of one example)) over `functional_call`: any model.

`method="auto"` uses "layers" when every trainable parameter belongs to a
supported layer, and "vmap" otherwise (and whenever a layer's output is
modified in place or is not batch-first). The loss of example i is
`loss_fn(out_i[None], y_i[None])`. BatchNorm must use running statistics, so
only `bn_mode="eval"` is accepted.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .modes import probe_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.modules.batchnorm._BatchNorm,)


def per_example_gradients(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                          targets: torch.Tensor, *, chunk_size: int | None = None,
                          bn_mode: str = "eval", method: str = "auto") -> torch.Tensor:
    """(n, p) tensor of per-example gradients, parameters' dtype and device.
    `chunk_size` bounds how many examples are processed at once (memory);
    `method` is "auto" | "layers" | "vmap" (see the module docstring)."""
    if bn_mode != "eval":
        raise ValueError("per-example gradients need BatchNorm in eval mode (bn_mode='eval')")
    if method not in ("auto", "layers", "vmap"):
        raise ValueError(f"method must be 'auto', 'layers' or 'vmap', got {method!r}")
    with probe_mode(model, bn_mode="eval"):
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError("model has no trainable parameters")
        n, step = inputs.shape[0], chunk_size or inputs.shape[0]
        chunks = [(inputs[i:i + step], targets[i:i + step]) for i in range(0, n, step)]
        if method != "vmap" and _layers_supported(model):
            rows = [_by_layers(model, loss_fn, x, y) for x, y in chunks]
            if all(r is not None for r in rows):
                return _cat(rows)
            if method == "layers":
                raise ValueError("a layer output was modified in place or is not batch-first")
        elif method == "layers":
            raise ValueError("method='layers' needs every trainable parameter in a "
                             "Linear, Conv1d/2d (zero padding, groups=1) or BatchNorm layer")
        return _cat([_by_vmap(model, loss_fn, x, y, params) for x, y in chunks])


def per_example_gram(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                     targets: torch.Tensor, *, chunk_size: int | None = None,
                     bn_mode: str = "eval", exact: int | None = None) -> torch.Tensor:
    """GGᵀ (n×n, float64) of the per-example gradients G of
    `per_example_gradients`, without forming G where a layer's rule allows.

    A Linear layer on (n, d_in) inputs has per-example weight gradient
    g_i ⊗ a_i (g_i: gradient at its output, a_i: its input), so its share of
    the Gram is (g gᵀ) ⊙ (a aᵀ + 1), the 1 for its bias: n²·(d_in + d_out)
    products instead of n²·d_in·d_out. Every other layer (Conv, BatchNorm,
    Linear over positions) adds the Gram of its own per-example gradient
    columns, computed in the parameters' dtype as `per_example_gradients`
    computes them. Models the layer rules do not cover (see the module
    docstring), or with a layer called twice, fall back to the Gram of
    `per_example_gradients`. `chunk_size` bounds the examples of one
    forward/backward.

    `exact`: the leading examples whose Gram among themselves (the
    exact×exact block) is accumulated in float64, from the gradients' own
    entries: an eigen-solve of that block (K's smallest nonzero eigenvalue)
    needs it, since a float32 accumulation adds rounding of ≈ 1e-7 of the
    largest entries, not positive semidefinite. Every other entry (the
    products that only cosines read) is a product in the parameters' dtype,
    rounded to it, at half the cost or less. None (default): all n, so the
    whole Gram equals `gram_matrix(per_example_gradients(...))` to the
    rounding of G's entries."""
    if bn_mode != "eval":
        raise ValueError("per-example gradients need BatchNorm in eval mode (bn_mode='eval')")
    with probe_mode(model, bn_mode="eval"):
        n, step = inputs.shape[0], chunk_size or inputs.shape[0]
        exact = n if exact is None else max(0, min(int(exact), n))
        gram = torch.zeros(n, n, dtype=torch.float64, device=inputs.device)
        parts = None
        if _layers_supported(model) and any(p.requires_grad for p in model.parameters()):
            parts = [_layer_calls(model, loss_fn, inputs[i:i + step], targets[i:i + step])
                     for i in range(0, n, step)]
        if parts is None or any(c is None for c in parts) or len({id(m) for m, _, _ in parts[0]}) < len(parts[0]):
            g = per_example_gradients(model, loss_fn, inputs, targets, chunk_size=chunk_size)
            for j in range(0, g.shape[1], _COLS):
                _add_gram(gram, g[:, j:j + _COLS], exact)
            return gram
        for k, (m, _, _) in enumerate(parts[0]):
            a = _cat([c[k][1] for c in parts])
            g = _cat([c[k][2] for c in parts])
            own = [name for name in ("weight", "bias")
                   if getattr(m, name) is not None and getattr(m, name).requires_grad]
            if isinstance(m, nn.Linear) and a.dim() == 2 and "weight" in own:
                _add_factored(gram, g, a, "bias" in own, exact)
                continue
            for name in own:
                _add_gram(gram, _layer_grad(m, name, a, g).reshape(n, -1), exact)
        return gram


_COLS = 1 << 14   # columns of G per product in the fallback (bounds the float64 copy)
_BLOCK = 64       # row block of the symmetric float64 product


def _add_factored(gram: torch.Tensor, g: torch.Tensor, a: torch.Tensor, bias: bool, exact: int) -> None:
    """gram += (g gᵀ) ⊙ (a aᵀ + bias): a Linear layer's share, float64 on the
    exact block, the inputs' dtype elsewhere."""
    if exact:
        g64, a64 = g[:exact].double(), a[:exact].double()
        aa = a64 @ a64.T
        if bias:
            aa += 1.0
        gram[:exact, :exact] += (g64 @ g64.T) * aa
    if exact < len(g):
        aa = a @ a[exact:].T
        if bias:
            aa += 1.0
        _add_rest(gram, (g @ g[exact:].T) * aa, exact)


def _add_gram(gram: torch.Tensor, cols: torch.Tensor, exact: int) -> None:
    """gram += cols colsᵀ: float64 on the exact block, the columns' dtype
    elsewhere; the two diagonal blocks from their row blocks on and above the
    diagonal (a symmetric product done as one GEMM computes every entry twice)."""
    if exact:
        _add_symmetric(gram[:exact, :exact], cols[:exact].double())
    if exact < len(cols):
        rest = cols[exact:]
        if exact:
            part = cols[:exact] @ rest.T
            gram[:exact, exact:] += part
            gram[exact:, :exact] += part.T
        _add_symmetric(gram[exact:, exact:], rest)


def _add_symmetric(block: torch.Tensor, c: torch.Tensor) -> None:
    """block += c cᵀ in c's dtype, by row blocks of `_BLOCK` against
    themselves and the rows after them, mirrored: exactly symmetric."""
    m = len(c)
    edges = list(range(0, m, _BLOCK)) + [m]
    for lo, hi in zip(edges[:-1], edges[1:]):
        part = c[lo:hi] @ c[lo:].T
        own = part[:, :hi - lo]
        block[lo:hi, lo:hi] += own.triu() + own.triu(1).T
        block[lo:hi, hi:] += part[:, hi - lo:]
        block[hi:, lo:hi] += part[:, hi - lo:].T


def _add_rest(gram: torch.Tensor, part: torch.Tensor, exact: int) -> None:
    """Add the columns after `exact` (part: all rows × those columns) and
    their mirror, the rows after `exact` against the exact ones; the block of
    those rows among themselves from its upper triangle, so that the Gram
    stays exactly symmetric."""
    rest = part[exact:]
    gram[:exact, exact:] += part[:exact]
    gram[exact:, :exact] += part[:exact].T
    gram[exact:, exact:] += rest.triu() + rest.triu(1).T


def _cat(rows: list[torch.Tensor]) -> torch.Tensor:
    return rows[0] if len(rows) == 1 else torch.cat(rows)  # n·p floats: copy only if needed


def _by_vmap(model, loss_fn, inputs, targets, params) -> torch.Tensor:
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    frozen.update({n: b.detach() for n, b in model.named_buffers()})
    detached = {n: p.detach() for n, p in params.items()}

    def loss_one(ps, x, y):
        out = functional_call(model, (ps, frozen), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    per = vmap(grad(loss_one), in_dims=(None, 0, 0))(detached, inputs, targets)
    return torch.cat([per[name].reshape(len(inputs), -1) for name in params], dim=1)


# --------------------------------------------------------------- layer rules
def _supported(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, _CONV):
        return (m.groups == 1 and m.padding_mode == "zeros"
                and not isinstance(m.padding, str))
    if isinstance(m, _BN):
        return not m.training and m.running_mean is not None and m.affine
    return False


def _layers_supported(model: nn.Module) -> bool:
    """Every trainable parameter is owned by a supported layer."""
    for m in model.modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if own and not _supported(m):
            return False
    return True


def _layer_calls(model, loss_fn, inputs, targets):
    """[(layer, its input, gradient of Σᵢ lossᵢ w.r.t. its output)] for every
    call of a layer with trainable parameters, from one batched forward and
    backward; None if an output was modified in place or is not batch-first."""
    n = inputs.shape[0]
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor, int]] = []

    def keep(m, args, out):
        calls.append((m, args[0].detach(), out, out._version))

    layers = [m for m in model.modules()
              if any(p.requires_grad for p in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        out = model(inputs)
    finally:
        for h in handles:
            h.remove()
    if any(o.shape[:1] != (n,) or a.shape[:1] != (n,) for _, a, o, _ in calls):
        return None
    losses = vmap(lambda o, y: loss_fn(o[None], y[None]))(out, targets)
    outs = [o for _, _, o, _ in calls]
    gouts = torch.autograd.grad(losses.sum(), outs, allow_unused=True)
    if any(o._version != v for _, _, o, v in calls):
        return None
    return [(m, a, torch.zeros_like(o) if g is None else g.detach())
            for (m, a, o, _), g in zip(calls, gouts)]


def _by_layers(model, loss_fn, inputs, targets) -> torch.Tensor | None:
    """Rows from one batched forward/backward; None if the assumptions fail."""
    n = inputs.shape[0]
    calls = _layer_calls(model, loss_fn, inputs, targets)
    if calls is None:
        return None
    # write each parameter's rows straight into its columns of the (n, p) result
    trainable = [p for p in model.parameters() if p.requires_grad]
    rows = torch.empty(n, sum(p.numel() for p in trainable), dtype=trainable[0].dtype,
                       device=trainable[0].device)
    slots, offset = {}, 0
    for p in trainable:
        slots[p] = rows[:, offset:offset + p.numel()].view(n, *p.shape)
        offset += p.numel()
    written: set[nn.Parameter] = set()
    for m, a, g in calls:
        for name in ("weight", "bias"):
            p = getattr(m, name)
            if p is None or not p.requires_grad:
                continue
            if p in written:  # a layer called more than once: sum over its calls
                slots[p].add_(_layer_grad(m, name, a, g))
            else:
                _layer_grad(m, name, a, g, out=slots[p])
                written.add(p)
    for p in trainable:
        if p not in written:  # its layer never ran
            slots[p].zero_()
    return rows


def _layer_grad(m: nn.Module, name: str, a: torch.Tensor, g: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example gradient of `m.<name>` (weight or bias) from the layer's
    input `a` and the gradient `g` of Σᵢ lossᵢ with respect to its output;
    written into `out` when given."""
    n = a.shape[0]
    if isinstance(m, nn.Linear) and name == "weight" and a.dim() == 2:
        return torch.mul(g[:, :, None], a[:, None, :], out=out)  # outer products
    if isinstance(m, nn.Linear):  # (n, ..., in) and (n, ..., out): sum over positions
        a, g = a.reshape(n, -1, a.shape[-1]), g.reshape(n, -1, g.shape[-1])
        value = torch.bmm(g.transpose(1, 2), a) if name == "weight" else g.sum(1)
    elif isinstance(m, _CONV):
        g = g.reshape(n, g.shape[1], -1)  # (n, out, positions) @ (n, positions, in·k)
        value = torch.bmm(g, _unfold(m, a).transpose(1, 2)) if name == "weight" else g.sum(2)
    else:  # BatchNorm on running statistics: ∇γ = Σ g x̂, x̂ = (x − μ) / √(σ² + ε)
        shape, dims = (1, -1) + (1,) * (a.dim() - 2), tuple(range(2, a.dim()))
        if name == "weight":
            g = g * (a - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
        value = g.sum(dims) if dims else g
    value = value.view(n, *getattr(m, name).shape)
    return value if out is None else out.copy_(value)


def _unfold(m: nn.Module, a: torch.Tensor) -> torch.Tensor:
    if isinstance(m, nn.Conv1d):  # as a 2-D conv over a height-1 image
        return F.unfold(a.unsqueeze(2), (1, m.kernel_size[0]), dilation=(1, m.dilation[0]),
                        padding=(0, m.padding[0]), stride=(1, m.stride[0]))
    return F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
