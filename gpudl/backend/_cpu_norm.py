"""Batch normalisation for the CPU backend, in NumPy.

The twins of the ``batch_norm_*`` kernels in ``kernels/batchnorm.cu``; the
contract is in :mod:`gpudl.backend`.  Per-channel sums run as contiguous row
sums of the (N * C, L) view, and the per-channel dot products as one
``einsum`` over rows, so no full-size temporary is made for them.
"""
from __future__ import annotations

import math

import numpy as np

from ._shared import move_running_stats


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


def batch_norm_forward(x, weight, bias, running_mean, running_var, eps, momentum, use_batch_stats):
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


def batch_norm_backward(g, xhat, invstd, weight, use_batch_stats, need=(True, True, True)):
    need_x, need_w, need_b = (bool(v) for v in need)
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
