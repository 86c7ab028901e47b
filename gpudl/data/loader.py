"""DataLoader: batches of a dataset as tuples of Tensors on a device.

``batch_size=len(dataset)`` is full-batch gradient descent, ``batch_size=1``
stochastic gradient descent, anything between mini-batch.
"""
from __future__ import annotations

import copy
import numbers

import numpy

from ..tensor import Tensor, _default_device, _infer_dtype
from .dataset import make_rng
from .transforms import to_float


def _stack_field(values, k):
    """One field of many samples as one host array with a leading batch dimension."""
    first = values[0]
    if isinstance(first, Tensor):
        values = [v.detach().numpy() for v in values]
    elif isinstance(first, numbers.Number) and not isinstance(first, numpy.generic):  # Python scalars
        return numpy.asarray(values, dtype=_infer_dtype(values))
    try:
        return numpy.stack([numpy.asarray(v) for v in values])
    except ValueError:
        shapes = sorted({numpy.shape(v) for v in values})
        raise ValueError(f"DataLoader: field {k} of the samples comes in shapes {shapes}; "
                         f"samples must agree in shape to be stacked into a batch") from None


def _stack(items):
    rows = [tuple(it) if isinstance(it, (tuple, list)) else (it,) for it in items]
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"DataLoader: samples have different numbers of fields {sorted(widths)}")
    return tuple(_stack_field(col, k) for k, col in enumerate(zip(*rows)))


def _stateful(fn):
    """The random transforms (those with their own ``generator`` and ``state_dict`` /
    ``load_state_dict``) reachable from ``fn``, in order: ``fn`` itself, or the members of a
    ``Compose`` (nested ones too).  A Module used as a transform is not one of them."""
    if fn is None:
        return []
    inner = getattr(fn, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return [t for member in inner for t in _stateful(member)]
    if (hasattr(fn, "generator") and callable(getattr(fn, "state_dict", None))
            and callable(getattr(fn, "load_state_dict", None))):
        return [fn]
    return []


class DataLoader:
    """Iterate over ``dataset`` in batches; each batch is a tuple of Tensors on ``device``.

    - ``shuffle``: a new random order every epoch, drawn by the loader's own
      NumPy Generator, seeded by ``seed`` (or, when None, from gpudl's CPU
      generator, so :func:`gpudl.manual_seed` makes it reproducible).
    - ``drop_last``: skip the final batch when it is smaller than ``batch_size``.
    - ``device``: where batches go (None: the CPU).
    - ``transform`` / ``target_transform``: applied on ``device`` to the first
      / second field of each batch (the inputs / the targets).

    A dataset with ``get_batch(indices)`` gives each batch by one indexing
    operation; any other dataset is read sample by sample and stacked.
    ``state_dict()`` / ``load_state_dict()`` carry the order's generator, the
    position within the epoch and the generators of random transforms (such
    as :class:`gpudl.data.augment.RandomCrop`, also inside a ``Compose``), so
    a resumed run sees the same batches, augmented the same way.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 device=None, transform=None, target_transform=None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: expected batch_size to be a positive int, got {batch_size!r}")
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"DataLoader: expected {name} to be callable, got {type(fn).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = _default_device(device)
        self.transform = transform
        self.target_transform = target_transform
        self.epoch = 0                 # epochs completed
        self._generator = make_rng(seed) if self.shuffle else None
        self._epoch_start = None       # generator state before this epoch's order was drawn
        self._position = 0             # batches yielded in the epoch in progress
        self._in_epoch = False
        self._resume_at = 0

    def __len__(self):
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _order(self):
        n = len(self.dataset)
        if self._generator is None:
            self._epoch_start = None
            return numpy.arange(n, dtype=numpy.int64)
        self._epoch_start = copy.deepcopy(self._generator.bit_generator.state)
        return self._generator.permutation(n)

    def _fetch(self, indices):
        """(fields, raw): raw when the first field is stored pixels that ``to_float`` makes floats."""
        get_raw = getattr(self.dataset, "get_raw_batch", None)
        if get_raw is not None:
            return get_raw(indices), True
        get_batch = getattr(self.dataset, "get_batch", None)
        if get_batch is not None:
            fields = get_batch(indices)
            return (fields if isinstance(fields, tuple) else (fields,)), False
        return _stack([self.dataset[int(i)] for i in indices]), False

    def _to_device(self, fields, raw=False):
        dev = self.device
        out = [f.detach().to(dev) if isinstance(f, Tensor) else Tensor._make(dev.backend.asarray(f), dev)
               for f in fields]
        if raw:     # the pixels travel as bytes and become float32 on the device
            out[0] = Tensor._make(to_float(dev.backend.xp, out[0].data), dev)
        for k, fn in ((0, self.transform), (1, self.target_transform)):
            if fn is not None and k < len(out):
                out[k] = fn(out[k])
        return tuple(out)

    def __iter__(self):
        order = self._order()
        start, self._resume_at = self._resume_at, 0
        self._position, self._in_epoch = start, True
        b = self.batch_size
        for i in range(start, len(self)):
            batch = self._to_device(*self._fetch(order[i * b:(i + 1) * b]))
            self._position = i + 1
            yield batch
        self._in_epoch = False
        self._position = 0
        self.epoch += 1

    def state_dict(self):
        """Where the loader stands: epochs done, batches done in this epoch, the order's generator."""
        current = None if self._generator is None else self._generator.bit_generator.state
        if self._in_epoch and self._position < len(self):
            gen, pos, epoch = self._epoch_start, self._position, self.epoch
        elif not self._in_epoch and self._resume_at:
            # loaded mid-epoch and not iterated since: the state it was given
            gen, pos, epoch = current, self._resume_at, self.epoch
        else:  # between epochs (or all batches of this one already handed out)
            gen, pos, epoch = current, 0, self.epoch + (1 if self._in_epoch else 0)
        transforms = [t.state_dict() for fn in (self.transform, self.target_transform)
                      for t in _stateful(fn)]
        return {"epoch": epoch, "batches_done": pos, "generator": copy.deepcopy(gen),
                "transforms": transforms}

    def load_state_dict(self, state):
        """Continue from :meth:`state_dict`: the next iteration resumes that epoch's order."""
        if not hasattr(state, "keys"):
            raise TypeError(f"DataLoader.load_state_dict: expected the dict that state_dict() returns, "
                            f"got {type(state).__name__}")
        missing = {"epoch", "batches_done", "generator"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}")
        if (state["generator"] is None) != (self._generator is None):
            raise ValueError("DataLoader.load_state_dict: the state is from a loader with shuffle="
                             f"{state['generator'] is not None}, this one has shuffle={self.shuffle}")
        mine = [t for fn in (self.transform, self.target_transform) for t in _stateful(fn)]
        saved = state.get("transforms")      # absent in states saved before transforms had one
        if saved is not None and len(saved) != len(mine):
            raise ValueError(f"DataLoader.load_state_dict: the state holds {len(saved)} random "
                             f"transform(s), this loader has {len(mine)}")
        if self._generator is not None:
            self._generator.bit_generator.state = copy.deepcopy(state["generator"])
        for t, st in zip(mine, saved or ()):
            t.load_state_dict(st)
        self.epoch = int(state["epoch"])
        self._resume_at = int(state["batches_done"])
        self._in_epoch, self._position = False, 0

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, device='{self.device}', "
                f"{len(self)} batches)")
