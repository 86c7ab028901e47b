"""Devices and backends: the only package that knows NumPy from CuPy.

A *backend* is an object (a module for the CPU, a built namespace for CUDA)
exposing exactly the names in :data:`BACKEND_API`.  Everything above this
floor does ordinary array work through ``backend.xp`` and calls the
kernel-level functions below for the rest.

Kernel-level functions (identical signatures on every backend)::

    conv2d_forward(x, w, b, stride, padding, dilation, groups) -> y
        x (N, C, H, W), w (O, C // groups, kH, kW), b (O,) or None;
        stride / padding / dilation are (int, int) pairs.
    conv2d_backward(x, w, gy, stride, padding, dilation, groups,
                    need=(True, True, True)) -> (gx, gw, gb)
        entries are None where ``need`` is False.
    max_pool2d_forward(x, kernel, stride, padding) -> (y, argmax)
        argmax: int32, shape of y, flat index h * W + w into the
        (unpadded) input plane of the first maximum in row-major order
        (a NaN is the maximum; of several, the last, as in PyTorch).
    max_pool2d_backward(gy, argmax, x_shape, kernel, stride, padding) -> gx
    avg_pool2d_forward(x, kernel, stride, padding, count_include_pad) -> y
    avg_pool2d_backward(gy, x_shape, kernel, stride, padding,
                        count_include_pad) -> gx
    softmax_cross_entropy_forward(logits, labels, label_smoothing)
        -> (loss, lse)   logits (N, C); labels (N,) integer; loss, lse (N,)
    softmax_cross_entropy_backward(logits, labels, lse, gloss,
                                   label_smoothing) -> glogits (N, C)
        gloss (N,): upstream gradient of each row's loss.
    lstm_cell_forward(gates, c_prev, out=None) -> (h, c, saved)
        The LSTM cell's element-wise part, fused.  gates (N, 4H): one time
        step's pre-activations in PyTorch's order [i | f | g | o];
        c_prev (N, H): the previous cell state; both of one float dtype.
        i, f, o = sigmoid(.), g = tanh(.); c = f * c_prev + i * g;
        h = o * tanh(c).  h, c (N, H); saved (5, N, H) = i, f, g, o, tanh(c)
        (gate-major) is what the backward pass reads.
    lstm_cell_backward(gh, gc, saved, c_prev, out=None) -> (ggates, gc_prev)
        gh, gc (N, H): upstream gradients of h and of c (the part of dL/dc
        that does not pass through h; zeros when c is not used); saved and
        c_prev as given to / returned by the forward.  ggates (N, 4H): the
        gradient of the pre-activations; gc_prev (N, H): of c_prev.
    For both, ``out`` is None (new output arrays) or a tuple of C-contiguous
    arrays of the outputs' shapes and dtype to write into (they must not
    overlap the inputs); the same arrays are returned.
    batch_norm_forward(x, weight, bias, running_mean, running_var, eps,
                       momentum, use_batch_stats) -> (y, xhat, invstd)
        x (N, C, ...) float; weight, bias, running_mean, running_var (C,)
        or None.  With use_batch_stats the batch's mean and (biased)
        variance over every axis but 1 normalise, and the running
        statistics, when given, move by momentum in place (the variance
        unbiased); otherwise the running statistics normalise.
        xhat = (x - mean) * invstd, y = xhat * weight + bias (each optional);
        invstd (C,) = 1 / sqrt(var + eps).  y, xhat, invstd in x's dtype.
    batch_norm_backward(g, xhat, invstd, weight, use_batch_stats,
                        need=(True, True, True)) -> (gx, gweight, gbias)
        g like xhat; entries are None where ``need`` is False.
    sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov,
               maximize, first, scratch=None) -> None
        One SGD step in place on p and (when momentum != 0) buf; ``first``:
        buf holds nothing yet and takes the first direction.
    adam_update(p, g, m, v, v_max, lr, beta1, beta2, eps, weight_decay,
                decoupled, maximize, step, scratch=None) -> None
        One Adam (AdamW with ``decoupled``) step in place on p, m, v and
        v_max (None unless amsgrad); ``step`` counts from 1.
    rmsprop_update(p, g, v, a, buf, lr, alpha, eps, weight_decay, momentum,
                   maximize, scratch=None) -> None
        One RMSprop step in place on p, v (the square average), a (the
        gradient average: None unless centered) and buf (None unless
        momentum != 0).
    For all three, p, g and the state arrays have one shape and float dtype;
    ``scratch`` is None or two arrays like p for temporaries (the CPU
    backend's; kernels need none).  The formulas are in kernels/optim.cu.

Array plumbing::

    name            "numpy" | "cupy" | "emulated"
    xp              the array module (numpy or cupy)
    asarray(a, dtype=None)   host data (or same-backend array) -> backend array
    to_numpy(a)     backend array -> numpy.ndarray (a copy only when needed)
    is_array(a)     True for this backend's array type
    from_dlpack(obj)
    erf(a)          the error function, elementwise
    relu(a, out=None)        max(a, 0), elementwise (NaN stays NaN)
    relu_backward(g, y)      g where the ReLU's output y is not 0 (positive or
                    NaN), else 0 (even where g is NaN: PyTorch's threshold_backward)
    matmul(a, b, out=None)   ``xp.matmul``; the CPU backend keeps BLAS's own
                    threads at one and spreads big products over its pool
    default_rng(seed)        a Generator with ``random`` / ``standard_normal``
    synchronize()   wait for queued work (no-op on the CPU)
"""
from __future__ import annotations

import os
import sys

BACKEND_API = (
    "name", "xp", "asarray", "to_numpy", "is_array", "from_dlpack", "erf",
    "relu", "relu_backward", "matmul", "default_rng", "synchronize",
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "lstm_cell_forward", "lstm_cell_backward",
    "batch_norm_forward", "batch_norm_backward",
    "sgd_update", "adam_update", "rmsprop_update",
)


class DeviceError(RuntimeError):
    """A device was asked for that cannot be had; the message says why."""


class Device:
    """A place where arrays live: ``cpu``, ``cuda:N`` or an emulated GPU.

    ``type`` is "cpu", "cuda" or "emulated"; ``backend`` is the object that
    holds ``xp`` and the kernel-level functions for it.
    """

    __slots__ = ("type", "index", "backend")

    def __init__(self, type, index=None, backend=None):
        self.type = type
        self.index = index
        self.backend = backend

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device('{self}')"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = resolve(other)
            except (DeviceError, ValueError):
                return False
        return (isinstance(other, Device) and self.type == other.type
                and self.index == other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    @property
    def xp(self):
        return self.backend.xp

    # a Device is a handle on a process-wide backend: copies are the same object,
    # pickles are the device's name
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        if self.type not in ("cpu", "cuda"):
            raise TypeError(f"a tensor on the {self} device cannot be pickled; move it to 'cpu' first")
        return (resolve, (str(self),))


_cpu_device = None
_cuda_devices = {}
_probe_result = None  # (ok: bool, reason: str, count: int)
_auto_reason_said = False


def cpu():
    global _cpu_device
    if _cpu_device is None:
        from . import numpy_backend
        _cpu_device = Device("cpu", None, numpy_backend)
    return _cpu_device


def _probe_cuda():
    """(ok, reason, device_count); never raises, cached."""
    global _probe_result
    if _probe_result is not None:
        return _probe_result
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken install
        _probe_result = (False, f"CuPy is not installed ({type(e).__name__}: {e})", 0)
        return _probe_result
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # cudaErrorInsufficientDriver, no driver, ...
        msg = str(e) or type(e).__name__
        if "InsufficientDriver" in msg or "driver" in msg.lower():
            why = f"CuPy {cupy.__version__} found no usable CUDA driver ({msg})"
        else:
            why = f"CuPy {cupy.__version__} could not reach a GPU ({msg})"
        _probe_result = (False, why, 0)
        return _probe_result
    if count < 1:
        _probe_result = (False, f"CuPy {cupy.__version__} sees no CUDA device", 0)
    else:
        _probe_result = (True, f"CuPy {cupy.__version__} sees {count} CUDA device(s)", count)
    return _probe_result


def cuda_available():
    """True when CuPy imports and at least one GPU answers."""
    return _probe_cuda()[0]


def cuda_unavailable_reason():
    """Why CUDA cannot be used, or '' when it can."""
    ok, reason, _ = _probe_cuda()
    return "" if ok else reason


def _cuda(index):
    ok, reason, count = _probe_cuda()
    if not ok:
        raise DeviceError(f"device 'cuda:{index}' was asked for but CUDA is not usable: {reason}")
    if not 0 <= index < count:
        raise DeviceError(f"device 'cuda:{index}' was asked for but only {count} CUDA device(s) exist")
    dev = _cuda_devices.get(index)
    if dev is None:
        from . import cupy_backend
        dev = Device("cuda", index, cupy_backend.cuda_backend(index))
        _cuda_devices[index] = dev
    return dev


def resolve(spec="auto"):
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` or a Device into a Device."""
    global _auto_reason_said
    if isinstance(spec, Device):
        return spec
    if spec is None:
        spec = "auto"
    if not isinstance(spec, str):
        raise TypeError(f"device: expected a str like 'cpu' or 'cuda:0' or a Device, got {type(spec).__name__}")
    s = spec.strip().lower()
    if s == "auto":
        env = os.environ.get("GPUDL_DEVICE", "").strip()
        if env and env.lower() != "auto":
            return resolve(env)
        ok, reason, _ = _probe_cuda()
        if ok:
            return _cuda(0)
        if not _auto_reason_said:
            _auto_reason_said = True
            print(f"gpudl: using the CPU: {reason}", file=sys.stderr)
        return cpu()
    if s == "cpu":
        return cpu()
    if s == "cuda":
        return _cuda(0)
    if s.startswith("cuda:"):
        try:
            idx = int(s[5:])
        except ValueError:
            raise ValueError(f"device: expected 'cuda:N' with an integer N, got {spec!r}") from None
        return _cuda(idx)
    if s in ("emulated", "cuda-emulated"):
        raise DeviceError("the emulated GPU is made by gpudl.testing.emulated_device()")
    raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
