"""Shape and indexing ops: reshape, permute, expand, getitem, cat, stack, pad, where."""
from __future__ import annotations

import builtins
import math
import numbers

import numpy

from ..autograd import (Context, Function, Node, check_view_current, took_recorded_write,
                        version_snapshot)
from ..tensor import Tensor
from ._util import binary_operands, norm_axis


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


def _resolve_shape(x, shape, op):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"{op}: expected a shape of ints, got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if builtins.any(s < -1 for s in shape):
        raise ValueError(f"{op}: sizes must be >= 0 (or -1 for one inferred size), got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: only one dimension can be -1, got {shape}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0 or x.numel() % known:
            raise ValueError(f"{op}: cannot reshape a tensor of shape {x.shape} ({x.numel()} elements) into {shape}")
        shape = tuple(x.numel() // known if s == -1 else s for s in shape)
    elif known != x.numel():
        raise ValueError(f"{op}: cannot reshape a tensor of shape {x.shape} ({x.numel()} elements) into {shape}")
    return shape


def reshape(x, *shape):
    shape = _resolve_shape(x, shape, "reshape")
    return x if shape == x.shape else Reshape.apply(x, shape)


view = reshape


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, 1)
    s, e = norm_axis(start_dim, x.ndim, "flatten")[0], norm_axis(end_dim, x.ndim, "flatten")[0]
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    axes = norm_axis(dim, x.ndim, "squeeze")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def unsqueeze(x, dim):
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise ValueError(f"unsqueeze: dim {dim} is out of range for a tensor of {x.ndim} dimension(s)")
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


class Permute(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(numpy.argsort(ctx.axes)), None


def permute(x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    axes = norm_axis(dims, x.ndim, "permute")
    if len(axes) != x.ndim:
        raise ValueError(f"permute: expected {x.ndim} dims for shape {x.shape}, got {dims}")
    return Permute.apply(x, axes)


def transpose(x, dim0, dim1):
    a, b = norm_axis((dim0,), x.ndim, "transpose")[0], norm_axis((dim1,), x.ndim, "transpose")[0]
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return Permute.apply(x, tuple(axes))


class Expand(Function):
    @staticmethod
    def forward(ctx, x, shape):
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return g, None   # the engine sums over the expanded axes


def expand(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {x.shape} to fewer dimensions {shape}")
    shape = tuple(x.shape[i - lead] if (s == -1 and i >= lead) else s for i, s in enumerate(shape))
    try:
        if numpy.broadcast_shapes(x.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"expand: shape {x.shape} cannot be expanded to {shape}") from None
    return Expand.apply(x, shape)


# ---- indexing --------------------------------------------------------------------

def _convert_index(idx, x):
    """Tensors in an index become arrays of x's backend; lists become arrays.

    On the GPU backends the integer arrays the user gave (Tensors, lists) are
    bounds-checked; backend arrays passed by gpudl's own ops are trusted (no sync)."""
    xp = x.device.backend.xp
    given = []      # (position in the index, array) of user-given integer arrays

    def conv(k, i):
        if isinstance(i, Tensor):
            if i.device != x.device:
                raise ValueError(f"index: the index is on {i.device}, the tensor on {x.device}")
            if i.dtype.kind not in "iub":
                raise TypeError(f"index: expected an integer or bool index tensor, got {i.dtype}")
            given.append(k)
            return i.data
        if isinstance(i, (list, numpy.ndarray)):
            a = numpy.asarray(i)
            if a.dtype.kind not in "iub":
                raise TypeError(f"index: expected integer or bool indices, got {a.dtype}")
            given.append(k)
            return xp.asarray(a)
        if isinstance(i, (slice, type(None), type(Ellipsis), numbers.Integral)):
            return i
        if x.device.backend.is_array(i):
            return i
        raise TypeError(f"index: expected int, slice, None, Ellipsis, a bool/int Tensor or a list, got {type(i).__name__}")

    parts = tuple(conv(k, i) for k, i in enumerate(idx if isinstance(idx, tuple) else (idx,)))
    if given and x.device.type != "cpu":
        _check_array_bounds(parts, x.shape, set(given))
    return parts if isinstance(idx, tuple) else parts[0]


def _check_array_bounds(parts, shape, check):
    """Integer index arrays within their axis.  NumPy raises for an index out of
    bounds; CuPy wraps it around silently, so the GPU backends check first."""
    ndim = len(shape)
    used = builtins.sum(1 if not _is_array_index(p) or p.dtype.kind != "b" else p.ndim
                        for p in parts if p is not None and p is not Ellipsis)
    axis = 0
    for k, p in enumerate(parts):
        if p is None:
            continue
        if p is Ellipsis:
            axis += ndim - used
            continue
        if _is_array_index(p) and p.dtype.kind == "b":
            axis += p.ndim
            continue
        if k in check and _is_array_index(p) and p.dtype.kind in "iu" and p.size and axis < ndim:
            n = shape[axis]
            if bool(((p < -n) | (p >= n)).any()):
                bad = int(p[(p < -n) | (p >= n)].ravel()[0])
                raise IndexError(f"index: {bad} is out of bounds for axis {axis} of size {n} "
                                 f"(tensor of shape {tuple(shape)})")
        axis += 1


def _is_array_index(i):
    return hasattr(i, "dtype") and hasattr(i, "shape")


def _torch_order(parts, ndim):
    """PyTorch's reading of an index, as one or two NumPy indices.

    PyTorch applies integers (and 0-d integer tensors) as plain selections
    first, then the index arrays; NumPy counts an integer as one more
    advanced index, which moves the arrays' dimensions to the front when a
    slice stands between them (``x[0, :, [0, 1]]``: (2, 3) in NumPy, (3, 2)
    in PyTorch).  Returns ``[index]`` or ``[selections, arrays]``."""
    if builtins.any(isinstance(p, (bool, numpy.bool_)) or (_is_array_index(p) and p.ndim == 0
                                                          and p.dtype.kind == "b") for p in parts):
        return [parts]                         # a scalar bool: NumPy's reading is PyTorch's
    parts = tuple(int(p) if _is_array_index(p) and p.ndim == 0 and p.dtype.kind in "iu" else p
                  for p in parts)
    ints = [k for k, p in enumerate(parts) if isinstance(p, numbers.Integral) and not isinstance(p, bool)]
    arrays = [k for k, p in enumerate(parts) if _is_array_index(p)]
    if not arrays:
        if len(ints) == ndim == len(parts):
            return [parts + (Ellipsis,)]       # a 0-d view, as PyTorch's x[i, j], not a copy
        return [parts]
    if not ints:
        return [parts]
    first, second = [], []
    for k, p in enumerate(parts):
        if k in ints:
            first.append(p)
        elif _is_array_index(p):
            n = p.ndim if p.dtype.kind == "b" else 1
            first.extend([slice(None)] * n)
            second.append(p)
        elif p is Ellipsis:
            first.append(p)
            second.append(p)
        else:                                  # a slice or None: applied first, kept whole after
            first.append(p)
            second.append(slice(None))
    return [tuple(first), tuple(second)]


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, idx):
        ctx.shape, ctx.dtype, ctx.idx = x.shape, x.dtype, idx
        return x[idx]

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        gx = xp.zeros(ctx.shape, dtype=g.dtype)
        parts = ctx.idx if isinstance(ctx.idx, tuple) else (ctx.idx,)
        if builtins.any(_is_array_index(p) and p.dtype.kind in "iu" for p in parts):
            xp.add.at(gx, ctx.idx, g)        # integer arrays may repeat: scatter-add
        else:
            gx[ctx.idx] = g
        return gx, None


def getitem(x, idx):
    tensors = [i for i in (idx if isinstance(idx, tuple) else (idx,)) if isinstance(i, Tensor)]
    idx = _convert_index(idx, x)
    try:
        for part in _torch_order(idx if isinstance(idx, tuple) else (idx,), x.ndim):
            x = GetItem.apply(x, part)
    except IndexError as e:
        raise IndexError(f"index: {e} (tensor of shape {x.shape})") from None
    if tensors and x._node is not None:
        # the backward scatters through the index: it must not change before then
        x._node.versions += version_snapshot(tensors)
    return x


def _write_at(a, steps, value):
    """a[index] = value for an index in PyTorch's reading (_torch_order's steps)."""
    for part in steps[:-1]:
        a = a[part]                            # plain selections: a view
    a[steps[-1]] = value


def _read_at(a, steps):
    for part in steps:
        a = a[part]
    return a


class SetItem(Function):
    """``x[index] = value`` as autograd records it (:func:`setitem` writes): the
    gradient of x as it was is g with the written region zeroed, the value's is
    g's region (summed to the value's shape)."""

    @staticmethod
    def forward(ctx, *args):                   # pragma: no cover - the write is setitem's
        raise NotImplementedError

    @staticmethod
    def backward(ctx, g):
        need_old, need_value = ctx.needs_input_grad
        g = ctx.xp.asarray(g)                  # a 0-d gradient may come as a NumPy scalar
        g_old = g_value = None
        if need_old:
            g_old = g.copy()
            _write_at(g_old, ctx.steps, 0)
        if need_value:
            g_value = _read_at(g, ctx.steps)
            if g_value.ndim < ctx.value_ndim:  # a value with extra leading 1s: NumPy drops them
                g_value = g_value.reshape((1,) * (ctx.value_ndim - g_value.ndim) + g_value.shape)
        return g_old, g_value


def recordable_inplace(x, op):
    """Refuse an in-place write that autograd must record where it cannot: into a
    leaf that requires grad (PyTorch refuses it too), or into a view of other
    memory (PyTorch would move the base tensor's graph as well; gpudl does not
    track a view's base)."""
    if x.requires_grad and x.grad_fn is None:
        raise RuntimeError(f"{op}: a leaf tensor that requires grad cannot take an in-place operation (as "
                           f"in PyTorch); do it under gpudl.no_grad(), or on .data / .detach()")
    if getattr(x.data, "base", None) is not None:
        raise RuntimeError(f"{op}: this in-place write must be recorded by autograd, and the tensor "
                           f"views another tensor's memory, whose graph gpudl cannot move with it; "
                           f"write into the tensor that owns the memory, or into a .clone()")


def setitem(x, idx, value):
    """``x[idx] = value``, in place, with PyTorch's reading of the index.

    Where grad mode is on and x or the value requires grad, autograd records
    the write (x then carries the new node; see :class:`SetItem`), unless x is
    a leaf that requires grad or a view of another tensor's memory (refused,
    see :func:`recordable_inplace`).  An op that saved x's values for its
    backward pass refuses that backward afterwards (version counters).
    """
    record = x._inplace_needs_recording(value)
    if record:
        recordable_inplace(x, "setitem")
    tensors = [i for i in (idx if isinstance(idx, tuple) else (idx,)) if isinstance(i, Tensor)]
    idx = _convert_index(idx, x)
    source = value if isinstance(value, Tensor) else None
    if source is not None:
        if source.device != x.device:
            raise ValueError(f"setitem: value on {source.device}, tensor on {x.device}")
        if record:
            check_view_current(source, "setitem")
        value = source.data
    elif value is None:
        raise TypeError("setitem: expected a number, an array or a Tensor as the value, got None")
    try:
        steps = _torch_order(idx if isinstance(idx, tuple) else (idx,), x.ndim)
        _write_at(x.data, steps, value)
        x._bump()
    except (IndexError, ValueError) as e:
        raise type(e)(f"setitem: {e} (tensor of shape {x.shape})") from None
    if record:
        needs = (x.requires_grad, source is not None and source.requires_grad)
        ctx = Context(x.device, needs)
        ctx.steps, ctx.value_ndim = steps, source.ndim if source is not None else 0
        versions = version_snapshot(tensors)   # the backward reads them
        # the node's edge to x is x's node before this write: what was computed from x keeps it
        took_recorded_write(x, Node(SetItem, ctx, (x if needs[0] else None,
                                                            source if needs[1] else None), versions))


# ---- joining and splitting -----------------------------------------------------------

class Cat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return ctx.xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        cuts = numpy.cumsum(ctx.sizes)[:-1].tolist()
        return tuple(ctx.xp.split(g, cuts, axis=ctx.axis))


def _check_join(tensors, op):
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got {type(tensors).__name__}")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected Tensors, got {type(t).__name__}")
    floats = [t.dtype for t in tensors if t.dtype.kind == "f"]
    # float with int keeps the float's dtype, as in the binary ops (and PyTorch)
    dt = numpy.result_type(*floats) if floats else numpy.result_type(*[t.dtype for t in tensors])
    return [t if t.dtype == dt else t.astype(dt) for t in tensors]


def cat(tensors, dim=0):
    tensors = _check_join(tensors, "cat")
    ref = tensors[0]
    if ref.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated; use stack")
    ax = norm_axis(dim, ref.ndim, "cat")[0]
    for t in tensors[1:]:
        if t.ndim != ref.ndim or builtins.any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != ax):
            raise ValueError(f"cat: shapes {ref.shape} and {t.shape} differ outside dim {dim}")
    return Cat.apply(*tensors, axis=ax)


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis):
        ctx.axis, ctx.n = axis, len(arrays)
        return ctx.xp.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(ctx.xp.take(g, i, axis=ctx.axis) for i in range(ctx.n))


def stack(tensors, dim=0):
    tensors = _check_join(tensors, "stack")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: expected tensors of one shape, got {tensors[0].shape} and {t.shape}")
    ax = norm_axis(dim, tensors[0].ndim + 1, "stack")[0]
    return Stack.apply(*tensors, axis=ax)


def split(x, split_size_or_sections, dim=0):
    """Split into chunks of a size (last may be smaller) or of the given sizes."""
    ax = norm_axis(dim, x.ndim, "split")[0]
    n = x.shape[ax]
    if isinstance(split_size_or_sections, numbers.Integral):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: expected a positive size, got {step}")
        sizes = [builtins.min(step, n - s) for s in range(0, n, step)] or [0]   # empty: one empty piece
    elif isinstance(split_size_or_sections, (list, tuple)) and builtins.all(
            isinstance(s, numbers.Integral) and s >= 0 for s in split_size_or_sections):
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {dim} of shape {x.shape})")
    else:
        raise TypeError(f"split: expected a positive int or a list of non-negative ints, "
                        f"got {split_size_or_sections!r}")
    out, start = [], 0
    for s in sizes:
        idx = (slice(None),) * ax + (slice(start, start + s),)
        out.append(getitem(x, idx))
        start += s
    return tuple(out)


def chunk(x, chunks, dim=0):
    if not isinstance(chunks, numbers.Integral) or chunks < 1:
        raise ValueError(f"chunk: expected a positive number of chunks, got {chunks!r}")
    n = x.shape[norm_axis(dim, x.ndim, "chunk")[0]]
    if n == 0:                            # PyTorch: that many empty chunks
        return split(x, [0] * int(chunks), dim)
    return split(x, -(-n // int(chunks)), dim)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Pad(Function):
    @staticmethod
    def forward(ctx, x, widths, mode, value):
        ctx.widths, ctx.mode, ctx.shape = widths, mode, x.shape
        if mode == "constant":
            return ctx.xp.pad(x, widths, mode="constant", constant_values=value)
        return ctx.xp.pad(x, widths, mode=_PAD_MODES[mode])

    @staticmethod
    def backward(ctx, g):
        for axis, ((a, b), n) in enumerate(zip(ctx.widths, ctx.shape)):
            if not (a or b):
                continue
            inner = [slice(None)] * g.ndim
            inner[axis] = slice(a, a + n)
            gx = g[tuple(inner)].copy()
            if ctx.mode != "constant":
                # each padded position copies one source position: add its gradient there
                src = numpy.pad(numpy.arange(n), (a, b), mode=_PAD_MODES[ctx.mode])
                for p in list(range(a)) + list(range(a + n, a + n + b)):
                    at, frm = [slice(None)] * g.ndim, [slice(None)] * g.ndim
                    at[axis], frm[axis] = int(src[p]), p
                    gx[tuple(at)] += g[tuple(frm)]
            g = gx
        return g, None, None, None


def pad(x, pad, mode="constant", value=None):
    """Padding in PyTorch's order: (left, right) of the last dim, then the one before, ...;
    ``mode`` "constant" (with ``value``, default 0), "reflect", "replicate" or "circular"."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of widths, at most 2 * {x.ndim}, got {pad}")
    if builtins.any(p < 0 for p in pad):
        raise ValueError(f"pad: negative widths are not supported, got {pad}")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: expected mode 'constant', 'reflect', 'replicate' or 'circular', got {mode!r}")
    if mode != "constant" and value:
        raise ValueError(f"pad: a value only goes with mode='constant', got mode={mode!r}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    for (a, b), n in zip(widths, x.shape):
        if mode == "reflect" and (a or b) and builtins.max(a, b) >= n:
            raise ValueError(f"pad: reflect padding {(a, b)} must be less than the dimension ({n})")
        if mode == "circular" and builtins.max(a, b) > n:
            raise ValueError(f"pad: circular padding {(a, b)} must be at most the dimension ({n})")
    return Pad.apply(x, tuple(widths), mode, 0.0 if value is None else value)


class Where(Function):
    @staticmethod
    def forward(ctx, a, b, cond):
        ctx.save_for_backward(cond)
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        cond, = ctx.saved
        na, nb = ctx.needs_input_grad[:2]
        return (g * cond if na else None), (g * ~cond if nb else None), None


def where(condition, a, b):
    """``a`` where ``condition`` else ``b`` (gradients flow to a and b)."""
    if not isinstance(condition, Tensor) or condition.dtype.kind != "b":
        raise TypeError(f"where: expected a bool Tensor as condition, got "
                        f"{condition.dtype if isinstance(condition, Tensor) else type(condition).__name__}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        from ..creation import full
        a = full((), a, dtype=binary_operands(full((), a), b, "where")[0].dtype, device=condition.device)
    a, b = binary_operands(a, b, "where")
    if condition.device != a.device:
        raise ValueError(f"where: condition on {condition.device}, values on {a.device}")
    try:
        numpy.broadcast_shapes(condition.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: shapes {condition.shape}, {a.shape} and {b.shape} cannot be broadcast") from None
    return Where.apply(a, b, condition)        # a tensor: backward checks its version
