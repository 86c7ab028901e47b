"""The fused LSTM cell: backend functions (CPU twin, CUDA kernel on the emulator), the op, its gradient.

``lstm_cell_forward`` / ``lstm_cell_backward`` of the CPU backend against the
gate equations written out here, the emulated GPU backend (``kernels/lstm.cu``
through the real launch wrappers) against the CPU backend, the wrappers'
validation (nothing launches on bad input), and a float64 gradcheck of
``gpudl.ops.rnn.lstm_cell`` on every device.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import gpudl
from gpudl.backend import cupy_backend
from gpudl.backend import numpy_backend as cpu
from gpudl.ops.rnn import lstm_cell
from gpudl.testing import gradcheck

from helpers import t

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (3, 5), (7, 33), (64, 128), (5, 300)]   # (N, H): one and several blocks


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(gates, c_prev, gh, gc):
    """The gate equations, forward and backward, in float64."""
    a = gates.astype(np.float64)
    i, f, g, o = np.split(a, 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = f * c_prev + i * g
    tc = np.tanh(c)
    h = o * tc
    gct = gc + gh * o * (1 - tc ** 2)
    ggates = np.concatenate([gct * g * i * (1 - i), gct * c_prev * f * (1 - f),
                             gct * i * (1 - g ** 2), gh * tc * o * (1 - o)], axis=1)
    return h, c, np.stack([i, f, g, o, tc]), ggates, gct * f      # saved is gate-major (5, N, H)


def inputs(N, H, dtype, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    gates = (rng.standard_normal((N, 4 * H)) * scale).astype(dtype)
    c_prev, gh, gc = (rng.standard_normal((N, H)).astype(dtype) for _ in range(3))
    return gates, c_prev, gh, gc


class _NoLaunch:
    def __call__(self, filename):
        raise AssertionError(f"a kernel from {filename} was about to launch")


def _all_close(got, want, dtype, **kw):
    tol = dict(TOL[dtype], **kw)
    for a, b in zip(got, want):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", SHAPES)
def test_cpu_backend_matches_the_gate_equations(N, H, dtype):
    gates, c_prev, gh, gc = inputs(N, H, dtype)
    h, c, saved, ggates, gc_prev = reference(gates, c_prev, gh, gc)
    _all_close(cpu.lstm_cell_forward(gates, c_prev), (h, c, saved), dtype)
    _all_close(cpu.lstm_cell_backward(gh, gc, saved.astype(dtype), c_prev), (ggates, gc_prev), dtype)


def _gpu_params():
    from conftest import _device_params
    return [p for p in _device_params() if p.values[0] != "cpu"]


@pytest.fixture(params=_gpu_params())
def gpu(request):
    from conftest import get_device
    return get_device(request.param).backend


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", SHAPES)
def test_gpu_kernel_matches_cpu_backend(gpu, N, H, dtype):
    """The emulated kernel always; the real one where a GPU answers."""
    gates, c_prev, gh, gc = inputs(N, H, dtype, seed=1)
    fwd = cpu.lstm_cell_forward(gates, c_prev)
    G, C, GH, GC = (gpu.asarray(a) for a in (gates, c_prev, gh, gc))
    gfwd = gpu.lstm_cell_forward(G, C)
    _all_close([gpu.to_numpy(a) for a in gfwd], fwd, dtype)
    gbwd = gpu.lstm_cell_backward(GH, GC, gfwd[2], C)
    _all_close([gpu.to_numpy(a) for a in gbwd], cpu.lstm_cell_backward(gh, gc, fwd[2], c_prev), dtype)


@pytest.mark.parametrize("backend", ["cpu", "emulated"])
def test_saturated_gates_stay_finite(backend, emu):
    be = cpu if backend == "cpu" else emu
    # H = 1; row 0: i = 0, f = 1, o = 1; row 1: i = 1, f = 0, g = -1, o = 1
    gates = np.array([[-1e4, 1e4, -1e4, 1e4], [100.0, -100.0, -100.0, 100.0]], np.float32)
    c_prev = np.array([[3.0], [-2.0]], np.float32)
    h, c, saved = be.lstm_cell_forward(gates, c_prev)
    assert np.isfinite(saved).all() and np.isfinite(h).all()
    np.testing.assert_allclose(c, [[3.0], [-1.0]], atol=1e-6)
    np.testing.assert_allclose(h, np.tanh(c), atol=1e-6)
    g, gcp = be.lstm_cell_backward(np.ones_like(h), np.ones_like(c), saved, c_prev)
    assert np.isfinite(g).all() and np.isfinite(gcp).all()


@pytest.mark.parametrize("backend", ["cpu", "emulated"])
def test_small_sigmoids_keep_their_relative_precision(backend, emu):
    """sigmoid(-17) is 4.14e-8, not 0 or 6e-8 (cancellation in 0.5 tanh(x/2) + 0.5):
    a large cell state multiplies it."""
    be = cpu if backend == "cpu" else emu
    x = np.array([-10.0, -17.0, -40.0, -80.0], np.float32)
    gates = np.zeros((4, 4), np.float32)
    gates[:, 1] = x                                   # the forget gate
    c_prev = np.full((4, 1), 1e30, np.float32)
    h, c, saved = be.lstm_cell_forward(gates, c_prev)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(saved[1, :, 0], want, rtol=1e-6)
    np.testing.assert_allclose(c[:, 0], want * 1e30, rtol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "emulated"])
def test_out_buffers_are_written_and_returned(backend, emu):
    be = cpu if backend == "cpu" else emu
    N, H = 4, 6
    gates, c_prev, gh, gc = inputs(N, H, np.float64, seed=2)
    bufs = (np.full((N, H), 7.0), np.full((N, H), 7.0), np.full((5, N, H), 7.0))
    got = be.lstm_cell_forward(gates, c_prev, out=bufs)
    assert all(a is b for a, b in zip(got, bufs))
    _all_close(got, reference(gates, c_prev, gh, gc)[:3], np.float64)
    # views into a bigger (T, N, ...) buffer, as the recurrent scan passes them
    big = np.zeros((3, N, 4 * H))
    gbuf = np.zeros((N, H))
    ggates, gcp = be.lstm_cell_backward(gh, gc, bufs[2], c_prev, out=(big[1], gbuf))
    assert ggates.base is big and gcp is gbuf
    _all_close((big[1], gbuf), reference(gates, c_prev, gh, gc)[3:], np.float64)
    assert not big[0].any() and not big[2].any()


def test_wrappers_validate_before_launching():
    b = cupy_backend.make_backend(np, _NoLaunch(), scipy.special, "strict")
    g32, c32 = np.zeros((2, 12), np.float32), np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(N, 4 \* hidden_size\)"):
        b.lstm_cell_forward(np.zeros((2, 10), np.float32), c32)
    with pytest.raises(ValueError, match=r"c_prev: expected shape \(2, 3\)"):
        b.lstm_cell_forward(g32, np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="float32 but .* float64"):
        b.lstm_cell_forward(g32, c32.astype(np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        b.lstm_cell_forward(g32.astype(np.float16), c32.astype(np.float16))
    with pytest.raises(ValueError, match="2 dimensions"):
        b.lstm_cell_forward(g32.reshape(-1), c32)
    with pytest.raises(TypeError, match="tuple of 3 arrays"):
        b.lstm_cell_forward(g32, c32, out=(c32, c32))
    with pytest.raises(cupy_backend.KernelArgumentError, match="C-contiguous"):
        b.lstm_cell_forward(g32, c32, out=(np.zeros((3, 2), np.float32).T, c32.copy(),
                                           np.zeros((5, 2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"out saved: expected shape \(5, 2, 3\)"):
        b.lstm_cell_forward(g32, c32, out=(c32.copy(), c32.copy(), np.zeros((4, 2, 3), np.float32)))
    with pytest.raises(TypeError, match="out h"):
        b.lstm_cell_forward(g32, c32, out=(c32.astype(np.float64), c32.copy(),
                                           np.zeros((5, 2, 3), np.float32)))
    s32 = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"saved: expected shape \(5, 2, 3\) \(gate-major"):
        b.lstm_cell_backward(c32, c32, np.zeros((2, 15), np.float32).reshape(2, 5, 3), c32)
    with pytest.raises(ValueError, match="saved: expected 3 dimensions"):
        b.lstm_cell_backward(c32, c32, g32, c32)
    with pytest.raises(ValueError, match=r"gc: expected shape \(2, 3\)"):
        b.lstm_cell_backward(c32, np.zeros((3, 3), np.float32), s32, c32)
    with pytest.raises(TypeError, match="expected a strict array"):
        b.lstm_cell_backward(c32.tolist(), c32, s32, c32)


def test_wrappers_launch_one_thread_per_state_element():
    calls = []

    class Mod:
        def get_function(self, name):
            return lambda grid, block, args, shared_mem=0: calls.append((name, grid, block, args))

    b = cupy_backend.make_backend(np, lambda f: Mod(), scipy.special, "rec")
    N, H = 5, 300
    gates = np.zeros((N, 8 * H), np.float64)[:, ::2]          # a strided view: copied first
    b.lstm_cell_forward(gates, np.zeros((N, H)))
    b.lstm_cell_backward(*(np.zeros((N, H), np.float32),) * 2, np.zeros((5, N, H), np.float32),
                         np.zeros((N, H), np.float32))
    assert [c[0] for c in calls] == ["lstm_cell_forward_f64", "lstm_cell_backward_f32"]
    for name, grid, block, args in calls:
        assert grid == (-(-N * H // 256),) and block == (256,)
        assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in args[:-2])
        assert [type(a) for a in args[-2:]] == [np.int32, np.int32]
        assert (int(args[-2]), int(args[-1])) == (N, H)


def test_lstm_cell_op_forward_and_c_gradient(device):
    N, H = 3, 4
    gates, c_prev, gh, gc = inputs(N, H, np.float64, seed=3)
    G, C = t(gates, device, True), t(c_prev, device, True)
    h, c = lstm_cell(G, C)
    want = reference(gates, c_prev, gh, gc)
    np.testing.assert_allclose(h.numpy(), want[0], **TOL[np.float64])
    np.testing.assert_allclose(c.numpy(), want[1], **TOL[np.float64])
    # a loss on c alone still reaches the gates (the second output runs the first's node)
    (c * t(gc, device)).sum().backward()
    _, _, _, ggates, gcp = reference(gates, c_prev, np.zeros_like(gh), gc)
    np.testing.assert_allclose(G.grad.numpy(), ggates, **TOL[np.float64])
    np.testing.assert_allclose(C.grad.numpy(), gcp, **TOL[np.float64])


def test_lstm_cell_op_gradcheck(device):
    rng = np.random.default_rng(4)
    G = t(rng.standard_normal((2, 12)), device, True)
    C = t(rng.standard_normal((2, 3)), device, True)

    def fn(g, c):
        h, c2 = lstm_cell(g, c)
        return gpudl.cat([h, c2 * 0.7], dim=1)

    assert gradcheck(fn, [G, C])


def test_lstm_cell_op_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"gates of shape \(N, 4 \* hidden_size\) = \(2, 12\)"):
        lstm_cell(gpudl.zeros(2, 10), gpudl.zeros(2, 3))
    with pytest.raises(TypeError, match="float32 but c_prev is float64"):
        lstm_cell(gpudl.zeros(2, 12), gpudl.zeros(2, 3, dtype="float64"))
    with pytest.raises(ValueError, match="2 dimensions"):
        lstm_cell(gpudl.zeros(12), gpudl.zeros(3))
