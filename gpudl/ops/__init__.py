"""Differentiable ops, one family a file; importing this installs Tensor's operators.

As Chainer's ``basic_math`` installs Variable's arithmetic, the core
(:mod:`gpudl.tensor`) never imports the ops that sit above it.
"""
from __future__ import annotations

from ..tensor import Tensor
from .math import (  # noqa: F401
    add, sub, mul, div, pow, maximum, minimum, neg, exp, log, sqrt, abs, clip, clamp,
    astype, matmul, sum, mean, max, min, amax, amin, var, std, logsumexp, argmax, argmin,
    eq, ne, lt, le, gt, ge, any, all, bitwise_and, bitwise_or, bitwise_xor, floor_divide, remainder,
)
from .shape import (  # noqa: F401
    reshape, view, flatten, squeeze, unsqueeze, permute, transpose, expand,
    getitem, setitem, cat, stack, split, chunk, pad, where,
)
from .activation import (  # noqa: F401
    relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax, dropout,
)
from .inplace import install as install_inplace


def _swap(fn):
    return lambda self, other: fn(other, self)


def _t(self):
    """The transpose of a matrix (a 0-d or 1-d tensor comes back as it is), as PyTorch."""
    if self.ndim > 2:
        raise ValueError(f"t: expects a tensor of at most 2 dimensions, got shape {self.shape}; use transpose or permute")
    return transpose(self, 0, 1) if self.ndim == 2 else self


def _install():
    T = Tensor
    T.__add__, T.__radd__ = add, _swap(add)
    T.__sub__, T.__rsub__ = sub, _swap(sub)
    T.__mul__, T.__rmul__ = mul, _swap(mul)
    T.__truediv__, T.__rtruediv__ = div, _swap(div)
    T.__pow__, T.__rpow__ = pow, _swap(pow)
    T.__matmul__, T.__rmatmul__ = matmul, _swap(matmul)
    T.__neg__ = neg
    T.__pos__ = lambda self: self
    T.__abs__ = abs
    T.__getitem__ = getitem
    T.__setitem__ = setitem
    # as PyTorch, comparing with None is a plain False / True, not an error
    T.__eq__ = lambda self, other: False if other is None else eq(self, other)
    T.__ne__ = lambda self, other: True if other is None else ne(self, other)
    T.__lt__, T.__le__, T.__gt__, T.__ge__ = lt, le, gt, ge
    T.__invert__ = lambda self: _logical_not(self)
    T.__and__, T.__rand__ = bitwise_and, _swap(bitwise_and)
    T.__or__, T.__ror__ = bitwise_or, _swap(bitwise_or)
    T.__xor__, T.__rxor__ = bitwise_xor, _swap(bitwise_xor)
    T.__floordiv__, T.__rfloordiv__ = floor_divide, _swap(floor_divide)
    T.__mod__, T.__rmod__ = remainder, _swap(remainder)
    T.__hash__ = object.__hash__
    for name, fn in dict(
        add=add, sub=sub, mul=mul, div=div, pow=pow, matmul=matmul, maximum=maximum, minimum=minimum,
        exp=exp, log=log, sqrt=sqrt, abs=abs, neg=neg, clip=clip, clamp=clamp, astype=astype,
        sum=sum, mean=mean, max=max, min=min, amax=amax, amin=amin, var=var, std=std, logsumexp=logsumexp,
        argmax=argmax, argmin=argmin, reshape=reshape, view=view, flatten=flatten, squeeze=squeeze,
        unsqueeze=unsqueeze, permute=permute, transpose=transpose, expand=expand,
        split=split, chunk=chunk, relu=relu, sigmoid=sigmoid, tanh=tanh, softmax=softmax,
        log_softmax=log_softmax, eq=eq, ne=ne, lt=lt, le=le, gt=gt, ge=ge, any=any, all=all,
        remainder=remainder, floor_divide=floor_divide, bitwise_and=bitwise_and, bitwise_or=bitwise_or,
        bitwise_xor=bitwise_xor,
    ).items():
        setattr(T, name, fn)
    T.T = property(lambda self: permute(self, tuple(reversed(range(self.ndim)))))
    T.mT = property(lambda self: transpose(self, -2, -1))
    T.t = _t
    T.float = lambda self: astype(self, "float32")
    T.double = lambda self: astype(self, "float64")
    T.long = lambda self: astype(self, "int64")
    T.int = lambda self: astype(self, "int32")
    T.bool = lambda self: astype(self, "bool")
    T.type = lambda self, dtype: astype(self, dtype)
    T.clone = lambda self: add(self, 0) if self.requires_grad else Tensor._make(self.data.copy(), self.device)
    T.contiguous = lambda self: self
    T.expand_as = lambda self, other: expand(self, other.shape)
    T.view_as = lambda self, other: reshape(self, other.shape)
    T.reshape_as = lambda self, other: reshape(self, other.shape)
    install_inplace(T)


def _logical_not(x):
    if x.dtype.kind not in "biu":
        raise TypeError(f"~: expected a bool or integer tensor, got {x.dtype}")
    return Tensor._make(~x.data, x.device)        # logical not for bools, bitwise for integers


_install()
