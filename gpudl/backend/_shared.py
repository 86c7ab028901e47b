"""Element-wise update steps that more than one place runs, written against any
array module ``xp`` (NumPy or CuPy): the CPU twins of the fused kernels, the GPU
backend's fallbacks, and the optimizers without a kernel of their own."""
from __future__ import annotations


def direction(xp, p, g, out, weight_decay=0.0, maximize=False):
    """``(-g if maximize else g) + weight_decay * p``: ``g`` itself, or written to ``out``."""
    if not weight_decay and not maximize:
        return g
    if not weight_decay:
        return xp.negative(g, out=out)
    xp.multiply(p, p.dtype.type(weight_decay), out=out)
    if maximize:
        out -= g
    else:
        out += g
    return out


def ema(xp, avg, x, decay, tmp):
    """``avg = decay * avg + (1 - decay) * x`` in place (``x`` may be ``tmp``)."""
    c = avg.dtype.type
    avg *= c(decay)
    avg += xp.multiply(x, c(1 - decay), out=tmp)


def move_running_stats(running_mean, running_var, mean, var, m, momentum):
    """Batch norm's running statistics, in place and in their own dtype:
    ``running = (1 - momentum) * running + momentum * batch``, the batch variance
    (over ``m`` values per channel) unbiased by ``m / (m - 1)``."""
    unbiased = var * var.dtype.type(m / max(m - 1, 1))
    for stat, value in ((running_mean, mean), (running_var, unbiased)):
        mom = stat.dtype.type(momentum)
        stat *= 1 - mom
        stat += mom * value.astype(stat.dtype)
