"""Embedding: a lookup table of learned vectors, PyTorch's names and initialisation."""
from __future__ import annotations

import numbers

from ..ops.rnn import embedding
from ..tensor import Tensor
from . import init
from .layers import _finish, _float_dtype, _int, _only, _param
from .module import Module, Parameter


class Embedding(Module):
    """``weight`` (num_embeddings, embedding_dim) from N(0, 1); ``forward(ids)`` -> (*ids.shape, embedding_dim).

    Ids must be integers in [0, num_embeddings) (others raise ValueError).
    Row ``padding_idx`` (negative counts from the end) starts at zero and
    gets no gradient, so it stays what it is.  ``max_norm``, ``norm_type``
    and ``scale_grad_by_freq`` as in :func:`gpudl.nn.functional.embedding`;
    dense gradients only.  ``_weight`` takes an existing
    (num_embeddings, embedding_dim) tensor, as :meth:`from_pretrained` does.
    PyTorch's arguments, in its order.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__()
        _only("Embedding", sparse=(sparse, False))
        for name, v in (("max_norm", max_norm), ("norm_type", norm_type)):
            if v is not None and (not isinstance(v, numbers.Real) or isinstance(v, bool) or not v > 0):
                raise ValueError(f"Embedding: expected {name} to be a number > 0, got {v!r}")
        self.max_norm, self.norm_type = max_norm, float(norm_type)
        self.scale_grad_by_freq, self.sparse = bool(scale_grad_by_freq), False
        self.num_embeddings = _int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = _int(embedding_dim, "embedding_dim", "Embedding")
        n = self.num_embeddings
        if padding_idx is not None:
            if (not isinstance(padding_idx, numbers.Integral) or isinstance(padding_idx, bool)
                    or not -n <= padding_idx < n):
                raise ValueError(f"Embedding: expected padding_idx in [-{n}, {n - 1}] "
                                 f"(num_embeddings={n}), got {padding_idx!r}")
            padding_idx = int(padding_idx) % n
        self.padding_idx = padding_idx
        shape = (n, self.embedding_dim)
        if _weight is None:
            self.weight = _param(shape, _float_dtype(dtype, "Embedding"))
            _finish(self, device)
        else:
            if not isinstance(_weight, Tensor) or _weight.shape != shape:
                raise ValueError(f"Embedding: expected _weight of shape {shape}, got "
                                 f"{_weight.shape if isinstance(_weight, Tensor) else type(_weight).__name__}")
            self.weight = Parameter(_weight.detach(), requires_grad=not _freeze)
            if device is not None:
                self.to(device)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding holding ``embeddings`` (2-D); ``freeze`` turns its gradient off."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            raise ValueError("Embedding.from_pretrained: expected a 2-D Tensor of embeddings")
        n, dim = embeddings.shape
        return cls(n, dim, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
