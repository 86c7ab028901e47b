"""The optimizer base class: parameter groups, state, zero_grad, step, state_dict.

Shaped like tinygrad's ``nn/optim.py`` (a base class and one update per
optimizer) with PyTorch's surface and semantics.  A subclass gives its
defaults, checks a group's hyper-parameters in ``_check_group`` and updates
one parameter in ``_update(p, g, state, group)``, where ``g`` is the
gradient array.

Updates run outside the graph, in place on ``p.data`` and on the state
arrays, with the parameter's own array module (NumPy or CuPy).  Nothing on
the hot path turns an array into a Python number, so a step queues work on
the GPU and never waits for it; step counts are Python ints.  Temporaries go
to a scratch buffer kept per (device, dtype), sized for the largest
parameter, so a step allocates nothing once the first one has run.
"""
from __future__ import annotations

import math
import numbers


from ..autograd import enable_grad
from ..tensor import Tensor, as_device_array


class _Required:
    """Marks a hyper-parameter with no default (PyTorch's ``required``)."""

    def __repr__(self):
        return "<required parameter>"


required = _Required()


def check_number(name, value, low=0.0, high=math.inf, high_open=False):
    """Raise ValueError unless ``value`` is a real number in [low, high] (or [low, high))."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: expected a Python number, got {type(value).__name__} {value!r}")
    above = value >= high if high_open else value > high
    if not low <= value or above or math.isnan(value):
        bound = ")" if high_open else "]"
        raise ValueError(f"Invalid {name}: expected a value in [{low}, {high}{bound}, got {value}")


class Optimizer:
    """Base of every optimizer.

    ``params`` is an iterable of Tensors, or of dicts (parameter groups)
    each holding ``'params'`` and any hyper-parameters that override
    ``defaults`` for that group.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}           # Tensor -> dict of per-parameter state
        self.param_groups = []
        self._scratch_buffers = {}  # (device, dtype) -> flat array, not part of the state
        if hasattr(params, "parameters") and callable(params.parameters):
            raise TypeError(f"params: expected model.parameters() (an iterable of Tensors), got the "
                            f"{type(params).__name__} module itself")
        if isinstance(params, (Tensor, dict)):
            raise TypeError(
                "params: expected an iterable of Tensors or of dicts (parameter groups), "
                f"got a single {type(params).__name__}; wrap it in a list")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join(lines) + "\n)"

    # ---- groups ------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group of parameters; options it lacks are taken from the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if params is None:
            raise ValueError("param_group: expected a 'params' entry")
        params = [params] if isinstance(params, Tensor) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but param {i} is a {type(p).__name__}")
            if p.dtype.kind != "f":
                raise ValueError(f"optimizer can only optimize floating Tensors, but param {i} is {p.dtype}")
            if not p.requires_grad:
                raise ValueError(f"param {i} (shape {p.shape}) does not require grad; "
                                 "call .requires_grad_() or leave it out")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (param {i} was made by {p.grad_fn!r})")
        group = dict(param_group, params=params)
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError("some parameters appear more than once (in one group or across groups)")
        self.param_groups.append(group)

    def _check_group(self, group):
        """Raise ValueError for hyper-parameters out of range; subclasses extend."""
        check_number("learning rate", group["lr"])

    # ---- gradients and steps ----------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set them to None (default) or fill them with zeros."""
        for _, p in self._with_grad():
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def step(self, closure=None):
        """Update every parameter that has a gradient; return ``closure()``'s loss, if given.

        ``closure`` re-evaluates the model and returns the loss (it runs with
        gradients enabled, before the update).
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group, p in self._with_grad():
            g = p.grad.data
            if g.shape != p.data.shape:
                raise ValueError(f"step: gradient of shape {tuple(g.shape)} for a parameter of shape {p.shape}")
            self._update(p, g, self.state.setdefault(p, {}), group)
            p._bump()        # an in-place write: a graph that saved p refuses to backpropagate after it
        return loss

    def _with_grad(self):
        """(group, parameter) for every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p

    def _update(self, p, g, state, group):  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- helpers for _update ------------------------------------------------
    def _scratch(self, p, n=2):
        """``n`` temporary arrays shaped like ``p``, views of one reused buffer."""
        size = p.data.size
        key = (p.device, p.dtype)
        buf = self._scratch_buffers.get(key)
        if buf is None or buf.size < n * size:
            buf = self._scratch_buffers[key] = p.device.backend.xp.empty(n * size, dtype=p.dtype)
        return [buf[i * size:(i + 1) * size].reshape(p.data.shape) for i in range(n)]

    def _cpu_scratch(self, p):
        """Two temporaries for a fused update on the CPU (the GPU kernels need none)."""
        return self._scratch(p) if p.device.type == "cpu" else None

    @staticmethod
    def _buffer(state, name, p):
        """The state array ``name`` of ``p``, made (zeros) on first use."""
        t = state.get(name)
        if t is None:
            t = state[name] = Tensor._make(p.device.backend.xp.zeros_like(p.data), p.device)
        return t.data

    # ---- checkpoints --------------------------------------------------------
    def state_dict(self):
        """The optimizer's state in PyTorch's layout.

        ``{'state': {index: {name: Tensor | int}}, 'param_groups': [{..., 'params': [index, ...]}]}``
        where parameters are numbered in group order.  A snapshot: the
        Tensors are copies, so later steps change neither them nor their
        'step' (PyTorch hands out its live buffers and step counters instead).
        """
        index, groups = {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                ids.append(index.setdefault(id(p), len(index)))
            groups.append(dict({k: v for k, v in group.items() if k != "params"}, params=ids))
        state = {index[id(p)]: {k: Tensor._make(v.data.copy(), v.device) if isinstance(v, Tensor) else v
                                for k, v in s.items()}
                 for p, s in self.state.items() if s and id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a ``state_dict()`` (possibly saved and read back as arrays).

        State arrays (Tensors, NumPy or CuPy arrays) are copied onto each
        parameter's device in its dtype; 'step' becomes an int; tuple-valued
        options read back as lists become tuples again.
        """
        if not hasattr(state_dict, "get") or "param_groups" not in state_dict or "state" not in state_dict:
            raise TypeError(f"{type(self).__name__}.load_state_dict: expected the dict that state_dict() "
                            f"returns (keys 'state' and 'param_groups'), got {type(state_dict).__name__}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the state has {len(saved_groups)} parameter groups, "
                             f"the optimizer {len(self.param_groups)}")
        by_index, new_groups = {}, []
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            ids = [int(k) for k in saved["params"]]
            if len(ids) != len(group["params"]):
                raise ValueError(f"load_state_dict: parameter group {i} has {len(ids)} parameters in the state, "
                                 f"{len(group['params'])} in the optimizer")
            by_index.update(zip(ids, group["params"]))
            new = dict(group)
            new.update((k, _option(group.get(k), v)) for k, v in saved.items() if k != "params")
            self._check_group(new)
            new_groups.append(new)
        new_state = {}
        for k, saved in state_dict["state"].items():
            p = by_index.get(int(k))
            if p is None:
                raise ValueError(f"load_state_dict: state for parameter {k}, which no group holds")
            new_state[p] = {name: _state_value(p, int(k), name, v) for name, v in saved.items()}
        self.param_groups = new_groups
        self.state = new_state


def _option(current, value):
    """A loaded option as a Python value: arrays or NumPy scalars read back from a
    file become numbers or lists, and a list where a tuple was becomes a tuple."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    return value


def _state_value(p, k, name, v):
    """One loaded state entry for ``p``: a copy on its device in its dtype, or an int step."""
    if name == "step":
        return int(v.item() if hasattr(v, "item") else v)   # once, at load: a host read is fine
    if not isinstance(v, Tensor) and not hasattr(v, "shape"):
        return v
    if tuple(v.shape) != p.shape:
        raise ValueError(f"load_state_dict: state '{name}' of parameter {k} has shape {tuple(v.shape)}, "
                         f"the parameter {p.shape}")
    v = as_device_array(v, p.device, f"load_state_dict: state '{name}' of parameter {k}")
    return Tensor._make(v.astype(p.dtype, copy=True), p.device)
