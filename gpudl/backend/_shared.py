"""What both backends share: batch norm's running-statistics update, written
against the arrays' own operators (NumPy or CuPy), and the user's cache folder
(compiled kernels here, datasets in :mod:`gpudl.data`)."""
from __future__ import annotations

import os
from pathlib import Path


def move_running_stats(running_mean, running_var, mean, var, m, momentum):
    """Batch norm's running statistics, in place and in their own dtype:
    ``running = (1 - momentum) * running + momentum * batch``, the batch variance
    (over ``m`` values per channel) unbiased by ``m / (m - 1)``."""
    unbiased = var * var.dtype.type(m / max(m - 1, 1))
    for stat, value in ((running_mean, mean), (running_var, unbiased)):
        mom = stat.dtype.type(momentum)
        stat *= 1 - mom
        stat += mom * value.astype(stat.dtype)


def cache_home():
    """The user's cache folder: ``$XDG_CACHE_HOME`` when that is an absolute
    path (the XDG spec ignores relative ones), else ``~/.cache``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if os.path.isabs(xdg) else Path(os.path.expanduser("~")) / ".cache"


def cache_dir(env_var, name):
    """Where compiled code is kept: ``$env_var``, else ``<cache home>/gpudl/<name>``
    (made if missing)."""
    d = os.environ.get(env_var) or os.path.join(cache_home(), "gpudl", name)
    os.makedirs(d, exist_ok=True)
    return d


def pool_tiles(H, W, Ho, Wo, kernel, stride, padding):
    """True when the windows partition the input exactly (2x2 / stride 2)."""
    return (tuple(padding) == (0, 0) and tuple(kernel) == tuple(stride)
            and Ho * kernel[0] == H and Wo * kernel[1] == W)
