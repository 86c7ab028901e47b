"""Small helpers shared by the tests."""
import numpy as np

import gpudl


def t(array, device, requires_grad=False, dtype=None):
    """A tensor on ``device`` from a numpy array (float64 kept)."""
    a = np.asarray(array)
    if dtype is not None:
        a = a.astype(dtype)
    return gpudl.tensor(a, device=device, requires_grad=requires_grad)


def close(tensor, expected, rtol=1e-5, atol=1e-6):
    got = tensor.numpy() if isinstance(tensor, gpudl.Tensor) else np.asarray(tensor)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
