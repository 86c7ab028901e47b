"""CPU backend vs GPU backend (real CUDA where one answers, the emulator always).

Every kernel-level backend function gets the same inputs on both; results
agree within float32 rtol 1e-4 and float64 rtol 1e-10.
"""
import numpy as np
import pytest

import gpudl
from gpudl.backend import numpy_backend as cpu
from conftest import get_device

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _gpu_params():
    from conftest import _device_params
    return [p for p in _device_params() if p.values[0] != "cpu"]


@pytest.fixture(params=_gpu_params())
def gpu(request):
    return get_device(request.param).backend


def _same(gpu, cpu_out, gpu_out, dtype):
    if isinstance(cpu_out, tuple):
        for a, b in zip(cpu_out, gpu_out):
            _same(gpu, a, b, dtype)
        return
    if cpu_out is None:
        assert gpu_out is None
        return
    got = gpu.to_numpy(gpu_out)
    assert got.shape == cpu_out.shape and got.dtype == cpu_out.dtype
    np.testing.assert_allclose(got, cpu_out, **TOL[dtype])


CONV = [((2, 3, 9, 7), (5, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),
        ((3, 4, 10, 11), (6, 2, 3, 2), (2, 1), (0, 1), (2, 1), 2),
        ((1, 8, 6, 6), (8, 1, 3, 3), (1, 1), (1, 1), (1, 1), 8),
        ((4, 16, 5, 5), (7, 16, 1, 1), (1, 1), (0, 0), (1, 1), 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV)
def test_conv2d(gpu, dtype, xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    y = cpu.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    gy = rng.standard_normal(y.shape).astype(dtype)
    X, W, B, GY = (gpu.asarray(a) for a in (x, w, b, gy))
    _same(gpu, y, gpu.conv2d_forward(X, W, B, stride, padding, dilation, groups), dtype)
    _same(gpu, cpu.conv2d_backward(x, w, gy, stride, padding, dilation, groups),
          gpu.conv2d_backward(X, W, GY, stride, padding, dilation, groups), dtype)


POOL = [((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)), ((1, 2, 9, 7), (3, 3), (2, 2), (1, 1)),
        ((2, 2, 6, 5), (3, 2), (1, 1), (1, 0))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,k,s,p", POOL)
def test_pooling(gpu, dtype, xs, k, s, p):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs).astype(dtype)
    x[0, 0, :2, :2] = 1.0     # ties: the first maximum wins on both
    y, arg = cpu.max_pool2d_forward(x, k, s, p)
    gy = rng.standard_normal(y.shape).astype(dtype)
    X, GY = gpu.asarray(x), gpu.asarray(gy)
    Y, ARG = gpu.max_pool2d_forward(X, k, s, p)
    _same(gpu, y, Y, dtype)
    np.testing.assert_array_equal(gpu.to_numpy(ARG), arg)
    _same(gpu, cpu.max_pool2d_backward(gy, arg, x.shape, k, s, p),
          gpu.max_pool2d_backward(GY, ARG, x.shape, k, s, p), dtype)
    for inc in (True, False):
        _same(gpu, cpu.avg_pool2d_forward(x, k, s, p, inc), gpu.avg_pool2d_forward(X, k, s, p, inc), dtype)
        _same(gpu, cpu.avg_pool2d_backward(gy, x.shape, k, s, p, inc),
              gpu.avg_pool2d_backward(GY, x.shape, k, s, p, inc), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,eps", [(7, 10, 0.0), (33, 300, 0.1), (4, 3, 1.0)])
def test_softmax_cross_entropy(gpu, dtype, n, c, eps):
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((n, c)) * 5).astype(dtype)
    z[0, 0] = 1e4
    y = rng.integers(0, c, n)
    g = rng.standard_normal(n).astype(dtype)
    loss, lse = cpu.softmax_cross_entropy_forward(z, y, eps)
    Z, Y, G = gpu.asarray(z), gpu.asarray(y), gpu.asarray(g)
    LOSS, LSE = gpu.softmax_cross_entropy_forward(Z, Y, eps)
    _same(gpu, (loss, lse), (LOSS, LSE), dtype)
    _same(gpu, cpu.softmax_cross_entropy_backward(z, y, lse, g, eps),
          gpu.softmax_cross_entropy_backward(Z, Y, LSE, G, eps), dtype)


def test_a_whole_training_step_agrees(gpu):
    """conv -> pool -> linear -> loss, forward and every gradient, CPU vs GPU backend."""
    import gpudl.nn.functional as F
    from gpudl.backend import Device
    dev = Device("parity", None, gpu)
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((4, 3, 8, 8), (5, 3, 3, 3), (5,), (10, 80))]
    labels = rng.integers(0, 10, 4)
    results = []
    for d in (gpudl.device("cpu"), dev):
        x, w, b, fc = (gpudl.tensor(a, device=d, requires_grad=True) for a in arrays)
        h = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)
        loss = F.cross_entropy(F.linear(h.flatten(1), fc), gpudl.tensor(labels, device=d))
        loss.backward()
        results.append([loss.numpy()] + [t.grad.numpy() for t in (x, w, b, fc)])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
