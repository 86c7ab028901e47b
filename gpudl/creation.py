"""Tensor creation: zeros, ones, full, arange, eye, rand, randn, randint, *_like."""
from __future__ import annotations

import math
import numbers

import numpy

from .tensor import Tensor, as_dtype, float32, int64, _default_device, to_host
from . import random as _random


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size):
        raise TypeError(f"expected a shape of ints, got {size!r}")
    shape = tuple(int(s) for s in size)
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
    """``size`` filled with ``fill_value``; the dtype follows it as in PyTorch (a Python float:
    float32, an int: int64, a bool: bool; a NumPy scalar or a one-element Tensor: its own)."""
    if isinstance(fill_value, Tensor):
        if fill_value.numel() != 1:
            raise ValueError(f"full: expected a one-element fill value, got a tensor of shape {fill_value.shape}")
        fill_value = to_host(fill_value).reshape(())[()]          # a NumPy scalar of its dtype
    if dtype is None:
        if isinstance(fill_value, numpy.generic):
            dtype = fill_value.dtype
        else:
            dtype = numpy.dtype(bool) if isinstance(fill_value, bool) else (
                int64 if isinstance(fill_value, numbers.Integral) else float32)
    return _filled(fill_value, (size,) if isinstance(size, int) else tuple(size), dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    dev = _default_device(device)
    arr = dev.backend.xp.empty(_shape(size), dtype=as_dtype(dtype) or float32)
    return _finish(arr, dev, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """[start, end) by ``step``; floating values are start + i * step computed in
    float64, then rounded once to the dtype (as PyTorch, no accumulated drift)."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError(f"arange: the bounds {start} .. {end} and step {step} have inconsistent signs")
    if dtype is None:
        dtype = float32 if any(isinstance(v, float) for v in (start, end, step)) else int64
    dt = as_dtype(dtype)
    xp = _default_device(device).backend.xp
    if dt.kind == "f":
        n = max(0, math.ceil((end - start) / step))
        arr = (xp.arange(n, dtype=numpy.float64) * float(step) + float(start)).astype(dt)
    else:
        arr = xp.arange(start, end, step, dtype=dt)
    return _finish(arr, _default_device(device), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    dev = _default_device(device)
    steps = _count("linspace", "steps", steps)
    arr = dev.backend.xp.linspace(start, end, steps, dtype=as_dtype(dtype) or float32)
    return _finish(arr, dev, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    dev = _default_device(device)
    n, m = _count("eye", "n", n), None if m is None else _count("eye", "m", m)
    arr = dev.backend.xp.eye(n, m, dtype=as_dtype(dtype) or float32)
    return _finish(arr, dev, requires_grad)


def _from_host(host, dtype, device, requires_grad):
    dev = _default_device(device)
    arr = dev.backend.asarray(host.astype(as_dtype(dtype) or float32, copy=False))
    return _finish(arr, dev, requires_grad)


def _float_draw(op, dtype):
    dt = as_dtype(dtype) or float32
    if dt.kind != "f":
        raise TypeError(f"{op}: expected a floating-point dtype, got {dt}")
    return dt, (dt if dt in (numpy.float32, numpy.float64) else numpy.dtype(numpy.float32))


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1), drawn by the seeded CPU generator, then moved."""
    dt, draw = _float_draw("rand", dtype)
    host = _random.cpu_generator().random(_shape(size), dtype=draw)
    if draw != dt:      # e.g. float16: on its own grid below 1 (rounding could give 1.0)
        step = 2.0 ** -(numpy.finfo(dt).nmant + 1)
        host = numpy.floor(host / step) * step
    return _from_host(host, dt, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal, drawn by the seeded CPU generator, then moved."""
    dt, draw = _float_draw("randn", dtype)
    host = _random.cpu_generator().standard_normal(_shape(size), dtype=draw)
    return _from_host(host, dt, device, requires_grad)


def randint(low, high=None, size=(), dtype=None, device=None):
    """Integers in [low, high), drawn by the seeded CPU generator."""
    if isinstance(high, (tuple, list)) and size == ():    # randint(high, size), as in PyTorch
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"randint: expected an int {name}, got {v!r}")
    if size is None or not isinstance(size, (numbers.Integral, tuple, list)):
        raise TypeError(f"randint: expected size to be an int or a tuple of ints, got {size!r}")
    if not low < high:
        raise ValueError(f"randint: expected low < high, got low={low}, high={high}")
    dt = as_dtype(dtype) or int64
    if dt.kind in "iu" and not (numpy.iinfo(dt).min <= low and high - 1 <= numpy.iinfo(dt).max):
        raise ValueError(f"randint: [{low}, {high}) does not fit in {dt}")
    host = _random.cpu_generator().integers(low, high, size=_shape((size,) if isinstance(size, int) else tuple(size)))
    return _from_host(host, dt, device, False)


def randperm(n, device=None):
    return _from_host(_random.cpu_generator().permutation(_count("randperm", "n", n)), int64, device, False)


def _count(op, name, v):
    """A size argument: a non-negative int (a float is not truncated silently)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"{op}: expected {name} to be a non-negative int, got {v!r}")
    return int(v)


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
    if a.dtype.kind not in "biuf":
        raise TypeError(f"from_numpy: expected an array of numbers or bools, got dtype {a.dtype}")
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
