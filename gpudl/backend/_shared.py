"""What both backends share: batch norm's running-statistics update, written
against the arrays' own operators (NumPy or CuPy)."""
from __future__ import annotations


def move_running_stats(running_mean, running_var, mean, var, m, momentum):
    """Batch norm's running statistics, in place and in their own dtype:
    ``running = (1 - momentum) * running + momentum * batch``, the batch variance
    (over ``m`` values per channel) unbiased by ``m / (m - 1)``."""
    unbiased = var * var.dtype.type(m / max(m - 1, 1))
    for stat, value in ((running_mean, mean), (running_var, unbiased)):
        mom = stat.dtype.type(momentum)
        stat *= 1 - mom
        stat += mom * value.astype(stat.dtype)
