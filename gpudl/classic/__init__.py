"""Classic classifiers on gpudl devices: k-nearest neighbours and linear SVM / softmax.

>>> from gpudl.classic import KNeighborsClassifier, LinearClassifier, choose_k
"""
from __future__ import annotations

from .knn import KNeighborsClassifier, choose_k  # noqa: F401
from .linear import LinearClassifier, linear_loss  # noqa: F401

__all__ = ["KNeighborsClassifier", "choose_k", "LinearClassifier", "linear_loss"]
