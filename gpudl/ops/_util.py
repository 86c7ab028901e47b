"""Helpers shared by the op families: operand coercion and axis checks."""
from __future__ import annotations

import numbers

import numpy

from .._errstate import quiet_begin, quiet_end

from ..tensor import Tensor, float32, int64, bool_


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def result_dtype(a, b):
    """NumPy promotion between tensors; a Python scalar never widens a tensor."""
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    if ta and tb:
        fa, fb = a.dtype.kind == "f", b.dtype.kind == "f"
        if fa != fb:            # float with int/bool keeps the float's dtype (as PyTorch)
            return a.dtype if fa else b.dtype
        if (a.ndim == 0) != (b.ndim == 0):
            # PyTorch: a 0-d tensor of the same category or below does not widen a
            # tensor with dimensions (float32 with a 0-d float64 stays float32)
            dim, zero = (b, a) if a.ndim == 0 else (a, b)
            if _CATEGORY[zero.dtype.kind] <= _CATEGORY[dim.dtype.kind]:
                return dim.dtype
        return numpy.result_type(a.dtype, b.dtype)
    t, s = (a, b) if ta else (b, a)
    if isinstance(s, bool):
        return t.dtype
    if isinstance(s, numbers.Integral):
        return int64 if t.dtype == bool_ else t.dtype
    if isinstance(s, numbers.Real):
        return t.dtype if t.dtype.kind in "fc" else float32
    if isinstance(s, numpy.generic):
        return result_dtype(t, s.item())
    raise TypeError(f"expected a Tensor or a Python number, got {type(s).__name__}")


def _to_tensor_like(value, ref, dtype, op):
    if isinstance(value, Tensor):
        return value if value.dtype == dtype else value.astype(dtype)
    if isinstance(value, (numbers.Number, numpy.generic)):
        token = quiet_begin()          # 1e10 into float16: inf, as PyTorch, without NumPy's cast warning
        try:
            return Tensor._make(ref.device.backend.xp.asarray(value, dtype=dtype), ref.device)
        finally:
            quiet_end(token)
    raise TypeError(f"{op}: expected a Tensor or a Python number, got {type(value).__name__} "
                    f"(wrap arrays with gpudl.tensor(...) on the right device)")


def binary_operands(a, b, op):
    """Two tensors on one device with one dtype, checked for broadcastability."""
    if (isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype and a.shape == b.shape
            and a.device == b.device):
        return a, b                  # the common case: nothing to convert or check
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected at least one Tensor, got {type(a).__name__} and {type(b).__name__}")
    dt = result_dtype(a, b)
    ref = a if isinstance(a, Tensor) else b
    a = _to_tensor_like(a, ref, dt, op)
    b = _to_tensor_like(b, ref, dt, op)
    if a.device != b.device:
        raise ValueError(f"{op}: expected both tensors on one device, got {a.device} and {b.device} "
                         f"(gpudl never copies silently; move one with .to(device))")
    try:
        numpy.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None
    return a, b


def norm_axis(axis, ndim, op):
    """A tuple of non-negative axes (None -> all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for ax in axes:
        ax = int(ax)
        if not -max(ndim, 1) <= ax < max(ndim, 1):
            raise ValueError(f"{op}: dim {ax} is out of range for a tensor of {ndim} dimension(s)")
        out.append(ax % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated dim in {axes}")
    return tuple(out)


def unreduce(g, axes, keepdims, ndim, xp):
    """A reduction's gradient with the reduced axes put back (size 1) when they were dropped."""
    if not keepdims and ndim and axes:
        g = xp.expand_dims(g, axes)
    return g


def expand_reduced(g, axes, keepdims, shape, xp):
    """Broadcast a reduction's gradient back to the input shape."""
    return xp.broadcast_to(unreduce(g, axes, keepdims, len(shape), xp), shape)


def require_float(t, op):
    if t.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point tensor, got {t.dtype}")


def only_supported(who, **settings):
    """Reject PyTorch options that ``who`` takes by name (so that PyTorch's
    positional order holds) but does not implement: ``name=(given, supported)``."""
    for name, (given, supported) in settings.items():
        if supported is None:
            ok = given is None
        else:
            ok = not isinstance(given, Tensor) and given == supported
        if not ok:
            shown = f"<a {type(given).__name__}>" if isinstance(given, Tensor) else repr(given)
            raise ValueError(f"{who}: {name}={shown} is not supported (only {name}={supported!r})")
