"""The LSTM cell's fused element-wise part for the CPU backend, in NumPy.

The twins of ``lstm_cell_forward_*`` / ``lstm_cell_backward_*`` in
``kernels/lstm.cu``; the contract is in :mod:`gpudl.backend`.  Results go
into the output buffers (``out=``).  The work runs on gate-major arrays
(``saved`` is one, ``(5, N, H)``, and the gates are copied into one):
NumPy's element-wise loops on the ``(N, 4H)`` column blocks would be strided
and about twice as slow as on contiguous ``(N, H)`` blocks.
The sigmoid is the kernel's ``1 / (1 + exp(-x))`` (exp overflowing to inf
gives the right 0): ``0.5 * tanh(0.5 * x) + 0.5``, a little faster, loses
the small values to cancellation (float32: 0 below x = -17, 10-45% off
from -10 on), which a large cell state then multiplies.
"""
from __future__ import annotations

import numpy as np

from gpudl._errstate import quiet


@quiet                                             # exp(-x) may overflow to inf: sigmoid 0, a value
def lstm_cell_forward(gates, c_prev, out=None):
    N, G = gates.shape
    H = G // 4
    if out is None:
        out = (np.empty((N, H), gates.dtype), np.empty((N, H), gates.dtype),
               np.empty((5, N, H), gates.dtype))
    h, c, a = out                                  # a = saved, gate-major: i, f, g, o, tanh(c)
    np.copyto(a[:4], gates.reshape(N, 4, H).transpose(1, 0, 2))
    one = gates.dtype.type(1)
    for s in (a[:2], a[3]):                        # sigmoid(x) = 1 / (1 + exp(-x))
        np.negative(s, out=s)
        np.exp(s, out=s)
        s += one
        np.reciprocal(s, out=s)
    np.tanh(a[2], out=a[2])
    i, f, g, o, tc = a
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=h)
    c += h
    np.tanh(c, out=tc)
    np.multiply(o, tc, out=h)
    return h, c, a


def lstm_cell_backward(gh, gc, saved, c_prev, out=None):
    _, N, H = saved.shape
    if out is None:
        out = np.empty((N, 4 * H), saved.dtype), np.empty((N, H), saved.dtype)
    ggates, gct = out
    a = saved
    i, f, g, o, tc = a
    d = np.empty((4, N, H), saved.dtype)
    d_i, d_f, d_g, d_o = d
    # gct = gc + gh * o * (1 - tc^2): the whole gradient reaching the new cell state
    np.multiply(tc, tc, out=gct)
    np.subtract(1, gct, out=gct)
    gct *= o
    gct *= gh
    gct += gc
    # the activations' derivatives: s - s^2 for the sigmoids, 1 - g^2 for g
    np.multiply(a[:4], a[:4], out=d)
    np.subtract(a[:4], d, out=d)
    np.multiply(g, g, out=d_g)
    np.subtract(1, d_g, out=d_g)
    # times what each pre-activation multiplies: [gct g, gct c_prev, gct i, gh tc]
    d_i *= g
    d_f *= c_prev
    d_g *= i
    d_o *= tc
    d_o *= gh
    d[:3] *= gct
    gct *= f                      # now gc_prev
    np.copyto(ggates.reshape(N, 4, H), d.transpose(1, 0, 2))
    return ggates, gct
