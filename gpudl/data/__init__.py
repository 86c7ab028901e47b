"""Data: datasets, the DataLoader, batch transforms and augmentation, MNIST and CIFAR-10.

>>> from gpudl.data import mnist, DataLoader
>>> train = DataLoader(mnist("train"), batch_size=128, shuffle=True, device="auto")
>>> for x, y in train: ...        # x float32 (128, 1, 28, 28) in [0, 1], y int64
"""
from __future__ import annotations

from ._util import DataFileError, DownloadError, data_root  # noqa: F401
from .dataset import Dataset, TensorDataset, Subset, random_split  # noqa: F401
from .loader import DataLoader  # noqa: F401
from . import transforms  # noqa: F401
from .transforms import Compose, ToFloat, Normalize, Standardize, Lambda  # noqa: F401
from .mnist import MNIST, mnist, read_idx, write_idx  # noqa: F401
from . import augment  # noqa: F401
from .augment import RandomCrop, RandomHorizontalFlip  # noqa: F401
from .cifar10 import CIFAR10, cifar10, cifar10_transforms, write_cifar10  # noqa: F401

__all__ = [
    "Dataset", "TensorDataset", "Subset", "random_split", "DataLoader",
    "transforms", "Compose", "ToFloat", "Normalize", "Standardize", "Lambda",
    "MNIST", "mnist", "read_idx", "write_idx", "DataFileError", "DownloadError", "data_root",
    "augment", "RandomCrop", "RandomHorizontalFlip", "CIFAR10", "cifar10", "cifar10_transforms", "write_cifar10",
]
