"""Batch transforms: run on a whole batch, on the batch's device.

Each transform is a callable ``Tensor -> Tensor`` that works on the batch
where it lives (through gpudl ops or ``x.device.backend.xp``), so a
:class:`~gpudl.data.DataLoader` with ``device="cuda"`` moves raw data and
preprocesses it on the GPU.  Normalize and Standardize are gpudl ops, so
they also pass gradients through.

>>> from gpudl.data import transforms as T
>>> prep = T.Compose([T.ToFloat(), T.Normalize(0.1307, 0.3081)])
"""
from __future__ import annotations

import numpy

from ..backend import cpu
from ..ops import div, sub
from ..tensor import Tensor, float32
from .dataset import as_host_array


def to_float(xp, a, scale=1 / 255, dtype=float32):
    """``a`` (integer pixels) as ``dtype`` times ``scale``, computed with array module ``xp``.
    A scale of 1/n divides by n, as torchvision's ``x.float() / 255`` (multiplying by a
    rounded 1/255 is 1 ulp off for about half the byte values)."""
    n = 1 / scale
    if n == round(n):
        return a.astype(dtype) / xp.asarray(round(n), dtype=dtype)
    return a.astype(dtype) * xp.asarray(scale, dtype=dtype)


def _as_tensor(x, what):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numpy.ndarray):
        return Tensor._make(x, cpu())
    raise TypeError(f"{what}: expected a Tensor (or a NumPy array), got {type(x).__name__}")


class Transform:
    """A callable on a batch; subclasses define ``__call__``."""

    def __call__(self, x):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        if callable(transforms) or not hasattr(transforms, "__iter__"):
            raise TypeError(f"Compose: expected a list of transforms, got {type(transforms).__name__} "
                            f"(wrap it in a list)")
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: expected callables, got {type(t).__name__}")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Lambda(Transform):
    """Wrap a function ``fn(batch) -> batch`` as a transform."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"Lambda: expected a callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


class ToFloat(Transform):
    """Integer pixels (uint8) -> float32 times ``scale`` (default 1/255: values in [0, 1])."""

    def __init__(self, scale=1 / 255):
        self.scale = float(scale)

    def __call__(self, x):
        x = _as_tensor(x, "ToFloat")
        if x.dtype.kind not in "iub":
            raise TypeError(f"ToFloat: expected integer pixels such as uint8, got {x.dtype} "
                            f"(the batch is already floating point)")
        # a bool mask is already in [0, 1]: False -> 0.0, True -> 1.0, as torchvision
        scale = 1.0 if x.dtype.kind == "b" else self.scale
        return Tensor._make(to_float(x.device.backend.xp, x.data, scale), x.device)


class _Affine(Transform):
    """``(x - mean) / std`` with host statistics moved once to each device and dtype used."""

    _mean = _std = None

    def _set_stats(self, mean, std):
        if numpy.any(~numpy.isfinite(std)) or numpy.any(std <= 0):
            raise ValueError(f"{type(self).__name__}: expected finite positive std, got {std.ravel()[:8]}")
        self._mean, self._std, self._cache = mean, std, {}

    def _stats_for(self, x):
        return self._mean, self._std

    def __call__(self, x):
        x = _as_tensor(x, type(self).__name__)
        mean, std = self._stats_for(x)
        dtype = x.dtype if x.dtype.kind == "f" else float32
        key = (x.device, dtype, mean.shape)
        if key not in self._cache:
            self._cache[key] = tuple(Tensor._make(x.device.backend.asarray(s.astype(dtype)), x.device)
                                     for s in (mean, std))
        m, s = self._cache[key]
        return div(sub(x, m), s)


class Normalize(_Affine):
    """``(x - mean) / std`` with given statistics: scalars, or one per channel (axis 1 of NCHW / NC)."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std
        self._set_stats(numpy.asarray(mean, dtype=numpy.float64), numpy.asarray(std, dtype=numpy.float64))
        if self._mean.ndim > 1 or self._std.ndim > 1:
            raise ValueError(f"Normalize: expected scalars or 1-D per-channel sequences, "
                             f"got mean of shape {self._mean.shape} and std of shape {self._std.shape}")
        sizes = {self._mean.size, self._std.size} - {1}
        if len(sizes) > 1:
            raise ValueError(f"Normalize: expected as many means as stds (or one of either), got "
                             f"{self._mean.size} and {self._std.size}")

    def _stats_for(self, x):
        mean, std = self._mean, self._std
        c = max(mean.size, std.size)
        if c == 1:                     # one value (or a 1-element sequence) for every channel
            return mean.reshape(()), std.reshape(())
        if x.ndim < 2 or x.shape[1] != c:
            raise ValueError(f"Normalize: {c} per-channel values need a batch with {c} channels on "
                             f"axis 1 (N, C, ...), got shape {x.shape}")
        shape = (1, c) + (1,) * (x.ndim - 2)
        return (numpy.broadcast_to(mean, (c,)).reshape(shape),
                numpy.broadcast_to(std, (c,)).reshape(shape))


class Standardize(_Affine):
    """Zero mean, unit variance by the statistics of the training set.

    ``fit(train)`` computes ``mean`` and (population) ``std`` over ``axis``:
    ``axis=0`` (default) gives one per feature, ``axis=(0, 2, 3)`` one per
    channel of NCHW images, ``axis=None`` one for all.  Calling the transform
    then maps any batch -- training or test -- by those same statistics.
    Features whose std is below ``eps`` (constant pixels) are only centred.
    """

    def __init__(self, axis=0, eps=1e-8):
        self.axis = axis
        self.eps = float(eps)
        self.mean = self.std = None

    def fit(self, train):
        """Compute the statistics of ``train`` (an array or Tensor of samples); returns self."""
        if isinstance(train, Tensor):
            xp, a, to_numpy = train.device.backend.xp, train.data, train.device.backend.to_numpy
        else:
            xp, a, to_numpy = numpy, as_host_array(train, "Standardize.fit"), numpy.asarray
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"Standardize.fit: expected a non-empty batch of samples, got shape {a.shape}")
        try:
            # one float64 copy, centred and squared in place (CuPy's std of an
            # integer array with dtype=float64 loses ~5e-5 of relative precision)
            d = a.astype(xp.float64)
            mean = xp.mean(d, axis=self.axis, keepdims=True)
            d -= mean
            d *= d
            std = xp.sqrt(xp.mean(d, axis=self.axis, keepdims=True))
            del d
        except (ValueError, TypeError) as e:  # numpy's AxisError is a ValueError
            raise ValueError(f"Standardize.fit: axis={self.axis!r} does not suit data of shape {a.shape} ({e})") from None
        mean, std = to_numpy(mean), to_numpy(std)
        std = numpy.where(std < self.eps, 1.0, std)
        self.mean, self.std = mean, std
        self._set_stats(mean, std)
        self._fit_shape = a.shape
        return self

    def _stats_for(self, x):
        if self._mean is None:
            raise RuntimeError("Standardize: call fit(train) before transforming batches")
        m = self._mean
        if x.ndim != m.ndim or any(ms != 1 and ms != xs for ms, xs in zip(m.shape, x.shape)):
            raise ValueError(f"Standardize: fitted on data of shape {self._fit_shape} with axis={self.axis!r}, "
                             f"got a batch of shape {x.shape}")
        return self._mean, self._std

    def __repr__(self):
        return f"Standardize(axis={self.axis!r}, eps={self.eps!r}, fitted={self._mean is not None})"
