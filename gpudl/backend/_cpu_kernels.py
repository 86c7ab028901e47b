"""Kernel-level ops for the CPU backend, in vectorised NumPy.

These are the functions :mod:`gpudl.backend.numpy_backend` exports under the
backend contract (see :mod:`gpudl.backend`).  They take and return
``numpy.ndarray``; the result has the input's floating dtype (float32 stays
float32, float64 works for gradchecks).  Arguments are assumed validated by the
caller; any strides are accepted.

Convolution ("shifted GEMM")
    The input is packed once into a zero-padded, channels-last buffer laid out
    as ``(groups, phases, N * Hq * Wq + tail, C // groups)``.  For stride 1
    there is one phase: the padded image itself.  For stride ``s`` the padded
    image is split into its ``s * s`` polyphase components, so every kernel
    tap ``(kh, kw)`` reads one phase at a fixed *flat row shift*
    ``qh * Wq + qw``.  The output is computed on the whole ``Hq x Wq`` grid
    (rows past ``Ho`` / ``Wo`` are discarded), so each tap is one GEMM on a
    contiguous slice, ``Y += X[shift : shift + M] @ W_tap``, accumulated in
    place by BLAS (``beta = 1``).  No im2col matrix, no col2im: the input
    gradient is the same loop with ``gX[shift : shift + M] += G @ W_tap.T``,
    the weight gradient ``gW_tap = X[shift : shift + M].T @ G``.  A 1x1
    convolution is a single GEMM.  When the channels per group are few (the
    first layer of a net, depthwise convolutions) a GEMM with inner
    dimension ``C // groups`` is wasteful, so the taps are gathered into
    columns ``(M, kH * kW * C // groups)`` (K*K contiguous slice copies from
    the same packed buffer) and one batched matmul does the work.

Pooling
    Strided views of the (padded) input, one per window tap, combined with
    ``np.maximum`` / ``+`` chains; the max-pool argmax is tracked alongside
    (strict ``>`` keeps the first maximum in row-major window order).  The
    backward passes scatter through the same views, one masked
    ``+=`` per tap, so overlapping windows accumulate.

Softmax cross-entropy
    A max-shifted log-sum-exp, stable for logits of any magnitude.
"""
from __future__ import annotations

import numpy as np

try:  # BLAS with beta = 1 accumulates in place; NumPy's matmul cannot
    from scipy.linalg import blas as _blas
    _GEMM = {np.dtype(np.float32): _blas.sgemm, np.dtype(np.float64): _blas.dgemm}
except Exception:  # pragma: no cover - scipy is a dependency, but be robust
    _GEMM = {}

__all__ = [
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
]

# Below this many input channels per group a tap's GEMM is too thin: gather
# columns instead (see the module docstring).
_COLS_BELOW = 16
# Channels copied per pass when transposing NCHW <-> channels-last: a longer
# inner run over channels strides the source by whole planes (often a multiple
# of 4 KiB), and the cache's set associativity then thrashes.
_CHUNK = 8


# ---------------------------------------------------------------------------
# small helpers

def _float_dtype(*arrays):
    dt = np.result_type(*arrays)
    if dt.kind != "f":
        dt = np.dtype(np.float64)
    return dt


def _gemm(a, b, c, accumulate):
    """``c (m, n) (+)= a (m, k) @ b (k, n)``, all C-contiguous, in place."""
    if c.size == 0:
        return
    if a.shape[1] == 0:
        if not accumulate:
            c.fill(0)
        return
    f = _GEMM.get(c.dtype)
    if (f is not None and a.dtype == c.dtype and b.dtype == c.dtype
            and a.flags.c_contiguous and b.flags.c_contiguous
            and c.flags.c_contiguous):
        # Column-major view of the same memory: c.T = b.T @ a.T, where every
        # transposed operand is Fortran-contiguous, so f2py copies nothing.
        r = f(1.0, b.T, a.T, 1.0 if accumulate else 0.0, c.T, overwrite_c=1)
        if r.__array_interface__["data"][0] != c.__array_interface__["data"][0]:
            c[...] = r.T  # f2py had to copy: keep the result anyway
        return
    if accumulate:
        c += a @ b
    else:
        np.matmul(a, b, out=c)


def _copy_chunked(dst, src, axis):
    """``dst[...] = src`` in slices of ``_CHUNK`` along ``axis`` (see _CHUNK)."""
    n = dst.shape[axis]
    if n <= _CHUNK:
        np.copyto(dst, src)
        return
    idx = [slice(None)] * dst.ndim
    for c0 in range(0, n, _CHUNK):
        idx[axis] = slice(c0, c0 + _CHUNK)
        t = tuple(idx)
        np.copyto(dst[t], src[t])


# ---------------------------------------------------------------------------
# convolution geometry

class _Axis:
    """One spatial axis of a convolution in the polyphase layout."""

    __slots__ = ("L", "Lo", "Lq", "q", "r", "phases", "ranges", "covered")

    def __init__(self, L, k, s, p, d):
        self.L = L
        Lp = L + 2 * p
        self.Lo = Lo = (Lp - d * (k - 1) - 1) // s + 1
        self.q = [(t * d) // s for t in range(k)]      # grid shift of tap t
        self.r = [(t * d) % s for t in range(k)]       # phase of tap t
        self.Lq = Lq = max(Lo, 0) + self.q[-1]         # grid length
        self.phases = sorted(set(self.r))
        # For each phase a: grid cells [i0, i1) hold input samples
        # start, start + s, ...  (padded index a + s * i = input index + p).
        self.ranges = []
        covered = 0
        for a in self.phases:
            i0 = max(0, -((a - p) // s))               # ceil((p - a) / s)
            i1 = min(Lq, (p + L - 1 - a) // s + 1)
            n = max(0, i1 - i0)
            start = a + s * i0 - p
            self.ranges.append((i0, n, start))
            covered += n
        self.covered = covered == L                    # every input sample used


class _Geom:
    __slots__ = ("N", "C", "H", "W", "O", "G", "Cg", "Og", "kH", "kW",
                 "s", "h", "w", "M", "tail", "nph", "taps", "dtype")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, dtype):
        self.N, self.C, self.H, self.W = (int(v) for v in x_shape)
        self.O, self.Cg, self.kH, self.kW = (int(v) for v in w_shape)
        self.G = G = int(groups)
        self.Og = self.O // G
        self.s = (int(stride[0]), int(stride[1]))
        self.h = h = _Axis(self.H, self.kH, self.s[0], int(padding[0]), int(dilation[0]))
        self.w = w = _Axis(self.W, self.kW, self.s[1], int(padding[1]), int(dilation[1]))
        self.M = self.N * h.Lq * w.Lq
        self.tail = h.q[-1] * w.Lq + w.q[-1]
        self.nph = len(h.phases) * len(w.phases)
        nw = len(w.phases)
        taps = []  # (kh, kw, phase index, flat shift), row-major
        for kh in range(self.kH):
            ih = h.phases.index(h.r[kh])
            for kw in range(self.kW):
                iw = w.phases.index(w.r[kw])
                taps.append((kh, kw, ih * nw + iw, h.q[kh] * w.Lq + w.q[kw]))
        self.taps = taps
        self.dtype = dtype

    @property
    def use_cols(self):
        return len(self.taps) > 1 and self.Cg < _COLS_BELOW


def _pack_input(x, g):
    """x (N, C, H, W) -> zero-padded channels-last polyphase buffer
    (G, nph, M + tail, Cg)."""
    h, w = g.h, g.w
    buf = np.zeros((g.G, g.nph, g.M + g.tail, g.Cg), g.dtype)
    grid = buf[:, :, :g.M].reshape(g.G, g.nph, g.N, h.Lq, w.Lq, g.Cg)
    xg = x.reshape(g.N, g.G, g.Cg, g.H, g.W)
    nw = len(w.phases)
    for ih, (i0, ni, hs) in enumerate(h.ranges):
        if ni <= 0:
            continue
        for iw, (j0, nj, ws) in enumerate(w.ranges):
            if nj <= 0:
                continue
            src = xg[:, :, :, hs:hs + g.s[0] * (ni - 1) + 1:g.s[0],
                     ws:ws + g.s[1] * (nj - 1) + 1:g.s[1]]
            dst = grid[:, ih * nw + iw, :, i0:i0 + ni, j0:j0 + nj, :]
            # (N, G, Cg, ni, nj) -> (G, N, ni, nj, Cg)
            _copy_chunked(dst, src.transpose(1, 0, 3, 4, 2), axis=4)
    return buf


def _unpack_input(buf, g, out):
    """Inverse of :func:`_pack_input`: buffer -> out (N, C, H, W)."""
    h, w = g.h, g.w
    grid = buf[:, :, :g.M].reshape(g.G, g.nph, g.N, h.Lq, w.Lq, g.Cg)
    og = out.reshape(g.N, g.G, g.Cg, g.H, g.W)
    nw = len(w.phases)
    for ih, (i0, ni, hs) in enumerate(h.ranges):
        if ni <= 0:
            continue
        for iw, (j0, nj, ws) in enumerate(w.ranges):
            if nj <= 0:
                continue
            dst = og[:, :, :, hs:hs + g.s[0] * (ni - 1) + 1:g.s[0],
                     ws:ws + g.s[1] * (nj - 1) + 1:g.s[1]]
            src = grid[:, ih * nw + iw, :, i0:i0 + ni, j0:j0 + nj, :]
            np.copyto(dst, src.transpose(1, 0, 4, 2, 3))


def _pack_output_grad(gy, g):
    """gy (N, O, Ho, Wo) -> (G, M, Og) on the output grid, zero off it."""
    Ho, Wo, Hq, Wq = g.h.Lo, g.w.Lo, g.h.Lq, g.w.Lq
    if Ho == Hq and Wo == Wq:
        buf = np.empty((g.G, g.M, g.Og), g.dtype)
    else:
        buf = np.zeros((g.G, g.M, g.Og), g.dtype)
    grid = buf.reshape(g.G, g.N, Hq, Wq, g.Og)[:, :, :Ho, :Wo, :]
    src = gy.reshape(g.N, g.G, g.Og, Ho, Wo).transpose(1, 0, 3, 4, 2)
    _copy_chunked(grid, src, axis=4)
    return buf


def _weights_cg_og(w, g):
    """w (O, Cg, kH, kW) -> (G, kH, kW, Cg, Og), C-contiguous."""
    return np.ascontiguousarray(
        w.reshape(g.G, g.Og, g.Cg, g.kH, g.kW).transpose(0, 3, 4, 2, 1), dtype=g.dtype)


def _gather_cols(X, g):
    """Columns (G, M, kH*kW, Cg) from the packed input."""
    M = g.M
    cols = np.empty((g.G, M, len(g.taps), g.Cg), g.dtype)
    for t, (_, _, ph, sh) in enumerate(g.taps):
        np.copyto(cols[:, :, t, :], X[:, ph, sh:sh + M, :])
    return cols


# ---------------------------------------------------------------------------
# convolution

def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """2-D cross-correlation, PyTorch semantics; see the module docstring."""
    dt = _float_dtype(x, w)
    g = _Geom(x.shape, w.shape, stride, padding, dilation, groups, dt)
    Ho, Wo = g.h.Lo, g.w.Lo
    y = np.empty((g.N, g.O, Ho, Wo), dt)
    if y.size == 0:
        return y
    X = _pack_input(x, g)
    Wt = _weights_cg_og(w, g)                       # (G, kH, kW, Cg, Og)
    M = g.M
    Y = np.empty((g.G, M, g.Og), dt)
    if g.use_cols:
        cols = _gather_cols(X, g).reshape(g.G, M, -1)
        np.matmul(cols, Wt.reshape(g.G, -1, g.Og), out=Y)
    else:
        for gi in range(g.G):
            for t, (kh, kw, ph, sh) in enumerate(g.taps):
                _gemm(X[gi, ph, sh:sh + M], Wt[gi, kh, kw], Y[gi], t > 0)
    src = (Y.reshape(g.G, g.N, g.h.Lq, g.w.Lq, g.Og)[:, :, :Ho, :Wo, :]
           .transpose(1, 0, 4, 2, 3))                # (N, G, Og, Ho, Wo)
    dst = y.reshape(g.N, g.G, g.Og, Ho, Wo)
    if b is None:
        np.copyto(dst, src)
    else:
        np.add(src, np.asarray(b).reshape(g.G, g.Og, 1, 1), out=dst)
    return y


def conv2d_backward(x, w, gy, stride, padding, dilation, groups,
                    need=(True, True, True)):
    """Gradients of :func:`conv2d_forward`: ``(gx, gw, gb)``, None where
    ``need`` says so."""
    need_x, need_w, need_b = (bool(v) for v in need)
    dt = _float_dtype(x, w, gy)
    g = _Geom(x.shape, w.shape, stride, padding, dilation, groups, dt)
    gb = gy.sum(axis=(0, 2, 3), dtype=dt) if need_b else None
    gx = gw = None
    if not (need_x or need_w):
        return gx, gw, gb
    if gy.size == 0 or x.size == 0:
        if need_x:
            gx = np.zeros((g.N, g.C, g.H, g.W), dt)
        if need_w:
            gw = np.zeros((g.O, g.Cg, g.kH, g.kW), dt)
        return gx, gw, gb
    M = g.M
    Gy = _pack_output_grad(gy, g)                    # (G, M, Og)
    KK = len(g.taps)
    if need_w:
        X = _pack_input(x, g)
        gwt = np.empty((g.G, g.kH, g.kW, g.Og, g.Cg), dt)
        if g.use_cols:
            cols = _gather_cols(X, g).reshape(g.G, M, KK * g.Cg)
            del X
            # (G, Og, KK*Cg) = Gy^T @ cols
            gwc = np.matmul(Gy.transpose(0, 2, 1), cols)
            del cols
            gwt[...] = gwc.reshape(g.G, g.Og, g.kH, g.kW, g.Cg).transpose(0, 2, 3, 1, 4)
        else:
            GyT = Gy.transpose(0, 2, 1)
            for gi in range(g.G):
                for kh, kw, ph, sh in g.taps:
                    np.matmul(GyT[gi], X[gi, ph, sh:sh + M], out=gwt[gi, kh, kw])
            del X
        gw = np.ascontiguousarray(
            gwt.transpose(0, 3, 4, 1, 2)).reshape(g.O, g.Cg, g.kH, g.kW)
    if need_x:
        Wg = np.ascontiguousarray(
            w.reshape(g.G, g.Og, g.Cg, g.kH, g.kW).transpose(0, 3, 4, 1, 2), dtype=dt)
        gX = np.zeros((g.G, g.nph, M + g.tail, g.Cg), dt)
        if g.use_cols:
            gcols = np.matmul(Gy, Wg.reshape(g.G, KK, g.Og, g.Cg).transpose(0, 2, 1, 3)
                              .reshape(g.G, g.Og, KK * g.Cg))
            gcols = gcols.reshape(g.G, M, KK, g.Cg)
            for t, (_, _, ph, sh) in enumerate(g.taps):
                dst = gX[:, ph, sh:sh + M, :]
                np.add(dst, gcols[:, :, t, :], out=dst)
            del gcols
        else:
            for gi in range(g.G):
                for kh, kw, ph, sh in g.taps:
                    _gemm(Gy[gi], Wg[gi, kh, kw], gX[gi, ph, sh:sh + M], True)
        full = g.h.covered and g.w.covered
        gx = (np.empty if full else np.zeros)((g.N, g.C, g.H, g.W), dt)
        _unpack_input(gX, g, gx)
    return gx, gw, gb


# ---------------------------------------------------------------------------
# pooling

def _pool_out(L, k, s, p):
    return (L + 2 * p - k) // s + 1


def _pool_views(xp, kernel, stride, Ho, Wo):
    """Yield (kh, kw, view) for every window tap over the padded array xp."""
    (kh_, kw_), (sh, sw) = kernel, stride
    for a in range(kh_):
        for b in range(kw_):
            yield a, b, xp[:, :, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw]


def _tap_index(a, b, H, W, Ho, Wo, stride, padding):
    """(Ho, Wo) int32: flat input index h * W + w of tap (a, b) per window."""
    hi = np.arange(Ho, dtype=np.int32) * stride[0] + (a - padding[0])
    wi = np.arange(Wo, dtype=np.int32) * stride[1] + (b - padding[1])
    return hi[:, None] * np.int32(W) + wi[None, :]


def _norm2(v):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    return int(v[0]), int(v[1])


def max_pool2d_forward(x, kernel, stride, padding):
    """Max pooling; returns ``(y, argmax)`` with PyTorch's index semantics."""
    kernel, stride, padding = _norm2(kernel), _norm2(stride), _norm2(padding)
    N, C, H, W = x.shape
    Ho = _pool_out(H, kernel[0], stride[0], padding[0])
    Wo = _pool_out(W, kernel[1], stride[1], padding[1])
    dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    y = np.empty((N, C, Ho, Wo), dt)
    arg = np.empty((N, C, Ho, Wo), np.int32)
    if y.size == 0:
        return y, arg
    ph, pw = padding
    if ph or pw:
        xp = np.full((N, C, H + 2 * ph, W + 2 * pw), -np.inf, dt)
        xp[:, :, ph:ph + H, pw:pw + W] = x
        # Start below everything; the index defaults to the window's first
        # in-bounds element, as PyTorch's does for an all -inf window.
        y.fill(-np.inf)
        h0 = np.maximum(np.arange(Ho, dtype=np.int32) * stride[0] - ph, 0)
        w0 = np.maximum(np.arange(Wo, dtype=np.int32) * stride[1] - pw, 0)
        arg[...] = h0[:, None] * np.int32(W) + w0[None, :]
        first = True
    else:
        xp = x
        first = False
    mask = np.empty((N, C, Ho, Wo), bool)
    for a, b, v in _pool_views(xp, kernel, stride, Ho, Wo):
        if not first:
            np.copyto(y, v)
            arg[...] = _tap_index(a, b, H, W, Ho, Wo, stride, padding)
            first = True
            continue
        np.greater(v, y, out=mask)          # strict: the first maximum wins
        np.maximum(y, v, out=y)
        np.copyto(arg, _tap_index(a, b, H, W, Ho, Wo, stride, padding), where=mask)
    return y, arg


def max_pool2d_backward(gy, argmax, x_shape, kernel, stride, padding):
    """Scatter ``gy`` to the argmax positions; overlapping windows add up."""
    kernel, stride, padding = _norm2(kernel), _norm2(stride), _norm2(padding)
    N, C, H, W = (int(v) for v in x_shape)
    Ho, Wo = gy.shape[2], gy.shape[3]
    dt = gy.dtype if gy.dtype.kind == "f" else np.dtype(np.float64)
    ph, pw = padding
    tiles = (not ph and not pw and kernel == stride
             and Ho * kernel[0] == H and Wo * kernel[1] == W)
    if tiles:                       # the taps' views partition gx exactly
        gxp = gx = np.empty((N, C, H, W), dt)
    else:
        gxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dt)
        gx = gxp[:, :, ph:ph + H, pw:pw + W]
    if gy.size == 0:
        return np.ascontiguousarray(gx) if gx.base is gxp else gx
    overlap = stride[0] < kernel[0] or stride[1] < kernel[1]
    mask = np.empty(gy.shape, bool)
    for a, b, v in _pool_views(gxp, kernel, stride, Ho, Wo):
        np.equal(argmax, _tap_index(a, b, H, W, Ho, Wo, stride, padding), out=mask)
        if tiles:
            np.multiply(gy, mask, out=v)
        elif overlap:
            np.add(v, gy, out=v, where=mask)
        else:
            np.copyto(v, gy, where=mask)
    if gx is not gxp:
        gx = np.ascontiguousarray(gx)
    return gx


def _avg_divisor(H, W, Ho, Wo, kernel, stride, padding, count_include_pad, dt):
    if count_include_pad:
        return None
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h0 = np.arange(Ho) * sh - ph
    w0 = np.arange(Wo) * sw - pw
    nh = np.minimum(h0 + kh, H) - np.maximum(h0, 0)
    nw = np.minimum(w0 + kw, W) - np.maximum(w0, 0)
    return (1.0 / (nh[:, None] * nw[None, :])).astype(dt)


def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad):
    """Average pooling with PyTorch semantics (ceil_mode=False)."""
    kernel, stride, padding = _norm2(kernel), _norm2(stride), _norm2(padding)
    N, C, H, W = x.shape
    Ho = _pool_out(H, kernel[0], stride[0], padding[0])
    Wo = _pool_out(W, kernel[1], stride[1], padding[1])
    dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    y = np.empty((N, C, Ho, Wo), dt)
    if y.size == 0:
        return y
    ph, pw = padding
    if ph or pw:
        xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dt)
        xp[:, :, ph:ph + H, pw:pw + W] = x
    else:
        xp = x
    first = True
    for _, _, v in _pool_views(xp, kernel, stride, Ho, Wo):
        if first:
            np.copyto(y, v)
            first = False
        else:
            np.add(y, v, out=y)
    div = _avg_divisor(H, W, Ho, Wo, kernel, stride, padding, count_include_pad, dt)
    if div is None:
        np.multiply(y, dt.type(1.0 / (kernel[0] * kernel[1])), out=y)
    else:
        np.multiply(y, div, out=y)
    return y


def avg_pool2d_backward(gy, x_shape, kernel, stride, padding, count_include_pad):
    """Gradient of :func:`avg_pool2d_forward`; overlapping windows add up."""
    kernel, stride, padding = _norm2(kernel), _norm2(stride), _norm2(padding)
    N, C, H, W = (int(v) for v in x_shape)
    Ho, Wo = gy.shape[2], gy.shape[3]
    dt = gy.dtype if gy.dtype.kind == "f" else np.dtype(np.float64)
    ph, pw = padding
    div = _avg_divisor(H, W, Ho, Wo, kernel, stride, padding, count_include_pad, dt)
    if div is None:
        g = np.multiply(gy, dt.type(1.0 / (kernel[0] * kernel[1])), dtype=dt)
    else:
        g = np.multiply(gy, div, dtype=dt)
    tiles = (not ph and not pw and kernel == stride
             and Ho * kernel[0] == H and Wo * kernel[1] == W)
    if tiles:
        gx = np.empty((N, C, H, W), dt)
        for _, _, v in _pool_views(gx, kernel, stride, Ho, Wo):
            np.copyto(v, g)
        return gx
    gxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dt)
    if g.size:
        for _, _, v in _pool_views(gxp, kernel, stride, Ho, Wo):
            np.add(v, g, out=v)
    if ph or pw:
        return np.ascontiguousarray(gxp[:, :, ph:ph + H, pw:pw + W])
    return gxp


# ---------------------------------------------------------------------------
# softmax cross-entropy

def softmax_cross_entropy_forward(logits, labels, label_smoothing):
    """Per-row loss and log-sum-exp of ``logits`` (N, C) against ``labels``."""
    z = logits if logits.dtype.kind == "f" else logits.astype(np.float64)
    dt = z.dtype
    N, C = z.shape
    if N == 0:
        return np.empty((0,), dt), np.empty((0,), dt)
    if C == 0:
        raise ValueError("softmax_cross_entropy: logits have zero classes")
    m = z.max(axis=1)
    t = np.subtract(z, m[:, None])
    np.exp(t, out=t)
    ls = np.log(t.sum(axis=1))          # lse - m, accurate however large m is
    lse = m + ls
    zy = z[np.arange(N), np.asarray(labels).astype(np.intp, copy=False)]
    eps = float(label_smoothing)
    # lse - z_y as (m - z_y) + ls keeps a small loss accurate next to a huge m
    loss = m - zy
    if eps:
        # (1 - eps) * (lse - z_y) + eps * mean_j (lse - z_j)
        loss *= dt.type(1.0 - eps)
        loss += dt.type(eps) * (m - z.mean(axis=1, dtype=dt))
    loss += ls
    return loss.astype(dt, copy=False), lse.astype(dt, copy=False)


def softmax_cross_entropy_backward(logits, labels, lse, gloss, label_smoothing):
    """d loss / d logits = gloss * (softmax - target distribution)."""
    z = logits if logits.dtype.kind == "f" else logits.astype(np.float64)
    dt = z.dtype
    N, C = z.shape
    lse = np.asarray(lse, dt)
    gl = np.asarray(gloss, dt)
    if N == 0:
        return np.empty((0, C), dt)
    if np.abs(lse).max() < 64.0:
        # exp(z - lse): lse's rounding error is tiny at this magnitude
        g = np.subtract(z, lse[:, None])
        np.exp(g, out=g)
        scale = gl
    else:
        # Large logits: a float lse of ~1e4 is off by ~1e-3, so exp(z - lse)
        # would be too.  Renormalise from the row maximum instead.
        m = z.max(axis=1)
        g = np.subtract(z, m[:, None])
        np.exp(g, out=g)
        scale = gl / g.sum(axis=1)
    g *= scale[:, None]                 # gloss * softmax
    eps = float(label_smoothing)
    if eps:
        g -= (dt.type(eps / C) * gl)[:, None]
    rows = np.arange(N)
    lab = np.asarray(labels).astype(np.intp, copy=False)
    g[rows, lab] -= dt.type(1.0 - eps) * gl
    return g
