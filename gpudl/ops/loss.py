"""Loss functions: fused softmax cross-entropy, multiclass hinge, NLL, MSE, BCE with logits."""
from __future__ import annotations

from ..autograd import Function
from ..tensor import Tensor
from . import math as M
from .shape import where


def _reduce(per_item, reduction, op, count=None):
    if reduction == "none":
        return per_item
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        return per_item.sum() / count if count is not None else per_item.mean()
    raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none', got {reduction!r}")


def _check_target(scores, target, op, ignore_index=None):
    """Check integer class labels of shape (N,), each in [0, C) (or ignore_index).

    Returns (ignored mask, whether any row is ignored, whether all are).
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ValueError(f"{op}: expected input of shape (N, C), got "
                         f"{scores.shape if isinstance(scores, Tensor) else type(scores).__name__}")
    if scores.dtype.kind != "f":
        raise TypeError(f"{op}: expected floating-point input, got {scores.dtype}")
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: expected target to be a Tensor of class indices, got {type(target).__name__}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected integer class indices as target, got dtype {target.dtype} "
                        f"(class probabilities are not supported; use .long() on label tensors)")
    if target.shape != scores.shape[:1]:
        raise ValueError(f"{op}: expected target of shape ({scores.shape[0]},) for input {scores.shape}, "
                         f"got {target.shape}")
    if target.device != scores.device:
        raise ValueError(f"{op}: input on {scores.device}, target on {target.device}")
    c = scores.shape[1]
    t = target.data
    xp = target.device.backend.xp
    ignored = (t == ignore_index) if ignore_index is not None else xp.zeros(t.shape, dtype=bool)
    bad = ~ignored & ((t < 0) | (t >= c))
    # one read-back for every question (each would be a host sync on a GPU)
    any_bad, any_ignored, all_ignored = (bool(v) for v in target.device.backend.to_numpy(
        xp.stack([bad.any(), ignored.any(), ignored.all()])))
    if any_bad:
        first = int(t[bad][0])
        raise ValueError(f"{op}: target holds class {first}, expected classes in [0, {c - 1}]"
                         + (f" or ignore_index={ignore_index}" if ignore_index is not None else ""))
    return ignored, any_ignored, any_ignored and all_ignored


class SoftmaxCrossEntropy(Function):
    """Per-row loss of the fused, stable softmax + cross-entropy kernel."""

    @staticmethod
    def forward(ctx, logits, labels, smoothing):
        loss, lse = ctx.backend.softmax_cross_entropy_forward(logits, labels, smoothing)
        ctx.save_for_backward(logits, labels, lse)
        ctx.smoothing = smoothing
        return loss

    @staticmethod
    def backward(ctx, g):
        logits, labels, lse = ctx.saved
        return ctx.backend.softmax_cross_entropy_backward(logits, labels, lse, g, ctx.smoothing), None, None


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Softmax cross-entropy of logits (N, C) against class indices (N,).

    Extra dimensions (N, C, d1, ...) with target (N, d1, ...) are flattened
    (``reduction="none"`` gives the loss back in the target's shape).
    Rows whose target equals ``ignore_index`` contribute nothing; "mean"
    averages over the others.
    """
    op = "cross_entropy"
    shape = None
    if isinstance(input, Tensor) and input.ndim > 2:
        c = input.shape[1]
        shape = (input.shape[0],) + input.shape[2:]
        input = input.permute(0, *range(2, input.ndim), 1).reshape(-1, c)
        if isinstance(target, Tensor):
            if target.shape != shape:
                raise ValueError(f"{op}: expected target of shape {shape} for input "
                                 f"{(shape[0], c) + shape[1:]}, got {target.shape}")
            target = target.reshape(-1)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: expected 0 <= label_smoothing <= 1, got {label_smoothing}")
    ignore = _check_target(input, target, op, ignore_index)
    labels = _labels(target, ignore)
    if ignore[1]:   # ignored rows' logits read as 0: an inf there can't reach the loss or gradient
        input = where(Tensor._make(~ignore[0][:, None], input.device), input, 0.0)
    out = _reduce_kept(SoftmaxCrossEntropy.apply(input, labels, float(label_smoothing)),
                       ignore, reduction, op)
    return out.reshape(shape) if shape is not None and reduction == "none" else out


def _labels(target, ignore):
    """The target's classes, ignored rows pointed at class 0 (their loss is dropped after)."""
    mask, has_ignored, _ = ignore
    return target.device.backend.xp.where(mask, 0, target.data) if has_ignored else target.data


def _reduce_kept(loss, ignore, reduction, op):
    """Reduce per-row ``loss`` over the rows not ignored ("mean" divides by
    their count).  Ignored rows are selected away, not multiplied by 0, so an
    infinite loss there changes nothing; with every row ignored "mean" is NaN
    with a zero gradient, as in PyTorch."""
    mask, has_ignored, all_ignored = ignore
    if not has_ignored:
        return _reduce(loss, reduction, op)
    dev = loss.device
    kept = Tensor._make(~mask, dev)
    loss = where(kept, loss, 0.0)
    if reduction == "mean" and all_ignored:
        return where(Tensor._make(dev.backend.xp.zeros((), bool), dev), loss.sum(), float("nan"))
    return _reduce(loss, reduction, op, count=Tensor._make(kept.data.sum(dtype=loss.dtype), dev))


class MultiClassHinge(Function):
    @staticmethod
    def forward(ctx, s, y, margin):
        xp = ctx.xp
        rows = xp.arange(s.shape[0])
        m = s - s[rows, y][:, None] + s.dtype.type(margin)
        m[rows, y] = 0
        pos = m > 0
        ctx.save_for_backward(pos, y)
        return (m * pos).sum(axis=1)

    @staticmethod
    def backward(ctx, g):
        pos, y = ctx.saved
        xp = ctx.xp
        gs = pos.astype(g.dtype)
        gs[xp.arange(gs.shape[0]), y] = -gs.sum(axis=1)
        return gs * g[:, None], None, None


def multiclass_hinge_loss(input, target, margin=1.0, reduction="mean"):
    """Multiclass SVM loss: L_i = sum over j != y_i of max(0, s_j - s_{y_i} + margin).

    The Weston-Watkins / CS231n form, averaged over the batch for "mean".
    PyTorch's ``multi_margin_loss`` is this divided by the number of classes.
    """
    _check_target(input, target, "multiclass_hinge_loss")
    return _reduce(MultiClassHinge.apply(input, target.data, float(margin)), reduction, "multiclass_hinge_loss")


def nll_loss(input, target, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of log-probabilities (N, C) at class indices (N,)."""
    ignore = _check_target(input, target, "nll_loss", ignore_index)
    labels = _labels(target, ignore)
    picked = -input[input.device.backend.xp.arange(input.shape[0]), labels]
    return _reduce_kept(picked, ignore, reduction, "nll_loss")


def _check_same(input, target, op):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{op}: expected two Tensors")
    if input.shape != target.shape:
        raise ValueError(f"{op}: input shape {input.shape} and target shape {target.shape} differ")


def mse_loss(input, target, reduction="mean"):
    _check_same(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


class BCEWithLogits(Function):
    @staticmethod
    def forward(ctx, x, y):
        xp = ctx.xp
        ctx.save_for_backward(x, y)
        return ctx.backend.relu(x) - x * y + xp.log1p(xp.exp(-xp.abs(x)))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))
        sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        ny = ctx.needs_input_grad[1]
        return g * (sig - y), (-g * x if ny else None)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """Sigmoid + binary cross-entropy, stable for logits of any size."""
    _check_same(input, target, "binary_cross_entropy_with_logits")
    if target.dtype != input.dtype:
        target = M.astype(target, input.dtype)
    return _reduce(BCEWithLogits.apply(input, target), reduction, "binary_cross_entropy_with_logits")


def l2_penalty(params):
    """Sum of squared entries of every tensor in ``params`` (explicit L2 regularisation)."""
    total = None
    for p in params:
        term = (p * p).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2_penalty: expected at least one parameter")
    return total
