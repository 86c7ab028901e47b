"""Loss functions: fused softmax cross-entropy, multiclass hinge, NLL, MSE, BCE with logits."""
from __future__ import annotations

import warnings

import numpy

from ..autograd import Function
from ..tensor import Tensor
from . import math as M
from .activation import log_softmax
from .shape import where


def _reduce(per_item, reduction, op, count=None):
    if reduction == "none":
        return per_item
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        return per_item.sum() / count if count is not None else per_item.mean()
    raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none', got {reduction!r}")


def _reduction(size_average, reduce, reduction, op):
    """PyTorch's deprecated ``size_average`` / ``reduce`` pair, when given,
    decides the reduction as it does there (each None counts as True)."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is None or reduce:
        reduction = "mean" if size_average is None or size_average else "sum"
    else:
        reduction = "none"
    warnings.warn(f"{op}: size_average and reduce are deprecated, as in PyTorch; use "
                  f"reduction={reduction!r} instead", UserWarning, stacklevel=3)
    return reduction


def _class_weight(weight, scores, op, dim=1):
    """``weight`` (C,) for the classes of ``scores`` (classes along ``dim``), or None."""
    if weight is None:
        return None
    c = scores.shape[dim]
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: expected weight to be a Tensor of {c} class weights, got {type(weight).__name__}")
    if weight.shape != (c,):
        raise ValueError(f"{op}: expected weight of shape ({c},) for {c} classes, got {weight.shape}")
    if weight.device != scores.device:
        raise ValueError(f"{op}: input on {scores.device}, weight on {weight.device}")
    return weight if weight.dtype == scores.dtype else M.astype(weight, scores.dtype)


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
        probs = (" or, for cross_entropy, class probabilities of the input's shape "
                 f"{scores.shape}" if op == "cross_entropy" else "")
        raise TypeError(f"{op}: expected integer class indices of shape ({scores.shape[0]},){probs}, "
                        f"got {target.dtype} of shape {target.shape} (use .long() on label tensors)")
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


def _rows(input, target, op):
    """(N, C, d1, ...) logits with (N, d1, ...) targets as (N * d1 * ..., C)
    rows, and the shape to give a per-element result back in (None: as is);
    unbatched (C,) with a 0-d target as one row."""
    if not isinstance(input, Tensor) or input.ndim == 2:
        return input, target, None
    if input.ndim == 0:
        raise ValueError(f"{op}: expected input of shape (N, C), (N, C, d1, ...) or (C,), got ()")
    if input.ndim == 1:
        shape = ()
        input = input.reshape(1, input.shape[0])
        if isinstance(target, Tensor):
            if target.shape != ():
                raise ValueError(f"{op}: expected a 0-d target for unbatched input {input.shape[1:]}, "
                                 f"got {target.shape}")
            target = target.reshape(1)
        return input, target, shape
    c = input.shape[1]
    shape = (input.shape[0],) + input.shape[2:]
    input = input.permute(0, *range(2, input.ndim), 1).reshape(-1, c)
    if isinstance(target, Tensor):
        if target.shape != shape:
            raise ValueError(f"{op}: expected target of shape {shape} for input "
                             f"{(shape[0], c) + shape[1:]}, got {target.shape}")
        target = target.reshape(-1)
    return input, target, shape


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, C) against class indices (N,) or
    class probabilities (N, C); PyTorch's signature and formulas.

    Extra dimensions (N, C, d1, ...) with target (N, d1, ...) are flattened
    (``reduction="none"`` gives the loss back in the target's shape);
    unbatched (C,) logits take a 0-d target.  Rows whose target equals
    ``ignore_index`` contribute nothing; "mean" averages over the others.
    ``weight`` (C,) scales each row by its class's weight, and "mean" then
    divides by the sum of those weights.  Probability targets (floats, the
    input's shape): ``-sum_c w_c t_c log p_c`` per element, smoothed towards
    uniform by ``label_smoothing``; "mean" divides by the number of elements.
    """
    op = "cross_entropy"
    reduction = _reduction(size_average, reduce, reduction, op)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: expected 0 <= label_smoothing <= 1, got {label_smoothing}")
    if (isinstance(input, Tensor) and isinstance(target, Tensor) and target.dtype.kind == "f"
            and input.ndim >= 1 and target.shape == input.shape):
        return _cross_entropy_probs(input, target, weight, ignore_index, reduction, label_smoothing, op)
    input, target, shape = _rows(input, target, op)
    ignore = _check_target(input, target, op, ignore_index)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none', got {reduction!r}")
    w = _class_weight(weight, input, op)
    labels = _labels(target, ignore)
    if ignore[1]:   # ignored rows' logits read as 0: an inf there can't reach the loss or gradient
        input = where(Tensor._make(~ignore[0][:, None], input.device), input, 0.0)
    if w is None:
        out = _reduce_kept(SoftmaxCrossEntropy.apply(input, labels, float(label_smoothing)),
                           ignore, reduction, op)
    elif label_smoothing == 0.0:
        out = _reduce_weighted(SoftmaxCrossEntropy.apply(input, labels, 0.0), w, labels, ignore, reduction, op)
    else:
        # PyTorch's weighted smoothing: (1 - e) * weighted NLL + e / C * (-sum_c w_c log p_c),
        # the second part's "mean" divided by the same sum of the rows' weights
        logp = log_softmax(input, 1)
        e, c = float(label_smoothing), input.shape[1]
        nll = _reduce_weighted(-_pick(logp, labels), w, labels, ignore, reduction, op)
        smooth = _reduce_weighted(-(logp * w).sum(1), w, labels, ignore, reduction, op, scale=False)
        out = nll * (1.0 - e) + smooth * (e / c)
    return out.reshape(shape) if shape is not None and reduction == "none" else out


def _cross_entropy_probs(input, target, weight, ignore_index, reduction, label_smoothing, op):
    """Cross-entropy against class probabilities (PyTorch's formula)."""
    if ignore_index >= 0:          # (a negative one matches no probability target: PyTorch allows it)
        raise ValueError(f"{op}: ignore_index={ignore_index} needs class-index targets, got "
                         f"probabilities (float {target.shape})")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none', got {reduction!r}")
    if target.device != input.device:
        raise ValueError(f"{op}: input on {input.device}, target on {target.device}")
    dim = 0 if input.ndim == 1 else 1
    c = input.shape[dim]
    logp = log_softmax(input, dim)
    t = target if target.dtype == logp.dtype else M.astype(target, logp.dtype)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / c
    if weight is not None:
        w = _class_weight(weight, logp, op, dim)
        logp = logp * w.reshape((c,) + (1,) * (input.ndim - 1 - dim))
    per = -(logp * t).sum(dim)
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return total
    n = input.numel() // c if c else 0
    return total / n if n else total * float("nan")          # an empty mean is NaN, as in PyTorch


def _pick(scores, labels):
    """scores[i, labels[i]] for every row."""
    return scores[scores.device.backend.xp.arange(scores.shape[0]), labels]


def _reduce_weighted(loss, w, labels, ignore, reduction, op, scale=True):
    """Per-row ``loss`` times its class's weight (unless ``scale`` is False),
    reduced over the rows kept; "mean" divides by the kept rows' weights."""
    mask, has_ignored, all_ignored = ignore
    wy = w[labels]
    if scale:
        loss = loss * wy
    if has_ignored:
        kept = Tensor._make(~mask, loss.device)
        loss = where(kept, loss, 0.0)
        wy = where(kept, wy, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if has_ignored and all_ignored:
        return where(Tensor._make(loss.device.backend.xp.zeros((), bool), loss.device), loss.sum(), float("nan"))
    return loss.sum() / wy.sum()


def _labels(target, ignore):
    """The target's classes as a tensor, ignored rows pointed at class 0 (their loss is
    dropped after).  With nothing ignored, the target itself: the ops that save it then
    check its version, and a backward after the target was changed in place is refused
    (as in PyTorch; before, the gradient silently used the new classes)."""
    mask, has_ignored, _ = ignore
    if not has_ignored:
        return target
    return Tensor._make(target.device.backend.xp.where(mask, 0, target.data), target.device)


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
    return _reduce(MultiClassHinge.apply(input, target, float(margin)), reduction, "multiclass_hinge_loss")


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C) at class indices (N,);
    PyTorch's signature.  ``weight``, extra dimensions and unbatched input as
    in :func:`cross_entropy`."""
    op = "nll_loss"
    reduction = _reduction(size_average, reduce, reduction, op)
    input, target, shape = _rows(input, target, op)
    out = _nll_rows(input, target, weight, ignore_index, reduction, op)
    return out.reshape(shape) if shape is not None and reduction == "none" else out


def _nll_rows(input, target, weight, ignore_index, reduction, op):
    ignore = _check_target(input, target, op, ignore_index)
    w = _class_weight(weight, input, op)
    labels = _labels(target, ignore)
    picked = -_pick(input, labels)
    if w is None:
        return _reduce_kept(picked, ignore, reduction, op)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: expected reduction 'mean', 'sum' or 'none', got {reduction!r}")
    return _reduce_weighted(picked, w, labels, ignore, reduction, op)


def _check_same(input, target, op):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{op}: expected two Tensors")
    if input.shape != target.shape:
        raise ValueError(f"{op}: input shape {input.shape} and target shape {target.shape} differ")


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error; PyTorch's signature."""
    reduction = _reduction(size_average, reduce, reduction, "mse_loss")
    _check_same(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


class BCEWithLogits(Function):
    """``(1 - y) x + (1 + (p - 1) y) softplus(-x)`` per element (p: pos_weight,
    None for 1), with softplus(-x) = log1p(exp(-|x|)) + relu(-x): stable for
    logits of any size."""

    @staticmethod
    def forward(ctx, x, y, pw):
        xp = ctx.xp
        sp = ctx.backend.relu(-x) + xp.log1p(xp.exp(-xp.abs(x)))
        ctx.save_for_backward(x, y, pw, sp)
        if pw is None:
            return (1 - y) * x + sp
        return (1 - y) * x + ((pw - 1) * y + 1) * sp

    @staticmethod
    def backward(ctx, g):
        x, y, pw, sp = ctx.saved
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))
        sig = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        _, ny, npw = ctx.needs_input_grad
        if pw is None:
            return g * (sig - y), (-g * x if ny else None), None
        gx = g * ((1 - y) - ((pw - 1) * y + 1) * (1 - sig))
        return gx, (g * ((pw - 1) * sp - x) if ny else None), (g * y * sp if npw else None)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy, stable for logits of any size; PyTorch's
    signature.  ``weight`` multiplies each element's loss (broadcast);
    ``pos_weight`` (broadcast along the last dimension: one per class) weighs
    the positive term: ``-(p y log s(x) + (1 - y) log(1 - s(x)))``."""
    op = "binary_cross_entropy_with_logits"
    reduction = _reduction(size_average, reduce, reduction, op)
    _check_same(input, target, op)
    if target.dtype != input.dtype:
        target = M.astype(target, input.dtype)
    pw = None if pos_weight is None else _broadcast_weight(pos_weight, input, "pos_weight", op)
    loss = BCEWithLogits.apply(input, target, pw)
    if weight is not None:
        loss = loss * _broadcast_weight(weight, input, "weight", op)
    return _reduce(loss, reduction, op)


def _broadcast_weight(w, input, name, op):
    if not isinstance(w, Tensor):
        raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(w).__name__}")
    if w.device != input.device:
        raise ValueError(f"{op}: input on {input.device}, {name} on {w.device}")
    try:
        fits = numpy.broadcast_shapes(w.shape, input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {name} of shape {w.shape} does not broadcast to the input's {input.shape}")
    return w if w.dtype == input.dtype else M.astype(w, input.dtype)


def l2_penalty(params):
    """Sum of squared entries of every tensor in ``params`` (explicit L2 regularisation)."""
    total = None
    for p in params:
        term = (p * p).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2_penalty: expected at least one parameter")
    return total
