"""Batch normalisation for the CPU backend, in native C or NumPy.

The twins of the ``batch_norm_*`` kernels in ``kernels/batchnorm.cu``; the
contract is in :mod:`gpudl.backend`.  Inputs of 3+ dims in float32/64 run in
``kernels/cpu_native.c`` where it could be built (one pass over a channel's
rows for each sum while they sit in the cache, channels over the threads).
The rest, and everything where no C compiler answers, runs in NumPy:
per-channel sums as contiguous row sums of the (N * C, L) view, and the
per-channel dot products as one ``einsum`` over rows, so no full-size
temporary is made for them.
"""
from __future__ import annotations

import math

import numpy as np

from gpudl._errstate import quiet

from . import _cpu_kernels as _ck
from ._shared import move_running_stats

_SPLIT_MIN = 1 << 18            # elements: below this one thread does all channels


def _native_ok(name, a):
    """The native kernel for a (N, C, ...) array of 3+ dims, else None."""
    return _ck._native_fn(name, a.dtype) if a.ndim >= 3 and a.size else None


def _opt(a, dt):
    """(a as C-contiguous dt, its address), or (None, None) for None."""
    if a is None:
        return None, None
    a = np.ascontiguousarray(a, dt)
    return a, a.ctypes.data


def _channel_sum(a):
    """Per-channel sum of (N, C, ...) as contiguous row sums."""
    n, c = a.shape[:2]
    if a.ndim == 2 or a.size == 0:      # (no (N * C, -1) view of an empty array)
        return a.reshape(n, c, math.prod(a.shape[2:])).sum(axis=(0, 2))
    return a.reshape(n * c, -1).sum(axis=1).reshape(n, c).sum(axis=0)


def _channel_dot(a, b):
    """Per-channel sum of a * b without a full-size temporary."""
    n, c = a.shape[:2]
    if a.ndim == 2 or a.size == 0:
        L = math.prod(a.shape[2:])
        return np.einsum("ncl,ncl->c", a.reshape(n, c, L), b.reshape(n, c, L))
    return np.einsum("ij,ij->i", a.reshape(n * c, -1), b.reshape(n * c, -1)).reshape(n, c).sum(axis=0)


@quiet
def batch_norm_forward(x, weight, bias, running_mean, running_var, eps, momentum, use_batch_stats):
    fn = _native_ok("gd_bn_fwd", x)
    if fn is not None:
        return _forward_native(fn, x, weight, bias, running_mean, running_var, eps, momentum,
                               use_batch_stats)
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    m = x.size // c if c else 0
    if use_batch_stats:
        mean = _channel_sum(x) / x.dtype.type(m)
        xhat = x - mean.reshape(shape)
        var = _channel_dot(xhat, xhat) / x.dtype.type(m)
        if running_mean is not None:
            move_running_stats(running_mean, running_var, mean, var, m, momentum)
    else:
        mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        xhat = x - mean.reshape(shape)
    invstd = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat *= invstd.reshape(shape)
    y = xhat.copy() if weight is None else xhat * weight.astype(x.dtype, copy=False).reshape(shape)
    if bias is not None:
        y += bias.astype(x.dtype, copy=False).reshape(shape)
    return y, xhat, invstd


def _forward_native(fn, x, weight, bias, running_mean, running_var, eps, momentum, batch):
    """One C pass per channel (see kernels/cpu_native.c), channels over the threads."""
    dt = x.dtype
    x = np.ascontiguousarray(x)
    N, C = x.shape[:2]
    L = x.size // (N * C)
    if batch:
        mean, var = np.empty(C, dt), np.empty(C, dt)
    else:
        mean, var = np.array(running_mean, dt), np.array(running_var, dt)
    w, wp = _opt(weight, dt)
    b, bp = _opt(bias, dt)
    y, xhat, invstd = np.empty_like(x), np.empty_like(x), np.empty(C, dt)
    _ck._parallel(lambda r: fn(x.ctypes.data, N, C, L, wp, bp, 0 if batch else 1, mean.ctypes.data,
                               var.ctypes.data, eps, r.start, r.stop, y.ctypes.data,
                               xhat.ctypes.data, invstd.ctypes.data),
                  _ck._batch_split(C, x.size, _SPLIT_MIN))
    if batch and running_mean is not None:
        move_running_stats(running_mean, running_var, mean, var, N * L, momentum)
    return y, xhat, invstd


def _backward_native(fn, g, xhat, invstd, weight, batch, need_x, need_w, need_b):
    dt = xhat.dtype
    g, xhat = np.ascontiguousarray(g, dt), np.ascontiguousarray(xhat)
    N, C = g.shape[:2]
    L = g.size // (N * C)
    inv, _ = _opt(invstd, dt)
    w, wp = _opt(weight, dt)
    gx = np.empty_like(g) if need_x else None
    sg, sgx = np.empty(C, dt), np.empty(C, dt)
    _ck._parallel(lambda r: fn(g.ctypes.data, xhat.ctypes.data, N, C, L, inv.ctypes.data, wp,
                               1 if batch else 0, r.start, r.stop,
                               None if gx is None else gx.ctypes.data, sg.ctypes.data,
                               sgx.ctypes.data), _ck._batch_split(C, g.size, _SPLIT_MIN))
    return gx, (sgx if need_w else None), (sg if need_b else None)


@quiet
def batch_norm_backward(g, xhat, invstd, weight, use_batch_stats, need=(True, True, True)):
    need_x, need_w, need_b = (bool(v) for v in need)
    fn = _native_ok("gd_bn_bwd", xhat)
    if fn is not None and g.dtype == xhat.dtype:
        return _backward_native(fn, g, xhat, invstd, weight, use_batch_stats, need_x, need_w, need_b)
    shape = (1, g.shape[1]) + (1,) * (g.ndim - 2)
    sg = _channel_sum(g) if (need_b or (need_x and use_batch_stats)) else None
    sgx = _channel_dot(g, xhat) if (need_w or (need_x and use_batch_stats)) else None
    gx = None
    if need_x:
        a = invstd if weight is None else invstd * weight.astype(g.dtype, copy=False)
        gx = g * a.reshape(shape)
        if use_batch_stats and g.size:
            m = g.size // g.shape[1]
            gx -= xhat * (a * sgx / m).reshape(shape)
            gx -= (a * sg / m).reshape(shape)
    return gx, (sgx if need_w else None), (sg if need_b else None)
