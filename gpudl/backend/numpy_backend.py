"""CPU backend: ``xp = numpy`` plus the kernel-level ops in vectorised NumPy.

See :mod:`gpudl.backend` for the contract every backend fulfils.
"""
from __future__ import annotations

import numpy
import scipy.special

from gpudl._errstate import quiet

name = "numpy"
xp = numpy


def asarray(a, dtype=None):
    return numpy.asarray(a, dtype=dtype)


def to_numpy(a):
    return numpy.asarray(a)


def is_array(a):
    return isinstance(a, numpy.ndarray)


def from_dlpack(obj):
    return numpy.from_dlpack(obj)


def erf(a):
    return scipy.special.erf(a)


_zeros = {}  # dtype -> one read-only array of zeros, grown on demand


def relu(a, out=None):
    """max(a, 0) elementwise (NaN stays NaN).  NumPy's ``maximum`` against a
    scalar runs an unvectorised loop, 2.5-3x slower than against an array,
    so the zeros come from one shared read-only array."""
    a = numpy.asarray(a)
    if a.dtype.kind != "f":
        return numpy.maximum(a, 0, out=out)
    z = _zeros.get(a.dtype)
    if z is None or z.size < a.size:
        z = numpy.zeros(max(a.size, 1 << 16), a.dtype)
        z.flags.writeable = False
        _zeros[a.dtype] = z
    return numpy.maximum(a, z[:a.size].reshape(a.shape), out=out)


@quiet
def relu_backward(g, y):
    """g where the ReLU's output y is not 0 (positive, or NaN), else 0."""
    g, y = numpy.asarray(g), numpy.asarray(y)
    gx = numpy.empty_like(g, order="C")
    if native_elementwise("gd_relu_back", gx, g, y):
        return gx
    on = y != 0
    numpy.multiply(g, on, out=gx)       # (numpy.where is 10x slower here)
    if gx.size and numpy.isnan(numpy.add.reduce(gx, axis=None)):
        gx[~on] = 0                     # a NaN or inf g where the ReLU is off: 0, not NaN
    return gx


def default_rng(seed):
    return numpy.random.default_rng(seed)


def synchronize():
    return None


from ._cpu_kernels import native_elementwise  # noqa: E402
from ._cpu_kernels import (  # noqa: E402,F401  (the kernel-level ops)
    matmul, conv2d_forward, conv2d_backward,
    max_pool2d_forward, max_pool2d_backward,
    avg_pool2d_forward, avg_pool2d_backward,
    softmax_cross_entropy_forward, softmax_cross_entropy_backward,
)
from ._cpu_rnn import lstm_cell_forward, lstm_cell_backward  # noqa: E402,F401
from ._cpu_norm import batch_norm_forward, batch_norm_backward  # noqa: E402,F401
from ._cpu_optim import sgd_update, adam_update, rmsprop_update  # noqa: E402,F401
