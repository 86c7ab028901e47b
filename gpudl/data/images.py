"""ImageDataset: uint8 images and int64 labels held as NumPy arrays, batched by one index."""
from __future__ import annotations

import numpy

from .dataset import Dataset
from .transforms import to_float


class ImageDataset(Dataset):
    """Images (N, *shape) uint8 and labels (N,) int64, checked on construction.

    Samples and batches (``ds[i]``, ``get_batch(indices)``) give the images
    as float32 in [0, 1].  ``get_raw_batch`` gives them as stored (uint8): the
    DataLoader's one-index fast path, which moves the bytes and makes them
    float32 on the batch's device (a quarter of the traffic to a GPU).
    Subclasses set ``shape`` and ``classes``.
    """

    shape = None
    classes = ()

    def __init__(self, images, labels, split=None, source=None):
        name = type(self).__name__
        images, labels = numpy.asarray(images), numpy.asarray(labels)
        if images.dtype != numpy.uint8 or images.ndim != 4 or images.shape[1:] != tuple(self.shape):
            raise ValueError(f"{name}: expected images uint8 (N, {', '.join(map(str, self.shape))}), "
                             f"got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{name}: expected labels of shape {images.shape[:1]}, got {labels.shape}")
        self.images, self.labels = images, labels.astype(numpy.int64, copy=False)
        self.split, self.source = split, source

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return to_float(numpy, self.images[index]), self.labels[index]

    def get_batch(self, indices):
        return to_float(numpy, self.images[indices]), self.labels[indices]

    def get_raw_batch(self, indices):
        """(uint8 images, int64 labels); ``to_float`` of the images is :meth:`get_batch`'s."""
        return self.images[indices], self.labels[indices]

    def __repr__(self):
        return f"{type(self).__name__}(split={self.split!r}, {len(self)} samples, from {self.source})"
