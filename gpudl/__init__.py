"""gpudl: a GPU-first deep-learning library (CuPy on a GPU, NumPy anywhere).

>>> import gpudl
>>> x = gpudl.randn(3, 4, requires_grad=True)
>>> (x * x).sum().backward()
"""
from __future__ import annotations

__version__ = "0.1.0"

from .backend import Device, DeviceError, cuda_available, cuda_unavailable_reason
from .backend import resolve as device
from .tensor import (  # noqa: F401
    Tensor, tensor, float16, float32, float64, int32, int64, uint8, bool_,
)
from .autograd import no_grad, enable_grad, is_grad_enabled, set_grad_enabled, Function  # noqa: F401
from .random import manual_seed, initial_seed, get_rng_state, set_rng_state  # noqa: F401
from .creation import (  # noqa: F401
    zeros, ones, full, empty, arange, linspace, eye, rand, randn, randint, randperm,
    zeros_like, ones_like, full_like, rand_like, randn_like, randint_like,
    from_numpy, from_dlpack,
)
from . import ops  # noqa: F401  (installs Tensor's operators)
from .io import save, load  # noqa: F401
from .ops import (  # noqa: F401
    add, sub, mul, div, pow, maximum, minimum, neg, exp, log, sqrt, abs, clip, clamp,
    matmul, sum, mean, max, min, amax, amin, var, std, logsumexp, argmax, argmin,
    eq, ne, lt, le, gt, ge, any, all, bitwise_and, bitwise_or, bitwise_xor, floor_divide, remainder,
    reshape, flatten, squeeze, unsqueeze, permute, transpose, expand,
    cat, stack, split, chunk, pad, where,
    relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax, dropout,
)

bool = bool_  # noqa: A001  (gpudl.bool as in torch.bool)

_LAZY = {"nn", "optim", "data", "models", "classic", "train", "testing"}


def __getattr__(name):
    """``gpudl.nn``, ``gpudl.optim``, ... and ``gpudl.Trainer`` load on first use (PEP 562)."""
    import importlib
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name == "Trainer":
        return importlib.import_module(".train", __name__).Trainer
    raise AttributeError(f"module 'gpudl' has no attribute {name!r}")
