"""Tensor: an array on a device, with the graph node that made it.

Operators (``+``, ``@``, ``.sum()``, ...) are installed onto the class by
:mod:`gpudl.ops` when it is imported, so this floor never imports the ops.
"""
from __future__ import annotations

import numpy

from . import autograd
from .backend import resolve, cpu

float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
float16 = numpy.dtype("float16")
int32 = numpy.dtype("int32")
int64 = numpy.dtype("int64")
uint8 = numpy.dtype("uint8")
bool_ = numpy.dtype("bool")

_DTYPE_NAMES = {
    "float32": float32, "float": float32, "float64": float64, "double": float64,
    "float16": float16, "half": float16, "int32": int32, "int": int32,
    "int64": int64, "long": int64, "uint8": uint8, "bool": bool_,
}


def as_dtype(dtype):
    """A numpy dtype from a numpy dtype, a type, or a name like 'float32'."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    try:
        return numpy.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected a dtype such as gpudl.float32 or 'int64', got {dtype!r}") from None


class Tensor:
    """An n-dimensional array on a device that can record its gradient.

    ``data`` is the backend array (NumPy on the CPU, CuPy on a GPU);
    ``grad`` is a Tensor or None; ``requires_grad`` marks leaves to train.
    """

    __slots__ = ("data", "device", "_requires_grad", "_grad", "_node", "_ver", "_view", "__weakref__")
    __array_priority__ = 1000  # numpy scalars defer to our operators

    def __init__(self, data, device=None, requires_grad=False, dtype=None):
        t = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self.data, self.device = t.data, t.device
        self._requires_grad, self._grad, self._node, self._view = t.requires_grad, None, None, None
        self._ver = [0, 0]

    @classmethod
    def _make(cls, array, device, requires_grad=False):
        t = object.__new__(cls)
        if not device.backend.is_array(array):
            array = device.backend.xp.asarray(array)
        t.data = array
        t.device = device
        t._requires_grad = requires_grad
        t._grad = None
        t._node = None
        t._ver = [0, 0]
        t._view = None
        return t

    # _ver, set wherever a tensor is made: the version counter this tensor shares
    # with the tensors that view its memory, ``[version, recorded writes]``.
    # Every in-place write moves the version, and a backward pass that needs a
    # value saved before a write refuses (as PyTorch).  In-place writes that
    # autograd records also move the second count: a view taken before one
    # (``_view`` holds the count it was taken at) no longer matches its graph and
    # may not enter another.

    def _bump(self):
        self._ver[0] += 1

    @property
    def requires_grad(self):
        """Whether ops on this tensor are recorded for backward."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        self.requires_grad_(value)

    @property
    def grad(self):
        """The accumulated gradient (a Tensor like this one) or None."""
        return self._grad

    @grad.setter
    def grad(self, value):
        # as PyTorch: an assigned gradient matches the tensor in kind, place and shape
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"grad: expected a Tensor or None, got {type(value).__name__}")
            if value.device != self.device:
                raise ValueError(f"grad: expected a gradient on {self.device}, got one on {value.device}")
            if value.dtype != self.dtype:
                raise TypeError(f"grad: expected a gradient of dtype {self.dtype}, got {value.dtype}")
            if value.shape != self.shape:
                raise ValueError(f"grad: expected a gradient of shape {self.shape}, got {value.shape}")
        self._grad = value

    # ---- properties --------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def ndim(self):
        return self.data.ndim

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def is_leaf(self):
        return self._node is None

    @property
    def grad_fn(self):
        return self._node

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    # ---- conversion ----------------------------------------------------
    def numpy(self):
        """The data as a numpy.ndarray (no copy on the CPU)."""
        return self.device.backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: expected a tensor of one element, got shape {self.shape}")
        return self.device.backend.to_numpy(self.data).reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device=None, dtype=None):
        """A tensor on ``device`` and/or of ``dtype`` (self when nothing changes).

        Moving between devices is differentiable: the gradient moves back.
        """
        if isinstance(device, (numpy.dtype, type)) or (isinstance(device, str) and device in _DTYPE_NAMES):
            device, dtype = None, device
        out = self
        if dtype is not None and as_dtype(dtype) != self.dtype:
            out = out.astype(dtype)
        if device is not None:
            dev = resolve(device)
            if dev != out.device:
                out = _ToDevice.apply(out, dev)
        return out

    def cpu(self):
        return self.to(cpu())

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def detach(self):
        """The same data, cut from the graph (shares memory and the version counter)."""
        t = Tensor._make(self.data, self.device)
        t._ver = self._ver
        return t

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place (floating tensors only; on a leaf, as PyTorch)."""
        requires_grad = bool(requires_grad)
        if requires_grad and self.dtype.kind not in "fc":
            raise TypeError(f"requires_grad: only floating tensors can require grad, got {self.dtype}")
        if self._node is not None and not requires_grad:
            raise RuntimeError("requires_grad: only a leaf's flag can be changed; use .detach() for a "
                               "tensor cut from the graph")
        self._requires_grad = requires_grad
        return self

    def backward(self, gradient=None, retain_graph=False):
        autograd.backward(self, gradient, retain_graph)

    def _inplace_needs_recording(self, other=None):
        """Whether an in-place write of ``other`` into this tensor would have to
        be recorded: grad mode on and this tensor, or what is written, requires grad."""
        return autograd.is_grad_enabled() and (
            self.requires_grad or (isinstance(other, Tensor) and other.requires_grad))

    def zero_(self):
        """Every element set to 0; recorded by autograd as ``self[...] = 0`` where needed."""
        if self._inplace_needs_recording():
            self[...] = 0
            return self
        self.data[...] = 0
        self._bump()
        return self

    def copy_(self, other):
        """Write ``other``'s values into this tensor (broadcast); recorded by autograd as
        ``self[...] = other`` where grad mode needs it."""
        if self._inplace_needs_recording(other):
            self[...] = other
            return self
        src = other.data if isinstance(other, Tensor) else self.device.backend.asarray(other)
        if isinstance(other, Tensor) and other.device != self.device:
            raise ValueError(f"copy_: source on {other.device}, destination on {self.device}")
        self.data[...] = src
        self._bump()
        return self

    # ---- copying and pickling ------------------------------------------------
    def __deepcopy__(self, memo):
        if self._node is not None:
            raise RuntimeError("deepcopy: only tensors created by the user (graph leaves) can be "
                               "deep-copied, as in PyTorch; deep-copy t.detach() instead")
        new = type(self)._make(self.data.copy(), self.device, self.requires_grad)   # a Parameter stays one
        memo[id(self)] = new
        if self._grad is not None:
            new._grad = Tensor._make(self._grad.data.copy(), self.device)
        return new

    def __reduce__(self):
        # the values (on the host), dtype, device and requires_grad: never the graph
        return (_unpickle, (self.device.backend.to_numpy(self.data).copy(), str(self.device), self.requires_grad,
                            type(self)))

    # ---- dlpack --------------------------------------------------------
    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        if self.device.type != "cpu":       # the emulated GPU refuses too, so CI sees what a GPU would
            raise TypeError(f"can't convert a tensor on {self.device} to numpy implicitly; use .cpu().numpy()")
        a = self.data
        if dtype is not None and numpy.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a      # np.array(t) copies, np.asarray(t) shares, as numpy

    # ---- printing -------------------------------------------------------
    def __repr__(self):
        body = numpy.array2string(self.device.backend.to_numpy(self.data), separator=", ",
                                  prefix="tensor(", threshold=200)
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype != float32 and self.dtype != int64 and self.dtype != bool_:
            extras.append(f"dtype={self.dtype}")
        if self._node is not None:
            extras.append(f"grad_fn={self._node!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __hash__(self):
        return id(self)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.shape[0]):
            yield self[i]

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError(f"only integer tensors of one element can be used as an index, got {self.dtype} {self.shape}")
        return int(self.item())


class _ToDevice(autograd.Function):
    """A copy to another device; the gradient is copied back.

    ``apply`` is written out because the output lives on the target device,
    not on the input's (which ``Function.apply`` assumes)."""

    @staticmethod
    def backward(ctx, g):
        return as_device_array(g, ctx.src, "to"), None

    @classmethod
    def apply(cls, x, dev):
        # the output lives on `dev`: build the node by hand
        ctx = autograd.Context(dev, (x.requires_grad, False))
        ctx.src = x.device
        out_arr = as_device_array(x, dev, "to")
        if out_arr is x.data:               # both NumPy (the emulated device): still a copy
            out_arr = out_arr.copy()
        if x._view is not None:
            autograd.check_view_current(x, "to")
        record = autograd.is_grad_enabled() and x.requires_grad
        out = Tensor._make(out_arr, dev, requires_grad=record)
        if record:
            out._node = autograd.Node(cls, ctx, (x, None))
        return out


def _unpickle(host, device, requires_grad, cls=None):
    """A pickled tensor back (``cls``: Tensor or a subclass such as Parameter; older pickles lack it)."""
    cls = cls if isinstance(cls, type) and issubclass(cls, Tensor) else Tensor
    return cls._make(resolve(device).backend.asarray(host), resolve(device), bool(requires_grad))


def to_host(a):
    """A NumPy array of a Tensor (any device), a CuPy array, or anything NumPy reads."""
    if isinstance(a, Tensor):
        return a.device.backend.to_numpy(a.data)
    if hasattr(a, "get") and not isinstance(a, numpy.ndarray):  # a CuPy array
        return a.get()
    return numpy.asarray(a)


def as_device_array(value, device, what):
    """``value`` -- a Tensor on any device, an array of any backend, or host data
    (lists, NumPy arrays) -- as an array on ``device``; no copy when it is one already."""
    if isinstance(value, Tensor):
        if value.device == device:
            return value.data
        return device.backend.asarray(value.device.backend.to_numpy(value.data))
    if device.backend.is_array(value):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        value = to_host(value)              # a GPU array, for the CPU
    try:
        host = numpy.asarray(value)
    except Exception:
        host = None
    if host is None or host.dtype == object:
        raise TypeError(f"{what}: expected a Tensor or an array, got {type(value).__name__}")
    return device.backend.asarray(host)


def _short(data, limit=80):
    text = repr(data)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default_device(device):
    return cpu() if device is None else resolve(device)


def _infer_dtype(data):
    """gpudl's default dtypes: Python floats -> float32, ints -> int64, bools ->
    bool; NumPy arrays and scalars (and lists of them) keep theirs, as in PyTorch."""
    try:
        a = numpy.asarray(data)
    except ValueError:   # ragged nesting
        raise ValueError(f"tensor: expected a rectangular nesting of numbers (every row the same "
                         f"length), got {_short(data)}") from None
    typed = isinstance(data, (numpy.ndarray, numpy.generic)) or (
        isinstance(data, (list, tuple)) and len(data) > 0
        and all(isinstance(v, (numpy.ndarray, numpy.generic, Tensor)) for v in data))
    if a.dtype.kind == "f":
        return a.dtype if typed else float32
    if a.dtype.kind in "iu":
        return a.dtype if typed else int64
    if a.dtype.kind == "b":
        return bool_
    raise TypeError(f"tensor: expected numbers, bools or an array of them, got {a.dtype}")


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of ``data`` (a list, scalar, array or Tensor).

    Python floats become float32 and ints int64; NumPy arrays keep their dtype.
    """
    dtype = as_dtype(dtype)
    if isinstance(data, Tensor):
        dev = data.device if device is None else resolve(device)
        arr = data.detach().to(dev).data
        arr = arr.astype(dtype or arr.dtype, copy=True)
        return Tensor._make(arr, dev).requires_grad_(requires_grad)
    dev = _default_device(device)
    if dev.backend.is_array(data) or hasattr(data, "__cuda_array_interface__"):
        arr = dev.backend.asarray(data)
        if arr.dtype.kind not in "biuf" and dtype is None:
            raise TypeError(f"tensor: expected an array of numbers or bools, got dtype {arr.dtype}")
        arr = arr.astype(dtype or arr.dtype, copy=True)
    else:
        host = numpy.array(data, dtype=dtype or _infer_dtype(data))
        arr = dev.backend.asarray(host)
    t = Tensor._make(arr, dev)
    if requires_grad:
        t.requires_grad_(True)
    return t


autograd.Tensor = Tensor  # autograd builds results without importing this module at call time
