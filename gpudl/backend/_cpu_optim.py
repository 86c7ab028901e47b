"""Fused optimizer updates for the CPU backend, in NumPy.

The twins of ``sgd_update_*`` / ``adam_update_*`` / ``rmsprop_update_*`` in ``kernels/optim.cu``; the
contract is in :mod:`gpudl.backend`.  Every step works in place on the
parameter and its state; temporaries go to ``scratch`` (two arrays shaped
like the parameter, which the optimizer keeps between steps), so a step
allocates nothing.
"""
from __future__ import annotations

import math

import numpy as np



def direction(p, g, out, weight_decay=0.0, maximize=False):
    """``(-g if maximize else g) + weight_decay * p``: ``g`` itself, or written to ``out``."""
    if not weight_decay and not maximize:
        return g
    if not weight_decay:
        return np.negative(g, out=out)
    np.multiply(p, p.dtype.type(weight_decay), out=out)
    if maximize:
        out -= g
    else:
        out += g
    return out


def ema(avg, x, decay, tmp):
    """``avg = decay * avg + (1 - decay) * x`` in place (``x`` may be ``tmp``)."""
    c = avg.dtype.type
    avg *= c(decay)
    avg += np.multiply(x, c(1 - decay), out=tmp)


def _temporaries(p, scratch):
    if scratch is None:
        return np.empty_like(p), np.empty_like(p)
    return scratch


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first,
               scratch=None):
    c = p.dtype.type
    s, t = _temporaries(p, scratch)
    d = direction(p, g, s, weight_decay, maximize)
    if momentum:
        if first:
            np.copyto(buf, d)
        else:
            buf *= c(momentum)
            buf += np.multiply(d, c(1 - dampening), out=t) if dampening else d
        d = np.add(d, np.multiply(buf, c(momentum), out=t), out=t) if nesterov else buf
    p -= np.multiply(d, c(lr), out=t)


def adam_update(p, g, m, v, v_max, lr, beta1, beta2, eps, weight_decay, decoupled, maximize, step,
                scratch=None):
    c = p.dtype.type
    s, t = _temporaries(p, scratch)
    d = direction(p, g, s, 0.0 if decoupled else weight_decay, maximize)
    if decoupled and weight_decay:
        p *= c(1 - lr * weight_decay)
    ema(m, d, beta1, t)
    ema(v, np.multiply(d, d, out=t), beta2, t)
    if v_max is not None:
        v = np.maximum(v_max, v, out=v_max)
    denom = np.sqrt(v, out=t)
    denom /= c(math.sqrt(1 - beta2 ** step))
    denom += c(eps)
    p -= np.multiply(np.divide(m, denom, out=t), c(lr / (1 - beta1 ** step)), out=t)


def rmsprop_update(p, g, v, a, buf, lr, alpha, eps, weight_decay, momentum, maximize, scratch=None):
    c = p.dtype.type
    s, t = _temporaries(p, scratch)
    d = direction(p, g, s, weight_decay, maximize)
    ema(v, np.multiply(d, d, out=t), alpha, t)
    if a is not None:
        ema(a, d, alpha, t)
        denom = np.sqrt(np.subtract(v, np.multiply(a, a, out=t), out=t), out=t)
    else:
        denom = np.sqrt(v, out=t)
    denom += c(eps)
    step = np.divide(d, denom, out=t)
    if momentum:
        buf *= c(momentum)
        buf += step
        step = np.multiply(buf, c(lr), out=t)
    else:
        step *= c(lr)
    p -= step
