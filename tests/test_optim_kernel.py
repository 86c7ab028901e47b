"""The fused optimizer updates at the backend level: the kernels of ``kernels/optim.cu`` (on the
emulator and on a real GPU) against the CPU twin, for every option, and the wrappers' checks.
Whole trajectories against PyTorch are in test_optim.py, on every device.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpudl.backend import numpy_backend as cpu

TOL = {np.float32: dict(rtol=2e-6, atol=4e-6), np.float64: dict(rtol=1e-13, atol=1e-15)}
SHAPES = [(1,), (7, 3), (300, 5)]          # under one block, several blocks


def arrays(shape, dtype, k, seed=0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(shape).astype(dtype) for _ in range(k)]
    if k == 5:                           # p, g, m, v, v_max: the second moments are >= 0
        out[3:] = [np.abs(a) for a in out[3:]]
    return out


def sgd(be, host, first, **opts):
    p, g, buf = (be.asarray(a.copy()) for a in host)
    be.sgd_update(p, g, buf, 0.1, first=first, **opts)
    return [be.to_numpy(a) for a in (p, buf)]


def adam(be, host, amsgrad, step, **opts):
    p, g, m, v, vmax = (be.asarray(a.copy()) for a in host)
    be.adam_update(p, g, m, v, vmax if amsgrad else None, 0.01, 0.9, 0.999, 1e-8, step=step, **opts)
    return [be.to_numpy(a) for a in (p, m, v, vmax)]


def rms_arrays(shape, dtype, seed=0):
    """p, g, v, a, buf with the square average v well above a**2 (a well-conditioned sqrt)."""
    p, g, v, a, buf = arrays(shape, dtype, 5, seed)
    return [p, g, (np.abs(v) + a * a + 0.5).astype(dtype), a, buf]


def rmsprop(be, host, centered, momentum, **opts):
    p, g, v, a, buf = (be.asarray(a.copy()) for a in host)
    be.rmsprop_update(p, g, v, a if centered else None, buf if momentum else None, 0.01, 0.9, 1e-8,
                      momentum=momentum, **opts)
    return [be.to_numpy(x) for x in (p, v, a, buf)]


def same(got, want, dtype):
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **TOL[dtype])


SGD_OPTIONS = [dict(momentum=mo, dampening=da, weight_decay=wd, nesterov=ne, maximize=mx)
               for mo, da, wd, ne, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (0.0, 1e-2),
                                                           (False, True), (False, True))
               if not (ne and (mo == 0 or da != 0))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_sgd_kernel_matches_the_cpu_twin(emu, shape, dtype):
    host = arrays(shape, dtype, 3)
    for opts, first in itertools.product(SGD_OPTIONS, (True, False)):
        same(sgd(emu, host, first, **opts), sgd(cpu, host, first, **opts), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_adam_kernel_matches_the_cpu_twin(emu, shape, dtype):
    host = arrays(shape, dtype, 5)
    for amsgrad, step, wd, decoupled, maximize in itertools.product(
            (False, True), (1, 7), (0.0, 0.05), (False, True), (False, True)):
        opts = dict(weight_decay=wd, decoupled=decoupled, maximize=maximize)
        same(adam(emu, host, amsgrad, step, **opts), adam(cpu, host, amsgrad, step, **opts), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_rmsprop_kernel_matches_the_cpu_twin(emu, shape, dtype):
    host = rms_arrays(shape, dtype)
    for centered, momentum, wd, maximize in itertools.product(
            (False, True), (0.0, 0.9), (0.0, 0.05), (False, True)):
        opts = dict(weight_decay=wd, maximize=maximize)
        got, want = rmsprop(emu, host, centered, momentum, **opts), rmsprop(cpu, host, centered, momentum, **opts)
        same(got, want, dtype)
        if not centered:                          # state that is not used stays untouched
            np.testing.assert_array_equal(got[2], host[3])
        if not momentum:
            np.testing.assert_array_equal(got[3], host[4])


def test_device_updates_match_the_cpu(device):
    """Every device's backend (CPU, emulated, a real GPU) against the CPU twin, float32."""
    be = device.backend
    host = arrays((64, 33), np.float32, 5, seed=3)
    same(adam(be, host, True, 3, weight_decay=0.01, decoupled=True, maximize=False),
         adam(cpu, host, True, 3, weight_decay=0.01, decoupled=True, maximize=False), np.float32)
    opts = dict(momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=True, maximize=False)
    same(sgd(be, host[:3], False, **opts), sgd(cpu, host[:3], False, **opts), np.float32)
    host = rms_arrays((64, 33), np.float32, seed=3)
    opts = dict(weight_decay=1e-4, maximize=False)
    same(rmsprop(be, host, True, 0.9, **opts), rmsprop(cpu, host, True, 0.9, **opts), np.float32)


def test_a_strided_parameter_is_updated_in_place(emu):
    p_host, g_host = arrays((6, 4), np.float64, 2)
    want = p_host.T.copy()
    cpu.sgd_update(want, g_host.T.copy(), None, 0.5, 0.0, 0.0, 0.0, False, False, False)
    p = emu.asarray(p_host).T                      # a view with strides
    emu.sgd_update(p, emu.asarray(g_host).T, None, 0.5, 0.0, 0.0, 0.0, False, False, False)
    np.testing.assert_allclose(p, want, rtol=1e-15)


def test_float32_moments_take_one_minus_beta_from_the_host(emu):
    """1 - beta2 in float32 arithmetic is 1.00017e-4 for beta2 = 0.9999; the
    host's double gives PyTorch's 1e-4, on both devices.  An amsgrad maximum
    keeps a NaN, as torch.maximum does."""
    for be in (emu, cpu):
        p, g, m, v = (np.zeros(3, np.float32) for _ in range(4))
        g += 1
        v_max = np.array([np.nan, 0.0, 1.0], np.float32)
        be.adam_update(p, g, m, v, v_max, 1e-3, 0.9, 0.9999, 1e-8, 0.0, False, False, 1)
        np.testing.assert_allclose(v, np.float32(1.0 - 0.9999), rtol=1e-7)
        np.testing.assert_allclose(m, np.float32(1.0 - 0.9), rtol=1e-7)
        assert np.isnan(v_max[0]) and v_max[1:].tolist() == [np.float32(1e-4), 1.0]
        assert np.isnan(p[0]) and np.isfinite(p[1:]).all()
        p, g, v = np.zeros(3, np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
        be.rmsprop_update(p, g, v, None, None, 0.01, 0.99, 1e-8, 0.0, 0.0, False)
        np.testing.assert_allclose(v, np.float32(1.0 - 0.99), rtol=1e-7)


def test_wrappers_refuse_bad_input(emu):
    xp = emu.xp
    p = xp.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"sgd_update g: expected the parameter's shape \(3, 2\), got \(2, 3\)"):
        emu.sgd_update(p, xp.ones((2, 3), dtype=np.float32), None, 0.1, 0.0, 0.0, 0.0, False, False, False)
    with pytest.raises(TypeError, match="sgd_update p is float32 but sgd_update g is float64"):
        emu.sgd_update(p, xp.ones((3, 2)), None, 0.1, 0.0, 0.0, 0.0, False, False, False)
    with pytest.raises(ValueError, match="momentum needs its buffer"):
        emu.sgd_update(p, p.copy(), None, 0.1, 0.9, 0.0, 0.0, False, False, True)
    with pytest.raises(ValueError, match=r"adam_update v: expected the parameter's shape \(3, 2\), got \(6,\)"):
        emu.adam_update(p, p.copy(), p.copy(), xp.ones(6, dtype=np.float32), None, 0.1, 0.9, 0.99,
                        1e-8, 0.0, False, False, 1)
    with pytest.raises(ValueError, match="momentum=0.9 needs its buffer buf, got None"):
        emu.rmsprop_update(p, p.copy(), p.copy(), None, None, 0.1, 0.9, 1e-8, 0.0, 0.9, False)
    with pytest.raises(TypeError, match="rmsprop_update p is float32 but rmsprop_update v is float64"):
        emu.rmsprop_update(p, p.copy(), xp.ones((3, 2)), None, None, 0.1, 0.9, 1e-8, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="step counts from 1, got 0"):
        emu.adam_update(p, p.copy(), p.copy(), p.copy(), None, 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, 0)


def test_scalar_parameters_train_on_every_device(device):
    """A 0-d parameter (a learned scale, say) steps like on the CPU, and SGD keeps no half-made buffer."""
    import gpudl
    from gpudl import optim

    def run(dev, make):
        p = gpudl.tensor(np.array(1.5), device=dev, requires_grad=True)
        opt = make([p])
        for _ in range(3):
            opt.zero_grad()
            (p * p).sum().backward()
            opt.step()
        return p.numpy(), opt

    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                 lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True)):
        got, opt = run(device, make)
        want, _ = run("cpu", make)
        assert got.shape == () and np.allclose(got, want, rtol=1e-12)
    # a gradient of another dtype is refused when assigned (as PyTorch), so no step sees one
    p = gpudl.tensor(np.ones(3), device=device, requires_grad=True)
    with pytest.raises(TypeError, match="dtype float64"):
        p.grad = gpudl.tensor(np.ones(3, np.float32), device=device)
    assert p.grad is None
