"""Small helpers shared by the tests."""
import numpy as np

import gpudl


def t(array, device, requires_grad=False, dtype=None):
    """A tensor on ``device`` from a numpy array (float64 kept)."""
    a = np.asarray(array)
    if dtype is not None:
        a = a.astype(dtype)
    return gpudl.tensor(a, device=device, requires_grad=requires_grad)


def host(value):
    """A tensor on any device, or anything array-like, as a NumPy array."""
    return value.numpy() if isinstance(value, gpudl.Tensor) else np.asarray(value)


def close(tensor, expected, rtol=1e-5, atol=1e-6):
    """Both sides may be tensors on any device (a GPU tensor never converts implicitly)."""
    np.testing.assert_allclose(host(tensor), host(expected), rtol=rtol, atol=atol)
