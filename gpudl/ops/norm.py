"""Batch normalisation as one fused Function (forward and the closed-form backward)."""
from __future__ import annotations

from ..autograd import Function
from ..tensor import Tensor


class BatchNorm(Function):
    """y = (x - mean) * invstd * weight + bias over the axes ``axes``.

    With ``use_batch_stats`` the batch's statistics normalise and, when
    running buffers are given, move them by ``momentum`` in place (the
    variance unbiased); otherwise the running statistics normalise.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, axes, eps, momentum, use_batch_stats):
        xp = ctx.xp
        shape = [1] * x.ndim
        shape[1] = x.shape[1]
        if use_batch_stats:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            if running_mean is not None:
                m = x.size // x.shape[1]
                mom = running_mean.dtype.type(momentum)
                running_mean *= 1 - mom
                running_mean += mom * mean.astype(running_mean.dtype)
                running_var *= 1 - mom
                running_var += mom * (var * (m / (m - 1))).astype(running_var.dtype)
        else:
            mean, var = running_mean, running_var
        invstd = 1.0 / xp.sqrt(var + x.dtype.type(eps))
        xhat = (x - mean.reshape(shape)) * invstd.reshape(shape).astype(x.dtype)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.axes, ctx.shape, ctx.batch = axes, shape, use_batch_stats
        y = xhat if weight is None else xhat * weight.reshape(shape)
        return y if bias is None else y + bias.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved
        axes, shape = ctx.axes, ctx.shape
        nx, nw, nb = ctx.needs_input_grad[:3]
        gb = g.sum(axis=axes) if nb else None
        gw = (g * xhat).sum(axis=axes) if nw else None
        gx = None
        if nx:
            gxhat = g if weight is None else g * weight.reshape(shape)
            scale = invstd.reshape(shape).astype(g.dtype)
            if ctx.batch:
                m = g.size // g.shape[1]
                mean_g = gxhat.sum(axis=axes).reshape(shape) / m
                mean_gx = (gxhat * xhat).sum(axis=axes).reshape(shape) / m
                gx = (gxhat - mean_g - xhat * mean_gx) * scale
            else:
                gx = gxhat * scale
        return gx, gw, gb, None, None, None, None, None, None


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
    axes = (0,) + tuple(range(2, input.ndim))
    m = input.numel() // c
    if training and m <= 1:
        raise ValueError(f"{op}: expected more than one value per channel when training, got input {input.shape}")
    use_batch = training or running_mean is None
    rm = running_mean.data if running_mean is not None else None
    rv = running_var.data if running_var is not None else None
    return BatchNorm.apply(input, weight, bias, rm, rv, axes, float(eps), float(momentum), use_batch)
