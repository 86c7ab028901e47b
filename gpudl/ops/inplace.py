"""In-place arithmetic: ``x += y`` and ``add_``, ``sub_``, ``mul_``, ``div_``,
``fill_``, ``clamp_``, with PyTorch's rules.

Every in-place write moves the tensor's version counter (shared with its
views), and a backward pass that needs a value saved before such a write
refuses, as PyTorch's does.  gpudl's autograd does not record in-place
operations themselves, so:

- with nothing to record (grad mode off, or no tensor involved requires
  grad) the *operators* (``+=``, ``-=``, ...) write into the tensor's storage,
  views included -- a hand-written ``with no_grad(): p -= lr * p.grad``
  updates p, as in PyTorch;
- where the write would have to be recorded they compute out of place and
  rebind the name (with the same shape and dtype checks), which autograd
  records correctly (other names and views keep the old values, where
  PyTorch would write through);
- a leaf that requires grad is refused while grad mode is on, as in PyTorch;
- the *methods* (``add_``, ...) always write in place; while recording they
  are refused with a clear error, as setitem, ``copy_`` and ``zero_`` are.
"""
from __future__ import annotations

import numbers

import numpy

from .. import autograd
from ..autograd import quiet
from ..tensor import Tensor
from . import math as M


def _leaf_refused(x, op):
    if autograd.is_grad_enabled() and x.requires_grad and x.grad_fn is None:
        raise RuntimeError(f"{op}: a leaf tensor that requires grad cannot be changed in place (as in "
                           f"PyTorch); do it under gpudl.no_grad(), or on .data / .detach()")


def _operand(x, other, op):
    """``other`` as an array or scalar of x's backend, checked to fit x in place."""
    if isinstance(other, Tensor):
        if other.device != x.device:
            raise ValueError(f"{op}: the tensor is on {x.device}, the operand on {other.device}")
        val, dt, shape = other.data, other.dtype, other.shape
    elif isinstance(other, (numbers.Number, numpy.number, numpy.bool_)):
        val, dt, shape = other, numpy.result_type(x.dtype, other), ()
    else:
        raise TypeError(f"{op}: expected a Tensor or a number, got {type(other).__name__}")
    try:
        fits = numpy.broadcast_shapes(x.shape, shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: an operand of shape {shape} cannot be written in place into shape {x.shape}")
    return val, numpy.result_type(x.dtype, dt)


def _checked(x, other, op, true_divide):
    """``other``'s value, once it is known to fit x in shape and dtype."""
    val, res = _operand(x, other, op)
    if true_divide and res.kind in "biu":
        res = numpy.dtype(numpy.float64)
    if not numpy.can_cast(res, x.dtype, "same_kind"):
        raise TypeError(f"{op}: the result would be {res}, which cannot be stored in place in a "
                        f"tensor of {x.dtype} (as in PyTorch); use the out-of-place operator")
    return val


@quiet
def _write(x, ufunc, other, op, true_divide=False):
    val = _checked(x, other, op, true_divide)
    getattr(x.device.backend.xp, ufunc)(x.data, val, out=x.data)
    x._bump()
    return x


def _operator(op, ufunc, out_of_place, true_divide=False):
    def iop(self, other):
        _leaf_refused(self, op)
        if self._inplace_needs_recording(other):
            # out of place, recorded, the name rebound; the in-place checks still hold
            _checked(self, other, op, true_divide)
            out = out_of_place(self, other)
            return out if out.dtype == self.dtype else M.astype(out, self.dtype)
        return _write(self, ufunc, other, op, true_divide)
    iop.__name__ = f"__i{ufunc}__"
    return iop


def _method(name, ufunc, true_divide=False, with_alpha=False):
    def method(self, other, *, alpha=1):
        self._check_inplace(name, other)
        if with_alpha and alpha != 1:
            if not isinstance(alpha, numbers.Number):
                raise TypeError(f"{name}: expected alpha to be a number, got {type(alpha).__name__}")
            other = other * alpha
        return _write(self, ufunc, other, name, true_divide)
    method.__name__ = name
    method.__doc__ = f"In place: ``self = self {ufunc} other``{' * alpha' if with_alpha else ''}; returns self."
    return method


def fill_(self, value):
    """Every element set to ``value`` (a number or a 0-d tensor), in place."""
    self._check_inplace("fill_", value)
    if isinstance(value, Tensor):
        if value.ndim:
            raise ValueError(f"fill_: expected a number or a 0-d tensor, got shape {value.shape}")
        value = value.item()
    _operand(self, value, "fill_")
    self.data[...] = value
    self._bump()
    return self


@quiet
def clamp_(self, min=None, max=None):
    """Elements limited to [min, max], in place."""
    self._check_inplace("clamp_", min)
    self._check_inplace("clamp_", max)
    if min is None and max is None:
        raise ValueError("clamp_: expected at least one of min and max")
    for bound in (min, max):
        if bound is not None:
            _, res = _operand(self, bound, "clamp_")
            if not numpy.can_cast(res, self.dtype, "same_kind"):
                raise TypeError(f"clamp_: a {res} bound cannot limit a tensor of {self.dtype} in place")
    xp = self.device.backend.xp
    if min is not None:
        xp.maximum(self.data, min.data if isinstance(min, Tensor) else min, out=self.data)
    if max is not None:
        xp.minimum(self.data, max.data if isinstance(max, Tensor) else max, out=self.data)
    self._bump()
    return self


def install(T):
    T.__iadd__ = _operator("+=", "add", M.add)
    T.__isub__ = _operator("-=", "subtract", M.sub)
    T.__imul__ = _operator("*=", "multiply", M.mul)
    T.__itruediv__ = _operator("/=", "true_divide", M.div, true_divide=True)
    T.__ifloordiv__ = _operator("//=", "floor_divide", M.floor_divide)
    T.__imod__ = _operator("%=", "remainder", M.remainder)
    T.__ipow__ = _operator("**=", "power", M.pow)
    T.__iand__ = _operator("&=", "bitwise_and", M.bitwise_and)
    T.__ior__ = _operator("|=", "bitwise_or", M.bitwise_or)
    T.__ixor__ = _operator("^=", "bitwise_xor", M.bitwise_xor)
    T.add_ = _method("add_", "add", with_alpha=True)
    T.sub_ = _method("sub_", "subtract", with_alpha=True)
    T.mul_ = _method("mul_", "multiply")
    T.div_ = _method("div_", "true_divide", true_divide=True)
    T.fill_ = fill_
    T.clamp_ = clamp_
