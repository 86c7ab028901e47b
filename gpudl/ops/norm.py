"""Batch normalisation as one fused Function (forward and the closed-form backward)."""
from __future__ import annotations

from ..autograd import Function
from ..tensor import Tensor


class BatchNorm(Function):
    """y = (x - mean) * invstd * weight + bias, per channel (axis 1).

    With ``use_batch_stats`` the batch's statistics normalise and, when
    running buffers are given, move by ``momentum`` in place (the variance
    unbiased); otherwise the running statistics normalise.  The backend's
    ``batch_norm_forward`` / ``batch_norm_backward`` do the work (one fused
    pass per step on a GPU); only xhat and invstd are kept for backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, use_batch_stats):
        y, xhat, invstd = ctx.backend.batch_norm_forward(
            x, weight, bias, running_mean, running_var, eps, momentum, use_batch_stats)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.batch = use_batch_stats
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved
        gx, gw, gb = ctx.backend.batch_norm_backward(g, xhat, invstd, weight, ctx.batch,
                                                     need=ctx.needs_input_grad[:3])
        return gx, gw, gb, None, None, None, None, None


def check_batch_statistics(input, op):
    """Batch statistics need more than one value per channel (an empty batch is fine)."""
    c = input.shape[1] if input.ndim > 1 else 0
    if input.numel() and input.numel() // c <= 1:
        raise ValueError(f"{op}: expected more than one value per channel when training, got input {input.shape}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of (N, C) or (N, C, H, W) input, PyTorch semantics.

    In training the batch statistics normalise, and ``running_mean`` /
    ``running_var`` (Tensors, updated in place, the variance unbiased) move
    by ``momentum``. In evaluation the running statistics normalise.
    """
    op = "batch_norm"
    if not isinstance(input, Tensor) or input.ndim not in (2, 3, 4):
        raise ValueError(f"{op}: expected input of shape (N, C), (N, C, L) or (N, C, H, W), got "
                         f"{input.shape if isinstance(input, Tensor) else type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected floating-point input, got {input.dtype}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != (c,)):
            raise ValueError(f"{op}: the input has {c} channels (dim 1 of {input.shape}) but {name} has "
                             f"{t.shape if isinstance(t, Tensor) else type(t).__name__} values; "
                             f"expected shape ({c},)")
        if name == "weight" and t is not None and t.dtype != input.dtype:
            raise TypeError(f"{op}: input is {input.dtype} but weight is {t.dtype}")
        if t is not None and t.device != input.device:
            raise ValueError(f"{op}: input on {input.device}, {name} on {t.device}")
    if training:
        check_batch_statistics(input, op)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: expected running_mean and running_var when training=False "
                         f"(the statistics to normalise with), got None")
    if input.numel() == 0:
        # an empty batch (or no channels): an empty result, the statistics untouched, as in PyTorch
        shape = (1, c) + (1,) * (input.ndim - 2)
        out = input * 1.0
        if weight is not None:
            out = out * weight.reshape(shape)
        if bias is not None:
            out = out + bias.reshape(shape)
        return out
    use_batch = bool(training)
    rm = running_mean.data if running_mean is not None else None
    rv = running_var.data if running_var is not None else None
    return BatchNorm.apply(input, weight, bias, rm, rv, float(eps), float(momentum), use_batch)
