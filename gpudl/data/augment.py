"""Random augmentation of whole batches, on the batch's device.

Each transform takes an (N, C, H, W) batch (a Tensor on any device, or a
NumPy array) and returns a new Tensor on the same device, computed by that
device's array module (``x.device.backend.xp``) with a few whole-batch
operations -- a pad, one gather with per-image offsets, one ``where`` --
never a Python loop over images.  The random numbers (N offsets or N coin
flips a batch) are drawn by the transform's own NumPy generator on the host
and moved with the batch's work, so one seed gives the same augmentation on
every device.  They compose with the other batch transforms and plug into
``DataLoader(..., transform=...)``:

>>> from gpudl.data import augment as A, Normalize
>>> train_tf = A.Compose([A.RandomCrop(32, padding=4), A.RandomHorizontalFlip(),
...                       Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])

The output is data, not part of an autograd graph.
"""
from __future__ import annotations

import copy
import numbers

import numpy

from ..tensor import Tensor
from .dataset import make_rng
from .transforms import Compose, Normalize, Transform, _as_tensor  # noqa: F401  (Compose, Normalize re-exported)

_PADDING_MODES = ("constant", "edge", "reflect")


def _batch(x, what):
    x = _as_tensor(x, what)
    if x.ndim != 4:
        raise ValueError(f"{what}: expected a batch of images of shape (N, C, H, W), got {x.shape}")
    return x


def _size_pair(v, what):
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v, v)
    try:
        h, w = (int(i) for i in v)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected size to be an int or a pair of ints, got {v!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what}: expected a positive size, got {(h, w)}")
    return h, w


class RandomTransform(Transform):
    """A transform with its own NumPy generator: ``seed``, or a seed drawn from gpudl's CPU generator.

    ``state_dict()`` / ``load_state_dict()`` save and restore the generator
    (to resume a run with the same augmentation).
    """

    def __init__(self, seed=None):
        self.seed = seed
        self.generator = make_rng(seed)

    def state_dict(self):
        return {"generator": copy.deepcopy(self.generator.bit_generator.state)}

    def load_state_dict(self, state):
        self.generator.bit_generator.state = copy.deepcopy(state["generator"])

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if k != "generator" and not k.startswith(("_", "last_")))
        return f"{type(self).__name__}({args})"


class RandomCrop(RandomTransform):
    """Pad each image by ``padding`` then cut a ``size`` window at a random place, per image.

    ``padding``: an int (all sides) or (left/right, top/bottom) pair;
    ``padding_mode``: "constant" (with ``fill``), "edge" or "reflect".
    ``RandomCrop(32, padding=4)`` is the standard CIFAR augmentation: offsets
    0..8 in each direction, each of the 81 equally likely.  The offsets of
    the last batch are kept in ``last_offsets`` ((N, 2) rows, columns).
    """

    def __init__(self, size, padding=0, fill=0.0, padding_mode="constant", seed=None):
        super().__init__(seed)
        self.size = _size_pair(size, "RandomCrop")
        pad = (padding, padding) if isinstance(padding, numbers.Integral) else tuple(padding)
        if len(pad) != 2 or not all(isinstance(p, numbers.Integral) and p >= 0 for p in pad):
            raise ValueError(f"RandomCrop: expected padding to be an int >= 0 or a pair of them, got {padding!r}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"RandomCrop: expected padding_mode in {_PADDING_MODES}, got {padding_mode!r}")
        try:
            fills = None if isinstance(fill, (bool, str)) else numpy.asarray(fill, dtype=numpy.float64)
        except (TypeError, ValueError):
            fills = None
        if fills is None or fills.ndim > 1 or not numpy.isfinite(fills).all():
            raise ValueError(f"RandomCrop: expected fill to be a number or one per channel, got {fill!r}")
        self.padding, self.fill, self.padding_mode = (int(pad[0]), int(pad[1])), fill, padding_mode
        self.last_offsets = None

    def __call__(self, x):
        x = _batch(x, "RandomCrop")
        be = x.device.backend
        xp = be.xp
        n, c, h, w = x.shape
        pw, ph = self.padding
        sh, sw = self.size
        H, W = h + 2 * ph, w + 2 * pw
        if sh > H or sw > W:
            raise ValueError(f"RandomCrop: a {sh}x{sw} crop does not fit {h}x{w} images padded by {self.padding} "
                             f"({H}x{W})")
        oy = self.generator.integers(0, H - sh + 1, size=n)
        ox = self.generator.integers(0, W - sw + 1, size=n)
        self.last_offsets = numpy.stack([oy, ox], axis=1)
        a = x.data
        if ph or pw:
            widths = ((0, 0), (0, 0), (ph, ph), (pw, pw))
            if self.padding_mode == "constant":
                a = self._pad_constant(xp, a, widths)
            else:
                a = xp.pad(a, widths, mode=self.padding_mode)
        # one gather: out[i, k, r, s] = a[i, k, oy[i] + r, ox[i] + s]
        offsets = be.asarray(self.last_offsets)             # one host-to-device copy
        rows = offsets[:, 0, None, None, None] + xp.arange(sh)[:, None]
        cols = offsets[:, 1, None, None, None] + xp.arange(sw)
        out = a[xp.arange(n)[:, None, None, None], xp.arange(c)[:, None, None], rows, cols]
        return Tensor._make(out, x.device)

    def _pad_constant(self, xp, a, widths):
        """``a`` padded with ``fill``: one value, or one per channel (axis 1)."""
        fill = numpy.asarray(self.fill, dtype=numpy.float64).reshape(-1)
        c = a.shape[1]
        if fill.size not in (1, c):
            raise ValueError(f"RandomCrop: {fill.size} fill values for images of {c} channels")
        if a.dtype.kind in "iu":
            info = numpy.iinfo(a.dtype)
            if (fill < info.min).any() or (fill > info.max).any() or (fill != numpy.round(fill)).any():
                raise ValueError(f"RandomCrop: fill {self.fill!r} is not a value of the images' dtype {a.dtype}")
        if fill.size == 1:
            return xp.pad(a, widths, mode="constant", constant_values=fill.astype(a.dtype)[0])
        (_, _), (_, _), (ph, _), (pw, _) = widths
        out = xp.empty((a.shape[0], c, a.shape[2] + 2 * ph, a.shape[3] + 2 * pw), dtype=a.dtype)
        out[...] = xp.asarray(fill.astype(a.dtype)).reshape(1, c, 1, 1)
        out[:, :, ph:ph + a.shape[2], pw:pw + a.shape[3]] = a
        return out


class RandomHorizontalFlip(RandomTransform):
    """Mirror each image left-right with probability ``p`` (flags of the last batch in ``last_flipped``)."""

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: expected p to be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.last_flipped = None

    def __call__(self, x):
        x = _batch(x, "RandomHorizontalFlip")
        be = x.device.backend
        flip = self.generator.random(x.shape[0]) < self.p
        self.last_flipped = flip
        out = be.xp.where(be.asarray(flip)[:, None, None, None], x.data[..., ::-1], x.data)
        return Tensor._make(out, x.device)


__all__ = ["RandomTransform", "RandomCrop", "RandomHorizontalFlip", "Compose", "Normalize"]
