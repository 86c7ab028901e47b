"""GPU backend: ``xp = cupy`` plus the kernel-level ops as RawKernel launches.

See :mod:`gpudl.backend` for the contract every backend fulfils.

The backend is built by :func:`make_backend` from its parts, and the code
below is written only against them:

``xp``          the array module (``cupy`` on a GPU; ``numpy`` under the
                CUDA emulator in :mod:`gpudl.testing`)
``get_module``  ``get_module("conv2d.cu")`` -> an object with
                ``get_function(name)``; the function is called exactly like
                a ``cupy.RawKernel``: ``fn(grid, block, args, shared_mem=0)``
``special``     ``cupyx.scipy.special`` or ``scipy.special`` (for ``erf``)

:func:`cuda_backend` assembles the real one.  CuPy is imported only there,
so this module imports fine on a machine without CuPy.

Every kernel launch goes through :func:`launch`, which refuses, before the
launch, anything a kernel could misread: an array of another array type or
device, a non-C-contiguous array (a view with strides), a Python ``int`` or
``float`` (the kernel's parameter types are fixed: ``int`` dims are passed as
``numpy.int32``, ``T`` scalars as ``numpy.float32``/``numpy.float64``), a
malformed grid.  The public wrappers above it check shapes and dtypes (and
name both dtypes on a mismatch), make *inputs* C-contiguous, allocate every
output themselves and compute the grid explicitly: 1-D grids of
``ceil(n / 256)`` blocks of 256 threads (kernels use grid-stride loops, so
the grid may be capped), and one block per row for the softmax loss.

Convolution is im2col (``conv2d_im2col_*``, one thread per column element,
the columns of a chunk's images side by side) plus one 2-D product per group
for the forward pass and the weight gradient; the data gradient is
``W^T @ gy`` followed by a gather col2im (``conv2d_col2im_*``, one thread
per input pixel).  1x1 stride-1 unpadded convolutions skip im2col.  The batch is processed in chunks so the column
buffer stays under ``_COLS_BUDGET_BYTES``.  Every kernel is deterministic
(no atomics).
"""
from __future__ import annotations

import contextlib
import math
import operator
import types

import numpy

from . import BACKEND_API
from ._shared import move_running_stats, pool_tiles as _tiles

__all__ = ["make_backend", "cuda_backend", "launch", "KernelArgumentError"]

BLOCK = 256                       # threads per block of the 1-D launches
_BIG_BLOCK = 1024                  # per-channel reductions over at least _BIG_BLOCK_VALUES values
_BIG_BLOCK_VALUES = 1 << 14
_MAX_GRID_X = 2 ** 31 - 1         # CUDA's limit on gridDim.x
_MAX_GRID_YZ = 65535
_INT32_MAX = 2 ** 31 - 1
_COLS_BUDGET_BYTES = 256 << 20    # im2col buffer per chunk of the batch

_SUFFIX = {numpy.dtype(numpy.float32): "f32", numpy.dtype(numpy.float64): "f64"}
_SCALAR_TYPES = (numpy.int32, numpy.int64, numpy.float32, numpy.float64)
_ARRAY_DTYPES = frozenset(numpy.dtype(t) for t in _SCALAR_TYPES)


class KernelArgumentError(ValueError):
    """An argument a kernel cannot take safely (a view, a Python int, ...)."""


# --------------------------------------------------------------------------
# the launch choke point


def _check_dims(dims, what, limits):
    if isinstance(dims, (int, numpy.integer)) and not isinstance(dims, bool):
        dims = (dims,)
    if not isinstance(dims, tuple) or not 1 <= len(dims) <= 3:
        raise KernelArgumentError(f"{what}: expected a tuple of 1 to 3 ints, got {dims!r}")
    for d, lim in zip(dims, limits):
        if isinstance(d, bool) or not isinstance(d, (int, numpy.integer)) or not 1 <= d <= lim:
            raise KernelArgumentError(f"{what}: each entry must be an int in [1, {lim}], got {dims!r}")
    return tuple(int(d) for d in dims)


def _check_launch(xp, kernel, grid, block, args, device_index):
    """The checks of :func:`launch`; returns (grid, block, args) ready for the call."""
    grid = _check_dims(grid, f"{kernel}: grid", (_MAX_GRID_X, _MAX_GRID_YZ, _MAX_GRID_YZ))
    block = _check_dims(block, f"{kernel}: block", (1024, 1024, 64))
    threads = 1
    for d in block:
        threads *= d
    if threads > 1024:
        raise KernelArgumentError(f"{kernel}: block {block} has more than 1024 threads")
    args = tuple(args)
    ndarray = xp.ndarray
    for i, a in enumerate(args):
        if isinstance(a, ndarray):
            if a.dtype not in _ARRAY_DTYPES:
                raise TypeError(f"{kernel}: argument {i}: arrays of dtype {a.dtype} are not taken by "
                                "any kernel (expected float32, float64, int32 or int64)")
            if not a.flags.c_contiguous:
                raise KernelArgumentError(
                    f"{kernel}: argument {i}: expected a C-contiguous array, got one of shape "
                    f"{a.shape} with strides {a.strides}; kernels index flat memory and would "
                    "misread a view")
            if device_index is not None and a.device.id != device_index:
                raise KernelArgumentError(f"{kernel}: argument {i}: array is on cuda:{a.device.id}, "
                                          f"the kernel runs on cuda:{device_index}")
        elif type(a) in _SCALAR_TYPES:
            pass
        elif isinstance(a, numpy.ndarray) or hasattr(a, "__cuda_array_interface__"):
            raise TypeError(f"{kernel}: argument {i}: a {type(a).__module__}.{type(a).__name__} "
                            f"was passed to a kernel that takes {xp.__name__} arrays")
        else:
            raise TypeError(
                f"{kernel}: argument {i}: expected an array or a numpy.int32/int64/float32/float64 "
                f"scalar, got {type(a).__name__} {a!r} (a Python number has no fixed C type)")
    return grid, block, args


def launch(xp, get_module, filename, kernel, grid, block, args, shared_mem=0,
           device_index=None):
    """Validate ``args`` and launch ``kernel`` from ``filename``.

    Arrays must be ``xp`` arrays, C-contiguous, of a dtype a kernel takes
    (float32/float64/int32/int64) and, when ``device_index`` is given, on
    that device.  Scalars must already be ``numpy.int32`` / ``numpy.int64``
    / ``numpy.float32`` / ``numpy.float64``.  Anything else raises
    :class:`KernelArgumentError` (or ``TypeError``) and nothing is launched.
    """
    grid, block, args = _check_launch(xp, kernel, grid, block, args, device_index)
    get_module(filename).get_function(kernel)(grid, block, args, shared_mem=shared_mem)


# --------------------------------------------------------------------------
# small argument helpers


def _i32(v, what):
    """A non-negative-or-any int that fits the kernels' ``int`` parameters."""
    v = operator.index(v)
    if not -_INT32_MAX - 1 <= v <= _INT32_MAX:
        raise ValueError(f"{what} = {v} does not fit the kernels' 32-bit int parameters")
    return numpy.int32(v)


def _pool_threads(geo):
    """Threads of a pooling backward: one per window where the windows tile the
    input (the kernel's gd_pool_tiles), else one per input pixel."""
    N, C, H, W, kH, kW, sh, sw, ph, pw, Ho, Wo = geo
    return N * C * (Ho * Wo if _tiles(H, W, Ho, Wo, (kH, kW), (sh, sw), (ph, pw)) else H * W)


def _pair(v, what, minimum):
    if isinstance(v, (int, numpy.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        a, b = v
        a, b = operator.index(a), operator.index(b)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected an int or a pair of ints, got {v!r}") from None
    if isinstance(v[0], bool) or isinstance(v[1], bool) or a < minimum or b < minimum:
        raise ValueError(f"{what}: expected ints >= {minimum}, got {v!r}")
    return a, b


def _shape4(s, what):
    try:
        s = tuple(operator.index(d) for d in s)
    except TypeError:
        raise TypeError(f"{what}: expected a shape (N, C, H, W), got {s!r}") from None
    if len(s) != 4 or min(s) < 0:
        raise ValueError(f"{what}: expected a shape (N, C, H, W), got {s!r}")
    return s


def _max_threads(fn):
    """The most threads a block of compiled kernel ``fn`` may have (None: unknown).  CuPy
    versions spell it as a property of the kernel or of its ``function``, or as a method."""
    import warnings
    for obj in (getattr(fn, "function", None), fn):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                m = getattr(obj, "max_threads_per_block", None) if obj is not None else None
                if m is not None:
                    return int(m() if callable(m) else m)
        except Exception:          # a driver error reading it: unknown
            return None
    return None


def _blocks(n):
    return min(-(-n // BLOCK), _MAX_GRID_X)


# --------------------------------------------------------------------------
# the backend


class _Backend:
    def __init__(self, xp, get_module, special, name, device_index=None):
        self.xp = xp
        self.name = name
        self._get_module = get_module
        self._special = special
        self._device_index = device_index
        self._is_cupy = device_index is not None and hasattr(xp, "cuda")
        self._functions = {}      # kernel name -> compiled function (names are unique across files)
        self._placeholders = {}   # dtype -> a 1-element array passed for absent arguments
        self._big_block = {}      # compiled per-channel kernel -> its block size for big channels

    # ---- plumbing -------------------------------------------------------

    def _scope(self):
        if self._is_cupy:
            return self.xp.cuda.Device(self._device_index)
        return contextlib.nullcontext()

    def asarray(self, a, dtype=None):
        with self._scope():
            return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        get = getattr(a, "get", None)
        if get is not None and not isinstance(a, numpy.ndarray):
            return get()
        return numpy.asarray(a)

    def is_array(self, a):
        return isinstance(a, self.xp.ndarray)

    def from_dlpack(self, obj):
        with self._scope():
            return self.xp.from_dlpack(obj)

    def erf(self, a):
        with self._scope():
            return self._special.erf(a)

    def relu(self, a, out=None):
        with self._scope():
            return self.xp.maximum(a, 0, out=out)

    def relu_backward(self, g, y):
        with self._scope():
            return self.xp.where(y != 0, g, g.dtype.type(0))

    def matmul(self, a, b, out=None):
        with self._scope():
            return self.xp.matmul(a, b, out=out)

    def default_rng(self, seed):
        with self._scope():
            return self.xp.random.default_rng(seed)

    def synchronize(self):
        if self._is_cupy:
            with self._scope():
                self.xp.cuda.get_current_stream().synchronize()
        return None

    # ---- validation -------------------------------------------------------

    def _array(self, a, what, ndim=None, dtypes=None):
        """Check an input array; returns it C-contiguous (inputs may be copied)."""
        if not self.is_array(a):
            raise TypeError(f"{what}: expected a {self.name} array ({self.xp.__name__}.ndarray), "
                            f"got {type(a).__module__}.{type(a).__name__}")
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{what}: expected {ndim} dimensions, got shape {tuple(a.shape)}")
        if dtypes is None:
            if a.dtype not in _SUFFIX:
                raise TypeError(f"{what}: expected float32 or float64, got {a.dtype}")
        elif a.dtype not in dtypes:
            raise TypeError(f"{what}: expected {' or '.join(str(d) for d in dtypes)}, got {a.dtype}")
        if self._is_cupy and a.device.id != self._device_index:
            raise ValueError(f"{what}: array is on cuda:{a.device.id}, this backend is "
                             f"cuda:{self._device_index}")
        return self.xp.ascontiguousarray(a)

    @staticmethod
    def _same_dtype(a, b, an, bn):
        if a.dtype != b.dtype:
            raise TypeError(f"{an} is {a.dtype} but {bn} is {b.dtype}; they must have the same dtype")

    def _launch(self, filename, kernel, grid, block, args, shared_mem=0):
        """:func:`launch`, with the compiled function looked up once per kernel."""
        grid, block, args = _check_launch(self.xp, kernel, grid, block, args,
                                          self._device_index if self._is_cupy else None)
        self._function(filename, kernel)(grid, block, args, shared_mem=shared_mem)

    def _function(self, filename, kernel):
        fn = self._functions.get(kernel)
        if fn is None:
            fn = self._functions[kernel] = self._get_module(filename).get_function(kernel)
        return fn

    def _launch1d(self, filename, kernel, n, args):
        if n > 0:
            self._launch(filename, kernel, (_blocks(n),), (BLOCK,), args)

    # ---- convolution ------------------------------------------------------

    def _conv_geometry(self, x_shape, w_shape, stride, padding, dilation, groups):
        N, C, H, W = x_shape
        O, Cg, kH, kW = w_shape
        sh, sw = _pair(stride, "conv2d stride", 1)
        ph, pw = _pair(padding, "conv2d padding", 0)
        dh, dw = _pair(dilation, "conv2d dilation", 1)
        if isinstance(groups, bool):
            raise TypeError(f"conv2d groups: expected an int >= 1, got {groups!r}")
        groups = operator.index(groups)
        if groups < 1:
            raise ValueError(f"conv2d groups: expected an int >= 1, got {groups}")
        if C != Cg * groups:
            raise ValueError(f"conv2d: x has {C} channels but w of shape {tuple(w_shape)} with "
                             f"groups={groups} expects {Cg * groups}")
        if O % groups:
            raise ValueError(f"conv2d: {O} output channels are not divisible by groups={groups}")
        if min(kH, kW) < 1:
            raise ValueError(f"conv2d: kernel size must be positive, got w of shape {tuple(w_shape)}")
        Ho = (H + 2 * ph - dh * (kH - 1) - 1) // sh + 1
        Wo = (W + 2 * pw - dw * (kW - 1) - 1) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"conv2d: input {H}x{W} with padding {(ph, pw)} is smaller than the dilated "
                f"kernel {dh * (kH - 1) + 1}x{dw * (kW - 1) + 1} (output would be {Ho}x{Wo})")
        for v, what in ((N, "batch"), (C, "channels"), (H + 2 * ph, "padded height"),
                        (W + 2 * pw, "padded width"), (C * kH * kW, "C*kH*kW")):
            _i32(v, f"conv2d {what}")
        pointwise = (kH == 1 and kW == 1 and (sh, sw) == (1, 1) and (ph, pw) == (0, 0))
        return dict(N=N, C=C, H=H, W=W, O=O, Cg=Cg, kH=kH, kW=kW, sh=sh, sw=sw, ph=ph,
                    pw=pw, dh=dh, dw=dw, g=groups, Ho=Ho, Wo=Wo, pointwise=pointwise)

    @staticmethod
    def _chunks(geo, itemsize):
        per_image = geo["C"] * geo["kH"] * geo["kW"] * geo["Ho"] * geo["Wo"] * itemsize
        nb = max(1, min(geo["N"], _COLS_BUDGET_BYTES // max(per_image, 1)))
        return [(n0, min(nb, geo["N"] - n0)) for n0 in range(0, geo["N"], nb)]

    def _conv_scalars(self, geo, n0, nb):
        return tuple(numpy.int32(v) for v in (
            n0, nb, geo["C"], geo["H"], geo["W"], geo["kH"], geo["kW"], geo["sh"], geo["sw"],
            geo["ph"], geo["pw"], geo["dh"], geo["dw"], geo["Ho"], geo["Wo"]))

    def _cols(self, x, geo, n0, nb):
        """Columns of images [n0, n0+nb) as (groups, Cg*kH*kW, nb*Ho*Wo) (see conv2d.cu)."""
        g, L = geo["g"], geo["Ho"] * geo["Wo"]
        K = geo["C"] * geo["kH"] * geo["kW"]
        if geo["pointwise"]:      # the columns are the images themselves, channel-major
            cols = self.xp.ascontiguousarray(x[n0:n0 + nb].reshape(nb, K, L).transpose(1, 0, 2))
        else:
            cols = self.xp.empty((K, nb, L), dtype=x.dtype)
            self._launch1d("conv2d.cu", f"conv2d_im2col_{_SUFFIX[x.dtype]}", K * nb * L,
                           (x, cols) + self._conv_scalars(geo, n0, nb))
        return cols.reshape(g, K // g, nb * L)

    @staticmethod
    def _mm(a, b):
        """(g, m, k) @ (g, k, n): one 2-D product when g == 1 (cheapest to call)."""
        if a.shape[0] == 1:
            return (a[0] @ b[0])[None]
        return a @ b

    def conv2d_forward(self, x, w, b, stride, padding, dilation, groups):
        with self._scope():
            x = self._array(x, "conv2d x", 4)
            w = self._array(w, "conv2d w", 4)
            self._same_dtype(x, w, "conv2d x", "conv2d w")
            geo = self._conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
            if b is not None:
                b = self._array(b, "conv2d b", 1)
                self._same_dtype(x, b, "conv2d x", "conv2d b")
                if b.shape[0] != geo["O"]:
                    raise ValueError(f"conv2d b: expected shape ({geo['O']},), got {tuple(b.shape)}")
            N, O, g, Ho, Wo = geo["N"], geo["O"], geo["g"], geo["Ho"], geo["Wo"]
            y = self.xp.empty((N, O, Ho, Wo), dtype=x.dtype)
            if y.size == 0:
                return y
            wg = w.reshape(g, O // g, -1)
            for n0, nb in self._chunks(geo, x.dtype.itemsize):
                yc = self._mm(wg, self._cols(x, geo, n0, nb))          # (g, Og, nb*L)
                y[n0:n0 + nb] = yc.reshape(O, nb, Ho, Wo).transpose(1, 0, 2, 3)
            if b is not None:
                y += b.reshape(1, O, 1, 1)
            return y

    def conv2d_backward(self, x, w, gy, stride, padding, dilation, groups,
                        need=(True, True, True)):
        with self._scope():
            need_x, need_w, need_b = (bool(v) for v in need)
            x = self._array(x, "conv2d x", 4)
            w = self._array(w, "conv2d w", 4)
            gy = self._array(gy, "conv2d gy", 4)
            self._same_dtype(x, w, "conv2d x", "conv2d w")
            self._same_dtype(x, gy, "conv2d x", "conv2d gy")
            geo = self._conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
            N, C, H, W = x.shape
            O, g, Ho, Wo = geo["O"], geo["g"], geo["Ho"], geo["Wo"]
            if tuple(gy.shape) != (N, O, Ho, Wo):
                raise ValueError(f"conv2d gy: expected shape {(N, O, Ho, Wo)}, got {tuple(gy.shape)}")
            xp = self.xp
            L, Og = Ho * Wo, O // g
            gb = gy.sum(axis=(0, 2, 3)) if need_b else None
            gx = xp.empty(x.shape, dtype=x.dtype) if need_x else None
            Kg = w.shape[1] * w.shape[2] * w.shape[3]       # (not -1: O may be 0)
            gw = xp.zeros((g, Og, Kg), dtype=x.dtype) if need_w else None
            wg = w.reshape(g, Og, Kg)
            if need_x or need_w:
                for n0, nb in self._chunks(geo, x.dtype.itemsize):
                    # the chunk's gradient channel-major, like the columns: (g, Og, nb*L)
                    gyc = xp.ascontiguousarray(gy[n0:n0 + nb].reshape(nb, O, L).transpose(1, 0, 2))
                    gyc = gyc.reshape(g, Og, nb * L)
                    if need_w:     # the product sums over the chunk's images
                        gw += self._mm(gyc, self._cols(x, geo, n0, nb).transpose(0, 2, 1))
                    if need_x:
                        gcols = self._mm(wg.transpose(0, 2, 1), gyc)   # (g, Kg, nb*L)
                        if geo["pointwise"]:
                            gx[n0:n0 + nb] = gcols.reshape(C, nb, H, W).transpose(1, 0, 2, 3)
                        else:
                            gcols = xp.ascontiguousarray(gcols)
                            self._launch1d("conv2d.cu", f"conv2d_col2im_{_SUFFIX[x.dtype]}",
                                           nb * C * H * W,
                                           (gcols, gx) + self._conv_scalars(geo, n0, nb))
                        del gcols
            if need_w:
                gw = gw.reshape(w.shape)
            return gx, gw, gb

    # ---- pooling ----------------------------------------------------------

    @staticmethod
    def _pool_geometry(op, x_shape, kernel, stride, padding):
        N, C, H, W = x_shape
        kH, kW = _pair(kernel, f"{op} kernel", 1)
        sh, sw = _pair(stride, f"{op} stride", 1)
        ph, pw = _pair(padding, f"{op} padding", 0)
        if (H == 0 or W == 0) and N * C:
            raise ValueError(f"{op}: expected an input plane of non-zero size, got {tuple(x_shape)}")
        if ph > kH // 2 or pw > kW // 2:
            raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel "
                             f"{(kH, kW)}")
        Ho = (H + 2 * ph - kH) // sh + 1
        Wo = (W + 2 * pw - kW) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(f"{op}: input {H}x{W} with padding {(ph, pw)} is smaller than the "
                             f"kernel {kH}x{kW} (output would be {Ho}x{Wo})")
        for v, what in ((N, "batch"), (C, "channels"), (H * W, "H*W"),
                        (H + 2 * ph, "padded height"), (W + 2 * pw, "padded width")):
            _i32(v, f"{op} {what}")
        return (N, C, H, W, kH, kW, sh, sw, ph, pw, Ho, Wo)

    def _pool_backward_check(self, op, gy, x_shape, kernel, stride, padding):
        x_shape = _shape4(x_shape, f"{op} x_shape")
        geo = self._pool_geometry(op, x_shape, kernel, stride, padding)
        N, C, Ho, Wo = geo[0], geo[1], geo[10], geo[11]
        if tuple(gy.shape) != (N, C, Ho, Wo):
            raise ValueError(f"{op} gy: expected shape {(N, C, Ho, Wo)} for x_shape {x_shape}, "
                             f"got {tuple(gy.shape)}")
        return x_shape, geo

    def max_pool2d_forward(self, x, kernel, stride, padding):
        with self._scope():
            x = self._array(x, "max_pool2d x", 4)
            geo = self._pool_geometry("max_pool2d", x.shape, kernel, stride, padding)
            N, C, Ho, Wo = geo[0], geo[1], geo[10], geo[11]
            y = self.xp.empty((N, C, Ho, Wo), dtype=x.dtype)
            argmax = self.xp.empty((N, C, Ho, Wo), dtype=numpy.int32)
            self._launch1d("pool2d.cu", f"max_pool2d_forward_{_SUFFIX[x.dtype]}", y.size,
                           (x, y, argmax) + tuple(numpy.int32(v) for v in geo))
            return y, argmax

    def max_pool2d_backward(self, gy, argmax, x_shape, kernel, stride, padding):
        with self._scope():
            gy = self._array(gy, "max_pool2d gy", 4)
            argmax = self._array(argmax, "max_pool2d argmax", 4, dtypes=(numpy.dtype(numpy.int32),))
            if argmax.shape != gy.shape:
                raise ValueError(f"max_pool2d argmax: expected the shape of gy {tuple(gy.shape)}, "
                                 f"got {tuple(argmax.shape)}")
            x_shape, geo = self._pool_backward_check("max_pool2d", gy, x_shape, kernel,
                                                     stride, padding)
            gx = self.xp.empty(x_shape, dtype=gy.dtype)
            self._launch1d("pool2d.cu", f"max_pool2d_backward_{_SUFFIX[gy.dtype]}", _pool_threads(geo),
                           (gy, argmax, gx) + tuple(numpy.int32(v) for v in geo))
            return gx

    def avg_pool2d_forward(self, x, kernel, stride, padding, count_include_pad):
        with self._scope():
            x = self._array(x, "avg_pool2d x", 4)
            geo = self._pool_geometry("avg_pool2d", x.shape, kernel, stride, padding)
            N, C, Ho, Wo = geo[0], geo[1], geo[10], geo[11]
            y = self.xp.empty((N, C, Ho, Wo), dtype=x.dtype)
            self._launch1d("pool2d.cu", f"avg_pool2d_forward_{_SUFFIX[x.dtype]}", y.size,
                           (x, y) + tuple(numpy.int32(v) for v in geo)
                           + (numpy.int32(bool(count_include_pad)),))
            return y

    def avg_pool2d_backward(self, gy, x_shape, kernel, stride, padding, count_include_pad):
        with self._scope():
            gy = self._array(gy, "avg_pool2d gy", 4)
            x_shape, geo = self._pool_backward_check("avg_pool2d", gy, x_shape, kernel,
                                                     stride, padding)
            gx = self.xp.empty(x_shape, dtype=gy.dtype)
            self._launch1d("pool2d.cu", f"avg_pool2d_backward_{_SUFFIX[gy.dtype]}", _pool_threads(geo),
                           (gy, gx) + tuple(numpy.int32(v) for v in geo)
                           + (numpy.int32(bool(count_include_pad)),))
            return gx

    # ---- softmax cross-entropy ------------------------------------------

    def _xent_inputs(self, op, logits, labels, label_smoothing):
        logits = self._array(logits, f"{op} logits", 2)
        if not self.is_array(labels):
            raise TypeError(f"{op} labels: expected a {self.name} array, got "
                            f"{type(labels).__module__}.{type(labels).__name__}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{op} labels: expected an integer array, got {labels.dtype}")
        N, C = logits.shape
        if tuple(labels.shape) != (N,):
            raise ValueError(f"{op} labels: expected shape ({N},) for logits {tuple(logits.shape)}, "
                             f"got {tuple(labels.shape)}")
        labels = self._array(labels, f"{op} labels", 1, dtypes=(labels.dtype,))
        labels = self.xp.ascontiguousarray(labels, dtype=numpy.int64)
        if C < 1 and N > 0:
            raise ValueError(f"{op} logits: need at least one class, got shape {(N, C)}")
        _i32(N, f"{op} rows")
        _i32(C, f"{op} classes")
        eps = float(label_smoothing)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"{op} label_smoothing: expected a value in [0, 1], got {label_smoothing!r}")
        eps = logits.dtype.type(eps)
        return logits, labels, N, C, eps

    def softmax_cross_entropy_forward(self, logits, labels, label_smoothing):
        op = "softmax_cross_entropy_forward"
        with self._scope():
            logits, labels, N, C, eps = self._xent_inputs(op, logits, labels, label_smoothing)
            loss = self.xp.empty((N,), dtype=logits.dtype)
            lse = self.xp.empty((N,), dtype=logits.dtype)
            if N > 0:
                self._launch("softmax_xent.cu", f"{op}_{_SUFFIX[logits.dtype]}",
                             (min(N, _MAX_GRID_X),), (self._xent_threads(C),),
                             (logits, labels, loss, lse, numpy.int32(N), numpy.int32(C), eps))
            return loss, lse

    @staticmethod
    def _xent_threads(C):
        """One block per row: a multiple of 32 threads, as many as the row needs up to BLOCK."""
        return min(BLOCK, 32 * (-(-C // 32)))

    def softmax_cross_entropy_backward(self, logits, labels, lse, gloss, label_smoothing):
        op = "softmax_cross_entropy_backward"
        with self._scope():
            logits, labels, N, C, eps = self._xent_inputs(op, logits, labels, label_smoothing)
            lse = self._array(lse, f"{op} lse", 1)
            gloss = self._array(gloss, f"{op} gloss", 1)
            self._same_dtype(logits, lse, f"{op} logits", f"{op} lse")
            self._same_dtype(logits, gloss, f"{op} logits", f"{op} gloss")
            for a, what in ((lse, "lse"), (gloss, "gloss")):
                if tuple(a.shape) != (N,):
                    raise ValueError(f"{op} {what}: expected shape ({N},), got {tuple(a.shape)}")
            glogits = self.xp.empty((N, C), dtype=logits.dtype)
            if N > 0:
                self._launch("softmax_xent.cu", f"{op}_{_SUFFIX[logits.dtype]}",
                             (min(N, _MAX_GRID_X),), (self._xent_threads(C),),
                             (logits, labels, lse, gloss, glogits, numpy.int32(N), numpy.int32(C), eps))
            return glogits

    # ---- LSTM cell --------------------------------------------------------

    def _lstm_operands(self, op, first, what, k, others):
        """``first`` (N, k*H) and the (N, H) ``others``, checked; returns (first, others, N, H)."""
        first = self._array(first, f"{op} {what}", 2)
        N, G = first.shape
        if G % k:
            raise ValueError(f"{op} {what}: expected shape (N, {k} * hidden_size), got {tuple(first.shape)}")
        _i32(N, f"{op} batch")
        _i32(G, f"{op} {k} * hidden_size")
        H = G // k
        checked = []
        for name, a in others:
            a = self._array(a, f"{op} {name}", 2)
            self._same_dtype(first, a, f"{op} {what}", f"{op} {name}")
            if tuple(a.shape) != (N, H):
                raise ValueError(f"{op} {name}: expected shape {(N, H)}, got {tuple(a.shape)}")
            checked.append(a)
        return first, checked, N, H

    def _outputs(self, op, out, specs, dtype):
        """The output arrays: new ones, or ``out`` checked (never copied: results go into it)."""
        if out is None:
            return tuple(self.xp.empty(shape, dtype=dtype) for _, shape in specs)
        names = ", ".join(n for n, _ in specs)
        if not isinstance(out, (tuple, list)) or len(out) != len(specs):
            raise TypeError(f"{op} out: expected None or a tuple of {len(specs)} arrays ({names}), "
                            f"got {type(out).__name__}")
        for a, (name, shape) in zip(out, specs):
            what = f"{op} out {name}"
            if self._array(a, what, len(shape), dtypes=(dtype,)) is not a:
                raise KernelArgumentError(f"{what}: expected a C-contiguous array (the result is "
                                          f"written into it), got strides {a.strides}")
            if tuple(a.shape) != shape:
                raise ValueError(f"{what}: expected shape {shape}, got {tuple(a.shape)}")
        return tuple(out)

    def lstm_cell_forward(self, gates, c_prev, out=None):
        op = "lstm_cell_forward"
        with self._scope():
            gates, (c_prev,), N, H = self._lstm_operands(op, gates, "gates", 4, [("c_prev", c_prev)])
            h, c, saved = self._outputs(op, out, (("h", (N, H)), ("c", (N, H)), ("saved", (5, N, H))),
                                        gates.dtype)
            self._launch1d("lstm.cu", f"{op}_{_SUFFIX[gates.dtype]}", N * H,
                           (gates, c_prev, h, c, saved, numpy.int32(N), numpy.int32(H)))
            return h, c, saved

    def lstm_cell_backward(self, gh, gc, saved, c_prev, out=None):
        op = "lstm_cell_backward"
        with self._scope():
            gh, (gc, c_prev), N, H = self._lstm_operands(op, gh, "gh", 1, [("gc", gc), ("c_prev", c_prev)])
            saved = self._array(saved, f"{op} saved", 3)
            self._same_dtype(gh, saved, f"{op} gh", f"{op} saved")
            if tuple(saved.shape) != (5, N, H):
                raise ValueError(f"{op} saved: expected shape {(5, N, H)} (gate-major, as the "
                                 f"forward returns it), got {tuple(saved.shape)}")
            ggates, gc_prev = self._outputs(op, out, (("ggates", (N, 4 * H)), ("gc_prev", (N, H))),
                                            saved.dtype)
            self._launch1d("lstm.cu", f"{op}_{_SUFFIX[saved.dtype]}", N * H,
                           (gh, gc, saved, c_prev, ggates, gc_prev, numpy.int32(N), numpy.int32(H)))
            return ggates, gc_prev

    # ---- batch normalisation ------------------------------------------------

    def _bn_shape(self, op, a, what):
        if a.ndim < 2:
            raise ValueError(f"{op} {what}: expected shape (N, C, ...), got {tuple(a.shape)}")
        N, C = a.shape[:2]
        L = 1
        for d in a.shape[2:]:
            L *= d
        for v, name in ((N, "batch"), (C, "channels"), (L, "values per channel and sample"),
                        (N * L, "values per channel")):
            _i32(v, f"{op} {name}")
        return N, C, L

    def _bn_vector(self, op, what, a, C, dtype, required=False):
        """A (C,) parameter or statistic in ``dtype``, C-contiguous (a copy only when needed);
        None (an absent optional one) becomes a placeholder the kernels never read."""
        if a is None:
            if required:
                raise ValueError(f"{op} {what}: expected an array of shape ({C},), got None")
            return self._none(dtype)
        a = self._array(a, f"{op} {what}", 1)
        if tuple(a.shape) != (C,):
            raise ValueError(f"{op} {what}: expected shape ({C},), got {tuple(a.shape)}")
        return a if a.dtype == dtype else a.astype(dtype)

    def _none(self, dtype):
        """A placeholder for an absent (never read) array argument."""
        a = self._placeholders.get(dtype)
        if a is None:
            a = self._placeholders[dtype] = self.xp.zeros(1, dtype=dtype)
        return a

    def _per_channel(self, kernel, C, m):
        """One block per channel; m values each.  Few channels of many values (ResNet-20's
        16 channels of 64 * 32 * 32) leave most of the GPU idle, so those blocks get 1024
        threads, four times the loads in flight per channel, where the compiled kernel can
        run that many in a block (its registers decide: CuPy's ``max_threads_per_block``)."""
        block = BLOCK
        if m >= _BIG_BLOCK_VALUES:
            fn = self._function("batchnorm.cu", kernel)
            block = self._big_block.get(fn)
            if block is None:          # once per compiled kernel (a driver query on a GPU)
                limit = _max_threads(fn) or BLOCK
                block = self._big_block[fn] = _BIG_BLOCK if limit >= _BIG_BLOCK else BLOCK
        return (min(max(C, 1), _MAX_GRID_X),), (block,)

    def batch_norm_forward(self, x, weight, bias, running_mean, running_var, eps, momentum,
                           use_batch_stats):
        op = "batch_norm_forward"
        with self._scope():
            x = self._array(x, f"{op} x")
            N, C, L = self._bn_shape(op, x, "x")
            dt, xp, sfx = x.dtype, self.xp, _SUFFIX[x.dtype]
            w = self._bn_vector(op, "weight", weight, C, dt)
            b = self._bn_vector(op, "bias", bias, C, dt)
            running = running_mean is not None
            if running != (running_var is not None):
                raise ValueError(f"{op}: running_mean and running_var must be given together")
            if not running and not use_batch_stats:
                raise ValueError(f"{op}: without batch statistics the running statistics are needed")
            rm = self._bn_vector(op, "running_mean", running_mean, C, dt)
            rv = self._bn_vector(op, "running_var", running_var, C, dt)
            if use_batch_stats:
                if N * L < 1:
                    raise ValueError(f"{op} x: batch statistics need at least one value per channel, "
                                     f"got shape {tuple(x.shape)}")
                mean, var, invstd = (xp.empty(C, dtype=dt) for _ in range(3))
                # the kernel moves running statistics that are x's own arrays; others (another
                # dtype, a strided view) move here, in their own dtype
                in_kernel = running and rm is running_mean and rv is running_var
                grid, block = self._per_channel(f"batch_norm_stats_{sfx}", C, N * L)
                self._launch("batchnorm.cu", f"batch_norm_stats_{sfx}", grid, block,
                             (x, mean, var, invstd, rm, rv, numpy.int32(N), numpy.int32(C),
                              numpy.int32(L), dt.type(eps), dt.type(momentum), numpy.int32(in_kernel)))
                if running and not in_kernel:
                    move_running_stats(running_mean, running_var, mean, var, N * L, momentum)
            else:
                mean, invstd = rm, 1 / xp.sqrt(rv + dt.type(eps))
            y, xhat = xp.empty_like(x), xp.empty_like(x)
            self._launch1d("batchnorm.cu", f"batch_norm_apply_{sfx}", x.size,
                           (x, mean, invstd, w, b, y, xhat, numpy.int32(N), numpy.int32(C),
                            numpy.int32(L), numpy.int32(weight is not None), numpy.int32(bias is not None)))
            return y, xhat, invstd

    def batch_norm_backward(self, g, xhat, invstd, weight, use_batch_stats, need=(True, True, True)):
        op = "batch_norm_backward"
        need_x, need_w, need_b = (bool(v) for v in need)
        with self._scope():
            g = self._array(g, f"{op} g")
            xhat = self._array(xhat, f"{op} xhat")
            self._same_dtype(g, xhat, f"{op} g", f"{op} xhat")
            if xhat.shape != g.shape:
                raise ValueError(f"{op} xhat: expected the shape of g {tuple(g.shape)}, "
                                 f"got {tuple(xhat.shape)}")
            N, C, L = self._bn_shape(op, g, "g")
            dt, xp, sfx = g.dtype, self.xp, _SUFFIX[g.dtype]
            invstd = self._bn_vector(op, "invstd", invstd, C, dt, required=True)
            w = self._bn_vector(op, "weight", weight, C, dt)
            dims = (numpy.int32(N), numpy.int32(C), numpy.int32(L))
            sg = sgx = gx = None
            if need_w or need_b or (need_x and use_batch_stats):
                sg, sgx = xp.empty(C, dtype=dt), xp.empty(C, dtype=dt)
                grid, block = self._per_channel(f"batch_norm_grad_reduce_{sfx}", C, N * L)
                self._launch("batchnorm.cu", f"batch_norm_grad_reduce_{sfx}", grid, block,
                             (g, xhat, sg, sgx) + dims)
            if need_x:
                gx = xp.empty_like(g)
                stats = (sg, sgx) if sg is not None else (self._none(dt), self._none(dt))
                self._launch1d("batchnorm.cu", f"batch_norm_grad_input_{sfx}", g.size,
                               (g, xhat, invstd, w) + stats + (gx,) + dims
                               + (numpy.int32(weight is not None), numpy.int32(bool(use_batch_stats))))
            return gx, (sgx if need_w else None), (sg if need_b else None)


    # ---- optimizer updates ---------------------------------------------------

    def _state_arrays(self, op, p, named):
        """Check the in-place operands: like p (shape, dtype), this backend's arrays.

        Returns (contiguous versions, write_back pairs): an operand that is a
        strided view is updated through a contiguous copy written back after.
        """
        out, back = [], []
        for what, a in named:
            if a is None:
                out.append(None)
                continue
            c = self._array(a, f"{op} {what}")       # (a 0-d array comes back as (1,))
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"{op} {what}: expected the parameter's shape {tuple(p.shape)}, "
                                 f"got {tuple(a.shape)}")
            self._same_dtype(p, c, f"{op} p", f"{op} {what}")
            if c is not a:
                back.append((a, c))
            out.append(c)
        return out, back

    def _update(self, op, p, g, state, scalars):
        """Launch ``op`` on p, g and the state arrays; write back any strided operand."""
        with self._scope():
            g_shape = tuple(getattr(g, "shape", ()))
            g = self._array(g, f"{op} g")
            (pc, *st), back = self._state_arrays(op, p, [("p", p)] + state)
            if g_shape != tuple(p.shape):
                raise ValueError(f"{op} g: expected the parameter's shape {tuple(p.shape)}, "
                                 f"got {g_shape}")
            self._same_dtype(pc, g, f"{op} p", f"{op} g")
            none = self._none(pc.dtype)
            st = tuple(none if a is None else a for a in st)
            self._launch1d("optim.cu", f"{op}_{_SUFFIX[pc.dtype]}", pc.size,
                           (pc, g) + st + (numpy.int64(pc.size),) + scalars(pc.dtype.type))
            for given, used in back:
                given[...] = used

    def sgd_update(self, p, g, buf, lr, momentum, dampening, weight_decay, nesterov, maximize,
                   first, scratch=None):
        if momentum and buf is None:
            raise ValueError("sgd_update: momentum needs its buffer")
        self._update("sgd_update", p, g, [("buf", buf if momentum else None)],
                     lambda c: (c(lr), c(momentum), c(dampening), c(weight_decay),
                                numpy.int32(bool(nesterov)), numpy.int32(bool(maximize)),
                                numpy.int32(bool(first))))

    def adam_update(self, p, g, m, v, v_max, lr, beta1, beta2, eps, weight_decay, decoupled,
                    maximize, step, scratch=None):
        if step < 1:
            raise ValueError(f"adam_update: step counts from 1, got {step}")
        if m is None or v is None:
            raise ValueError("adam_update: needs both moment arrays m and v, got None")
        wd = 0.0 if decoupled else weight_decay
        decay = 1.0 - lr * weight_decay if decoupled else 1.0
        self._update("adam_update", p, g, [("m", m), ("v", v), ("v_max", v_max)],
                     lambda c: (c(beta1), c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(eps), c(wd),
                                c(decay), c(lr / (1 - beta1 ** step)), c(math.sqrt(1 - beta2 ** step)),
                                numpy.int32(bool(maximize)), numpy.int32(v_max is not None)))

    def rmsprop_update(self, p, g, v, a, buf, lr, alpha, eps, weight_decay, momentum, maximize,
                       scratch=None):
        if v is None:
            raise ValueError("rmsprop_update: needs its square average v, got None")
        if momentum and buf is None:
            raise ValueError(f"rmsprop_update: momentum={momentum} needs its buffer buf, got None")
        self._update("rmsprop_update", p, g,
                     [("v", v), ("a", a), ("buf", buf if momentum else None)],
                     lambda c: (c(lr), c(alpha), c(1.0 - alpha), c(eps), c(weight_decay),
                                c(momentum), numpy.int32(bool(maximize)), numpy.int32(a is not None)))


def make_backend(xp, get_module, special, name, *, device_index=None):
    """A backend namespace exposing exactly :data:`gpudl.backend.BACKEND_API`.

    ``device_index`` (CuPy only) makes every call run under
    ``cupy.cuda.Device(device_index)`` and rejects arrays of other devices.
    """
    impl = _Backend(xp, get_module, special, name, device_index)
    return types.SimpleNamespace(**{n: getattr(impl, n) for n in BACKEND_API})


def cuda_backend(index):
    """The real GPU backend for ``cuda:index`` (CuPy, NVRTC-compiled kernels)."""
    import cupy
    import cupyx.scipy.special

    from .kernels import cupy_module_loader

    index = int(index)
    with cupy.cuda.Device(index):
        pass  # raises early and clearly for a device that does not exist
    return make_backend(cupy, cupy_module_loader(index), cupyx.scipy.special, "cupy",
                        device_index=index)
