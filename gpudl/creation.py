"""Tensor creation: zeros, ones, full, arange, eye, rand, randn, randint, *_like."""
from __future__ import annotations

import numpy

from .tensor import Tensor, as_dtype, float32, int64, _default_device
from . import random as _random


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        shape = tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"expected a shape of ints, got {size!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"expected non-negative sizes, got {shape}")
    return shape


def _finish(arr, device, requires_grad):
    t = Tensor._make(arr, device)
    return t.requires_grad_(True) if requires_grad else t


def _filled(fill, size, dtype, device, requires_grad):
    dev = _default_device(device)
    dt = as_dtype(dtype) or float32
    arr = dev.backend.xp.full(_shape(size), fill, dtype=dt)
    return _finish(arr, dev, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _filled(0, size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _filled(1, size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = float32 if isinstance(fill_value, float) else (
            numpy.dtype(bool) if isinstance(fill_value, bool) else int64)
    return _filled(fill_value, (size,) if isinstance(size, int) else tuple(size), dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    dev = _default_device(device)
    arr = dev.backend.xp.empty(_shape(size), dtype=as_dtype(dtype) or float32)
    return _finish(arr, dev, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = float32 if any(isinstance(v, float) for v in (start, end, step)) else int64
    dev = _default_device(device)
    arr = dev.backend.xp.arange(start, end, step, dtype=as_dtype(dtype))
    return _finish(arr, dev, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    dev = _default_device(device)
    arr = dev.backend.xp.linspace(start, end, int(steps), dtype=as_dtype(dtype) or float32)
    return _finish(arr, dev, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    dev = _default_device(device)
    arr = dev.backend.xp.eye(int(n), None if m is None else int(m), dtype=as_dtype(dtype) or float32)
    return _finish(arr, dev, requires_grad)


def _from_host(host, dtype, device, requires_grad):
    dev = _default_device(device)
    arr = dev.backend.asarray(host.astype(as_dtype(dtype) or float32, copy=False))
    return _finish(arr, dev, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1), drawn by the seeded CPU generator, then moved."""
    dt = as_dtype(dtype) or float32
    host = _random.cpu_generator().random(_shape(size), dtype=dt if dt in (numpy.float32, numpy.float64) else numpy.float64)
    return _from_host(host, dt, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal, drawn by the seeded CPU generator, then moved."""
    dt = as_dtype(dtype) or float32
    host = _random.cpu_generator().standard_normal(_shape(size), dtype=dt if dt in (numpy.float32, numpy.float64) else numpy.float64)
    return _from_host(host, dt, device, requires_grad)


def randint(low, high=None, size=(), dtype=None, device=None):
    """Integers in [low, high), drawn by the seeded CPU generator."""
    if isinstance(high, (tuple, list)) and size == ():    # randint(high, size), as in PyTorch
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if not low < high:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    host = _random.cpu_generator().integers(low, high, size=_shape((size,) if isinstance(size, int) else tuple(size)))
    return _from_host(host, as_dtype(dtype) or int64, device, False)


def randperm(n, device=None):
    return _from_host(_random.cpu_generator().permutation(int(n)), int64, device, False)


def _like(fn, t, dtype, device, requires_grad, *extra):
    return fn(*extra, t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype, device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return _like(rand, t, dtype, device, requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return _like(randn, t, dtype, device, requires_grad)


def randint_like(t, low, high=None, dtype=None, device=None):
    return randint(low, high, t.shape, dtype=dtype or t.dtype, device=device or t.device)


def from_numpy(a):
    """A CPU tensor sharing memory with the numpy array ``a`` (no copy)."""
    if not isinstance(a, numpy.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    from .backend import cpu
    return Tensor._make(a, cpu())


def from_dlpack(obj):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, JAX)."""
    from .backend import cpu, resolve
    if isinstance(obj, Tensor):
        return obj.detach()
    if not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: expected an object with __dlpack__/__dlpack_device__, got {type(obj).__name__}")
    dev_type, dev_id = obj.__dlpack_device__()
    if int(dev_type) == 1:  # kDLCPU
        dev = cpu()
    elif int(dev_type) == 2:  # kDLCUDA
        dev = resolve(f"cuda:{int(dev_id)}")
    else:
        raise ValueError(f"from_dlpack: unsupported DLPack device type {int(dev_type)} (expected CPU=1 or CUDA=2)")
    return Tensor._make(dev.backend.from_dlpack(obj), dev)
