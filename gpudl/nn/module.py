"""Module and Parameter: the stateful building blocks, with PyTorch's surface.

A :class:`Module` registers what is assigned to it: a :class:`Parameter`
becomes a parameter, a Module a child, and a tensor given to
:meth:`Module.register_buffer` a buffer (saved in ``state_dict`` but not
trained).  ``train()`` / ``eval()`` set a per-module ``training`` flag;
``to(device)`` moves parameters and buffers *in place*, so an optimizer
built before the move keeps working.
"""
from __future__ import annotations

import itertools
import operator
from collections import OrderedDict, namedtuple

import numpy

from ..backend import resolve
from ..tensor import Tensor, tensor, as_dtype, as_device_array, _DTYPE_NAMES


class Parameter(Tensor):
    """A Tensor that a Module registers as a parameter (``requires_grad`` by default).

    Given a Tensor, the Parameter shares its data; anything else is copied
    into a new CPU tensor as :func:`gpudl.tensor` would.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = tensor(numpy.empty(0, dtype=numpy.float32))
        elif not isinstance(data, Tensor):
            data = tensor(data)
        self.data, self.device = data.data, data.device
        self._ver = data._ver                # the same memory: one version counter
        self._grad, self._node, self._requires_grad, self._view = None, None, False, None
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class _HookHandle:
    """What ``register_forward_hook`` returns: ``.remove()`` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks, hook):
        self._hooks, self.id = hooks, next(self._ids)
        hooks[self.id] = hook

    def remove(self):
        self._hooks.pop(self.id, None)


def _addindent(text, spaces=2):
    lines = text.split("\n")
    return lines[0] + "".join("\n" + " " * spaces + line for line in lines[1:])


def _parse_to(args, kwargs):
    """(device or None, dtype or None) from Module.to's arguments, as PyTorch reads them."""
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)   # accepted for PyTorch code; copies here are ordinary
    if kwargs:
        raise TypeError(f"to: unexpected keyword argument(s) {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, (numpy.dtype, type)) or (isinstance(a, str) and a in _DTYPE_NAMES):
            dtype = a
        else:
            device = a
    dtype = as_dtype(dtype)
    if dtype is not None and dtype.kind != "f":
        raise TypeError(f"to: expected a floating-point dtype for a module, got {dtype}")
    return (None if device is None else resolve(device)), dtype


def _move_(t, device, dtype):
    """Convert ``t`` (and its grad) in place: the Tensor object keeps its identity."""
    arr = t.data
    if dtype is not None and arr.dtype.kind == "f" and arr.dtype != dtype:
        arr = arr.astype(dtype)
    if device is not None and device != t.device:
        arr = as_device_array(arr, device, "to")
        t.device = device
    t.data = arr
    if t.grad is not None:
        _move_(t.grad, device, dtype)


class Module:
    """Base class of every layer and model; subclasses define ``forward``."""

    training: bool

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent_buffers"] = set()
        d["_modules"] = OrderedDict()
        d["_forward_pre_hooks"] = OrderedDict()
        d["_forward_hooks"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define it in the subclass")

    def __call__(self, *args, **kwargs):
        for hook in tuple(self._forward_pre_hooks.values()):
            out = hook(self, args)
            if out is not None:
                args = out if isinstance(out, tuple) else (out,)
        result = self.forward(*args, **kwargs)
        for hook in tuple(self._forward_hooks.values()):
            out = hook(self, args, result)
            if out is not None:
                result = out
        return result

    def register_forward_pre_hook(self, hook):
        """``hook(module, args)`` before forward; it may return new args."""
        return _HookHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """``hook(module, args, output)`` after forward; it may return a new output."""
        return _HookHandle(self._forward_hooks, hook)

    # ---- registration ------------------------------------------------
    def _check_name(self, name, kind, registry):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a str, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name can't be empty or contain '.', got {name!r}")
        if hasattr(self, name) and name not in self.__dict__[registry]:
            raise KeyError(f"attribute {name!r} already exists")

    def register_parameter(self, name, param):
        """Add ``param`` (a Parameter, or None for an absent one) as ``name``."""
        self._check_name(name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} "
                            f"(gpudl.nn.Parameter or None expected)")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add ``tensor`` (or None) as a buffer; persistent buffers go into ``state_dict``."""
        self._check_name(name, "buffer", "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r} (Tensor or None expected)")
        if isinstance(tensor, Parameter):
            raise TypeError(f"buffer {name!r}: expected a plain Tensor, got a Parameter")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Add ``module`` (or None) as the child ``name``."""
        self._check_name(name, "module", "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        if isinstance(value, Parameter):
            self._forget(name, keep="_parameters")
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self._forget(name, keep="_modules")
            self.add_module(name, value)
        elif "_parameters" in d and name in d["_parameters"]:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(gpudl.nn.Parameter or None expected)")
            d["_parameters"][name] = None
        elif "_modules" in d and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} "
                                f"(gpudl.nn.Module or None expected)")
            d["_modules"][name] = None
        elif "_buffers" in d and name in d["_buffers"]:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} (Tensor or None expected)")
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Drop ``name`` from every place but the registry ``keep`` (where it keeps its order)."""
        d = self.__dict__
        if "_parameters" not in d:
            return  # register_* raises the clear error
        d.pop(name, None)
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg != keep:
                d[reg].pop(name, None)
        d["_non_persistent_buffers"].discard(name)

    def __getattr__(self, name):
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg in d and name in d[reg]:
                return d[reg][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        d = self.__dict__
        for reg in ("_parameters", "_buffers", "_modules"):
            if reg in d and name in d[reg]:
                del d[reg][name]
                d["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # ---- traversal -----------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for self and every descendant, depth first, each module once."""
        memo = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if remove_duplicate:
                if id(mod) in memo:
                    continue
                memo.add(id(mod))
            yield name, mod
            stack.extend(reversed([(f"{name}.{k}" if name else k, m)
                                   for k, m in mod._modules.items() if m is not None]))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mod_prefix, mod in mods:
            for k, v in getattr(mod, registry).items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                yield (f"{mod_prefix}.{k}" if mod_prefix else k), v

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) pairs in registration order, shared parameters once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target):
        """The descendant at dotted path ``target`` ('' is self)."""
        mod = self
        for part in target.split(".") if target else ():
            if part not in mod._modules or mod._modules[part] is None:
                raise AttributeError(f"{type(mod).__name__} has no submodule {part!r} (looking up {target!r})")
            mod = mod._modules[part]
        return mod

    # ---- state ---------------------------------------------------------
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """An OrderedDict of dotted name -> Tensor: parameters and persistent buffers.

        The tensors share memory with the module's (detached unless ``keep_vars``).
        """
        out = OrderedDict() if destination is None else destination
        stack = [(prefix, self)]
        while stack:
            pre, mod = stack.pop()
            for k, p in mod._parameters.items():
                if p is not None:
                    out[pre + k] = p if keep_vars else p.detach()
            for k, b in mod._buffers.items():
                if b is not None and k not in mod._non_persistent_buffers:
                    out[pre + k] = b if keep_vars else b.detach()
            stack.extend(reversed([(f"{pre}{k}.", m) for k, m in mod._modules.items() if m is not None]))
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy ``state_dict`` (name -> Tensor or array) into the parameters and buffers, in place.

        Every entry is checked before anything is copied. A shape mismatch
        raises; missing or unexpected keys raise when ``strict``, and are
        returned as ``(missing_keys, unexpected_keys)`` either way.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict: expected a dict of name -> Tensor, got {type(state_dict).__name__}")
        own = self.state_dict(keep_vars=True)
        # buffers a module may go without (BatchNorm's num_batches_tracked, as
        # in PyTorch): when absent they keep their value, not reported missing
        optional = {pre + (pre and ".") + name for pre, mod in self.named_modules()
                    for name in getattr(mod, "_optional_state", ())}
        missing = [k for k in own if k not in state_dict and k not in optional]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        staged = []
        for key, dest in own.items():
            if key not in state_dict:
                continue
            src = as_device_array(state_dict[key], dest.device, f"load_state_dict: {key!r}")
            if tuple(src.shape) != dest.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {tuple(src.shape)} "
                              f"from checkpoint, the shape in current model is {dest.shape}.")
            staged.append((dest, src))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for dest, src in staged:
            dest.data[...] = src.astype(dest.dtype, copy=False)
            dest._bump()
        return _IncompatibleKeys(missing, unexpected)

    # ---- mode and movement --------------------------------------------
    def train(self, mode=True):
        """Set ``training`` on this module, then call ``train(mode)`` on each
        child (so a subclass's own ``train`` is honoured, as in PyTorch); returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train: expected mode to be a bool, got {mode!r}")
        self.training = mode
        for m in self.children():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Drop every parameter's gradient (or fill it with zeros)."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()          # in place, as Optimizer.zero_grad

    def apply(self, fn):
        """Call ``fn`` on every descendant (children in order, depth first), then on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs):
        """Move and/or cast parameters and buffers in place: ``to(device)``, ``to(dtype)``, ``to(tensor)``.

        Only floating tensors change dtype. The Parameter objects stay the
        same, so an optimizer made before the move still holds them.
        """
        device, dtype = _parse_to(args, kwargs)
        for m in self.modules():
            for reg in (m._parameters, m._buffers):
                for t in reg.values():
                    if t is not None:
                        _move_(t, device, dtype)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def float(self):
        return self.to(numpy.float32)

    def double(self):
        return self.to(numpy.float64)

    def half(self):
        return self.to(numpy.float16)

    # ---- printing --------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses in ``repr``; override it."""
        return ""

    def __repr__(self):
        lines = [line for line in self.extra_repr().split("\n") if line]
        lines += [f"({k}): " + _addindent(repr(m)) for k, m in self._modules.items()]
        name = type(self).__name__
        if not self._modules and len(lines) <= 1:
            return f"{name}({''.join(lines)})"
        return name + "(\n" + "".join("  " + line + "\n" for line in lines) + ")"


# ---- containers -------------------------------------------------------------
def _index(i, n, what):
    try:
        i = operator.index(i)
    except TypeError:
        raise TypeError(f"{what} indices must be integers or slices, got {type(i).__name__}") from None
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of range for a {what} of length {n}")
    return i % n


class _ListLike(Module):
    """What Sequential and ModuleList share: children named "0", "1", ... kept in order."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self._slice(idx)
        mods = list(self._modules.values())
        return mods[_index(idx, len(mods), type(self).__name__)]

    def _slice(self, idx):
        return type(self)(list(self._modules.values())[idx])

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index(idx, len(self), type(self).__name__)]
        setattr(self, key, module)

    def __delitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[_index(idx, len(mods), type(self).__name__)]
        self._modules.clear()
        self.extend(mods)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        mods = list(self._modules.values())
        if not -len(mods) <= index <= len(mods):
            raise IndexError(f"{type(self).__name__}.insert: index {index} is out of range for length {len(mods)}")
        mods.insert(index, module)
        self._modules.clear()
        return self.extend(mods)

    def pop(self, idx=-1):
        """Remove the module at ``idx`` and return it."""
        module = self[idx]
        del self[idx]
        return module

    def __iadd__(self, modules):
        return self.extend(self._others(modules, "+="))

    def __add__(self, other):
        return type(self)(list(self) + list(self._others(other, "+")))

    def _others(self, other, op):
        """What ``+`` / ``+=`` may take: Sequential only a Sequential (as PyTorch), ModuleList any iterable."""
        if isinstance(self, Sequential) and not isinstance(other, Sequential):
            raise TypeError(f"Sequential {op}: expected a Sequential, got {type(other).__name__}")
        return other


class Sequential(_ListLike):
    """Modules applied in order: ``Sequential(a, b, c)`` or ``Sequential(OrderedDict(name=module))``."""

    def __init__(self, *modules):
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            Module.__init__(self)
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            super().__init__(modules)

    def _slice(self, idx):
        return type(self)(OrderedDict(list(self._modules.items())[idx]))

    def __mul__(self, times):
        """The same modules (not copies) ``times`` over, as PyTorch's ``Sequential * n``."""
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError(f"Sequential *: expected a positive int, got {times!r}")
        return Sequential(*(list(self) * times))

    __rmul__ = __mul__

    def __add__(self, other):
        return Sequential(*(list(self) + list(self._others(other, "+"))))

    def forward(self, input):
        for m in self._modules.values():
            input = m(input)
        return input


class ModuleList(_ListLike):
    """A list of modules whose parameters the owner registers; it has no forward."""

    def __init__(self, modules=None):
        super().__init__(() if modules is None else modules)


class ModuleDict(Module):
    """An ordered dict of modules whose parameters the owner registers; it has no forward."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key):
        return self._modules.pop(key)

    def clear(self):
        self._modules.clear()

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for key, m in items:
            self[key] = m
