"""Datasets: the indexable collections a :class:`~gpudl.data.DataLoader` batches.

A dataset has ``__len__`` and ``__getitem__(i)`` returning one sample (a
tuple of arrays or numbers).  A dataset that holds its samples as arrays
should also offer ``get_batch(indices)`` -- ``indices`` a 1-D int64 NumPy
array -- returning a tuple of arrays with a leading batch dimension: the
loader then takes a whole batch with one fancy-indexing operation instead of
a Python loop over samples.
"""
from __future__ import annotations

import numbers

import numpy

from .. import random as _random
from ..tensor import Tensor, _infer_dtype, to_host


def make_rng(seed=None):
    """A NumPy Generator seeded from ``seed``, or from gpudl's CPU generator when None.

    With ``seed=None``, :func:`gpudl.manual_seed` still makes the result
    reproducible, since the seed is drawn from the seeded CPU generator.
    """
    if seed is None:
        seed = int(_random.cpu_generator().integers(0, 2**63 - 1))
    return numpy.random.default_rng(seed)


def as_host_array(a, what="TensorDataset"):
    """A NumPy array from a Tensor (any device), an array, or nested lists of numbers."""
    if isinstance(a, (Tensor, numpy.ndarray)) or hasattr(a, "__cuda_array_interface__"):
        return to_host(a)
    try:
        return numpy.asarray(a, dtype=_infer_dtype(a))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what}: expected a Tensor, a NumPy array or a list of numbers, "
                        f"got {type(a).__name__} ({e})") from None


class Dataset:
    """The base class: subclasses give ``__len__`` and ``__getitem__`` (and may give ``get_batch``)."""

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Samples are rows of the given arrays: ``ds[i] == (a[i], b[i], ...)``.

    Everything is held as NumPy arrays (a Tensor on a GPU is copied to the
    host once; one on the CPU is shared); batches are taken by one
    fancy-indexing operation per array (:meth:`get_batch`) and moved to the
    loader's device as whole batches.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: expected at least one tensor or array")
        self.arrays = tuple(as_host_array(a) for a in arrays)
        shapes = [a.shape for a in self.arrays]
        if any(len(s) == 0 for s in shapes):
            raise ValueError(f"TensorDataset: expected arrays with a first (sample) dimension, got shapes {shapes}")
        sizes = [s[0] for s in shapes]
        if len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: expected arrays of one first dimension, got sizes {sizes} "
                             f"(shapes {shapes})")

    def __len__(self):
        return self.arrays[0].shape[0]

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices):
        return tuple(a[indices] for a in self.arrays)

    def __repr__(self):
        return f"TensorDataset({', '.join(f'{a.dtype}{list(a.shape)}' for a in self.arrays)})"


def _check_indices(indices, n, what):
    idx = numpy.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise TypeError(f"{what}: expected a 1-D sequence of ints, got {idx.dtype} of shape {idx.shape}")
    idx = idx.astype(numpy.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{what}: indices must lie in [0, {n}), got min {idx.min()} and max {idx.max()}")
    return idx


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = _check_indices(indices, len(dataset), "Subset")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def _parent(self, name):
        parent = getattr(self.dataset, name, None)
        if parent is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no {name}")
        return lambda indices: parent(self.indices[indices])

    @property
    def get_batch(self):
        """The parent's ``get_batch`` through these indices (absent when the parent has none)."""
        return self._parent("get_batch")

    @property
    def get_raw_batch(self):
        """The parent's ``get_raw_batch`` through these indices (absent when the parent has none)."""
        return self._parent("get_raw_batch")

    def __repr__(self):
        return f"Subset({self.dataset!r}, {len(self)} samples)"


def _split_lengths(lengths, n):
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: expected at least one length")
    if all(isinstance(v, numbers.Integral) for v in lengths):
        counts = [int(v) for v in lengths]
    elif all(isinstance(v, numbers.Real) and 0 <= v <= 1 for v in lengths) and abs(sum(lengths) - 1) < 1e-6:
        counts = [int(numpy.floor(f * n)) for f in lengths]
        for i in range(n - sum(counts)):  # hand out what flooring left, one each
            counts[i % len(counts)] += 1
    else:
        raise ValueError(f"random_split: expected ints summing to {n} or fractions summing to 1, got {lengths}")
    if any(c < 0 for c in counts) or sum(counts) != n:
        raise ValueError(f"random_split: lengths {counts} sum to {sum(counts)}, expected the dataset's length {n}")
    return counts


def random_split(dataset, lengths, seed=None):
    """Split ``dataset`` into non-overlapping random :class:`Subset` s of the given lengths.

    ``lengths`` are ints summing to ``len(dataset)`` or fractions summing to 1.
    ``seed`` fixes the split; None draws from gpudl's seeded CPU generator.
    """
    n = len(dataset)
    counts = _split_lengths(lengths, n)
    perm = make_rng(seed).permutation(n)
    bounds = numpy.cumsum([0] + counts)
    return [Subset(dataset, perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
