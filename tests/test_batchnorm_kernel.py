"""Batch normalisation at the backend level: the CPU twin against the formulas, the kernels of
``kernels/batchnorm.cu`` (on the emulator and on a real GPU) against the CPU twin, and the
wrappers' validation.  The op's own forward test and gradcheck live in test_functional.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from gpudl.backend import numpy_backend as cpu

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}
DTYPES = [np.float32, np.float64]
# (N, C), (N, C, L) and images; one value per channel and sample up to several blocks' worth
SHAPES = [(5, 3), (2, 70), (4, 3, 7), (3, 2, 40, 33), (64, 16, 8, 8), (1, 1, 2, 2),
          (4, 2, 64, 64)]       # 16384 values a channel: the 1024-thread blocks


def reference(x, w, b, g):
    """Forward and backward with batch statistics, in float64."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axes), x.var(axes)
    invstd = 1 / np.sqrt(var + 1e-5)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    y = xhat * w.reshape(shape) + b.reshape(shape)
    m = x.size // x.shape[1]
    sg, sgx = g.sum(axes), (g * xhat).sum(axes)
    a = (invstd * w).reshape(shape)
    gx = a * (g - (xhat * sgx.reshape(shape) + sg.reshape(shape)) / m)
    return y, xhat, invstd, mean, var * m / max(m - 1, 1), gx, sgx, sg


def gx_tol(dtype, x, w, g):
    """gx cancels (g minus its projections): its error scales with |invstd * w * g|, not |gx|."""
    var = x.astype(np.float64).var((0,) + tuple(range(2, x.ndim)))
    scale = np.abs(w).max() * np.abs(g).max() / np.sqrt(var.min() + 1e-5)
    return dict(rtol=TOL[dtype]["rtol"], atol=max(TOL[dtype]["atol"], 16 * np.finfo(dtype).eps * scale))


def inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return x, w, b, g


def run(be, x, w, b, g, running=True, batch=True, need=(True, True, True)):
    """Forward then backward on backend ``be`` from host arrays; results on the host."""
    c, dt = x.shape[1], x.dtype
    rm = be.asarray(np.full(c, 0.5, dt)) if running else None
    rv = be.asarray(np.full(c, 2.0, dt)) if running else None
    y, xhat, invstd = be.batch_norm_forward(be.asarray(x), be.asarray(w), be.asarray(b), rm, rv,
                                            1e-5, 0.1, batch)
    grads = be.batch_norm_backward(be.asarray(g), xhat, invstd, be.asarray(w), batch, need=need)
    host = [be.to_numpy(a) for a in (y, xhat, invstd)]
    host += [None if a is None else be.to_numpy(a) for a in (rm, rv) + tuple(grads)]
    return host


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_twin_matches_the_formulas(shape, dtype):
    x, w, b, g = inputs(shape, dtype)
    y, xhat, invstd, rm, rv, gx, gw, gb = run(cpu, x, w, b, g)
    ry, rxhat, rinv, rmean, rvar_u, rgx, rgw, rgb = reference(x, w, b, g)
    for got, ref in ((y, ry), (xhat, rxhat), (invstd, rinv), (gx, rgx), (gw, rgw), (gb, rgb),
                     (rm, 0.9 * 0.5 + 0.1 * rmean), (rv, 0.9 * 2.0 + 0.1 * rvar_u)):
        assert got.dtype == dtype
        tol = gx_tol(dtype, x, w, g) if got is gx else TOL[dtype]
        np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["train", "train-no-running", "eval", "no-affine-grads"])
def test_emulated_kernels_match_the_cpu_twin(emu, shape, dtype, mode):
    x, w, b, g = inputs(shape, dtype, seed=len(shape))
    kw = {"train": {}, "train-no-running": dict(running=False), "eval": dict(batch=False),
          "no-affine-grads": dict(need=(True, False, False))}[mode]
    want = run(cpu, x, w, b, g, **kw)
    got = run(emu, x, w, b, g, **kw)
    for k, (a, r) in enumerate(zip(got, want)):
        assert (a is None) == (r is None)
        if a is not None:
            assert a.dtype == dtype and a.shape == r.shape
            np.testing.assert_allclose(a, r, **(gx_tol(dtype, x, w, g) if k == 5 else TOL[dtype]))


def test_no_weight_or_bias_and_running_statistics_of_another_dtype(emu):
    x, _, _, g = inputs((6, 4, 5), np.float64)
    for be in (cpu, emu):
        rm, rv = be.asarray(np.zeros(4, np.float32)), be.asarray(np.ones(4, np.float32))
        y, xhat, invstd = be.batch_norm_forward(be.asarray(x), None, None, rm, rv, 1e-5, 0.1, True)
        np.testing.assert_array_equal(be.to_numpy(y), be.to_numpy(xhat))
        rmean = x.mean((0, 2))
        np.testing.assert_allclose(be.to_numpy(rm), 0.1 * rmean, rtol=1e-6)   # written back in place
        assert be.to_numpy(rm).dtype == np.float32
        gx, gw, gb = be.batch_norm_backward(be.asarray(g), xhat, invstd, None, True)
        ref_gx = reference(x, np.ones(4), np.zeros(4), g)[5]
        np.testing.assert_allclose(be.to_numpy(gx), ref_gx, rtol=1e-10, atol=1e-12)


def test_device_kernels_match_the_cpu(device):
    """The backend of every device (CPU, emulated, a real GPU) against the CPU twin, float32."""
    be = device.backend
    x, w, b, g = inputs((32, 24, 9, 9), np.float32, seed=7)
    for kw in ({}, dict(batch=False)):
        for a, r in zip(run(be, x, w, b, g, **kw), run(cpu, x, w, b, g, **kw)):
            np.testing.assert_allclose(a, r, rtol=5e-5, atol=5e-5)


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 0), (2, 0, 2, 2)])
def test_zero_channels_give_empty_results_on_both_devices(emu, shape):
    for be in (emu, cpu):
        x = np.zeros(shape)
        y, xhat, invstd = be.batch_norm_forward(x, np.ones(0), np.zeros(0), np.zeros(0), np.ones(0),
                                                1e-5, 0.1, True)
        assert y.shape == shape and invstd.shape == (0,)
        gx, gw, gb = be.batch_norm_backward(np.zeros(shape), xhat, invstd, np.ones(0), True)
        assert gx.shape == shape and gw.shape == gb.shape == (0,)


def test_wrappers_refuse_bad_input(emu):
    xp = emu.xp
    x = xp.ones((4, 3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"batch_norm_forward x: expected shape \(N, C, \.\.\.\), got \(4,\)"):
        emu.batch_norm_forward(xp.ones(4, dtype=np.float32), None, None, None, None, 1e-5, 0.1, True)
    with pytest.raises(ValueError, match=r"weight: expected shape \(3,\), got \(4,\)"):
        emu.batch_norm_forward(x, xp.ones(4, dtype=np.float32), None, None, None, 1e-5, 0.1, True)
    with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
        emu.batch_norm_forward(x, None, None, xp.zeros(3, dtype=np.float32), None, 1e-5, 0.1, True)
    with pytest.raises(ValueError, match="running statistics are needed"):
        emu.batch_norm_forward(x, None, None, None, None, 1e-5, 0.1, False)
    with pytest.raises(ValueError, match="at least one value per channel"):
        emu.batch_norm_forward(xp.ones((0, 3), dtype=np.float32), None, None, None, None, 1e-5, 0.1, True)
    with pytest.raises(TypeError, match="expected float32 or float64, got int64"):
        emu.batch_norm_forward(xp.ones((4, 3), dtype=np.int64), None, None, None, None, 1e-5, 0.1, True)
    y, xhat, invstd = emu.batch_norm_forward(x, None, None, None, None, 1e-5, 0.1, True)
    with pytest.raises(ValueError, match=r"xhat: expected the shape of g \(4, 3\), got \(4, 3, 2\)"):
        emu.batch_norm_backward(xp.ones((4, 3), dtype=np.float32), xhat, invstd, None, True)
    with pytest.raises(TypeError, match="g is float64 but batch_norm_backward xhat is float32"):
        emu.batch_norm_backward(xp.ones((4, 3, 2)), xhat, invstd, None, True)


def test_wider_running_statistics_move_in_their_own_dtype(emu):
    """float64 running statistics beside float32 data move in float64 on every backend."""
    rng = np.random.default_rng(5)
    xs = [(rng.standard_normal((8, 3, 5)) * 3 + 1).astype(np.float32) for _ in range(60)]
    stats = {}
    for name, be in (("cpu", cpu), ("emulated", emu)):
        rm, rv = be.asarray(np.zeros(3)), be.asarray(np.ones(3))
        for x in xs:
            be.batch_norm_forward(be.asarray(x), None, None, rm, rv, 1e-5, 0.01, True)
        stats[name] = (be.to_numpy(rm), be.to_numpy(rv))
    # what remains is the float32 rounding of each batch's own statistics (~2e-8 here);
    # moving the running statistics in float32 drifted by ~2e-7
    for a, b in zip(stats["emulated"], stats["cpu"]):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=8e-8, atol=0)


def test_big_channels_take_1024_threads_only_where_the_kernel_can(emu):
    """Channels of >= 16384 values get 1024-thread blocks, unless the compiled
    kernel's max_threads_per_block (its registers) is lower: then 256."""
    impl = emu.batch_norm_forward.__self__          # the backend object behind the API
    fn = impl._function("batchnorm.cu", "batch_norm_stats_f64")
    assert impl._per_channel("batch_norm_stats_f64", 3, 16384) == ((3,), (1024,))
    assert impl._per_channel("batch_norm_stats_f64", 3, 16383) == ((3,), (256,))

    class Limited:
        max_threads_per_block = 768

        def __call__(self, *a, **k):
            return fn(*a, **k)
    impl._functions["batch_norm_stats_f64"] = Limited()
    try:
        assert impl._per_channel("batch_norm_stats_f64", 3, 1 << 20) == ((3,), (256,))
        x = np.random.default_rng(0).standard_normal((4, 2, 64, 64))
        y, xhat, invstd = emu.batch_norm_forward(emu.asarray(x), None, None, None, None, 1e-5, 0.1, True)
        np.testing.assert_allclose(emu.to_numpy(y).mean(axis=(0, 2, 3)), 0, atol=1e-12)
    finally:
        impl._functions["batch_norm_stats_f64"] = fn


def test_max_threads_per_block_read_as_each_cupy_version_spells_it():
    from types import SimpleNamespace as NS
    from gpudl.backend.cupy_backend import _max_threads
    assert _max_threads(NS(max_threads_per_block=512)) == 512               # a property
    assert _max_threads(NS(max_threads_per_block=lambda: 640)) == 640       # a method
    assert _max_threads(NS(function=NS(max_threads_per_block=lambda: 768))) == 768
    assert _max_threads(NS()) is None

    def broken():
        raise RuntimeError("driver error")
    assert _max_threads(NS(max_threads_per_block=broken)) is None
