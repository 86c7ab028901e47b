"""Batch normalisation as one fused Function (forward and the closed-form backward)."""
from __future__ import annotations

from ..autograd import Function
from ..tensor import Tensor


def _channel_sum(xp, a):
    """Per-channel sum of (N, C, ...) as contiguous row sums (fast on both devices)."""
    n, c = a.shape[:2]
    if a.ndim == 2:
        return a.sum(axis=0)
    return a.reshape(n * c, -1).sum(axis=1).reshape(n, c).sum(axis=0)


def _channel_dot(xp, a, b):
    """Per-channel sum of a * b without a full-size temporary."""
    n, c = a.shape[:2]
    if a.ndim == 2:
        return xp.einsum("nc,nc->c", a, b)
    return xp.einsum("ij,ij->i", a.reshape(n * c, -1), b.reshape(n * c, -1)).reshape(n, c).sum(axis=0)


class BatchNorm(Function):
    """y = (x - mean) * invstd * weight + bias, per channel (axis 1).

    With ``use_batch_stats`` the batch's statistics normalise (two passes:
    the mean, then the variance of x - mean, so float32 keeps its precision)
    and, when running buffers are given, move them by ``momentum`` in place
    (the variance unbiased); otherwise the running statistics normalise.
    Only xhat and invstd are kept for backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, use_batch_stats):
        xp = ctx.xp
        c = x.shape[1]
        shape = (1, c) + (1,) * (x.ndim - 2)
        m = x.size // c
        if use_batch_stats:
            mean = _channel_sum(xp, x) / x.dtype.type(m)
            xhat = x - mean.reshape(shape)
            var = _channel_dot(xp, xhat, xhat) / x.dtype.type(m)
            if running_mean is not None:
                mom = running_mean.dtype.type(momentum)
                running_mean *= 1 - mom
                running_mean += mom * mean.astype(running_mean.dtype)
                running_var *= 1 - mom
                running_var += mom * (var * (m / max(m - 1, 1))).astype(running_var.dtype)
        else:
            mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
            xhat = x - mean.reshape(shape)
        invstd = (1.0 / xp.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
        xhat *= invstd.reshape(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.shape, ctx.batch = shape, use_batch_stats
        if weight is None:
            y = xhat.copy()
        else:
            y = xhat * weight.reshape(shape)
        if bias is not None:
            y += bias.reshape(shape)
        return y

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        xhat, invstd, weight = ctx.saved
        shape = ctx.shape
        nx, nw, nb = ctx.needs_input_grad[:3]
        sg = _channel_sum(xp, g)                 # = the bias gradient
        sgx = _channel_dot(xp, g, xhat)          # = the weight gradient
        gx = None
        if nx:
            a = invstd if weight is None else invstd * weight
            gx = g * a.reshape(shape)
            if ctx.batch:
                m = g.size // g.shape[1]
                gx -= xhat * (a * sgx / m).reshape(shape)
                gx -= (a * sg / m).reshape(shape)
        return gx, (sgx if nw else None), (sg if nb else None), None, None, None, None, None


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
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and (not isinstance(t, Tensor) or t.shape != (c,)):
            raise ValueError(f"{op}: expected {name} of shape ({c},), got "
                             f"{t.shape if isinstance(t, Tensor) else type(t).__name__}")
        if t is not None and t.device != input.device:
            raise ValueError(f"{op}: input on {input.device}, {name} on {t.device}")
    m = input.numel() // c
    if training and m <= 1:
        raise ValueError(f"{op}: expected more than one value per channel when training, got input {input.shape}")
    use_batch = training or running_mean is None
    rm = running_mean.data if running_mean is not None else None
    rv = running_var.data if running_var is not None else None
    return BatchNorm.apply(input, weight, bias, rm, rv, float(eps), float(momentum), use_batch)
