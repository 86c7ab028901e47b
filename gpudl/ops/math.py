"""Arithmetic, element-wise math, matmul and reductions."""
from __future__ import annotations

import builtins
import math as _math
import numbers

import numpy

from .._errstate import quiet
from ..autograd import Function
from ..tensor import Tensor, as_dtype
from ._util import binary_operands, norm_axis, expand_reduced, require_float, unreduce


# ---- binary arithmetic (the engine reduces broadcast gradients) ---------------

class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    saved_for = (1, 0)      # a is read for b's gradient, b for a's (see Function.saved_for)

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (g * b if na else None), (g * a if nb else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        ga = g / b if na else None
        gb = -g * a / (b * b) if nb else None
        return ga, gb


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved
        xp = ctx.xp
        na, nb = ctx.needs_input_grad
        ga = g * b * xp.where(b == 0, 0, a ** xp.where(b == 0, 1, b - 1)) if na else None  # d/da a**0 = 0 at a = 0 too
        gb = None
        if nb:
            # as PyTorch: out * log(a), which is NaN for a < 0 and -inf for
            # a = 0 ** (b < 0); 0 where a = 0 and b >= 0 (out is 0 or 1 there)
            zero = (a == 0) & (b >= 0)
            gb = g * xp.where(zero, 0, out * xp.log(xp.where(zero, 1, a)))
        return ga, gb


class Extremum(Function):
    """Element-wise maximum (``is_max``) or minimum; where the two are equal the gradient
    is split evenly, as in PyTorch."""

    @staticmethod
    def forward(ctx, a, b, is_max):
        ctx.save_for_backward(a, b)
        ctx.is_max = is_max
        return ctx.xp.maximum(a, b) if is_max else ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        # PyTorch's rule: each side loses the gradient only where the other one
        # wins; so a NaN (no side wins) passes it to both
        lose_a, lose_b = (a < b, a > b) if ctx.is_max else (a > b, a < b)
        half = 0.5 * (a == b)
        wa, wb = 1 - lose_a - half, 1 - lose_b - half
        na, nb, _ = ctx.needs_input_grad
        return (g * wa.astype(g.dtype) if na else None), (g * wb.astype(g.dtype) if nb else None), None


def add(a, b):
    return Add.apply(*binary_operands(a, b, "add"))


def sub(a, b):
    return Sub.apply(*binary_operands(a, b, "sub"))


def mul(a, b):
    return Mul.apply(*binary_operands(a, b, "mul"))


def div(a, b):
    a, b = binary_operands(a, b, "div")
    if a.dtype.kind in "iub":
        a, b = a.astype("float32"), b.astype("float32")
    return Div.apply(a, b)


def pow(a, b):
    return Pow.apply(*binary_operands(a, b, "pow"))


def maximum(a, b):
    return Extremum.apply(*binary_operands(a, b, "maximum"), True)


def minimum(a, b):
    return Extremum.apply(*binary_operands(a, b, "minimum"), False)


# ---- unary ---------------------------------------------------------------------

class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.log(x)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        out = ctx.xp.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.saved[0])


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return ctx.xp.abs(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.xp.sign(ctx.saved[0])


class Clip(Function):
    """Gradient passes where lo <= x <= hi (boundaries included, as PyTorch)."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return ctx.xp.clip(x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved
        mask = ctx.xp.ones(x.shape, dtype=bool)
        if ctx.lo is not None:
            mask &= x >= ctx.lo
        if ctx.hi is not None:
            mask &= x <= ctx.hi
        return g * mask, None, None


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g, None   # the engine casts back to the input's dtype


def _float_unary(fn, op):
    def f(x):
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
        if x.dtype.kind != "f":
            x = x.astype("float32")
        return fn.apply(x)
    f.__name__ = op
    f.__doc__ = f"Element-wise {op}."
    return f


exp = _float_unary(Exp, "exp")
log = _float_unary(Log, "log")
sqrt = _float_unary(Sqrt, "sqrt")


def neg(x):
    return Neg.apply(x)


def abs(x):
    return Abs.apply(x)


def clip(x, min=None, max=None):
    """Clamp into [min, max]; either bound may be None."""
    if min is None and max is None:
        raise ValueError("clip: expected at least one of min and max")
    for name, v in (("min", min), ("max", max)):
        if v is not None and not isinstance(v, numbers.Real):
            raise TypeError(f"clip: expected {name} to be a number or None, got {type(v).__name__}")
    return Clip.apply(x, min, max)


clamp = clip


def astype(x, dtype):
    dt = as_dtype(dtype)
    if dt == x.dtype:
        return x
    if x.requires_grad and dt.kind != "f":
        return Tensor._make(x.data.astype(dt), x.device)
    return Cast.apply(x, dt)


# ---- matmul --------------------------------------------------------------------

class MatMul(Function):
    saved_for = (1, 0)

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.backend.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        xp, mm = ctx.xp, ctx.backend.matmul
        na, nb = ctx.needs_input_grad
        ga = mm(g, xp.swapaxes(b, -1, -2)) if na else None
        gb = mm(xp.swapaxes(a, -1, -2), g) if nb else None
        return ga, gb


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands, batched broadcasting."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"matmul: expected two Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: expected tensors of at least 1 dimension, got shapes {a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if ka != kb:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({ka} columns against {kb} rows)")
    if a.dtype != b.dtype:
        dt = numpy.result_type(a.dtype, b.dtype)
        a, b = astype(a, dt), astype(b, dt)
    squeeze = []
    if a.ndim == 1:
        a = a.reshape(1, ka)
        squeeze.append(-2)
    if b.ndim == 1:
        b = b.reshape(kb, 1)
        squeeze.append(-1)
    try:
        numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch shapes {a.shape[:-2]} and {b.shape[:-2]} cannot be broadcast") from None
    out = MatMul.apply(a, b)
    if squeeze:
        out = out.reshape(out.shape[:-2] + tuple(
            n for ax, n in zip((-2, -1), out.shape[-2:]) if ax not in squeeze))
    return out


# ---- reductions ----------------------------------------------------------------

class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        return x.sum(axis=axes, keepdims=keepdims, dtype=x.dtype)      # (sum decided the dtype)

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g, ctx.axes, ctx.keepdims, ctx.shape, ctx.xp), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        ctx.count = _math.prod(x.shape[a] for a in axes)
        if ctx.count == 0:      # NaN, as PyTorch, without NumPy's "Mean of empty slice" warning
            s = x.sum(axis=axes, keepdims=keepdims)
            return s / s.dtype.type(0)
        return x.mean(axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        g = g / ctx.count
        return expand_reduced(g, ctx.axes, ctx.keepdims, ctx.shape, ctx.xp), None, None


class MaxMin(Function):
    """max or min over axes; ties share the gradient evenly."""

    @staticmethod
    def forward(ctx, x, axes, keepdims, is_max, nan_share=False):
        out = x.max(axis=axes, keepdims=True) if is_max else x.min(axis=axes, keepdims=True)
        ctx.save_for_backward(x, out)
        ctx.axes, ctx.keepdims, ctx.nan_share = axes, keepdims, nan_share
        return out if keepdims else ctx.xp.squeeze(out, axes)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        mask = (x == out)
        if ctx.nan_share and x.dtype.kind == "f":
            # max() / min() of everything: a NaN result's gradient shared by the NaNs,
            # as in PyTorch (whose amax / amin give NaN there, as this does without)
            mask |= ctx.xp.isnan(x) & ctx.xp.isnan(out)
        count = mask.sum(axis=ctx.axes, keepdims=True)
        g = unreduce(g, ctx.axes, ctx.keepdims, x.ndim, ctx.xp)
        return mask * (g / count).astype(x.dtype), None, None, None, None      # (no maximum: NaN)


class Var(Function):
    """Variance over ``axes`` divided by max(n - correction, 0); with ``sqrt``
    set, the standard deviation (its gradient is 0 where it is 0, as PyTorch's)."""

    @staticmethod
    def forward(ctx, x, axes, keepdims, correction, sqrt):
        xp = ctx.xp
        n = _math.prod(x.shape[a] for a in axes)
        mean = x.sum(axis=axes, keepdims=True) / x.dtype.type(n)   # (NumPy's mean warns for n = 0)
        d = x - mean
        # no degrees of freedom left: inf (or NaN for 0 / 0), as PyTorch
        denom = x.dtype.type(builtins.max(n - correction, 0))
        out = xp.true_divide((d * d).sum(axis=axes, keepdims=keepdims), denom)
        if sqrt:
            out = xp.sqrt(out)
        ctx.save_for_backward(d, out)
        ctx.axes, ctx.keepdims, ctx.denom, ctx.sqrt = axes, keepdims, denom, sqrt
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        d, out = ctx.saved
        if ctx.sqrt:   # d std = d var / (2 std), and 0 where std = 0
            g = xp.where(out == 0, 0, g / xp.where(out == 0, 1, 2 * out)).astype(d.dtype, copy=False)
        g = unreduce(g, ctx.axes, ctx.keepdims, d.ndim, xp)
        return g * (2 / ctx.denom) * d, None, None, None, None


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        xp = ctx.xp
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        out = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, out)
        ctx.axes, ctx.keepdims = axes, keepdims
        return out if keepdims else ctx.xp.squeeze(out, axes)

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved
        g = unreduce(g, ctx.axes, ctx.keepdims, x.ndim, ctx.xp)
        return g * ctx.xp.exp(x - out), None, None


def _reduce_args(x, dim, op):
    """The axes to reduce, as PyTorch: ``None`` and ``()`` mean all of them,
    and a 0-d tensor takes dim 0 or -1 (reducing nothing)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if isinstance(dim, (tuple, list)) and not dim:
        dim = None
    axes = norm_axis(dim, x.ndim, op)
    return axes if x.ndim else ()


def sum(x, dim=None, keepdim=False, *, dtype=None):
    """Sum over ``dim``; integers and bools sum as int64 (PyTorch's rule);
    ``dtype``: cast the input first."""
    axes = _reduce_args(x, dim, "sum")
    if dtype is not None:
        x = astype(x, dtype)
    elif x.dtype.kind in "bu" or (x.dtype.kind == "i" and x.dtype != numpy.int64):
        x = astype(x, "int64")
    return Sum.apply(x, axes, keepdim)


def _logical_reduce(name):
    def f(x, dim=None, keepdim=False):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
        axes = _reduce_args(x, dim, name)
        return Tensor._make(getattr(x.device.backend.xp, name)(x.data != 0, axis=axes, keepdims=keepdim),
                            x.device)
    f.__name__ = name
    f.__doc__ = f"Whether {'any' if name == 'any' else 'every'} element over ``dim`` is non-zero (a bool tensor)."
    return f


any = _logical_reduce("any")
all = _logical_reduce("all")


def mean(x, dim=None, keepdim=False):
    axes = _reduce_args(x, dim, "mean")
    require_float(x, "mean")
    return Mean.apply(x, axes, keepdim)


class ValuesIndices(tuple):
    """(values, indices) as ``max(dim)`` / ``min(dim)`` return them, as in PyTorch."""

    __slots__ = ()

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])


class MaxMinDim(Function):
    """max/min along one axis at the given indices (kept dim); the gradient goes to them only."""

    @staticmethod
    def forward(ctx, x, idx, axis, keepdim):
        xp = ctx.xp
        ctx.save_for_backward(idx)
        ctx.shape, ctx.axis, ctx.keepdim = x.shape, axis, keepdim
        vals = xp.take_along_axis(x, idx, axis=axis)
        return vals if keepdim else xp.squeeze(vals, axis)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        idx, = ctx.saved
        if not ctx.keepdim:
            g = xp.expand_dims(g, ctx.axis)
        shape = [1] * len(ctx.shape)
        shape[ctx.axis] = ctx.shape[ctx.axis]
        hit = xp.arange(ctx.shape[ctx.axis]).reshape(shape) == idx
        return hit * g, None, None, None


def _max_min(x, dim, keepdim, is_max):
    op = "max" if is_max else "min"
    axes = _reduce_args(x, dim, op)
    _nonempty(x, axes, op)            # the reduced dims need values; the others may be empty
    if isinstance(dim, numbers.Integral):
        if x.ndim == 0:                    # dim 0 of a 0-d tensor: itself, index 0
            return _max_min(x.reshape(1), 0, False, is_max)
        axis = axes[0]
        idx = x.device.backend.xp.expand_dims((x.data.argmax if is_max else x.data.argmin)(axis=axis), axis)
        out = MaxMinDim.apply(x, idx, axis, keepdim)       # the index found once, for both
        return ValuesIndices(out, Tensor._make((idx if keepdim else idx.squeeze(axis)).astype("int64"),
                                               x.device))
    return MaxMin.apply(x, axes, keepdim, is_max, dim is None)


def max(x, dim=None, keepdim=False):
    """The largest value; with an int ``dim``, ``(values, indices)`` as in PyTorch
    (the gradient goes to the index); with a tuple of dims, the values (ties share it);
    with a Tensor, the element-wise :func:`maximum`."""
    if isinstance(dim, Tensor):
        return maximum(x, dim)
    return _max_min(x, dim, keepdim, True)


def min(x, dim=None, keepdim=False):
    """The smallest value; see :func:`max`."""
    if isinstance(dim, Tensor):
        return minimum(x, dim)
    return _max_min(x, dim, keepdim, False)


def _nonempty(x, axes, op):
    """A reduction with no identity (max, argmax, ...) needs values along its axes."""
    if builtins.any(x.shape[a] == 0 for a in axes) or (not axes and x.numel() == 0):
        raise ValueError(f"{op}: expected a non-empty tensor along the reduced dims, got shape {x.shape}")


def amax(x, dim=None, keepdim=False):
    """max over ``dim`` (int or tuple) returning values only; ties share the gradient."""
    axes = _reduce_args(x, dim, "amax")
    _nonempty(x, axes, "amax")
    return MaxMin.apply(x, axes, keepdim, True)


def amin(x, dim=None, keepdim=False):
    axes = _reduce_args(x, dim, "amin")
    _nonempty(x, axes, "amin")
    return MaxMin.apply(x, axes, keepdim, False)


def _var(x, dim, unbiased, keepdim, correction, op):
    if isinstance(dim, bool):                  # var(x, unbiased), as PyTorch
        if unbiased is not None:
            raise TypeError(f"{op}: got unbiased twice ({dim!r} and {unbiased!r})")
        dim, unbiased = None, dim
    if unbiased is not None and correction is not None:
        raise TypeError(f"{op}: give unbiased or correction, not both")
    if correction is None:
        correction = 0 if unbiased is False else 1
    axes = _reduce_args(x, dim, op)
    require_float(x, op)
    return Var.apply(x, axes, keepdim, correction, op == "std")


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance with PyTorch's arguments: ``correction=1`` (Bessel) unless
    ``unbiased=False`` or ``correction`` says otherwise; ``var(x, False)`` is
    the biased variance of every element, ``var(x, 0, False)`` along dim 0."""
    return _var(x, dim, unbiased, keepdim, correction, "var")


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation; the arguments of :func:`var`."""
    return _var(x, dim, unbiased, keepdim, correction, "std")


def logsumexp(x, dim=None, keepdim=False):
    """log(sum(exp(x))) computed stably (the max is taken out first)."""
    axes = _reduce_args(x, dim, "logsumexp")
    require_float(x, "logsumexp")
    if builtins.any(x.shape[a] == 0 for a in axes) or x.numel() == 0:
        return sum(x, axes, keepdim) + float("-inf")    # log(0) = -inf over nothing, as in PyTorch
    return LogSumExp.apply(x, axes, keepdim)


def _arg(x, dim, keepdim, op):
    _nonempty(x, _reduce_args(x, dim, op), op)
    if dim is None:
        idx = getattr(x.data.reshape(-1), op)()
        out = x.device.backend.xp.asarray(idx, dtype="int64")
        return Tensor._make(out.reshape((1,) * x.ndim) if keepdim else out, x.device)
    ax = norm_axis(dim, x.ndim, op)[0]
    out = getattr(x.data, op)(axis=ax)
    if keepdim:
        out = x.device.backend.xp.expand_dims(out, ax)
    return Tensor._make(out.astype("int64"), x.device)


def argmax(x, dim=None, keepdim=False):
    """Index of the first maximum (int64; no gradient)."""
    return _arg(x, dim, keepdim, "argmax")


def argmin(x, dim=None, keepdim=False):
    return _arg(x, dim, keepdim, "argmin")


# ---- comparisons (no gradient) ---------------------------------------------------

def _compare(name):
    def f(a, b):
        a, b = binary_operands(a, b, name)
        return Tensor._make(getattr(a.device.backend.xp, name)(a.data, b.data), a.device)
    f.__name__ = name
    f.__doc__ = f"Element-wise {name} (a bool tensor; no gradient)."
    return f


def _integer_division_checked(a, b, symbol):
    """Integers divided by zero: ZeroDivisionError on the CPU, as PyTorch's CPU kernels
    raise (NumPy gives 0 and a warning).  Not on a GPU, where PyTorch does not check
    either and a check would cost a device sync."""
    d = b.data if isinstance(b, Tensor) else b
    if a.dtype.kind in "iu" and a.device.type == "cpu" and numpy.size(d) and not numpy.all(d):
        raise ZeroDivisionError(f"{symbol}: integer division by zero (as in PyTorch)")


def _integer_op(name, symbol, float_ok=False):
    """An element-wise op on bool / integer tensors, no gradient (PyTorch's
    ``&``, ``|``, ``^``, ``//``)."""
    @quiet
    def f(a, b):
        a, b = binary_operands(a, b, name)
        if not float_ok and a.dtype.kind not in "biu":
            raise TypeError(f"{symbol}: expected bool or integer tensors, got {a.dtype}")
        if name == "floor_divide":
            _integer_division_checked(a, b, symbol)
        return Tensor._make(getattr(a.device.backend.xp, name)(a.data, b.data), a.device)
    f.__name__ = name
    f.__doc__ = f"Element-wise ``{symbol}`` (no gradient)."
    return f


bitwise_and = _integer_op("bitwise_and", "&")
bitwise_or = _integer_op("bitwise_or", "|")
bitwise_xor = _integer_op("bitwise_xor", "^")
floor_divide = _integer_op("floor_divide", "//", float_ok=True)


class Remainder(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.remainder(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (g if na else None), (-g * ctx.xp.floor(a / b) if nb else None)


@quiet
def remainder(a, b):
    """``a % b`` with the divisor's sign (Python's and PyTorch's rule);
    differentiable in both for floats (d/da = 1, d/db = -floor(a / b))."""
    a, b = binary_operands(a, b, "remainder")
    if a.dtype.kind != "f":
        _integer_division_checked(a, b, "%")
        return Tensor._make(a.device.backend.xp.remainder(a.data, b.data), a.device)
    return Remainder.apply(a, b)


eq = _compare("equal")
ne = _compare("not_equal")
lt = _compare("less")
le = _compare("less_equal")
gt = _compare("greater")
ge = _compare("greater_equal")
