"""In-place arithmetic: ``x += y`` and ``add_``, ``sub_``, ``mul_``, ``div_``,
``fill_``, ``clamp_``, with PyTorch's rules.

Every in-place write moves the tensor's version counter (shared with its
views), and a backward pass that needs a value saved before such a write
refuses, as PyTorch's does.

- With nothing to record (grad mode off, or no tensor involved requires
  grad) the operators and methods write into the tensor's storage, views
  included: a hand-written ``with no_grad(): p -= lr * p.grad`` updates p.
- Where autograd must record the write (the tensor or the operand requires
  grad), it is recorded in place, as in PyTorch: the op runs on a copy of
  the old values that keeps the old node, the result is written into the
  tensor, and the tensor takes the new node.  What was computed from the
  tensor before keeps the old node.
- A leaf that requires grad is refused while grad mode is on, as in PyTorch.
- A view of another tensor's memory cannot take a recorded write, because
  gpudl does not move the base's graph with it.  ``x[i] += w`` still works
  and matches PyTorch: Python reads the view, the operator computes out of
  place (from a copy of the view's values), and the setitem that follows
  writes the result into x and records it.  The operator sees that setitem
  coming in the caller's bytecode.  Anything else on a view is refused
  (``v = x[i]; v += w``, the methods, setitem, ``copy_``), where PyTorch
  would write through; so is a view of a leaf that requires grad, as in
  PyTorch.
- A view taken before a recorded write into its memory may not enter a graph
  again (in grad mode): its values are new and its graph is old.  Take the
  view again after the write.
- ``zero_`` and ``fill_`` are recorded as ``x[...] = value``; ``clamp_`` as a
  clamp (with number bounds).
"""
from __future__ import annotations

import dis
import functools
import numbers
import sys

import numpy

from .. import autograd
from .._errstate import quiet
from .shape import recordable_inplace
from ..tensor import Tensor
from . import math as M


def _leaf_refused(x, op):
    if autograd.is_grad_enabled() and x.requires_grad and x.grad_fn is None:
        recordable_inplace(x, op)           # says why


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
    if ufunc in ("floor_divide", "remainder"):
        M._integer_division_checked(x, val, op)
    getattr(x.device.backend.xp, ufunc)(x.data, val, out=x.data)
    x._bump()
    return x


def _copy_keeping_node(x, copy=True):
    """x's values in memory of their own, with x's place in the graph."""
    autograd.check_view_current(x, "in-place operation")
    old = Tensor._make(x.data.copy() if copy else x.data, x.device, requires_grad=x.requires_grad)
    old._node = x._node
    return old


def _recorded(x, other, op, out_of_place, true_divide):
    """x op= other where autograd must record it (see :func:`_record_into`)."""
    _checked(x, other, op, true_divide)
    return _record_into(x, op, lambda old: out_of_place(old, other),
                        copy=out_of_place not in (M.add, M.sub))   # Add / Sub save nothing


def _record_into(x, op, compute, copy=True):
    """An in-place op that autograd must record: ``compute`` runs out of place on a
    copy of x's values that keeps x's node (ops like * save their operands), the
    result is written into x, and x takes its node (recordable_inplace says where not)."""
    recordable_inplace(x, op)
    out = compute(_copy_keeping_node(x, copy))
    if out._node is None:       # an op with no gradient (//, %, & ...): as PyTorch, no derivative to record
        raise RuntimeError(f"{op}: autograd has no derivative for this in-place operation, and a tensor "
                           f"here requires grad (as in PyTorch); do it under gpudl.no_grad() or on .detach()")
    if out.dtype != x.dtype:
        out = M.astype(out, x.dtype)
    x.device.backend.xp.copyto(x.data, out.data)
    x._bump()
    autograd.took_recorded_write(x, out._node)
    return x


_STACK_SHUFFLES = {"SWAP", "COPY", "ROT_TWO", "ROT_THREE", "ROT_FOUR", "DUP_TOP", "DUP_TOP_TWO",
                   "CACHE", "EXTENDED_ARG", "NOP"}


def _stored_by_subscript(frame):
    """Whether the augmented assignment running in ``frame`` stores its result with
    a subscript: ``x[i] += w`` is x.__getitem__, __iadd__ on that view, then
    x.__setitem__ (STORE_SUBSCR), which writes the result into x and records it.
    None where the caller's bytecode cannot be read."""
    try:
        return _next_store_is_subscript(frame.f_code, frame.f_lasti)
    except Exception:          # an unusual frame or interpreter: don't guess
        return None


@functools.lru_cache(maxsize=4096)
def _next_store_is_subscript(code, lasti):
    for ins in dis.get_instructions(code):
        if ins.offset > lasti and ins.opname not in _STACK_SHUFFLES:
            return ins.opname == "STORE_SUBSCR"
    return None


def _views_a_leaf_needing_grad(v):
    """Whether v is (a view of a view of ...) a view of a leaf that requires grad:
    view ops take the viewed tensor as their first input."""
    t = v
    while t is not None and t._view is not None and t._node is not None:
        t = t._node.inputs[0]
    return t is not None and t is not v and t.requires_grad and t._node is None


def _operator(op, ufunc, out_of_place, true_divide=False):
    def iop(self, other):
        _leaf_refused(self, op)
        if self._inplace_needs_recording(other):
            if getattr(self.data, "base", None) is not None:
                # a view: out of place and the name rebound (its base's graph cannot follow),
                # from a copy of its values, so that x[i] *= w (a view, then setitem into x)
                # does not save a view that the setitem then changes
                if _views_a_leaf_needing_grad(self):
                    raise RuntimeError(f"{op}: a view of a leaf tensor that requires grad cannot take an "
                                       f"in-place operation (as in PyTorch); do it under gpudl.no_grad()")
                if _stored_by_subscript(sys._getframe(1)) is False:
                    raise RuntimeError(
                        f"{op}: this tensor views another tensor's memory and autograd must record the "
                        f"write; PyTorch would write it through into that tensor, which gpudl cannot "
                        f"record. Write x[i] {op} w on the tensor that owns the memory, or v = v "
                        f"{op[:-1]} w for a new tensor")
                _checked(self, other, op, true_divide)
                out = out_of_place(_copy_keeping_node(self), other)
                return out if out.dtype == self.dtype else M.astype(out, self.dtype)
            return _recorded(self, other, op, out_of_place, true_divide)
        return _write(self, ufunc, other, op, true_divide)
    iop.__name__ = f"__i{ufunc}__"
    return iop


def _method(name, ufunc, out_of_place, true_divide=False, with_alpha=False):
    def method(self, other, *, alpha=1):
        if with_alpha and alpha != 1:
            if not isinstance(alpha, numbers.Number):
                raise TypeError(f"{name}: expected alpha to be a number, got {type(alpha).__name__}")
            other = other * alpha
        if self._inplace_needs_recording(other):
            return _recorded(self, other, name, out_of_place, true_divide)
        return _write(self, ufunc, other, name, true_divide)
    method.__name__ = name
    method.__doc__ = (f"In place: ``self = self {ufunc} other``{' * alpha' if with_alpha else ''}; returns "
                      f"self (recorded by autograd where grad mode needs it).")
    return method


def fill_(self, value):
    """Every element set to ``value`` (a number or a 0-d tensor), in place; recorded by
    autograd as ``self[...] = value`` where grad mode needs it."""
    if isinstance(value, Tensor) and value.ndim:
        raise ValueError(f"fill_: expected a number or a 0-d tensor, got shape {value.shape}")
    if self._inplace_needs_recording(value):
        self[...] = value
        return self
    if isinstance(value, Tensor):
        value = value.item()
    _operand(self, value, "fill_")
    self.data[...] = value
    self._bump()
    return self


@quiet
def clamp_(self, min=None, max=None):
    """Elements limited to [min, max], in place; recorded by autograd where grad mode
    needs it (bounds then numbers, or 0-d tensors that need no gradient)."""
    if min is None and max is None:
        raise ValueError("clamp_: expected at least one of min and max")
    for bound in (min, max):
        if bound is not None:
            _, res = _operand(self, bound, "clamp_")
            if not numpy.can_cast(res, self.dtype, "same_kind"):
                raise TypeError(f"clamp_: a {res} bound cannot limit a tensor of {self.dtype} in place")
    if self._inplace_needs_recording(min) or self._inplace_needs_recording(max):
        bounds = [b.item() if isinstance(b, Tensor) and b.ndim == 0 and not b.requires_grad else b
                  for b in (min, max)]
        if any(isinstance(b, Tensor) for b in bounds):
            raise RuntimeError("clamp_: bounds that are tensors of several elements, or that require "
                               "grad, are not recorded by autograd; use gpudl.minimum / maximum")
        return _record_into(self, "clamp_", lambda old: M.clip(old, *bounds))
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
    T.add_ = _method("add_", "add", M.add, with_alpha=True)
    T.sub_ = _method("sub_", "subtract", M.sub, with_alpha=True)
    T.mul_ = _method("mul_", "multiply", M.mul)
    T.div_ = _method("div_", "true_divide", M.div, true_divide=True)
    T.fill_ = fill_
    T.clamp_ = clamp_
