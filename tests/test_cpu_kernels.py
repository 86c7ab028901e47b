"""The CPU backend's kernel-level functions, called directly (numpy in, numpy out).

Forward passes are checked against slow, obviously-correct references written
here with explicit loops; backward passes against float64 central
differences of the forward; dtypes, strides and edge cases by hand.
"""
import importlib.util
import itertools
import os
import pathlib
import sys

import numpy as np
import pytest

try:
    from gpudl.backend import _cpu_kernels as K
except Exception:  # the package around it may be mid-edit: load the file itself
    _path = pathlib.Path(__file__).resolve().parents[1] / "gpudl" / "backend" / "_cpu_kernels.py"
    _spec = importlib.util.spec_from_file_location("_gpudl_cpu_kernels", _path)
    K = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(K)


def rng(seed=0):
    return np.random.default_rng(seed)


# Every test here runs twice: on the native kernels (kernels/cpu_native.c,
# where they are used) and on the NumPy path that stands in where they
# cannot be built.  test_native_kernels_build_where_a_compiler_is makes sure
# the first does not skip silently.
@pytest.fixture(autouse=True, params=["native", "numpy"])
def cpu_path(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(K, "_native_fn", lambda name, dt: None)
    elif K._native.lib() is None:
        pytest.skip("native kernels not built here: " + K._native.status())
    return request.param


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---------------------------------------------------------------------------
# references

def ref_conv2d(x, w, b, stride, padding, dilation, groups):
    """Direct definition: one dot product per output element."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kH, kW = w.shape
    Og = O // groups
    Ho = (H + 2 * ph - dh * (kH - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kW - 1) - 1) // sw + 1
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), np.float64)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    y = np.zeros((N, O, Ho, Wo), np.float64)
    for o in range(O):
        g = o // Og
        for i in range(Ho):
            for j in range(Wo):
                patch = xp[:, g * Cg:(g + 1) * Cg,
                           i * sh:i * sh + dh * (kH - 1) + 1:dh,
                           j * sw:j * sw + dw * (kW - 1) + 1:dw]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
        if b is not None:
            y[:, o] += b[o]
    return y


def ref_pool(x, kernel, stride, padding, op):
    """Loops over every window; padding is -inf for max, 0 for avg.

    op: "max" -> (y, argmax), "avg_incl" / "avg_excl" -> y."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    N, C, H, W = x.shape
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, C, Ho, Wo))
    arg = np.zeros((N, C, Ho, Wo), np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best, besti, total, count = -np.inf, None, 0.0, 0
                    for a in range(kh):
                        for bb in range(kw):
                            h, w_ = i * sh - ph + a, j * sw - pw + bb
                            inside = 0 <= h < H and 0 <= w_ < W
                            v = x[n, c, h, w_] if inside else (-np.inf if op == "max" else 0.0)
                            if inside and besti is None:
                                besti = h * W + w_
                            if v > best:
                                best, besti = v, h * W + w_
                            total += v if inside else 0.0
                            count += inside
                    if op == "max":
                        y[n, c, i, j], arg[n, c, i, j] = best, besti
                    elif op == "avg_incl":
                        y[n, c, i, j] = total / (kh * kw)
                    else:
                        y[n, c, i, j] = total / count
    return (y, arg) if op == "max" else y


def numeric_grad(f, a, eps=1e-6):
    """Central differences of the scalar f() with respect to array a (in place)."""
    g = np.zeros_like(a, dtype=np.float64)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


# ---------------------------------------------------------------------------
# convolution

# (N, C, H, W, O, k, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 7, 7, 4, 3, 1, 1, 1, 1),
    (2, 3, 8, 9, 5, 3, 1, 0, 1, 1),
    (1, 4, 9, 7, 6, (3, 2), (2, 1), (1, 0), 1, 1),
    (2, 4, 8, 8, 6, 3, 2, 1, 1, 2),            # groups=2, stride 2
    (2, 6, 7, 9, 6, 3, 1, 1, 1, 6),            # depthwise
    (1, 4, 6, 6, 8, 3, 1, 1, 1, 4),            # depthwise, channel multiplier 2
    (2, 3, 10, 9, 4, 3, 1, 2, 2, 1),           # dilation 2
    (1, 4, 11, 10, 4, (3, 2), (2, 3), (2, 1), (2, 3), 2),
    (2, 3, 11, 10, 5, 5, 3, 2, 1, 1),          # 5x5, stride 3
    (2, 5, 7, 5, 3, 1, 1, 0, 1, 1),            # 1x1
    (2, 5, 7, 5, 3, 1, 2, 0, 1, 1),            # 1x1 stride 2, odd size
    (1, 2, 5, 5, 3, 1, 1, 1, 1, 1),            # 1x1 with padding
    (2, 20, 6, 5, 18, 3, 1, 1, 1, 1),          # many channels: the shifted-GEMM path
    (1, 32, 7, 8, 16, 3, 2, 1, 1, 2),          # shifted GEMM, groups, stride
    (1, 16, 5, 6, 8, 2, 3, 0, 1, 1),           # stride larger than the kernel
    (2, 1, 4, 4, 2, 4, 1, 0, 1, 1),            # kernel the size of the input
    (1, 2, 3, 3, 2, 3, 1, 3, 1, 1),            # padding larger than the kernel
]


def _conv_args(case, seed=0, dtype=np.float64):
    N, C, H, W, O, k, s, p, d, G = case
    kH, kW = pair(k)
    r = rng(seed)
    x = r.standard_normal((N, C, H, W)).astype(dtype)
    w = r.standard_normal((O, C // G, kH, kW)).astype(dtype)
    b = r.standard_normal(O).astype(dtype)
    return x, w, b, pair(s), pair(p), pair(d), G


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_forward_matches_reference(case):
    x, w, b, s, p, d, G = _conv_args(case)
    y = K.conv2d_forward(x, w, b, s, p, d, G)
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, s, p, d, G), rtol=1e-10, atol=1e-10)
    y0 = K.conv2d_forward(x, w, None, s, p, d, G)
    np.testing.assert_allclose(y0, ref_conv2d(x, w, None, s, p, d, G), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_backward_adjoint(case):
    """<conv(x, w), gy> is bilinear: its gradients must reproduce it exactly."""
    x, w, b, s, p, d, G = _conv_args(case, seed=1)
    y = K.conv2d_forward(x, w, None, s, p, d, G)
    gy = rng(2).standard_normal(y.shape)
    gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    inner = float((y * gy).sum())
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    np.testing.assert_allclose((gx * x).sum(), inner, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose((gw * w).sum(), inner, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


def _random_conv_cases(n, seed):
    r = rng(seed)
    cases = []
    while len(cases) < n:
        kH, kW = (int(v) for v in r.integers(1, 5, 2))
        sh, sw = (int(v) for v in r.integers(1, 4, 2))
        dh, dw = (int(v) for v in r.integers(1, 3, 2))
        ph, pw = (int(v) for v in r.integers(0, 4, 2))
        G = int(r.choice([1, 1, 2, 3]))
        Cg, Og = int(r.integers(1, 7)), int(r.integers(1, 4))   # both GEMM paths
        H, W = (int(v) for v in r.integers(1, 10, 2))
        if H + 2 * ph < dh * (kH - 1) + 1 or W + 2 * pw < dw * (kW - 1) + 1:
            continue
        cases.append((int(r.integers(1, 3)), Cg * G, H, W, Og * G, (kH, kW),
                      (sh, sw), (ph, pw), (dh, dw), G))
    return cases


@pytest.mark.parametrize("case", _random_conv_cases(40, seed=123), ids=str)
def test_conv2d_random_geometries(case, poisoned):
    """Odd corners: padding wider than the kernel's reach, 1-pixel inputs,
    strides past the kernel, mixed per-axis settings."""
    x, w, b, s, p, d, G = _conv_args(case, seed=21)
    y = K.conv2d_forward(x, w, b, s, p, d, G)
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, s, p, d, G), rtol=1e-10, atol=1e-10)
    gy = rng(22).standard_normal(y.shape)
    gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    inner = float((K.conv2d_forward(x, w, None, s, p, d, G) * gy).sum())
    np.testing.assert_allclose((gx * x).sum(), inner, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose((gw * w).sum(), inner, rtol=1e-10, atol=1e-9)
    # gx element by element: the adjoint identity holds for each basis input
    e = np.zeros_like(x)
    flat = e.reshape(-1)
    for i in rng(23).choice(x.size, size=min(x.size, 5), replace=False):
        flat[i] = 1.0
        want = float((K.conv2d_forward(e, w, None, s, p, d, G) * gy).sum())
        np.testing.assert_allclose(gx.reshape(-1)[i], want, rtol=1e-10, atol=1e-10)
        flat[i] = 0.0


GRAD_CASES = [
    (1, 2, 5, 4, 3, 3, 1, 1, 1, 1),
    (2, 4, 5, 5, 4, 3, 2, 1, 1, 2),
    (1, 3, 6, 5, 3, 3, 1, 1, 2, 3),
    (1, 2, 5, 6, 2, (2, 3), (2, 1), (0, 1), 1, 1),
    (1, 18, 4, 4, 2, 3, 1, 1, 1, 1),           # shifted-GEMM path
    (1, 3, 5, 5, 2, 1, 2, 0, 1, 1),            # 1x1 stride 2: gx is zero off the grid
    (2, 6, 7, 6, 2, (4, 3), 1, 0, 1, 1),       # columns over the output lines only
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_conv2d_backward_numeric(case):
    x, w, b, s, p, d, G = _conv_args(case, seed=3)
    y = K.conv2d_forward(x, w, b, s, p, d, G)
    gy = rng(4).standard_normal(y.shape)

    def f():
        return float((K.conv2d_forward(x, w, b, s, p, d, G) * gy).sum())

    gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    np.testing.assert_allclose(gx, numeric_grad(f, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_grad(f, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_grad(f, b), rtol=1e-6, atol=1e-7)


# LeNet's second conv, small: columns over each image's first Lo lines only
VALID_COLS_CASE = (2, 6, 8, 8, 4, (5, 5), 1, 0, 1, 1)


@pytest.mark.parametrize("case", [CONV_CASES[0], VALID_COLS_CASE], ids=str)
def test_conv2d_backward_need_flags(case):
    x, w, b, s, p, d, G = _conv_args(case)
    gy = rng(5).standard_normal(K.conv2d_forward(x, w, b, s, p, d, G).shape)
    full = K.conv2d_backward(x, w, gy, s, p, d, G)
    for need in itertools.product([False, True], repeat=3):
        got = K.conv2d_backward(x, w, gy, s, p, d, G, need=need)
        for want, g, ref in zip(need, got, full):
            if want:
                np.testing.assert_array_equal(g, ref)
            else:
                assert g is None


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[3], CONV_CASES[4],
                                  CONV_CASES[12], CONV_CASES[13]], ids=str)
def test_conv2d_float32_stays_float32(case):
    x, w, b, s, p, d, G = _conv_args(case, dtype=np.float32)
    y = K.conv2d_forward(x, w, b, s, p, d, G)
    assert y.dtype == np.float32
    ref = ref_conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p, d, G)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    gy = rng(6).standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    assert gx.dtype == gw.dtype == gb.dtype == np.float32
    gx64, gw64, gb64 = K.conv2d_backward(x.astype(np.float64), w.astype(np.float64),
                                         gy.astype(np.float64), s, p, d, G)
    np.testing.assert_allclose(gx, gx64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, gw64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, gb64, rtol=1e-4, atol=1e-4)


def test_conv2d_non_contiguous_inputs():
    x, w, b, s, p, d, G = _conv_args(CONV_CASES[12])
    # the same values through transposed / strided views
    xs = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    ws = np.asfortranarray(w)
    big = np.zeros((b.size, 3))
    big[:, 1] = b
    bs = big[:, 1]
    assert not xs.flags.c_contiguous and not ws.flags.c_contiguous and not bs.flags.c_contiguous
    y = K.conv2d_forward(xs, ws, bs, s, p, d, G)
    np.testing.assert_allclose(y, K.conv2d_forward(x, w, b, s, p, d, G), rtol=1e-12, atol=1e-12)
    gy = rng(7).standard_normal(y.shape)
    gys = gy[:, ::-1][:, ::-1]          # a view with negative strides, same values
    for got, want in zip(K.conv2d_backward(xs, ws, gys, s, p, d, G),
                         K.conv2d_backward(x, w, gy, s, p, d, G)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_larger_float32_against_float64():
    """A size where the BLAS paths run with many rows; float32 within tolerance."""
    r = rng(8)
    x = r.standard_normal((4, 32, 12, 12)).astype(np.float32)
    w = (r.standard_normal((16, 32, 3, 3)) * 0.1).astype(np.float32)
    b = r.standard_normal(16).astype(np.float32)
    y = K.conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    y64 = K.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                           (1, 1), (1, 1), (1, 1), 1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-4)
    # a spot check of the float64 result against the definition
    np.testing.assert_allclose(
        y64[:1], ref_conv2d(x[:1].astype(np.float64), w.astype(np.float64),
                            b.astype(np.float64), 1, 1, 1, 1), rtol=1e-10, atol=1e-10)


@pytest.fixture(params=[None, (4096, 1), (1024, 4)],
                ids=["one-cpu-plain-blas", "cut-rows", "cut-rows-and-columns"])
def threaded(monkeypatch, request):
    """The GEMM strategies on tiny inputs: one CPU (plain BLAS calls, no
    threads), or the thread-pool paths (cut GEMMs, split copies) forced, with
    pieces small enough that uneven remainders occur everywhere; the third
    setting also cuts the GEMMs' columns (as for wide layers)."""
    if request.param is None:
        monkeypatch.setattr(K, "_NCPU", 1)
        return
    small, min_chunk = request.param
    monkeypatch.setattr(K, "_NCPU", max(2, K._NCPU))
    monkeypatch.setattr(K, "_SMALL_MNK", small)
    monkeypatch.setattr(K, "_MIN_CHUNK", min_chunk)
    monkeypatch.setattr(K, "_POOL_MIN_MNK", 0)
    monkeypatch.setattr(K, "_POOL_SPLIT_MIN", 0)
    monkeypatch.setattr(K, "_BLOCK_ELEMS", 64)


class _PoisonedNumpy:
    """numpy, except that ``empty`` / ``empty_like`` hand out garbage (NaN, or
    a huge integer): any element the kernels forget to write shows up."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def _poison(a):
        if a.dtype.kind in "fc":
            a.fill(np.nan)
        elif a.dtype.kind in "iu":
            a.fill(np.iinfo(a.dtype).max // 3)
        return a

    def empty(self, *args, **kwargs):
        return self._poison(np.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return self._poison(np.empty_like(*args, **kwargs))


@pytest.fixture
def poisoned(monkeypatch):
    monkeypatch.setattr(K, "np", _PoisonedNumpy())


@pytest.mark.parametrize("case", CONV_CASES + _random_conv_cases(12, seed=7), ids=str)
def test_conv2d_threaded_paths_agree(case, threaded, poisoned):
    x, w, b, s, p, d, G = _conv_args(case, seed=9)
    y = K.conv2d_forward(x, w, b, s, p, d, G)
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, s, p, d, G), rtol=1e-10, atol=1e-10)
    gy = rng(10).standard_normal(y.shape)
    gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    inner = float((K.conv2d_forward(x, w, None, s, p, d, G) * gy).sum())
    np.testing.assert_allclose((gx * x).sum(), inner, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose((gw * w).sum(), inner, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", GRAD_CASES[:3], ids=str)
def test_conv2d_threaded_backward_numeric(case, threaded):
    x, w, b, s, p, d, G = _conv_args(case, seed=11)
    gy = rng(12).standard_normal(K.conv2d_forward(x, w, b, s, p, d, G).shape)

    def f():
        return float((K.conv2d_forward(x, w, b, s, p, d, G) * gy).sum())

    gx, gw, _ = K.conv2d_backward(x, w, gy, s, p, d, G)
    np.testing.assert_allclose(gx, numeric_grad(f, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_grad(f, w), rtol=1e-6, atol=1e-7)


def test_pooling_threaded_paths_agree(threaded, poisoned):
    x = rng(13).standard_normal((5, 3, 8, 9))
    for k, s, p in [(2, 2, 0), (3, 2, 1), (2, 1, 0)]:
        y, arg = K.max_pool2d_forward(x, pair(k), pair(s), pair(p))
        ry, rarg = ref_pool(x, k, s, p, "max")
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(arg, rarg)
        gy = rng(14).standard_normal(y.shape)
        gx = K.max_pool2d_backward(gy, arg, x.shape, pair(k), pair(s), pair(p))
        want = np.zeros(x.shape)
        for n, c in itertools.product(range(5), range(3)):
            np.add.at(want[n, c].reshape(-1), arg[n, c].reshape(-1), gy[n, c].reshape(-1))
        np.testing.assert_allclose(gx, want, rtol=1e-12, atol=1e-12)
        for incl in (True, False):
            ya = K.avg_pool2d_forward(x, pair(k), pair(s), pair(p), incl)
            np.testing.assert_allclose(ya, ref_pool(x, k, s, p, "avg_incl" if incl else "avg_excl"),
                                       rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# max pooling

# (shape, kernel, stride, padding)
POOL_CASES = [
    ((2, 3, 8, 8), 2, 2, 0),
    ((2, 2, 9, 7), 2, 2, 0),          # odd sizes: the last row / column is dropped
    ((1, 2, 9, 8), 3, 2, 1),          # overlapping windows, padding
    ((1, 3, 7, 7), 3, 1, 1),
    ((2, 1, 6, 7), (3, 2), (1, 2), (1, 0)),
    ((1, 2, 8, 8), 2, 3, 1),          # stride larger than the window
    ((1, 1, 5, 5), 5, 1, 2),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_forward_matches_reference(case, dtype):
    shape, k, s, p = case
    x = rng(10).standard_normal(shape).astype(dtype)
    y, arg = K.max_pool2d_forward(x, pair(k), pair(s), pair(p))
    ry, rarg = ref_pool(x, k, s, p, "max")
    assert y.dtype == dtype and arg.dtype == np.int32 and arg.shape == y.shape
    np.testing.assert_array_equal(y, ry.astype(dtype))
    np.testing.assert_array_equal(arg, rarg)


def test_max_pool2d_ties_first_maximum_wins():
    # integer-valued data with many ties, including ties across overlapping windows
    x = rng(11).integers(0, 3, size=(2, 3, 9, 9)).astype(np.float32)
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)]:
        y, arg = K.max_pool2d_forward(x, pair(k), pair(s), pair(p))
        ry, rarg = ref_pool(x, k, s, p, "max")
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(arg, rarg)
    # all equal: every window points at its top-left (in-bounds) element
    ones = np.ones((1, 1, 4, 4), np.float32)
    _, arg = K.max_pool2d_forward(ones, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(arg[0, 0], [[0, 2], [8, 10]])
    _, arg = K.max_pool2d_forward(ones, (3, 3), (2, 2), (1, 1))
    np.testing.assert_array_equal(arg[0, 0], [[0, 1], [4, 5]])


def test_max_pool2d_padding_is_minus_infinity():
    x = -np.full((1, 1, 3, 3), 5.0)
    x[0, 0, 1, 1] = -7.0
    y, arg = K.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1))
    np.testing.assert_array_equal(y[0, 0], [[-5, -5], [-5, -5]])   # never the zero of padding
    # windows: {(0,0)}, {(0,1),(0,2)}, {(1,0),(2,0)}, {(1,1)=-7,(1,2),(2,1),(2,2)}
    np.testing.assert_array_equal(arg[0, 0], [[0, 1], [3, 5]])
    # a window whose values are all -inf still points in bounds, at its first element
    x = np.full((1, 1, 2, 2), -np.inf)
    y, arg = K.max_pool2d_forward(x, (2, 2), (1, 1), (1, 1))
    assert np.all(np.isneginf(y))
    assert arg.min() >= 0 and arg.max() < 4
    np.testing.assert_array_equal(arg[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool2d_backward(case):
    shape, k, s, p = case
    x = rng(12).standard_normal(shape)            # distinct values: differentiable
    y, arg = K.max_pool2d_forward(x, pair(k), pair(s), pair(p))
    gy = rng(13).standard_normal(y.shape)
    gx = K.max_pool2d_backward(gy, arg, x.shape, pair(k), pair(s), pair(p))
    assert gx.shape == x.shape and gx.dtype == np.float64

    def f():
        return float((K.max_pool2d_forward(x, pair(k), pair(s), pair(p))[0] * gy).sum())

    np.testing.assert_allclose(gx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    # the same from an explicit scatter-add (overlapping windows accumulate)
    want = np.zeros(x.shape)
    N, C = shape[:2]
    for n, c in itertools.product(range(N), range(C)):
        np.add.at(want[n, c].reshape(-1), arg[n, c].reshape(-1), gy[n, c].reshape(-1))
    np.testing.assert_allclose(gx, want, rtol=1e-12, atol=1e-12)


def test_max_pool2d_overlapping_windows_accumulate():
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 1.0                           # the maximum of all four 2x2 windows
    y, arg = K.max_pool2d_forward(x, (2, 2), (1, 1), (0, 0))
    np.testing.assert_array_equal(arg[0, 0], [[4, 4], [4, 4]])
    gy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    gx = K.max_pool2d_backward(gy, arg, x.shape, (2, 2), (1, 1), (0, 0))
    assert gx.dtype == np.float32
    want = np.zeros((3, 3), np.float32)
    want[1, 1] = 10.0
    np.testing.assert_array_equal(gx[0, 0], want)


def test_max_pool2d_non_contiguous_and_float32():
    x = rng(14).standard_normal((2, 8, 6, 4)).astype(np.float32)
    xs = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    y, arg = K.max_pool2d_forward(xs, (2, 2), (2, 2), (0, 0))
    y2, arg2 = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(arg, arg2)
    gy = rng(15).standard_normal(y.shape).astype(np.float32)
    gx = K.max_pool2d_backward(gy.T.copy().T, arg.T.copy().T, x.shape, (2, 2), (2, 2), (0, 0))
    assert gx.dtype == np.float32 and gx.flags.c_contiguous
    np.testing.assert_array_equal(gx, K.max_pool2d_backward(gy, arg, x.shape, (2, 2), (2, 2), (0, 0)))


# ---------------------------------------------------------------------------
# average pooling

@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool2d(case, include):
    shape, k, s, p = case
    x = rng(16).standard_normal(shape)
    y = K.avg_pool2d_forward(x, pair(k), pair(s), pair(p), include)
    np.testing.assert_allclose(y, ref_pool(x, k, s, p, "avg_incl" if include else "avg_excl"),
                               rtol=1e-12, atol=1e-12)
    gy = rng(17).standard_normal(y.shape)
    gx = K.avg_pool2d_backward(gy, x.shape, pair(k), pair(s), pair(p), include)

    def f():
        return float((K.avg_pool2d_forward(x, pair(k), pair(s), pair(p), include) * gy).sum())

    np.testing.assert_allclose(gx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    x32, gy32 = x.astype(np.float32), gy.astype(np.float32)
    y32 = K.avg_pool2d_forward(x32, pair(k), pair(s), pair(p), include)
    gx32 = K.avg_pool2d_backward(gy32, x.shape, pair(k), pair(s), pair(p), include)
    assert y32.dtype == gx32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx32, gx, rtol=1e-5, atol=1e-6)


def test_avg_pool2d_count_include_pad_by_hand():
    x = np.ones((1, 1, 2, 2))
    incl = K.avg_pool2d_forward(x, (2, 2), (2, 2), (1, 1), True)
    excl = K.avg_pool2d_forward(x, (2, 2), (2, 2), (1, 1), False)
    np.testing.assert_allclose(incl[0, 0], [[0.25, 0.25], [0.25, 0.25]])
    np.testing.assert_allclose(excl[0, 0], [[1.0, 1.0], [1.0, 1.0]])
    g = K.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x.shape, (2, 2), (2, 2), (1, 1), False)
    np.testing.assert_allclose(g[0, 0], np.ones((2, 2)))
    g = K.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x.shape, (2, 2), (2, 2), (1, 1), True)
    np.testing.assert_allclose(g[0, 0], np.full((2, 2), 0.25))


# ---------------------------------------------------------------------------
# softmax cross-entropy

def test_softmax_xent_by_hand():
    z = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]])
    y = np.array([0, 1, 1])
    loss, lse = K.softmax_cross_entropy_forward(z, y, 0.0)
    np.testing.assert_allclose(lse, [np.log(2), np.log(np.e + np.e ** 2), np.log(np.e ** 3 + np.e)])
    np.testing.assert_allclose(loss, [np.log(2), np.log(1 + np.exp(-1)), np.log(1 + np.exp(2))])
    g = K.softmax_cross_entropy_backward(z, y, lse, np.array([1.0, 2.0, 0.5]), 0.0)
    p1 = 1 / (1 + np.e)                            # softmax([1, 2])[0]
    p2 = 1 / (1 + np.exp(-2))                      # softmax([3, 1])[0]
    np.testing.assert_allclose(g, [[-0.5, 0.5], [2 * p1, -2 * p1], [0.5 * p2, -0.5 * p2]])


def test_softmax_xent_label_smoothing_by_hand():
    z = np.array([[1.0, 2.0, 4.0]])
    y = np.array([2])
    eps = 0.3
    lse = np.log(np.exp(z).sum())
    want = (1 - eps) * (lse - 4.0) + eps * np.mean(lse - z[0])
    loss, got_lse = K.softmax_cross_entropy_forward(z, y, eps)
    np.testing.assert_allclose(got_lse, [lse])
    np.testing.assert_allclose(loss, [want])
    g = K.softmax_cross_entropy_backward(z, y, got_lse, np.array([1.0]), eps)
    p = np.exp(z[0] - lse)
    target = np.array([eps / 3, eps / 3, 1 - eps + eps / 3])
    np.testing.assert_allclose(g[0], p - target)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_xent_numeric_gradient(eps):
    r = rng(20)
    z = r.standard_normal((4, 5)) * 3
    y = r.integers(0, 5, 4)
    gl = r.standard_normal(4)
    loss, lse = K.softmax_cross_entropy_forward(z, y, eps)
    g = K.softmax_cross_entropy_backward(z, y, lse, gl, eps)

    def f():
        return float((K.softmax_cross_entropy_forward(z, y, eps)[0] * gl).sum())

    np.testing.assert_allclose(g, numeric_grad(f, z), rtol=1e-6, atol=1e-8)
    # with unit upstream gradients each row of the gradient sums to zero
    g1 = K.softmax_cross_entropy_backward(z, y, lse, np.ones(4), eps)
    np.testing.assert_allclose(g1.sum(axis=1), 0.0, atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_softmax_xent_float32_and_huge_logits(eps):
    r = rng(21)
    z = (r.standard_normal((6, 10)) * 1e4).astype(np.float32)
    z[0] = 1e4                                    # ties at the top
    z[1, 3] = -1e4
    y = r.integers(0, 10, 6)
    loss, lse = K.softmax_cross_entropy_forward(z, y, eps)
    assert loss.dtype == lse.dtype == np.float32
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(lse))
    z64 = z.astype(np.float64)
    m = z64.max(axis=1)
    want_lse = m + np.log(np.exp(z64 - m[:, None]).sum(axis=1))
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6)
    np.testing.assert_allclose(lse[0], 1e4 + np.log(10), rtol=1e-6)
    want = (1 - eps) * (want_lse - z64[np.arange(6), y]) + eps * (want_lse - z64.mean(axis=1))
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-2)
    g = K.softmax_cross_entropy_backward(z, y, lse, np.ones(6, np.float32), eps)
    assert g.dtype == np.float32 and np.all(np.isfinite(g))
    p = np.exp(z64 - want_lse[:, None])
    t = np.full(z.shape, eps / 10)
    t[np.arange(6), y] += 1 - eps
    np.testing.assert_allclose(g, p - t, atol=1e-5)


def test_softmax_xent_small_loss_next_to_huge_logits():
    z = np.array([[1e4, 1e4 - 1.0, -1e4]], np.float32)
    loss, lse = K.softmax_cross_entropy_forward(z, np.array([0]), 0.0)
    np.testing.assert_allclose(loss, [np.log1p(np.exp(-1.0))], rtol=1e-5)
    loss, lse = K.softmax_cross_entropy_forward(z, np.array([0]), 0.5)
    want = 0.5 * np.log1p(np.exp(-1.0)) + 0.5 * np.mean(np.log1p(np.exp(-1.0)) + np.array([0, 1, 2e4]))
    np.testing.assert_allclose(loss, [want], rtol=1e-5)


def test_softmax_xent_non_contiguous_and_int_labels():
    r = rng(22)
    z = r.standard_normal((5, 7)).astype(np.float32)
    zs = np.asfortranarray(z)
    for labels in (np.array([0, 6, 3, 3, 1], np.int32), np.array([0, 6, 3, 3, 1], np.int64)):
        loss, lse = K.softmax_cross_entropy_forward(zs, labels, 0.1)
        loss2, lse2 = K.softmax_cross_entropy_forward(z, labels, 0.1)
        np.testing.assert_array_equal(loss, loss2)
        np.testing.assert_array_equal(lse, lse2)
        gl = np.ones(5, np.float32)
        np.testing.assert_array_equal(
            K.softmax_cross_entropy_backward(zs, labels, lse, gl, 0.1),
            K.softmax_cross_entropy_backward(z, labels, lse2, gl, 0.1))


# ---------------------------------------------------------------------------
# the contract

def test_backend_exports_these_functions():
    names = ["conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
             "avg_pool2d_forward", "avg_pool2d_backward",
             "softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]
    for n in names:
        assert callable(getattr(K, n))


# (N, C, H, W, O, (kH, kW), stride, padding, dilation, groups): columns path,
# stride 1, so the taps' shifts are affine (strided gather and col2im)
AFFINE_CASES = [
    (2, 1, 9, 8, 3, (5, 5), 1, 2, 1, 1),         # LeNet's first conv, small
    (2, 6, 7, 7, 4, (3, 2), 1, (1, 0), (2, 1), 1),  # rectangular, mixed dilation
    (1, 6, 6, 9, 6, (2, 3), 1, (0, 2), 1, 3),    # groups, asymmetric padding
    (2, 4, 5, 5, 4, 3, 1, 1, 1, 4),              # depthwise
]


@pytest.mark.parametrize("case", AFFINE_CASES, ids=str)
def test_conv2d_cols_affine_matches_tap_loop(case, poisoned):
    """The one-view gather / col2im agree with the per-tap loops."""
    N, C, H, W, O, k, s, p, d, G = case
    x, w, b, s, p, d, G = _conv_args((N, C, H, W, O, k, s, 0, 1, G), seed=3)
    p, d = pair(p), pair(d)
    dt = np.dtype(np.float64)
    g = K._Geom(x.shape, w.shape, s, p, d, G, dt)
    assert g.use_cols and g.affine is not None
    y = K._conv2d_forward(x, w, b, g, dt)
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, s, p, d, G), rtol=1e-10, atol=1e-10)
    gy = rng(4).standard_normal(y.shape)
    fast = K._conv2d_backward(x, w, gy, g, dt, True, True)
    g.affine = None
    slow = K._conv2d_backward(x, w, gy, g, dt, True, True)
    np.testing.assert_allclose(K._conv2d_forward(x, w, b, g, dt), y, rtol=1e-12, atol=1e-12)
    for a_, b_ in zip(fast, slow):
        np.testing.assert_allclose(a_, b_, rtol=1e-12, atol=1e-12)


def test_max_pool_argmax_is_the_last_nan_of_a_window():
    """The contract of kernels/pool2d.cu: NaN is the maximum, the last NaN wins
    (as in PyTorch: its loop takes every NaN it meets); padding is never an answer."""
    x = np.array([[[[1.0, np.nan, 3.0, np.nan, 2.0]]]])
    y, arg = K.max_pool2d_forward(x, (1, 5), (1, 5), (0, 0))
    assert np.isnan(y).all() and arg.ravel().tolist() == [3]
    x = np.array([[[[np.nan]]]])
    y, arg = K.max_pool2d_forward(x, (1, 3), (1, 1), (0, 1))
    assert arg.ravel().tolist() == [0]
    np.testing.assert_array_equal(K.max_pool2d_backward(np.ones_like(y), arg, x.shape, (1, 3), (1, 1), (0, 1)),
                                  [[[[1.0]]]])
    r = rng(9)
    x = r.standard_normal((2, 3, 7, 7))
    x[r.random(x.shape) < 0.1] = np.nan
    _, arg = K.max_pool2d_forward(x, 3, 2, 1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for n, c, i, j in np.ndindex(arg.shape):               # a loop reference
        win = xp[n, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].ravel()
        nans = np.flatnonzero(np.isnan(win))
        k = int(nans[-1]) if nans.size else int(np.argmax(win))   # the last NaN, else the first max
        kh, kw = divmod(k, 3)
        assert arg[n, c, i, j] == (2 * i + kh - 1) * 7 + (2 * j + kw - 1)


# ---------------------------------------------------------------------------
# matmul and BLAS's own threads

MATMUL_CASES = [
    ((7, 5), (5, 9)),            # more columns than rows: cut the columns
    ((9, 5), (5, 4)),            # more rows: cut the rows
    ((3, 7, 5), (5, 6)),         # a batch against one matrix
    ((2, 1, 4, 3), (5, 3, 6)),   # broadcast batch shapes
    ((5,), (5, 4)),              # 1-D operands: NumPy's rules, not cut
    ((4, 5), (5,)),
    ((1, 3), (3, 1)),            # fewer rows than threads
]


@pytest.mark.parametrize("busy", [False, True], ids=["pool-idle", "pool-busy"])
@pytest.mark.parametrize("shapes", MATMUL_CASES, ids=str)
def test_matmul_matches_numpy(shapes, busy, monkeypatch, poisoned):
    """While the pool is busy (and with the size limit at 1) every 2-D-or-more
    product is cut over the pool; each way gives NumPy's answer."""
    monkeypatch.setattr(K, "_NCPU", max(2, K._NCPU))
    monkeypatch.setattr(K, "_SPLIT_MNK", 1)
    monkeypatch.setattr(K, "_pool_used_at", K.time.monotonic() + (1e6 if busy else -1e6))
    r = rng(21)
    a, b = r.standard_normal(shapes[0]), r.standard_normal(shapes[1])
    got = K.matmul(a, b)
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12, atol=1e-12)
    if got.ndim:
        out = np.full(got.shape, np.nan)
        assert K.matmul(a, b, out=out) is out
        np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-12, atol=1e-12)
    f32 = K.matmul(a.astype(np.float32), b.astype(np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, np.matmul(a, b), rtol=1e-5, atol=1e-5)


def test_matmul_cut_over_the_pool_with_transposed_operands(monkeypatch):
    """The backward pass hands in transposed views: cut as well."""
    monkeypatch.setattr(K, "_NCPU", max(2, K._NCPU))
    monkeypatch.setattr(K, "_SPLIT_MNK", 1)
    monkeypatch.setattr(K, "_pool_used_at", K.time.monotonic() + 1e6)
    r = rng(22)
    a, b = r.standard_normal((6, 11)).astype(np.float32), r.standard_normal((6, 8)).astype(np.float32)
    np.testing.assert_allclose(K.matmul(a.T, b), a.T @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(K.matmul(b.T, a), b.T @ a, rtol=1e-5, atol=1e-5)


def _openblas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    info = [d for d in threadpoolctl.threadpool_info()
            if d.get("internal_api") == "openblas" and d.get("threading_layer") == "pthreads"]
    if not info:
        pytest.skip("no OpenBLAS with its own thread pool is loaded")
    return [d["num_threads"] for d in info]


def test_blas_held_at_one_thread_inside_and_restored_after():
    import threading
    before = _openblas_threads()
    if max(before) < 2:
        pytest.skip("OpenBLAS runs one thread here already")
    held = K._BlasThreads()
    with held:
        assert _openblas_threads() == [1] * len(before)
        with held:                                   # nested: still held
            assert _openblas_threads() == [1] * len(before)
        seen = []
        t = threading.Thread(target=lambda: (held.__enter__(), seen.append(_openblas_threads()),
                                             held.__exit__(None, None, None)))
        t.start()
        t.join()
        assert seen == [[1] * len(before)]
        # the other thread left, this one is still inside: still held
        assert _openblas_threads() == [1] * len(before)
    assert _openblas_threads() == before


def test_threaded_conv_leaves_blas_threads_as_they_were(monkeypatch, cpu_path):
    if cpu_path == "native":
        pytest.skip("the native convolution calls no BLAS")
    before = _openblas_threads()
    monkeypatch.setattr(K, "_NCPU", max(2, K._NCPU))
    x = rng(23).standard_normal((32, 16, 32, 32)).astype(np.float32)   # >= _SERIAL_FLOPS
    w = rng(24).standard_normal((16, 16, 3, 3)).astype(np.float32)
    g = K._Geom(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1, x.dtype)
    assert K._conv_flops(g) >= K._SERIAL_FLOPS          # the pool's path
    inside = []
    pack = K._pack_input

    def spy(*args, **kwargs):
        inside.append(_openblas_threads())
        return pack(*args, **kwargs)

    monkeypatch.setattr(K, "_pack_input", spy)
    y = K.conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    K.conv2d_backward(x, w, np.ones_like(y), (1, 1), (1, 1), (1, 1), 1)
    assert inside and all(n == [1] * len(before) for n in inside)
    assert _openblas_threads() == before


def ref_conv2d_weight_grad(x, gy, w_shape, stride, padding, dilation, groups):
    """The weights' gradient by its definition, with loops: only real outputs count."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kH, kW = w_shape
    Og = O // groups
    Ho, Wo = gy.shape[2:]
    gw = np.zeros(w_shape)
    for o in range(O):
        gi = o // Og
        for c in range(Cg):
            for a in range(kH):
                for b_ in range(kW):
                    acc = 0.0
                    for i in range(Ho):
                        for j in range(Wo):
                            h, v = i * sh - ph + a * dh, j * sw - pw + b_ * dw
                            if 0 <= h < H and 0 <= v < W:
                                acc = acc + x[:, gi * Cg + c, h, v] @ gy[:, o, i, j]
                    gw[o, c, a, b_] = acc
    return gw


def assert_same_with_infinities(got, ref):
    """NaN, +inf and -inf in the same places; the finite values close."""
    for where in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(where(got), where(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-10, atol=1e-10)


def ref_conv2d_input_grad(w, gy, x_shape, stride, padding, dilation, groups):
    """The input's gradient by its definition, with loops over the outputs."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    N, C, H, W = x_shape
    O, Cg, kH, kW = w.shape
    Og = O // groups
    gx = np.zeros(x_shape)
    for o, c, a, b_, i, j in itertools.product(range(O), range(Cg), range(kH), range(kW),
                                               range(gy.shape[2]), range(gy.shape[3])):
        h, v = i * sh - ph + a * dh, j * sw - pw + b_ * dw
        if 0 <= h < H and 0 <= v < W:
            gx[:, (o // Og) * Cg + c, h, v] += w[o, c, a, b_] * gy[:, o, i, j]
    return gx


@pytest.mark.parametrize("case", CONV_CASES[:12], ids=str)
def test_conv2d_input_grad_of_infinite_weights_is_the_definitions(case, threaded):
    """inf weights: the input's gradient is inf where the definition's is,
    not NaN from the zero gradient at the grid's positions between outputs."""
    import warnings
    x, w, b, s, p, d, G = _conv_args(case, seed=33)
    w[0, 0, 0, 0] = np.inf
    w[-1, -1, -1, -1] = -np.inf
    gy = np.abs(rng(34).standard_normal(K.conv2d_forward(x, np.zeros_like(w), b, s, p, d, G).shape)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    assert_same_with_infinities(gx, ref_conv2d_input_grad(w, gy, x.shape, s, p, d, G))


@pytest.mark.parametrize("case", CONV_CASES[:12], ids=str)
def test_conv2d_weight_grad_of_infinite_inputs_is_the_definitions(case, threaded):
    """An inf input makes inf (or, with +inf and -inf, NaN) weight gradients
    where the definition (and PyTorch) does, not NaN from the grid's
    positions between the outputs, and NumPy says nothing about it."""
    import warnings
    x, w, b, s, p, d, G = _conv_args(case, seed=31)
    x[0, 0, x.shape[2] // 2, -1] = np.inf          # at the right edge: next to the grid's gaps
    x[-1, -1, -1, 0] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = K.conv2d_forward(x, w, b, s, p, d, G)
        gy = np.abs(rng(32).standard_normal(y.shape)) + 0.5
        gx, gw, gb = K.conv2d_backward(x, w, gy, s, p, d, G)
    assert_same_with_infinities(gw, ref_conv2d_weight_grad(x, gy, w.shape, s, p, d, G))


def test_cut_products_do_not_keep_the_pool_marked_busy(monkeypatch):
    """Only other pool work (convolutions, pooling) makes matmul cut products:
    a model of products alone returns to BLAS's own threads after a conv."""
    monkeypatch.setattr(K, "_NCPU", max(2, K._NCPU))
    monkeypatch.setattr(K, "_SPLIT_MNK", 1)
    busy = K.time.monotonic()
    monkeypatch.setattr(K, "_pool_used_at", busy)
    a = rng(25).standard_normal((6, 5))
    np.testing.assert_allclose(K.matmul(a, a.T), a @ a.T, rtol=1e-12)
    assert K._pool_used_at == busy                 # the cut product left the mark alone
    K._parallel(lambda i: i, range(2))
    assert K._pool_used_at > busy                  # other pool work sets it


def test_matmul_into_an_operand_is_not_cut(monkeypatch):
    """``out`` over an input: NumPy's answer (the cuts would read rows that
    another thread already overwrote)."""
    monkeypatch.setattr(K, "_NCPU", max(2, K._NCPU))
    monkeypatch.setattr(K, "_SPLIT_MNK", 1)
    monkeypatch.setattr(K, "_pool_used_at", K.time.monotonic() + 1e6)
    r = rng(26)
    a, b = r.standard_normal((64, 64)), r.standard_normal((64, 64))
    want = a @ b
    assert K.matmul(a, b, out=b) is b
    np.testing.assert_allclose(b, want, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_a_child_forked_during_a_hold_gets_blas_threads_back():
    import os
    before = _openblas_threads()
    if max(before) < 2:
        pytest.skip("OpenBLAS runs one thread here already")
    held = K._BlasThreads()
    held.__enter__()
    try:
        pid = os.fork()
        if pid == 0:                                   # the child: restored, unheld, usable
            ok = _openblas_threads() == before and held._depth == 0
            with held:
                ok = ok and _openblas_threads() == [1] * len(before)
            ok = ok and _openblas_threads() == before
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert _openblas_threads() == [1] * len(before)   # the parent still holds
    finally:
        held.__exit__(None, None, None)
    assert _openblas_threads() == before


_FAULTS_SCRIPT = r"""
import resource, sys
import numpy as np
from gpudl.backend import _cpu_kernels as K
def cycle():        # what a training step does: big arrays freed and made again
    a = np.ones(5 << 20, np.float32); b = np.ones(5 << 20, np.float32); del b; del a
for _ in range(3): cycle()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5): cycle()
print(K._ALLOCATOR_TUNED, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 5)
"""


def _glibc():
    import ctypes
    try:
        return sys.platform.startswith("linux") and bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc's allocator only")
def test_freed_arrays_come_back_without_page_faults():
    """With glibc's own thresholds, two 20 MiB arrays freed and made again fault
    their pages back in every time (the kernel zeroes each); with the thresholds
    the CPU kernels set, they come back from the heap."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = root
    out = {}
    for tuning in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True,
                           env=dict(env, GPUDL_MALLOC_TUNING=tuning), timeout=120)
        assert r.returncode == 0, r.stderr
        tuned, faults = r.stdout.split()
        out[tuning] = (tuned, int(faults))
    assert out["1"][0] == "True" and out["0"][0] == "False", out
    assert out["1"][1] < 50 and out["0"][1] > 500, out


def test_allocator_left_alone_when_asked_or_already_tuned():
    _tune_allocator = K._tune_allocator
    assert _tune_allocator({"GPUDL_MALLOC_TUNING": "0"}) is False
    assert _tune_allocator({"MALLOC_TRIM_THRESHOLD_": "1000000"}) is False
    assert _tune_allocator({"MALLOC_ARENA_MAX": "2", "MALLOC_TOP_PAD_": "0"}) is False
    assert _tune_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"}) is False
