"""The LSTM cell's fused element-wise part for the CPU backend, in NumPy.

The twins of ``lstm_cell_forward_*`` / ``lstm_cell_backward_*`` in
``kernels/lstm.cu``; the contract is in :mod:`gpudl.backend`.  Every step
writes into its output buffers (``out=``), so a call allocates nothing but
the outputs it is not given.  The sigmoid is computed as
``0.5 * tanh(0.5 * x) + 0.5``: no overflow for any ``x`` (the kernel's
``1 / (1 + exp(-x))`` agrees within rounding), and one vectorised ``tanh``
covers all four gates.
"""
from __future__ import annotations

import numpy as np

_consts = {}


def _gate_consts(H, dtype):
    """Per-column constants over the 4H gates [i | f | g | o]: tanh(a * s) * m + m gives the activations.

    s = 1/2, m = 1/2 for the sigmoid gates; s = 1, m = 0 (then scaled by 1) for g.
    """
    key = (H, np.dtype(dtype))
    k = _consts.get(key)
    if k is None:
        if len(_consts) > 64:
            _consts.clear()
        scale = np.full(4 * H, 0.5, dtype=dtype)
        scale[2 * H:3 * H] = 1.0
        offset = scale.copy()
        offset[2 * H:3 * H] = 0.0
        k = _consts[key] = (scale, scale.copy(), offset)      # input scale, output scale, offset
    return k


def _split5(a, H):
    """The column blocks [0, H), [H, 2H), ... of a (N, 4H) or (N, 5H) array (views; the last may be empty)."""
    return a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:4 * H], a[:, 4 * H:]


def lstm_cell_forward(gates, c_prev, out=None):
    N, G = gates.shape
    H = G // 4
    if out is None:
        out = (np.empty((N, H), gates.dtype), np.empty((N, H), gates.dtype),
               np.empty((N, 5 * H), gates.dtype))
    h, c, saved = out
    scale, mul, offset = _gate_consts(H, gates.dtype)
    act = saved[:, :4 * H]
    np.multiply(gates, scale, out=act)
    np.tanh(act, out=act)
    act *= mul                    # sigmoid(a) = tanh(a / 2) / 2 + 1 / 2
    act += offset
    i, f, g, o, tc = _split5(saved, H)
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=h)
    c += h
    np.tanh(c, out=tc)
    np.multiply(o, tc, out=h)
    return h, c, saved


def lstm_cell_backward(gh, gc, saved, c_prev, out=None):
    N, H5 = saved.shape
    H = H5 // 5
    if out is None:
        out = np.empty((N, 4 * H), saved.dtype), np.empty((N, H), saved.dtype)
    ggates, gct = out
    act = saved[:, :4 * H]
    i, f, g, o, tc = _split5(saved, H)
    d_i, d_f, d_g, d_o = _split5(ggates, H)[:4]
    # gct = gc + gh * o * (1 - tc^2): the whole gradient reaching the new cell state
    np.multiply(tc, tc, out=gct)
    np.subtract(1, gct, out=gct)
    gct *= o
    gct *= gh
    gct += gc
    # the activations' derivatives: s - s^2 for the sigmoids, 1 - g^2 for g
    np.multiply(act, act, out=ggates)
    np.subtract(act, ggates, out=ggates)
    np.multiply(g, g, out=d_g)
    np.subtract(1, d_g, out=d_g)
    # times what each pre-activation multiplies: [gct g, gct c_prev, gct i, gh tc]
    d_i *= g
    d_f *= c_prev
    d_g *= i
    d_o *= tc
    d_o *= gh
    d_ifg = ggates[:, :3 * H].reshape(N, 3, H)   # a view: splitting the contiguous last axis
    d_ifg *= gct[:, None, :]
    gct *= f                      # now gc_prev
    return ggates, gct
