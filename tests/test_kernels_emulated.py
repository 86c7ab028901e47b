"""The GPU backend's kernels and launch code, run on the CUDA emulator.

Every kernel-level function of the emulated backend (the exact ``.cu``
sources and the exact wrappers of :mod:`gpudl.backend.cupy_backend`, with
``xp = numpy``) is compared with the CPU backend, plus a few small loop
references that pin the semantics down (argmax ties, count_include_pad,
label smoothing).  The wrappers' validation is checked with a ``get_module``
that fails if anything reaches a launch.  Each ``.cu`` is also compiled to
PTX for sm_90 when ``nvcc`` is on PATH.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.special

from gpudl.backend import BACKEND_API, cupy_backend
from gpudl.backend.kernels import KernelCompileError, kernel_dir, read_source

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [np.float32, np.float64]


def make_emulated_backend():
    """The GPU backend with ``xp = numpy`` and kernels compiled by the emulator."""
    from gpudl.testing.cuda_emulator import compile_module

    modules = {}

    def get_module(filename):
        mod = modules.get(filename)
        if mod is None:
            mod = compile_module(read_source(filename), name=filename,
                                 include_dirs=[kernel_dir()])
            modules[filename] = mod
        return mod

    return cupy_backend.make_backend(np, get_module, scipy.special, "emulated")


class _NoLaunch:
    def __call__(self, filename):
        raise AssertionError(f"a kernel from {filename} was about to launch")


@pytest.fixture(scope="module")
def emu():
    pytest.importorskip("gpudl.testing.cuda_emulator",
                        reason="the CUDA emulator (gpudl.testing.cuda_emulator) is missing")
    return make_emulated_backend()


@pytest.fixture(scope="module")
def cpu():
    return pytest.importorskip("gpudl.backend.numpy_backend",
                               reason="the CPU backend (gpudl.backend._cpu_kernels) is missing")


@pytest.fixture
def strict():
    """A backend whose every launch is an error: validation must come first."""
    return cupy_backend.make_backend(np, _NoLaunch(), scipy.special, "strict")


def close(a, b, dtype, scale=1.0, **kw):
    tol = dict(TOL[dtype])
    tol["atol"] *= scale
    tol.update(kw)
    assert a.dtype == np.dtype(dtype), (a.dtype, dtype)
    np.testing.assert_allclose(a, b, **tol)


# ------------------------------------------------------------------ conv2d

# (N, C, H, W, O, kH, kW, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1),
    (2, 4, 11, 10, 6, 3, 2, (2, 1), (1, 0), (1, 2), 2),
    (1, 6, 13, 17, 6, 3, 3, 2, 1, 1, 6),            # depthwise
    (3, 4, 5, 6, 8, 1, 1, 1, 0, 1, 2),              # 1x1 stride 1: no im2col
    (2, 3, 8, 8, 5, 1, 1, 2, 0, 1, 1),              # 1x1 strided: im2col
    (1, 2, 9, 9, 3, 5, 5, 3, 2, 2, 1),              # dilation + stride + pad
    (2, 3, 6, 5, 2, 3, 3, 1, 3, 1, 1),              # padding wider than the kernel
    (3, 8, 15, 13, 12, 3, 3, 1, 1, 1, 4),           # several blocks, not a multiple of 256
]


def _conv_inputs(case, dtype, seed=0):
    N, C, H, W, O, kH, kW, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C // groups, kH, kW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, _p2(stride), _p2(padding), _p2(dilation), groups


def _p2(v):
    """The contract passes (int, int) pairs."""
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_cpu(emu, cpu, case, dtype):
    x, w, b, s, p, d, g = _conv_inputs(case, dtype)
    scale = np.sqrt(w[0].size)
    for bias in (b, None):
        y = emu.conv2d_forward(x, w, bias, s, p, d, g)
        close(y, cpu.conv2d_forward(x, w, bias, s, p, d, g), dtype, scale)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    gx, gw, gb = emu.conv2d_backward(x, w, gy, s, p, d, g)
    rx, rw, rb = cpu.conv2d_backward(x, w, gy, s, p, d, g)
    close(gx, rx, dtype, scale)
    close(gw, rw, dtype, np.sqrt(x.shape[0] * y.shape[2] * y.shape[3]))
    close(gb, rb, dtype, np.sqrt(gy.size))
    np.testing.assert_allclose(gb, gy.sum((0, 2, 3)), rtol=TOL[dtype]["rtol"] * 10)


@pytest.mark.parametrize("where", ["input", "weights", "output-gradient"])
@pytest.mark.parametrize("case", CONV_CASES[:3] + CONV_CASES[5:7])
def test_conv2d_infinities_match_cpu(emu, cpu, case, where):
    """inf and -inf in the input, the weights or the output's gradient: the
    same inf / NaN pattern on both devices (the CPU's grid once made NaN
    where the kernels, summing over the outputs alone, give inf)."""
    x, w, b, s, p, d, g = _conv_inputs(case, np.float32, seed=5)
    if where == "input":
        x[0, 0, x.shape[2] // 2, -1] = np.inf
        x[-1, -1, -1, 0] = -np.inf
    elif where == "weights":
        w[0, 0, 0, 0] = np.inf
        w[-1, -1, -1, -1] = -np.inf
    with np.errstate(all="ignore"):        # NumPy (the emulated xp) says so; CuPy would not
        y = emu.conv2d_forward(x, w, b, s, p, d, g)
        ry = cpu.conv2d_forward(x, w, b, s, p, d, g)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ry))
    gy = np.abs(np.random.default_rng(6).standard_normal(y.shape)).astype(np.float32) + 0.5
    if where == "output-gradient":
        gy[0, 0, 0, 0] = np.inf
        gy[-1, -1, -1, -1] = -np.inf
    with np.errstate(all="ignore"):
        got = emu.conv2d_backward(x, w, gy, s, p, d, g)
    for a, r in zip(got, cpu.conv2d_backward(x, w, gy, s, p, d, g)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(r))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(r))
        fin = np.isfinite(r)
        close(a[fin], r[fin], np.float32, np.sqrt(x.size))


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True)])
def test_conv2d_backward_need(emu, cpu, need):
    x, w, b, s, p, d, g = _conv_inputs(CONV_CASES[1], np.float64)
    gy = np.ones_like(emu.conv2d_forward(x, w, b, s, p, d, g))
    got = emu.conv2d_backward(x, w, gy, s, p, d, g, need=need)
    ref = cpu.conv2d_backward(x, w, gy, s, p, d, g, need=need)
    for a, r, n in zip(got, ref, need):
        if n:
            close(a, r, np.float64, 10)
        else:
            assert a is None


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[3], CONV_CASES[7]])
def test_conv2d_batch_chunks(emu, monkeypatch, case):
    """A small column budget splits the batch into one-image chunks."""
    x, w, b, s, p, d, g = _conv_inputs(case, np.float64, seed=3)
    y_full = emu.conv2d_forward(x, w, b, s, p, d, g)
    gy = np.random.default_rng(4).standard_normal(y_full.shape)
    full = emu.conv2d_backward(x, w, gy, s, p, d, g)
    monkeypatch.setattr(cupy_backend, "_COLS_BUDGET_BYTES", 1)
    close(emu.conv2d_forward(x, w, b, s, p, d, g), y_full, np.float64, 10)
    for a, r in zip(emu.conv2d_backward(x, w, gy, s, p, d, g), full):
        close(a, r, np.float64, 100)


def test_conv2d_against_loops(emu):
    """Pin the semantics (cross-correlation, groups, dilation) with plain loops."""
    x, w, b, s, p, d, g = _conv_inputs((1, 4, 6, 7, 4, 2, 3, (2, 1), (1, 2), (2, 1), 2), np.float64)
    y = emu.conv2d_forward(x, w, b, s, p, d, g)
    xp_ = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    ref = np.zeros_like(y)
    for o in range(4):
        gi = o // 2
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                acc = b[o]
                for c in range(2):
                    for kh in range(2):
                        for kw in range(3):
                            acc += w[o, c, kh, kw] * xp_[0, gi * 2 + c, i * 2 + kh * 2, j + kw]
                ref[0, o, i, j] = acc
    close(y, ref, np.float64, 10)


def test_conv2d_noncontiguous_inputs(emu):
    x, w, b, s, p, d, g = _conv_inputs(CONV_CASES[0], np.float32)
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values
    wf = np.asfortranarray(w)
    assert not xt.flags.c_contiguous and not wf.flags.c_contiguous
    close(emu.conv2d_forward(xt, wf, b, s, p, d, g),
          emu.conv2d_forward(x, w, b, s, p, d, g), np.float32)


# ------------------------------------------------------------------ pooling

# (N, C, H, W, kernel, stride, padding)
POOL_CASES = [
    (2, 3, 7, 9, 3, 2, 1),                  # overlapping windows
    (1, 2, 8, 8, 2, 2, 0),                  # tiling windows
    (2, 2, 10, 7, (3, 2), (1, 2), (1, 1)),
    (1, 3, 17, 19, 5, 3, 2),
    (3, 5, 16, 16, 3, 1, 1),                # heavy overlap, 3840 inputs
    (2, 1, 5, 5, 4, 3, 2),                  # even kernel, padding = k/2
    (2, 3, 9, 12, 3, 3, 0),                 # tiling 3x3 windows
    (1, 2, 6, 8, (2, 4), (2, 4), 0),        # tiling rectangular windows
    (2, 2, 7, 9, 2, 2, 0),                  # kernel == stride, a row and a column left over
]


def _pool_x(case, dtype, ties, seed=0):
    N, C, H, W = case[:4]
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-2, 3, (N, C, H, W)).astype(dtype)
    return rng.standard_normal((N, C, H, W)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_matches_cpu(emu, cpu, case, dtype, ties):
    k, s, p = case[4:]
    x = _pool_x(case, dtype, ties)
    y, am = emu.max_pool2d_forward(x, k, s, p)
    ry, ram = cpu.max_pool2d_forward(x, k, s, p)
    assert am.dtype == np.int32 and am.shape == y.shape
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ram)
    gy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    gx = emu.max_pool2d_backward(gy, am, x.shape, k, s, p)
    close(gx, cpu.max_pool2d_backward(gy, ram, x.shape, k, s, p), dtype, 10)
    np.testing.assert_allclose(gx.sum(), gy.sum(), rtol=1e-3)   # every gy lands once


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_nans_match_cpu(emu, cpu, case):
    """NaN inputs (a quarter of them, so windows hold several): NaN outputs at
    the window's last NaN on both devices, as PyTorch picks it."""
    k, s, p = case[4:]
    x = _pool_x(case, np.float32, False, seed=3)
    x[np.random.default_rng(4).random(x.shape) < 0.25] = np.nan
    y, am = emu.max_pool2d_forward(x, k, s, p)
    ry, ram = cpu.max_pool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, ry)              # NaNs in the same places
    np.testing.assert_array_equal(am, ram)
    assert np.isnan(y).any()


def test_max_pool2d_argmax_first_in_row_major_order(emu):
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = x[0, 0, 2, 1] = 5.0           # a tie inside the one window
    y, am = emu.max_pool2d_forward(x, 4, 4, 0)
    assert y[0, 0, 0, 0] == 5.0 and am[0, 0, 0, 0] == 1 * 4 + 2
    # padding acts as -inf: an all-negative window never picks the padding
    xn = -np.ones((1, 1, 3, 3), np.float64) - np.arange(9.0).reshape(1, 1, 3, 3)
    y, am = emu.max_pool2d_forward(xn, 3, 1, 1)
    assert y[0, 0, 0, 0] == -1.0 and am[0, 0, 0, 0] == 0
    assert y[0, 0, 2, 2] == -5.0 and am[0, 0, 2, 2] == 4
    # overlapping windows sharing one maximum: its gradient is their sum
    gx = emu.max_pool2d_backward(np.ones((1, 1, 3, 3)), am, xn.shape, 3, 1, 1)
    assert gx[0, 0, 0, 0] == 4.0 and gx.sum() == 9.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cip", [True, False], ids=["include_pad", "exclude_pad"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_matches_cpu(emu, cpu, case, dtype, cip):
    k, s, p = case[4:]
    x = _pool_x(case, dtype, False)
    y = emu.avg_pool2d_forward(x, k, s, p, cip)
    close(y, cpu.avg_pool2d_forward(x, k, s, p, cip), dtype)
    gy = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
    gx = emu.avg_pool2d_backward(gy, x.shape, k, s, p, cip)
    close(gx, cpu.avg_pool2d_backward(gy, x.shape, k, s, p, cip), dtype)


def test_avg_pool2d_count_include_pad_semantics(emu):
    x = np.ones((1, 1, 3, 3))
    inc = emu.avg_pool2d_forward(x, 3, 1, 1, True)
    exc = emu.avg_pool2d_forward(x, 3, 1, 1, False)
    assert inc[0, 0, 0, 0] == pytest.approx(4 / 9) and inc[0, 0, 1, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(exc, 1.0, rtol=1e-12)
    # backward of the excluding mean at the corner: windows (0,0),(0,1),(1,0),(1,1)
    gx = emu.avg_pool2d_backward(np.ones((1, 1, 3, 3)), x.shape, 3, 1, 1, False)
    assert gx[0, 0, 0, 0] == pytest.approx(1 / 4 + 1 / 6 + 1 / 6 + 1 / 9)


# ------------------------------------------------------------------ softmax cross-entropy

def _xent_ref(z, y, eps):
    z = z.astype(np.float64)
    lse = scipy.special.logsumexp(z, axis=1)
    zy = z[np.arange(len(y)), y]
    return (1 - eps) * (lse - zy) + eps * (lse - z.mean(1)), lse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,C", [(1, 1), (5, 3), (7, 10), (3, 33), (4, 257), (37, 1000)])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_softmax_xent_matches_cpu(emu, cpu, N, C, eps, dtype):
    rng = np.random.default_rng(N * 1000 + C)
    z = (3 * rng.standard_normal((N, C))).astype(dtype)
    y = rng.integers(0, C, N)
    loss, lse = emu.softmax_cross_entropy_forward(z, y, eps)
    rloss, rlse = cpu.softmax_cross_entropy_forward(z, y, eps)
    close(loss, rloss, dtype, 10)
    close(lse, rlse, dtype, 10)
    gloss = rng.standard_normal(N).astype(dtype)
    g = emu.softmax_cross_entropy_backward(z, y, lse, gloss, eps)
    close(g, cpu.softmax_cross_entropy_backward(z, y, rlse, gloss, eps), dtype)
    # the row sums of the gradient vanish; the loss matches an independent formula
    np.testing.assert_allclose(g.sum(1), 0, atol=1e-5 if dtype == np.float32 else 1e-12)
    rl, _ = _xent_ref(z, y, eps)
    np.testing.assert_allclose(loss, rl, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset,scale", [(1e4, 1.0), (-1e4, 1.0), (0.0, 1e3), (500.0, 50.0)])
def test_softmax_xent_large_logits(emu, cpu, dtype, offset, scale):
    rng = np.random.default_rng(7)
    N, C = 9, 70
    z = (offset + scale * rng.standard_normal((N, C))).astype(dtype)
    y = rng.integers(0, C, N).astype(np.int32)               # int32 labels are cast
    for eps in (0.0, 0.2):
        loss, lse = emu.softmax_cross_entropy_forward(z, y, eps)
        assert np.isfinite(loss).all() and np.isfinite(lse).all()
        rloss, rlse = cpu.softmax_cross_entropy_forward(z, y, eps)
        ulp = np.finfo(dtype).eps * (abs(offset) + 5 * scale)   # rounding of z itself
        np.testing.assert_allclose(lse, rlse, rtol=TOL[dtype]["rtol"], atol=8 * ulp)
        np.testing.assert_allclose(loss, rloss, rtol=TOL[dtype]["rtol"] * 10, atol=64 * ulp)
        gloss = np.ones(N, dtype)
        g = emu.softmax_cross_entropy_backward(z, y, lse, gloss, eps)
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, cpu.softmax_cross_entropy_backward(z, y, rlse, gloss, eps),
                                   rtol=TOL[dtype]["rtol"] * 10, atol=8 * ulp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_gradient_stays_accurate_for_large_logits(emu, cpu, dtype):
    """Large logits of several classes near the top: the softmax is not one-hot, and a
    rounded lse would put exp(z - lse) off by ~1e-3 in float32; both backends renormalise."""
    z = np.array([[10000, 10001, 10002], [-5000, -5001, -5000.5], [1, 2, 3]], dtype)
    y = np.array([0, 2, 1])
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(1, keepdims=True))
    want = p / p.sum(1, keepdims=True) - np.eye(3)[y]
    for be in (emu, cpu):
        _, lse = be.softmax_cross_entropy_forward(z, y, 0.0)
        g = be.softmax_cross_entropy_backward(z, y, lse, np.ones(3, dtype), 0.0)
        np.testing.assert_allclose(g, want, rtol=0, atol=4 * np.finfo(dtype).eps)


def test_softmax_xent_minus_infinity_logit_without_smoothing(emu, cpu):
    z = np.array([[0.0, -np.inf, 1.0]])
    y = np.array([0])
    for be in (emu, cpu):
        loss, _ = be.softmax_cross_entropy_forward(z, y, 0.0)
        np.testing.assert_allclose(loss, [np.log1p(np.e)], rtol=1e-12)   # not 0 * inf = NaN


@pytest.mark.parametrize("z,label", [([[3e38, 3e38, 0.0]], 2), ([[3e38, 3e38, -np.inf]], 0),
                                     ([[3e38, -3e38, 0.0]], 0)])
def test_softmax_xent_smoothing_next_to_overflowing_logits(emu, cpu, z, label):
    """The smoothing term is the mean of max - z_j (the mean of the logits
    themselves overflowed: a loss of -inf once), and the CPU says nothing."""
    import warnings
    z = np.array(z, np.float32)
    lab = np.array([label])
    with np.errstate(all="ignore"):
        want = emu.softmax_cross_entropy_forward(z, lab, 0.1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = cpu.softmax_cross_entropy_forward(z, lab, 0.1)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] > 0


def test_max_pool_backward_of_non_finite_gradients_goes_to_the_argmax_alone(emu, cpu):
    """Windows that tile the input: a NaN or inf gradient reaches its argmax,
    not (as 0 * NaN) the whole window."""
    x = np.array([[[[1, 2], [3, 4]]]], np.float32)
    for bad in (np.nan, np.inf):
        gy = np.full((1, 1, 1, 1), bad, np.float32)
        for be in (emu, cpu):
            _, am = be.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
            gx = be.max_pool2d_backward(gy, am, x.shape, (2, 2), (2, 2), (0, 0))
            np.testing.assert_array_equal(gx.ravel()[:3], [0, 0, 0])
            assert not np.isfinite(gx.ravel()[3])


def test_cpu_pooling_and_softmax_say_nothing_about_infinities(cpu):
    import warnings
    x = np.array([[[[3e38, 3e38], [np.inf, -np.inf]]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, am = cpu.max_pool2d_forward(x, (1, 2), (1, 2), (0, 0))
        cpu.max_pool2d_backward(np.ones_like(y), am, x.shape, (1, 2), (1, 2), (0, 0))
        cpu.avg_pool2d_backward(np.full_like(cpu.avg_pool2d_forward(x, (1, 2), (1, 2), (0, 0), True), np.inf),
                                x.shape, (1, 2), (1, 2), (0, 0), True)
        lse = cpu.softmax_cross_entropy_forward(x.reshape(2, 2), np.array([0, 1]), 0.1)[1]
        cpu.softmax_cross_entropy_backward(x.reshape(2, 2), np.array([0, 1]), lse, np.ones(2, np.float32), 0.1)


def test_softmax_xent_bad_label_gives_nan_not_a_crash(emu):
    z = np.zeros((3, 4), np.float32)
    loss, lse = emu.softmax_cross_entropy_forward(z, np.array([0, 4, -1]), 0.0)
    assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all() and np.isfinite(lse).all()


def test_empty_batches(emu):
    loss, lse = emu.softmax_cross_entropy_forward(np.zeros((0, 5), np.float32),
                                                  np.zeros(0, np.int64), 0.1)
    assert loss.shape == lse.shape == (0,)
    g = emu.softmax_cross_entropy_backward(np.zeros((0, 5)), np.zeros(0, np.int64),
                                           np.zeros(0), np.zeros(0), 0.0)
    assert g.shape == (0, 5)
    y, am = emu.max_pool2d_forward(np.zeros((0, 2, 4, 4)), 2, 2, 0)
    assert y.shape == am.shape == (0, 2, 2, 2)


# ------------------------------------------------------------------ validation before launch

def test_wrappers_reject_bad_dtypes_before_launch(strict):
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match="float32 or float64, got int32"):
        strict.conv2d_forward(x.astype(np.int32), w, None, 1, 0, 1, 1)
    with pytest.raises(TypeError, match=r"x is float32 but conv2d w is float64"):
        strict.conv2d_forward(x, w.astype(np.float64), None, 1, 0, 1, 1)
    with pytest.raises(TypeError, match="conv2d b is float64"):
        strict.conv2d_forward(x, w, np.zeros(3), 1, 0, 1, 1)
    with pytest.raises(TypeError, match="x is float32 but conv2d gy is float64"):
        strict.conv2d_backward(x, w, np.zeros((1, 3, 3, 3)), 1, 0, 1, 1)
    with pytest.raises(TypeError, match="float16"):
        strict.max_pool2d_forward(x.astype(np.float16), 2, 2, 0)
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        strict.avg_pool2d_forward(x.tolist(), 2, 2, 0, True)
    with pytest.raises(TypeError, match="argmax: expected int32, got int64"):
        strict.max_pool2d_backward(np.zeros((1, 2, 2, 2), np.float32), np.zeros((1, 2, 2, 2), np.int64),
                                   x.shape, 2, 2, 0)
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="integer array, got float32"):
        strict.softmax_cross_entropy_forward(z, np.zeros(2, np.float32), 0.0)
    with pytest.raises(TypeError, match="gloss is float64"):
        strict.softmax_cross_entropy_backward(z, np.zeros(2, np.int64), np.zeros(2, np.float32),
                                              np.zeros(2), 0.0)


def test_wrappers_reject_bad_shapes_before_launch(strict):
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ValueError, match="expects 4"):
        strict.conv2d_forward(x, np.zeros((3, 2, 3, 3), np.float32), None, 1, 0, 1, 2)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        strict.conv2d_forward(x, np.zeros((3, 2, 3, 3), np.float32), None, 1, 0, 3, 1)
    with pytest.raises(ValueError, match="gy: expected shape"):
        strict.conv2d_backward(x, np.zeros((3, 2, 3, 3), np.float32),
                               np.zeros((1, 3, 2, 2), np.float32), 1, 0, 1, 1)
    with pytest.raises(ValueError, match="at most half the kernel"):
        strict.max_pool2d_forward(x, 2, 2, 2)
    with pytest.raises(ValueError, match="gy: expected shape"):
        strict.avg_pool2d_backward(np.zeros((1, 2, 3, 3), np.float32), x.shape, 2, 2, 0, True)
    with pytest.raises(ValueError, match="labels: expected shape"):
        strict.softmax_cross_entropy_forward(np.zeros((2, 3), np.float32), np.zeros(3, np.int64), 0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        strict.softmax_cross_entropy_forward(np.zeros((2, 3), np.float32), np.zeros(2, np.int64), 1.5)
    with pytest.raises(ValueError, match="stride"):
        strict.conv2d_forward(x, np.zeros((3, 2, 3, 3), np.float32), None, 0, 0, 1, 1)


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, filename):
        rec = self

        class Mod:
            def get_function(self, name):
                def fn(grid, block, args, shared_mem=0):
                    rec.calls.append((name, grid, block, args))
                return fn
        return Mod()


def test_launch_rejects_views_and_python_numbers():
    rec = _Recorder()
    a = np.zeros((4, 6), np.float32)
    ok = (a, np.int32(3), np.float32(1.0))
    cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (256,), ok)
    assert len(rec.calls) == 1
    with pytest.raises(cupy_backend.KernelArgumentError, match="C-contiguous"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (256,), (a.T, np.int32(3)))
    with pytest.raises(cupy_backend.KernelArgumentError, match="C-contiguous"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (256,), (a[:, ::2],))
    with pytest.raises(TypeError, match="Python number"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (256,), (a, 3))
    with pytest.raises(TypeError, match="Python number"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (256,), (a, 1.0))
    with pytest.raises(TypeError, match="dtype float16"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (256,), (a.astype(np.float16),))
    with pytest.raises(cupy_backend.KernelArgumentError, match="grid"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (0,), (256,), ok)
    with pytest.raises(cupy_backend.KernelArgumentError, match="1024 threads"):
        cupy_backend.launch(np, rec, "x.cu", "k_f32", (1,), (64, 32), ok)
    assert len(rec.calls) == 1


def test_wrappers_launch_with_exact_types_and_explicit_grid():
    rec = _Recorder()
    b = cupy_backend.make_backend(np, rec, scipy.special, "rec")
    x = np.zeros((2, 3, 33, 17), np.float64)[:, :, ::2, :]      # a view: made contiguous first
    b.max_pool2d_forward(x, 3, 2, 1)
    b.avg_pool2d_forward(x.astype(np.float32), 3, 2, 1, False)
    b.softmax_cross_entropy_forward(np.zeros((5, 300), np.float32), np.zeros(5, np.int32), 0.1)
    b.softmax_cross_entropy_backward(np.zeros((5, 40)), np.zeros(5, np.int32), np.zeros(5), np.zeros(5), 0.1)
    names = [c[0] for c in rec.calls]
    assert names == ["max_pool2d_forward_f64", "avg_pool2d_forward_f32",
                     "softmax_cross_entropy_forward_f32", "softmax_cross_entropy_backward_f64"]
    n_out = 2 * 3 * 9 * 9
    assert rec.calls[0][1] == (-(-n_out // 256),) and rec.calls[0][2] == (256,)
    assert rec.calls[2][1] == (5,) and rec.calls[2][2] == (256,)
    assert rec.calls[3][1] == (5,) and rec.calls[3][2] == (64,)        # one block per row, too
    for name, grid, block, args in rec.calls:
        for a in args:
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous or \
                type(a) in (np.int32, np.float32, np.float64), (name, a)
        scalars = [type(a) for a in args if not isinstance(a, np.ndarray)]
        want = np.float64 if name.endswith("f64") else np.float32
        assert all(t in (np.int32, want) for t in scalars), (name, scalars)
    assert rec.calls[2][3][1].dtype == np.int64                # labels were widened


# ------------------------------------------------------------------ plumbing and sources

def test_namespace_is_exactly_the_backend_api():
    b = cupy_backend.make_backend(np, _NoLaunch(), scipy.special, "emulated")
    assert set(vars(b)) == set(BACKEND_API)
    assert b.name == "emulated" and b.xp is np
    a = b.asarray([1, 2], dtype=np.float32)
    assert b.is_array(a) and not b.is_array([1, 2]) and a.dtype == np.float32
    assert isinstance(b.to_numpy(a), np.ndarray)
    np.testing.assert_allclose(b.erf(np.array([0.0, 1.0])), [0.0, 0.8427007929497149])
    np.testing.assert_array_equal(b.relu(np.array([-1.0, 0.0, 2.5, np.nan])), [0.0, 0.0, 2.5, np.nan])
    assert b.default_rng(0).standard_normal(3).shape == (3,)
    np.testing.assert_array_equal(b.from_dlpack(a), a)
    assert b.synchronize() is None


def test_signatures_match_the_cpu_backend(cpu):
    import inspect
    b = cupy_backend.make_backend(np, _NoLaunch(), scipy.special, "emulated")
    for n in BACKEND_API:
        if callable(getattr(cpu, n)) and n != "xp":
            assert inspect.signature(getattr(b, n)) == inspect.signature(getattr(cpu, n)), n


def test_cupy_backend_imports_without_cupy():
    code = ("import sys; sys.modules['cupy'] = None; sys.modules['cupyx'] = None\n"
            "import gpudl.backend.cupy_backend, gpudl.backend.kernels\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_kernel_sources_found_and_named():
    d = kernel_dir()
    files = sorted(f for f in os.listdir(d) if f.endswith(".cu"))
    assert {"conv2d.cu", "pool2d.cu", "softmax_xent.cu"} <= set(files)
    with pytest.raises(ValueError):
        read_source("../pyproject.toml")
    with pytest.raises(FileNotFoundError, match="nope.cu"):
        read_source("nope.cu")
    for f in files:
        names = re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', read_source(f))
        assert names, f
        stems = {n[:-4] for n in names}
        assert all(n.endswith(("_f32", "_f64")) for n in names), names
        assert names and {s + "_f32" for s in stems} | {s + "_f64" for s in stems} == set(names)
        assert not re.search(r"\batomic\w*\s*\(", read_source(f))  # backward passes are gathers


def test_cupy_loader_names_the_file_on_compile_error(monkeypatch):
    from gpudl.backend import kernels

    class CompileException(Exception):
        def get_message(self):
            return "conv2d.cu(3): error: identifier \"oops\" is undefined"

    class RawModule:
        made = []

        def __init__(self, code, options):
            RawModule.made.append((code, options))

        def compile(self):
            if "broken" in RawModule.made[-1][0]:
                raise CompileException()

    class Device:
        def __init__(self, i):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    fake = types.SimpleNamespace(RawModule=RawModule, cuda=types.SimpleNamespace(
        Device=Device, compiler=types.SimpleNamespace(CompileException=CompileException)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    get_module = kernels.cupy_module_loader(0)
    m = get_module("pool2d.cu")
    assert get_module("pool2d.cu") is m and len(RawModule.made) == 1   # compiled once
    code, options = RawModule.made[0]
    assert options == (f"-I{kernel_dir()}", "--std=c++17")
    assert code.endswith(read_source("pool2d.cu"))
    monkeypatch.setattr(kernels, "read_source", lambda f: "broken")
    with pytest.raises(KernelCompileError, match=r"(?s)'softmax_xent.cu'.*identifier \"oops\""):
        get_module("softmax_xent.cu")


@pytest.mark.parametrize("filename", sorted(f for f in os.listdir(kernel_dir()) if f.endswith(".cu")))
def test_nvcc_compiles_for_sm90(filename, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH, so the sources were not compiled for sm_90")
    r = subprocess.run([nvcc, "-arch=sm_90", "--ptx", "-I", kernel_dir(),
                        os.path.join(kernel_dir(), filename), "-o", str(tmp_path / "k.ptx")],
                       capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})  # ASan runs
    assert r.returncode == 0, f"nvcc failed on {filename}:\n{r.stdout}\n{r.stderr}"
    ptx = (tmp_path / "k.ptx").read_text()
    assert ".entry" in ptx


def test_wrappers_refuse_missing_required_arrays_and_take_empty_convs(emu, cpu):
    p = np.ones((3, 2))
    with pytest.raises(ValueError, match="needs both moment arrays m and v"):
        emu.adam_update(p, p.copy(), None, p.copy(), None, 0.1, 0.9, 0.99, 1e-8, 0.0, False, False, 1)
    g = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"invstd: expected an array of shape \(3,\), got None"):
        emu.batch_norm_backward(g, g.copy(), None, None, True)
    x, w = np.ones((2, 2, 5, 5)), np.ones((0, 2, 3, 3))
    for be in (emu, cpu):
        y = be.conv2d_forward(x, w, None, (1, 1), (0, 0), (1, 1), 1)
        assert y.shape == (2, 0, 3, 3)
        gx, gw, gb = be.conv2d_backward(x, w, y, (1, 1), (0, 0), (1, 1), 1)
        assert gx.shape == x.shape and not gx.any() and gw.shape == w.shape and gb.shape == (0,)


def test_pool_backward_with_a_stride_near_the_int32_limit(emu, cpu):
    """gd_window_range's ceil(a / s) once overflowed for s near 2^31: gradient spilled outside the window."""
    x = np.random.default_rng(3).standard_normal((1, 2, 10, 10)).astype(np.float32)
    s = 2 ** 31 - 1
    y, arg = cpu.max_pool2d_forward(x, (3, 3), (s, s), (0, 0))
    gy = np.ones_like(y)
    for be in (emu, cpu):
        np.testing.assert_array_equal(be.avg_pool2d_backward(gy, x.shape, (3, 3), (s, s), (0, 0), True),
                                      cpu.avg_pool2d_backward(gy, x.shape, (3, 3), (s, s), (0, 0), True))
        np.testing.assert_array_equal(be.max_pool2d_backward(gy, arg, x.shape, (3, 3), (s, s), (0, 0)),
                                      cpu.max_pool2d_backward(gy, arg, x.shape, (3, 3), (s, s), (0, 0)))


def test_pooling_refuses_an_empty_plane(emu):
    with pytest.raises(ValueError, match="non-zero size"):
        emu.max_pool2d_forward(np.zeros((1, 1, 0, 4), np.float32), (2, 2), (2, 2), (1, 1))
