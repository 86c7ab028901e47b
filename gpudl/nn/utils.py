"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_``, PyTorch's signatures.

Both work on the gradients' device and never read a value back to the host
(unless ``error_if_nonfinite`` asks them to check).
"""
from __future__ import annotations

import math

from ..autograd import _check_devices, writeable
from ..creation import zeros
from ..tensor import Tensor


def _grads(parameters, op):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads:
        _check_devices(op, grads)
    return grads


def _norm(xp, a, norm_type):
    if norm_type == math.inf:
        return xp.abs(a).max()
    if norm_type == 2:
        return xp.sqrt((a * a).sum())
    return (xp.abs(a) ** norm_type).sum() ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint ``norm_type``-norm is at most ``max_norm``.

    Returns the total norm before clipping as a 0-d Tensor on the
    gradients' device (computed there: no host sync).
    """
    max_norm, norm_type = float(max_norm), float(norm_type)
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_: expected max_norm >= 0, got {max_norm}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: expected norm_type > 0 (or inf), got {norm_type}")
    grads = _grads(parameters, "clip_grad_norm_")
    if not grads:
        return zeros(())
    dev = grads[0].device
    xp = dev.backend.xp
    dtype = xp.result_type(*[g.dtype for g in grads])
    norms = xp.stack([_norm(xp, g.data.astype(dtype, copy=False), norm_type) for g in grads])
    total = _norm(xp, norms, norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                           f"{float(total)}; pass error_if_nonfinite=False to clip anyway")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    coefs = {}
    for g in grads:
        c = coefs.get(g.dtype)
        if c is None:
            c = coefs[g.dtype] = coef.astype(g.dtype)
        if writeable(g.data):      # gradients from backward own their storage
            g.data *= c
        else:                       # a read-only array a user assigned
            g.data = g.data * c
    return Tensor._make(total, dev)



def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    if clip_value < 0:
        raise ValueError(f"clip_grad_value_: expected clip_value >= 0, got {clip_value}")
    for g in _grads(parameters, "clip_grad_value_"):
        xp = g.device.backend.xp
        if writeable(g.data):
            xp.clip(g.data, -clip_value, clip_value, out=g.data)
        else:
            g.data = xp.clip(g.data, -clip_value, clip_value)
