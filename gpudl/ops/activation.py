"""Activations, softmax family and dropout."""
from __future__ import annotations

import math
import warnings

from ..autograd import Function
from ..tensor import Tensor
from .. import random as _random
from ._util import norm_axis, require_float


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        out = ctx.backend.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.relu_backward(g, ctx.saved[0])   # out is >= 0 or NaN; NaN passes g on


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return ctx.xp.where(x > 0, x, x * x.dtype.type(slope))

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        return ctx.xp.where(x > 0, g, g * g.dtype.type(ctx.slope)), None


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        # stable for large |x|: exp of a non-positive number only
        e = xp.exp(-xp.abs(x))
        out = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        s, = ctx.saved
        return g * s * (1 - s)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        t, = ctx.saved
        return g * (1 - t * t)


class GELU(Function):
    """x * Phi(x) (exact, through erf) or PyTorch's tanh approximation."""

    @staticmethod
    def forward(ctx, x, approximate):
        xp = ctx.xp
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        t = x.dtype.type
        if approximate == "tanh":
            inner = t(math.sqrt(2 / math.pi)) * (x + t(0.044715) * x ** 3)
            return t(0.5) * x * (1 + xp.tanh(inner))
        return t(0.5) * x * (1 + ctx.backend.erf(x * t(1 / math.sqrt(2))))

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, = ctx.saved
        t = x.dtype.type
        if ctx.approximate == "tanh":
            c = t(math.sqrt(2 / math.pi))
            th = xp.tanh(c * (x + t(0.044715) * x ** 3))
            d = t(0.5) * (1 + th) + t(0.5) * x * (1 - th * th) * c * (1 + t(3 * 0.044715) * x * x)
        else:
            cdf = t(0.5) * (1 + ctx.backend.erf(x * t(1 / math.sqrt(2))))
            pdf = xp.exp(t(-0.5) * x * x) * t(1 / math.sqrt(2 * math.pi))
            d = cdf + x * pdf
        return g * d, None


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        xp = ctx.xp
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        out = e / e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, g):
        s, = ctx.saved
        return s * (g - (g * s).sum(axis=ctx.axis, keepdims=True)), None


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        xp = ctx.xp
        m = x.max(axis=axis, keepdims=True)
        z = x - m
        out = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, g):
        out, = ctx.saved
        return g - ctx.xp.exp(out) * g.sum(axis=ctx.axis, keepdims=True), None


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved[0], None


def _float(x, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    require_float(x, op)
    return x


def relu(x):
    """max(x, 0); on an integer tensor the same integers (no gradient), as in PyTorch."""
    if isinstance(x, Tensor) and x.dtype.kind in "iu":
        return Tensor._make(x.device.backend.xp.maximum(x.data, 0).astype(x.dtype), x.device)
    return ReLU.apply(_float(x, "relu"))


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(_float(x, "leaky_relu"), float(negative_slope))


def _as_float(x):
    """Integer and bool tensors go to float32 first, as PyTorch's sigmoid/tanh take them."""
    if isinstance(x, Tensor) and x.dtype.kind in "biu":
        from .math import astype
        return astype(x, "float32")
    return x


def sigmoid(x):
    return Sigmoid.apply(_float(_as_float(x), "sigmoid"))


def tanh(x):
    return Tanh.apply(_float(_as_float(x), "tanh"))


def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: expected approximate='none' or 'tanh', got {approximate!r}")
    return GELU.apply(_float(x, "gelu"), approximate)


def _softmax_dim(x, dim, op):
    """``dim``, or for None PyTorch's legacy choice (0 for 0-, 1- and 3-d input, else 1), with its warning."""
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
        warnings.warn(f"{op}: the implicit dimension choice is deprecated (as in PyTorch); pass dim= "
                      f"(taking dim={dim} for a {x.ndim}-d input)", UserWarning, stacklevel=3)
    return norm_axis(dim, x.ndim, op)[0]


def _cast_first(x, dtype, op):
    """PyTorch's ``dtype=``: the input is cast before the operation."""
    if dtype is None:
        return x
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    from .math import astype
    return astype(x, dtype)


def softmax(x, dim=None, _stacklevel=3, dtype=None):
    """Softmax along ``dim`` (None: PyTorch's legacy default, with a warning);
    ``dtype``: cast the input first (PyTorch's signature)."""
    x = _cast_first(x, dtype, "softmax")
    axis = _softmax_dim(_float(x, "softmax"), dim, "softmax")
    return x * 1.0 if x.numel() == 0 else Softmax.apply(x, axis)     # empty in, empty out


def log_softmax(x, dim=None, _stacklevel=3, dtype=None):
    """log(softmax) along ``dim``, computed stably; None and ``dtype`` as :func:`softmax`."""
    x = _cast_first(x, dtype, "log_softmax")
    axis = _softmax_dim(_float(x, "log_softmax"), dim, "log_softmax")
    return x * 1.0 if x.numel() == 0 else LogSoftmax.apply(x, axis)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p).

    The mask is drawn on the tensor's device by its seeded generator.
    """
    _float(x, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: expected 0 <= p <= 1, got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    gen = _random.device_generator(x.device)
    keep = gen.random(x.shape, dtype=x.dtype if x.dtype.itemsize >= 4 else "float32") >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(x, mask)
