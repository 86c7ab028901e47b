"""Embedding: a lookup table of learned vectors, PyTorch's names and initialisation."""
from __future__ import annotations

import numbers

from ..ops.rnn import embedding
from ..tensor import Tensor
from . import init
from .layers import _finish, _float_dtype, _int, _param
from .module import Module, Parameter


class Embedding(Module):
    """``weight`` (num_embeddings, embedding_dim) from N(0, 1); ``forward(ids)`` -> (*ids.shape, embedding_dim).

    Ids must be integers in [0, num_embeddings) (others raise ValueError).
    Row ``padding_idx`` (negative counts from the end) starts at zero and
    gets no gradient, so it stays what it is.  ``_weight`` takes an existing
    (num_embeddings, embedding_dim) tensor, as :meth:`from_pretrained` does.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, _weight=None, _freeze=False,
                 device=None, dtype=None):
        super().__init__()
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
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding ``embeddings`` (2-D); ``freeze`` turns its gradient off."""
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            raise ValueError("Embedding.from_pretrained: expected a 2-D Tensor of embeddings")
        n, dim = embeddings.shape
        return cls(n, dim, padding_idx=padding_idx, _weight=embeddings, _freeze=freeze)

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s
