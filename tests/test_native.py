"""The CPU backend's native kernels (kernels/cpu_native.c): that they are built
where a compiler is, how the build is cached and refused, and that they agree
with the NumPy path on random geometries, threaded or not.

tests/test_cpu_kernels.py runs every kernel test on both paths as well."""
import os
import shutil

import numpy as np
import pytest

from gpudl.backend import _cpu_kernels as K
from gpudl.backend import _native


def _compiler_here():
    return any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang"))


def test_native_kernels_build_where_a_compiler_is():
    if os.environ.get("GPUDL_NATIVE", "").strip() == "0":
        pytest.skip("GPUDL_NATIVE=0 in this environment")
    if not _compiler_here():
        pytest.skip("no C compiler here: the NumPy path stands in")
    assert _native.lib() is not None, _native.status()
    assert _native.status().startswith("in use: built with")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """_native with nothing loaded and its own cache folder."""
    monkeypatch.setattr(_native, "_state", {"lib": None, "tried": False, "why": "not built yet"})
    monkeypatch.setenv("GPUDL_NATIVE_CACHE", str(tmp_path))
    monkeypatch.delenv("GPUDL_NATIVE", raising=False)
    monkeypatch.delenv("GPUDL_NATIVE_CFLAGS", raising=False)
    return tmp_path


def test_turned_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("GPUDL_NATIVE", "0")
    assert _native.lib() is None
    assert _native.status() == "not in use: turned off by GPUDL_NATIVE=0"
    assert list(fresh.iterdir()) == []


def test_a_failed_build_says_why_and_leaves_nothing(fresh, monkeypatch):
    if not _compiler_here():
        pytest.skip("no C compiler here")
    monkeypatch.setenv("GPUDL_NATIVE_CFLAGS", "-DNO_SUCH_MACRO -Werror=this-flag-does-not-exist")
    assert _native.lib() is None
    why = _native.status()
    assert why.startswith("not in use: compiling cpu_native.c failed:"), why
    assert "(no -march)" in why                    # both builds were tried
    assert list(fresh.iterdir()) == []             # no half-written library left


def test_no_compiler(fresh, monkeypatch):
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    assert _native.lib() is None
    assert "no C compiler" in _native.status()


def test_built_once_then_read_from_the_cache(fresh, monkeypatch):
    if not _compiler_here():
        pytest.skip("no C compiler here")
    builds = []
    real = _native._build
    monkeypatch.setattr(_native, "_build", lambda *a: builds.append(a) or real(*a))
    assert _native.lib() is not None
    assert len(builds) == 1 and len(list(fresh.glob("*.so"))) == 1
    mode = next(fresh.glob("*.so")).stat().st_mode
    assert mode & 0o055 == 0o055, oct(mode)        # others sharing the cache can load it
    monkeypatch.setattr(_native, "_state", {"lib": None, "tried": False, "why": ""})
    assert _native.lib() is not None
    assert len(builds) == 1                        # the second process-like load built nothing


# ---------------------------------------------------------------------------
# agreement with the NumPy path

needs_native = pytest.mark.skipif(_native.lib() is None, reason="native kernels not built here")


def _both(fn, monkeypatch):
    """fn() on the native kernels, then on the NumPy path."""
    native = fn()
    with monkeypatch.context() as m:
        m.setattr(K, "_native_fn", lambda name, dt: None)
        numpy_path = fn()
    return native, numpy_path


def _random_conv(r):
    N = int(r.integers(1, 5))
    C, O = int(r.integers(1, 9)), int(r.integers(1, 20))
    kH, kW = int(r.integers(1, 6)), int(r.integers(1, 6))
    dh, dw = int(r.integers(1, 3)), int(r.integers(1, 3))
    ph, pw = int(r.integers(0, 7)), int(r.integers(0, 7))      # padding beyond the kernel too
    H = int(r.integers(max(1, dh * (kH - 1) + 1 - 2 * ph), 14))
    W = int(r.integers(max(1, dw * (kW - 1) + 1 - 2 * pw), 14))
    stride = (1, 1) if r.random() < 0.4 else (int(r.integers(1, 4)), int(r.integers(1, 4)))
    return (N, C, H, W), (O, C, kH, kW), (ph, pw), (dh, dw), stride


@needs_native
@pytest.mark.parametrize("seed", range(80))
def test_conv_agrees_with_the_numpy_path(seed, monkeypatch):
    r = np.random.default_rng(seed)
    xs, ws, pad, dil, st = _random_conv(r)
    dt = np.float64 if seed % 2 else np.float32
    x = r.standard_normal(xs).astype(dt)
    w = r.standard_normal(ws).astype(dt)
    b = r.standard_normal(ws[0]).astype(dt) if seed % 3 else None
    if seed % 5 == 0:
        x = x[..., ::-1]                           # a view with negative strides
    g = K._Geom(xs, ws, st, pad, dil, 1, np.dtype(dt))
    assert K._native_conv_ok(g, np.dtype(dt))
    y, y_ref = _both(lambda: K.conv2d_forward(x, w, b, st, pad, dil, 1), monkeypatch)
    tol = dict(rtol=1e-12, atol=1e-12) if dt == np.float64 else dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(y, y_ref, **tol)
    assert y.dtype == dt and y.shape == y_ref.shape
    gy = r.standard_normal(y.shape).astype(dt)
    got, ref = _both(lambda: K.conv2d_backward(x, w, gy, st, pad, dil, 1), monkeypatch)
    for a, e in zip(got, ref):
        np.testing.assert_allclose(a, e, **tol)


@needs_native
@pytest.mark.parametrize("N", [1, 3, 7])
def test_threaded_native_conv_splits_the_batch_exactly(N, monkeypatch):
    """The batch is cut over the threads (each packs, sums and writes its
    images, the weight gradient summed over the parts): the same values as
    the whole batch on one thread, to the last bit in the forward."""
    r = np.random.default_rng(N)
    x = r.standard_normal((N, 5, 9, 7)).astype(np.float32)
    w = r.standard_normal((13, 5, 3, 3)).astype(np.float32)
    gy = r.standard_normal((N, 13, 9, 7)).astype(np.float32)
    one = K.conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    g1 = K.conv2d_backward(x, w, gy, (1, 1), (1, 1), (1, 1), 1)
    monkeypatch.setattr(K, "_NCPU", 3)
    monkeypatch.setattr(K, "_SERIAL_FLOPS", 0)
    calls = []
    real = K._batch_split
    monkeypatch.setattr(K, "_batch_split", lambda *a: calls.append(real(*a)) or calls[-1])
    many = K.conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    gm = K.conv2d_backward(x, w, gy, (1, 1), (1, 1), (1, 1), 1)
    assert any(len(c) == min(3, N) for c in calls) and (N == 1 or any(len(c) > 1 for c in calls))
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(gm[0], g1[0])
    np.testing.assert_allclose(gm[1], g1[1], rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("seed", range(16))
def test_max_pool_agrees_with_the_numpy_path(seed, monkeypatch):
    monkeypatch.setattr(K, "_NATIVE_POOL_MIN_WO", 0)     # short rows in C too
    r = np.random.default_rng(100 + seed)
    k = (int(r.integers(1, 4)), int(r.integers(1, 4)))
    s = (int(r.integers(1, 4)), int(r.integers(1, 4)))
    p = (int(r.integers(0, k[0] // 2 + 1)), int(r.integers(0, k[1] // 2 + 1)))
    H, W = int(r.integers(k[0], 12)), int(r.integers(k[1], 12))
    dt = np.float64 if seed % 2 else np.float32
    x = r.integers(-3, 4, (2, 3, H, W)).astype(dt)           # ties everywhere
    if seed % 4 == 1:
        x[r.random(x.shape) < 0.2] = np.nan
    if seed % 4 == 2:
        x[r.random(x.shape) < 0.5] = -np.inf
    (y, arg), (y_ref, arg_ref) = _both(lambda: K.max_pool2d_forward(x, k, s, p), monkeypatch)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    gy = r.standard_normal(y.shape).astype(dt)
    gx, gx_ref = _both(lambda: K.max_pool2d_backward(gy, arg, x.shape, k, s, p), monkeypatch)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-6)
    assert gx.dtype == gx_ref.dtype


@needs_native
@pytest.mark.parametrize("seed", range(16))
def test_batch_norm_agrees_with_the_numpy_path(seed, monkeypatch):
    from gpudl.backend import _cpu_norm as B
    r = np.random.default_rng(200 + seed)
    shape = [(2, 3, 5), (4, 6, 7, 9), (3, 2, 40, 33), (2, 5, 1, 1), (1, 4, 3, 2, 2)][seed % 5]
    dt = np.float64 if seed % 2 else np.float32
    x = (r.standard_normal(shape) * 3 + 2).astype(dt)
    if seed % 6 == 5:
        x = x.transpose(0, 1, *range(x.ndim - 1, 1, -1))    # not contiguous
    C = x.shape[1]
    w = r.standard_normal(C).astype(dt) if seed % 3 else None
    b = r.standard_normal(C).astype(dt) if seed % 4 else None
    batch = seed % 5 != 3
    rm, rv = r.standard_normal(C).astype(dt), r.random(C).astype(dt) + 0.5

    if seed % 4 == 3:
        x.flat[[1, 7]] = [np.inf, np.nan]                  # non-finite inputs: as the NumPy path

    def forward():
        m, v = rm.copy(), rv.copy()
        return B.batch_norm_forward(x, w, b, m, v, 1e-5, 0.1, batch) + (m, v)

    got, ref = _both(lambda: forward(), monkeypatch)
    assert B._native_ok("gd_bn_fwd", x) is not None       # (the native run was native)
    tol = dict(rtol=1e-12, atol=1e-12) if dt == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, e in zip(got, ref):
        np.testing.assert_allclose(a, e, **tol)
        assert a.dtype == e.dtype and a.shape == e.shape
    g = r.standard_normal(x.shape).astype(dt)
    xhat, invstd = ref[1], ref[2]
    for need in [(True, True, True), (True, False, False), (False, True, True)]:
        got, ref_ = _both(lambda: B.batch_norm_backward(g, xhat, invstd, w, batch, need), monkeypatch)
        for a, e in zip(got, ref_):
            assert (a is None) == (e is None)
            if a is not None:
                np.testing.assert_allclose(a, e, **tol)


@needs_native
def test_batch_norm_threads_split_the_channels(monkeypatch):
    from gpudl.backend import _cpu_norm as B
    r = np.random.default_rng(7)
    x = r.standard_normal((4, 7, 30, 30)).astype(np.float32)
    one = B.batch_norm_forward(x, None, None, None, None, 1e-5, 0.1, True)
    monkeypatch.setattr(K, "_NCPU", 3)
    monkeypatch.setattr(B, "_SPLIT_MIN", 0)
    assert len(K._batch_split(7, x.size, B._SPLIT_MIN)) == 3
    many = B.batch_norm_forward(x, None, None, None, None, 1e-5, 0.1, True)
    for a, e in zip(many, one):
        np.testing.assert_array_equal(a, e)


@needs_native
@pytest.mark.parametrize("n", [0, 1, 17, 1000, 300_000])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_relu_agrees_with_the_numpy_path(n, dt, monkeypatch):
    from gpudl.backend import numpy_backend as nb
    r = np.random.default_rng(n)
    x = r.standard_normal(n).astype(dt)
    g = r.standard_normal(n).astype(dt)
    if n > 10:
        x[:4] = [np.nan, 0.0, np.inf, -np.inf]
        g[4:8] = [np.nan, np.nan, np.inf, -np.inf]
    monkeypatch.setattr(K, "_ELEMENTWISE_MIN", 0)               # small ones in C too
    monkeypatch.setattr(K, "_ELEMENTWISE_SPLIT_MIN", 1000)      # the big ones run threaded
    monkeypatch.setattr(K, "_NCPU", 3)
    (y, gx), (y_ref, gx_ref) = _both(lambda: (nb.relu(x), nb.relu_backward(g, nb.relu(x))), monkeypatch)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)
    assert y.dtype == gx.dtype == dt
    h = x.copy()
    assert nb.relu(h, out=h) is h                                # in place, as the RNN uses it
    np.testing.assert_array_equal(h, y_ref)


@needs_native
def test_batch_norm_eval_passes_the_gradient_at_an_inf_input():
    """With the running statistics, gx = g * weight * invstd, whatever x is
    (the batch terms are not there to make inf * 0 = NaN), as in PyTorch."""
    import gpudl
    bn = gpudl.nn.BatchNorm2d(2).eval()
    x = gpudl.tensor(np.array([[[[np.inf, 1.0]], [[2.0, np.nan]]]], np.float32), requires_grad=True)
    bn(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((1, 2, 1, 2), 1 / np.sqrt(1 + 1e-5)), rtol=1e-6)


def test_relu_into_an_overlapping_out_reads_before_it_writes():
    from gpudl.backend import numpy_backend as nb
    buf = np.arange(-4.0, 12.0, dtype=np.float32)
    a, out = buf[:12], buf[2:14]
    expected = np.maximum(a, 0)
    np.testing.assert_array_equal(nb.relu(a, out=out), expected)


def test_a_split_runs_its_first_task_here_and_nests_nothing(monkeypatch):
    """_parallel runs the first item on the calling thread and the rest on the
    pool; a split inside any task (here or on the pool) runs serially, as it
    did when every task ran on the pool."""
    import threading
    monkeypatch.setattr(K, "_NCPU", 2)
    seen = []

    def task(i):
        inner = K._parallel(lambda j: threading.current_thread().name, range(3))
        seen.append((i, threading.current_thread().name, inner))
        return i

    assert K._parallel(task, range(3)) == [0, 1, 2]
    by = {i: (name, inner) for i, name, inner in seen}
    me = threading.current_thread().name
    assert by[0][0] == me and all(by[i][0].startswith("gpudl-cpu") for i in (1, 2))
    for name, inner in by.values():
        assert inner == [name] * 3                  # nested: all on the task's own thread
    assert K._parallel(lambda j: threading.current_thread().name, range(2))[0] == me

    def boom(i):
        if i == 0:
            raise ValueError("first")
        return i
    with pytest.raises(ValueError, match="first"):
        K._parallel(boom, range(2))
    assert not getattr(K._local, "in_task", False)  # reset after an error
