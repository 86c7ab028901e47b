"""The autograd core: Function, the graph node, backward, no_grad.

A differentiable op is a :class:`Function` subclass whose ``forward(ctx,
*args)`` computes on raw arrays (NumPy or CuPy, whichever the tensors' device
uses) and whose ``backward(ctx, grad)`` returns one gradient per positional
argument (None for non-tensors or where no gradient is needed).  Users call
the lowercase function beside it, which calls ``Fn.apply``.

The engine reduces each returned gradient to its input's shape (summing over
broadcast axes) and dtype, so element-wise backward passes may return
gradients of the broadcast shape.
"""
from __future__ import annotations

import functools
import threading

from ._errstate import quiet_begin, quiet_end   # ops and backward passes: NumPy's errors ignored

Tensor = None  # gpudl.tensor.Tensor, set by that module (it imports this one)


class _State(threading.local):
    enabled = True          # every thread starts in grad mode; a plain attribute read, no getattr default


_state = _State()


def is_grad_enabled():
    return _state.enabled


class _GradMode:
    _mode = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _state.enabled = self._mode
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def _fresh(self):
        """A new context with this one's mode (each call of a decorated function gets one)."""
        return type(self)()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            with self._fresh():
                return fn(*a, **k)
        return wrapper


class set_grad_enabled(_GradMode):
    """Turn recording on or off: at once when called, and back when used as ``with``;
    as a decorator, only inside the decorated function."""

    def __init__(self, mode):
        self._prev = is_grad_enabled()
        self._mode = bool(mode)
        _state.enabled = self._mode

    def __enter__(self):      # the mode is already set (by __init__)
        return self

    def _fresh(self):
        return set_grad_enabled(self._mode)

    def __call__(self, fn):
        _state.enabled = self._prev          # decorating does not change the mode from now on
        return super().__call__(fn)


class no_grad(_GradMode):
    """Context manager (and decorator) in which ops record no graph."""
    _mode = False


class enable_grad(_GradMode):
    """Context manager (and decorator) that turns recording back on."""
    _mode = True


class Context:
    """What a Function's forward leaves for its backward."""

    def __init__(self, device, needs_input_grad):
        self.device = device
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    @property
    def xp(self):
        return self.device.backend.xp

    @property
    def backend(self):
        return self.device.backend

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """One recorded application of a Function: its ctx and input tensors."""

    __slots__ = ("fn", "ctx", "inputs", "edges", "freed", "versions")

    def __init__(self, fn, ctx, inputs, versions=()):
        self.fn = fn
        self.ctx = ctx
        self.inputs = inputs   # one entry per positional arg: Tensor or None
        # each input's node as it is now (None: a leaf): an in-place op recorded later
        # gives the tensor a new node, and what was computed before must not follow it
        self.edges = tuple([None if t is None else t._node for t in inputs])
        self.freed = False
        self.versions = versions   # (counter, value) of each tensor whose data ctx saved

    def __repr__(self):
        return f"<{self.fn.__name__}Backward>"


def _check_devices(op, tensors):
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device != dev:
            raise ValueError(
                f"{op}: expected all tensors on one device, got {dev} and {t.device} "
                f"(gpudl never copies silently; move one with .to(device))")
    return dev


class Function:
    """Base of every differentiable op; see the module docstring."""

    # For each array ctx.save_for_backward keeps, the input whose gradient reads it
    # (None: any).  A saved array whose reader needs no gradient is not version-checked,
    # so changing it in place before backward is fine, as in PyTorch.
    saved_for = None

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors:
            raise TypeError(f"{cls.__name__}: expected at least one Tensor argument")
        device = _check_devices(cls.__name__.lower(), tensors) if len(tensors) > 1 else tensors[0].device
        grad_mode = is_grad_enabled()
        record = grad_mode and any(t.requires_grad for t in tensors)
        if grad_mode:
            for t in tensors:
                if t._view is not None and t._view != t._ver[1]:
                    check_view_current(t, cls.__name__)
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context(device, needs)
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        if device.type == "cuda":          # CuPy does not warn: no error state to set
            out = cls.forward(ctx, *arrays, **kwargs)
        else:
            token = quiet_begin()
            try:
                out = cls.forward(ctx, *arrays, **kwargs)
            finally:
                quiet_end(token)
        result = Tensor._make(out, device, requires_grad=record)
        _share_counter(result, tensors)
        if record:
            # the versions of the tensors whose very arrays ctx saved (inputs or the output):
            # an in-place write to one of them before backward makes backward refuse
            watched = []
            readers = cls.saved_for
            for k, a in enumerate(ctx.saved):
                if readers is not None and not needs[readers[k]]:
                    continue
                for t in (result, *tensors):
                    if t.data is a:
                        watched.append(t)
                        break
            result._node = Node(cls, ctx, tuple(
                a if isinstance(a, Tensor) and a.requires_grad else None for a in args),
                version_snapshot(watched))
        return result


def version_snapshot(tensors):
    """(counter, version) of each tensor, for a node's ``versions``: its backward
    refuses when one of them has moved (an in-place write since)."""
    return tuple((t._ver, t._ver[0]) for t in tensors)


def took_recorded_write(x, node):
    """x was written in place by a write autograd records as ``node`` (its version
    already moved): x takes the node, and views of x taken before the write no
    longer match their graph."""
    x._node, x._requires_grad = node, True
    x._ver[1] += 1


def _share_counter(result, tensors):
    """A result viewing an input's memory shares that input's version counter
    (a view's ``base`` is the input's array or that array's own base), and
    remembers how many recorded in-place writes that memory had taken."""
    base = getattr(result.data, "base", None)
    if base is None:                      # a fresh array: its own counter
        return
    for t in tensors:
        if t.data is base or getattr(t.data, "base", None) is base:
            result._ver = c = t._ver
            result._view = c[1]
            return


def check_view_current(t, op):
    """Refuse (in grad mode) a view taken before an in-place write that autograd
    recorded into its memory: its values are the new ones, its graph the old --
    or none, where the memory needed no gradient when the view was taken
    (PyTorch would rebuild its graph; gpudl asks for the view to be taken again)."""
    v = t._view
    if v is not None and v != t._ver[1] and is_grad_enabled():
        raise RuntimeError(
            f"{op}: this tensor is a view taken before an in-place operation that autograd recorded "
            f"changed the memory it views; its gradient would follow the old values. Take the view "
            f"again after the in-place operation (or .clone() it before)")


def _reduce_to(g, shape, dtype):
    """Sum ``g`` over the axes that broadcasting added or stretched."""
    if g.shape != shape:
        extra = g.ndim - len(shape)
        if extra > 0:
            g = g.sum(axis=tuple(range(extra)))
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        if g.shape != shape:
            raise RuntimeError(f"internal: gradient of shape {g.shape} for an input of shape {shape}")
    if g.dtype != dtype:
        g = g.astype(dtype)
    return g


def _topological_order(root_node):
    """Nodes reachable from root, each after every node that consumes it."""
    order, visited = [], set()
    stack = [(root_node, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for e in node.edges:
            if e is not None and id(e) not in visited:
                stack.append((e, False))
    order.reverse()
    return order


def backward(tensor, gradient=None, retain_graph=False):
    """Accumulate d(tensor)/d(leaf) into every leaf's ``.grad``."""
    xp = tensor.device.backend.xp
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward: grad can be implicitly created only for a tensor of one element, "
                f"got shape {tuple(tensor.shape)}; pass gradient=")
        g0 = xp.ones(tensor.data.shape, dtype=tensor.data.dtype)
    else:
        if isinstance(gradient, Tensor):
            if gradient.device != tensor.device:
                raise ValueError(f"backward: gradient is on {gradient.device}, tensor on {tensor.device}")
            g0 = gradient.data
        else:
            g0 = tensor.device.backend.asarray(gradient, dtype=tensor.data.dtype)
        if tuple(g0.shape) != tuple(tensor.data.shape):
            raise ValueError(f"backward: expected gradient of shape {tuple(tensor.data.shape)}, "
                             f"got {tuple(g0.shape)}")
    if not tensor.requires_grad:
        raise RuntimeError("backward: the tensor does not require grad and has no graph")
    check_view_current(tensor, "backward")
    if tensor._node is None:  # a leaf
        _accumulate_leaf(tensor, g0)
        return

    token = quiet_begin()
    try:
        _run_backward(tensor, g0, retain_graph)
    finally:
        quiet_end(token)


def _run_backward(tensor, g0, retain_graph):
    grads = {id(tensor._node): g0}
    owned = set()
    for node in _topological_order(tensor._node):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if node.freed:
            raise RuntimeError(
                "backward: trying to backward through the graph a second time; "
                "its buffers were freed. Pass retain_graph=True the first time.")
        for counter, version in node.versions:
            if counter[0] != version:
                raise RuntimeError(
                    f"backward: a tensor that {node.fn.__name__} saved for its gradient was changed "
                    f"in place afterwards (version {counter[0]}, saved at {version}); write out of "
                    f"place (x = x + ...) or clone it first")
        in_grads = node.fn.backward(node.ctx, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if not retain_graph:
            node.ctx.__dict__.clear()
            node.ctx.saved = ()
            node.freed = True
        for inp, edge, gi in zip(node.inputs, node.edges, in_grads):
            if inp is None or gi is None:
                continue
            gi = _reduce_to(gi, inp.data.shape, inp.data.dtype)
            if edge is None:
                _accumulate_leaf(inp, gi)
                continue
            key = id(edge)
            prev = grads.get(key)
            if prev is None:
                grads[key] = gi
            elif key in owned:
                prev += gi          # in place for arrays; rebinds a 0-d scalar
                grads[key] = prev
            else:
                grads[key] = prev + gi
                owned.add(key)


def writeable(a):
    """Whether ``a`` may be written in place (CuPy arrays always may; they have no such flag)."""
    return getattr(a.flags, "writeable", True)


def _accumulate_leaf(t, g):
    if g.shape != t.data.shape or g.dtype != t.data.dtype:
        g = _reduce_to(g, t.data.shape, t.data.dtype)
    if t._grad is None:
        # own the storage: g may be a broadcast view, the caller's gradient, or shared
        # with another leaf (a + b hands both the same array)
        t._grad = Tensor._make(g.copy(), t.device)
    elif writeable(t._grad.data):
        t._grad.data += g           # .grad owns its storage (above), as in PyTorch
        t._grad._bump()
    else:                           # a read-only array a user assigned
        t._grad = Tensor._make(t._grad.data + g, t.device)
