"""Recurrent ops: the fused LSTM cell, the GRU cell, the recurrent scan, embedding lookup.

``lstm_cell(gates, c_prev) -> (h, c)``
    The LSTM cell's element-wise part as one op (the backend's
    ``lstm_cell_forward`` / ``lstm_cell_backward``: a CUDA kernel on a GPU).
``gru_cell(gx, gh, h_prev) -> h``
    PyTorch's GRU update from the two projections ``gx = W_ih x + b_ih`` and
    ``gh = W_hh h + b_hh`` (gates r, z, n).
``rnn_scan(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse) -> (output, h_last, c_last)``
    One direction of one recurrent layer over a whole sequence.  The input
    projections of all time steps are one matmul before the loop; then each
    step does its gate projection ``h_prev @ W_hh^T`` as one matmul.
    Backpropagation through time runs through the autograd graph: every time
    step is a node, and the engine (iterative, so a 1,000-step sequence is
    fine) calls the steps' backward passes in reverse order.  The nodes of
    one scan share a :class:`_Scan`: a step's backward writes its gate
    gradient into the scan's (T, N, G) buffer, and the scan's root node (the
    input projection) turns the buffer into the gradients of x, W_ih, the
    biases and W_hh, each one matmul over all steps rather than T small
    ones.  The LSTM cell state is handed from step to step inside the scan,
    so a step node has one output, ``h``; the final ``c`` is a second output
    (see :func:`_second_output`).
``embedding(input, weight, padding_idx=None)``
    Rows of ``weight`` at integer ids; no gradient reaches ``padding_idx``.
"""
from __future__ import annotations

import numbers
import sys

from ..autograd import Context, Function, Node, version_snapshot
from ..tensor import Tensor
from ._util import only_supported

MODES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


# ---- a second output --------------------------------------------------------------

class _SecondOutput(Function):
    """The node of a Function's second output.

    The engine's Functions have one output.  A second output gets this node,
    whose only input is the first output, so the engine runs it before the
    node that made both; its backward leaves the gradient in that node's ctx
    (``grad_out2``) and returns a zero gradient (a broadcast view, no
    allocation) to the first output, so that node runs even when nothing
    else used its first output.
    """

    @staticmethod
    def backward(ctx, g):
        ctx.target.grad_out2 = g
        return ctx.xp.broadcast_to(ctx.xp.zeros((), dtype=ctx.dtype), ctx.shape)


def _second_output(first, array):
    """A Tensor holding ``array`` whose gradient reaches ``first``'s node as ``ctx.grad_out2``."""
    node = first._node
    out = Tensor._make(array, first.device, requires_grad=node is not None)
    if node is not None:
        ctx = Context(first.device, (True,))
        ctx.target, ctx.shape, ctx.dtype = node.ctx, first.data.shape, first.data.dtype
        out._node = Node(_SecondOutput, ctx, (first,))
    return out


def _take_grad_out2(ctx):
    return ctx.__dict__.pop("grad_out2", None)


# ---- argument checks ----------------------------------------------------------------

def _check(op, **tensors):
    """Float tensors of the given ranks, one dtype, one device; returns (N, H) from the first state."""
    ref = None
    for name, (t, ndim) in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(t).__name__}")
        if t.ndim != ndim:
            raise ValueError(f"{op}: expected {name} to have {ndim} dimensions, got shape {t.shape}")
        if t.dtype.kind != "f":
            raise TypeError(f"{op}: expected {name} to be floating point, got {t.dtype}")
        if ref is None:
            ref = (name, t)
        elif t.dtype != ref[1].dtype:
            raise TypeError(f"{op}: {ref[0]} is {ref[1].dtype} but {name} is {t.dtype}")
        elif t.device != ref[1].device:
            raise ValueError(f"{op}: {ref[0]} is on {ref[1].device} but {name} is on {t.device}")


def _check_gates(op, gates, state, k):
    N, H = state.shape
    if gates.shape != (N, k * H):
        raise ValueError(f"{op}: expected gates of shape (N, {k} * hidden_size) = {(N, k * H)} "
                         f"for a state of shape {state.shape}, got {gates.shape}")


# ---- the fused LSTM cell ------------------------------------------------------------

class LSTMCell(Function):
    """h, c from the gate pre-activations and c_prev; c leaves through ``out``."""

    @staticmethod
    def forward(ctx, gates, c_prev, out):
        h, c, saved = ctx.backend.lstm_cell_forward(gates, c_prev)
        ctx.save_for_backward(saved, c_prev)
        out["c"] = c
        return h

    @staticmethod
    def backward(ctx, gh):
        saved, c_prev = ctx.saved
        gc = _take_grad_out2(ctx)
        if gc is None:
            gc = ctx.xp.zeros(c_prev.shape, dtype=c_prev.dtype)
        ggates, gc_prev = ctx.backend.lstm_cell_backward(gh, gc, saved, c_prev)
        return ggates, (gc_prev if ctx.needs_input_grad[1] else None), None


def lstm_cell(gates, c_prev):
    """The LSTM cell's element-wise part, fused: ``(h, c)`` from ``gates`` (N, 4H) and ``c_prev`` (N, H).

    ``gates`` are the pre-activations in PyTorch's order [i | f | g | o]:
    ``c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g)``, ``h = sigmoid(o) * tanh(c)``.
    """
    _check("lstm_cell", gates=(gates, 2), c_prev=(c_prev, 2))
    _check_gates("lstm_cell", gates, c_prev, 4)
    out = {}
    h = LSTMCell.apply(gates, c_prev, out)
    return h, _second_output(h, out["c"])


# ---- GRU cell math (array level, shared by gru_cell and the scan) --------------------

def _sigmoid_(a, xp):
    """In place: 0.5 * tanh(0.5 * a) + 0.5 (no overflow for any a)."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def _gru_forward(xp, gx, gh, h_prev):
    """PyTorch's GRU: r, z = sigmoid(gx + gh); n = tanh(gx_n + r * gh_n); h = n + z * (h_prev - n)."""
    H = h_prev.shape[-1]
    rz = _sigmoid_(gx[:, :2 * H] + gh[:, :2 * H], xp)
    r, z = rz[:, :H], rz[:, H:]
    ghn = gh[:, 2 * H:]
    n = r * ghn
    n += gx[:, 2 * H:]
    xp.tanh(n, out=n)
    h = h_prev - n
    h *= z
    h += n
    return h, (rz, n, ghn)


def _gru_backward(xp, g, saved, h_prev):
    """(d gx, d gh, d h_prev through z only) from dL/dh."""
    rz, n, ghn = saved
    N, H = g.shape
    r, z = rz[:, :H], rz[:, H:]
    dgx = xp.empty((N, 3 * H), dtype=g.dtype)
    dr, dz, dn = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:]
    xp.multiply(n, n, out=dn)                  # dn = g (1 - z)(1 - n^2)
    xp.subtract(1, dn, out=dn)
    dn *= g
    dn -= dn * z
    xp.subtract(h_prev, n, out=dz)             # dz = g (h_prev - n) z (1 - z)
    dz *= g
    dz *= z - z * z
    xp.multiply(dn, ghn, out=dr)               # dr = dn gh_n r (1 - r)
    dr *= r - r * r
    dgh = dgx.copy()
    dgh[:, 2 * H:] *= r
    return dgx, dgh, g * z


class GRUCell(Function):
    @staticmethod
    def forward(ctx, gx, gh, h_prev):
        h, saved = _gru_forward(ctx.xp, gx, gh, h_prev)
        ctx.save_for_backward(h_prev, *saved)
        return h

    @staticmethod
    def backward(ctx, g):
        h_prev, *saved = ctx.saved
        return _gru_backward(ctx.xp, g, saved, h_prev)


def gru_cell(gx, gh, h_prev):
    """One GRU step from ``gx = W_ih x + b_ih`` and ``gh = W_hh h_prev + b_hh`` (N, 3H), gates [r | z | n].

    ``n = tanh(gx_n + r * gh_n)``, ``h = (1 - z) * n + z * h_prev`` (PyTorch's form).
    """
    _check("gru_cell", gx=(gx, 2), gh=(gh, 2), h_prev=(h_prev, 2))
    _check_gates("gru_cell", gx, h_prev, 3)
    _check_gates("gru_cell", gh, h_prev, 3)
    return GRUCell.apply(gx, gh, h_prev)


# ---- the recurrent scan -----------------------------------------------------------------

class _Workspace:
    """Large scratch arrays, handed out again once nothing but this cache holds them.

    On the CPU a fresh array of a few hundred KiB or more is fresh memory from
    the OS (glibc maps large blocks and trims the heap on free), and its page
    faults cost more than the recurrent step done in it, so the scan's
    per-sequence buffers are reused across calls.  An array is reused only
    when its reference count shows that the cache holds the last reference
    (a view keeps a reference to its base, so an array with live views is
    busy).  At most ``per_key`` arrays of one (device, shape, dtype), none
    above ``max_bytes``, and ``total_bytes`` in all are kept.
    """

    per_key = 3
    max_bytes = 64 << 20
    total_bytes = 256 << 20

    def __init__(self):
        self._cache = {}
        self._bytes = 0
        self._free = self._refs_when_free()

    @staticmethod
    def _refs_when_free():
        """What the loop in :meth:`empty` reads for an object only its list holds (None: never reuse)."""
        if not hasattr(sys, "getrefcount"):
            return None
        for a in [object()]:
            return sys.getrefcount(a)

    def empty(self, xp, device, shape, dtype):
        key = (str(device), shape, str(dtype))
        arrays = self._cache.get(key)
        if arrays is None:
            if len(self._cache) >= 32:
                self._cache.clear()
                self._bytes = 0
            arrays = self._cache[key] = []
        if self._free is not None:
            for a in arrays:
                if sys.getrefcount(a) <= self._free:
                    return a
        a = xp.empty(shape, dtype=dtype)
        if (len(arrays) < self.per_key and a.nbytes <= self.max_bytes
                and self._bytes + a.nbytes <= self.total_bytes):
            arrays.append(a)
            self._bytes += a.nbytes
        return a


_workspace = _Workspace()


class _Scan:
    """What the nodes of one scan share: weights, buffers, the gradient buffers.

    Buffers (T = steps, N = batch, H = hidden, G = gates * H): ``xg`` (T, N, G)
    the input projections; ``out`` (T, N, H) the outputs h; for LSTM ``cs``
    (T, N, H) the cell states and ``saved`` (T, 5, N, H) what the fused cell's
    backward reads; ``gx`` / ``gh`` (T, N, G) the gradients of the input and
    hidden projections (one array but for GRU).
    """

    def __init__(self, mode, x, w_ih, w_hh, b_ih, b_hh, reverse, backend):
        xp = self.xp = backend.xp
        self.mode, self.be, self.reverse = mode, backend, reverse
        T, N, I = x.shape
        G, H = w_hh.shape
        self.T, self.N, self.G, self.H, self.dtype = T, N, G, H, x.dtype
        self.device = getattr(x, "device", None)
        self.times = range(T - 1, -1, -1) if reverse else range(T)
        self.w_ih, self.w, self.wT = w_ih, w_hh, xp.ascontiguousarray(w_hh.T)
        # the input projections of all time steps: one matmul, the biases folded in
        # (but b_hh for GRU, whose n gate needs W_hn h + b_hn apart) as a row of the
        # weights against a column of ones, so the weight gradient carries the bias's
        self.I, self.has_bias = I, b_ih is not None
        if self.has_bias:
            x2 = self.empty((T * N, I + 1))
            x2.reshape(T, N, I + 1)[:, :, :I] = x
            x2[:, I] = 1
            w_aug = xp.empty((I + 1, G), dtype=x.dtype)
            w_aug[:I] = w_ih.T
            w_aug[I] = b_ih if mode == "gru" else b_ih + b_hh
        else:
            x2, w_aug = x.reshape(T * N, I), w_ih.T
        self.x2 = x2
        self.xg = self.empty((T, N, G))
        xp.matmul(x2, w_aug, out=self.xg.reshape(T * N, G))
        self.b = b_hh if mode == "gru" else None
        self.out = self.empty((T, N, H))
        self.zeros = xp.zeros((N, H), dtype=x.dtype)
        self.h0 = None          # the initial h (array) when one was given
        if mode == "lstm":
            self.cs = self.empty((T, N, H))
            self.saved = self.empty((T, 5, N, H))
            self.gates = self.empty((N, G))
            self.gc_bufs = None
        self.gx = self.gh = None
        self.carry = None       # (t, dL/dc_t) handed from one step's backward to the next one's
        self.token = xp.empty(0, dtype=x.dtype)

    def empty(self, shape):
        return _workspace.empty(self.xp, self.device, shape, self.dtype)

    def prev_time(self, t):
        """The time step that runs before ``t`` (None for the first)."""
        p = t + 1 if self.reverse else t - 1
        return p if 0 <= p < self.T else None

    # -- forward of one step: returns h (a view of out[t]) ------------------------------
    def step_forward(self, ctx, t, h_prev, c0):
        xp, x_t = self.xp, self.xg[t]
        if self.mode == "lstm":
            if h_prev is None:
                gates = x_t
            else:
                gates = xp.matmul(h_prev, self.wT, out=self.gates)
                gates += x_t
            p = self.prev_time(t)
            c_prev = c0 if c0 is not None else (self.zeros if p is None else self.cs[p])
            self.be.lstm_cell_forward(gates, c_prev, out=(self.out[t], self.cs[t], self.saved[t]))
            ctx.c_prev = c_prev
            return self.out[t]
        if self.mode == "gru":
            if h_prev is None:                      # h_prev = 0: gh = b_hh
                hg = xp.zeros((self.N, self.G), dtype=self.dtype)
            else:
                hg = xp.matmul(h_prev, self.wT)
            if self.b is not None:
                hg += self.b
            hp = self.zeros if h_prev is None else h_prev
            h, saved = _gru_forward(xp, x_t, hg, hp)
            ctx.saved = (hp,) + saved
            self.out[t] = h
            return self.out[t]
        h = self.out[t]                             # computed in place (h_prev is another row)
        if h_prev is None:
            h[...] = x_t
        else:
            xp.matmul(h_prev, self.wT, out=h)
            h += x_t
        if self.mode == "rnn_tanh":
            xp.tanh(h, out=h)
        else:
            self.be.relu(h, out=h)
        return h

    # -- backward of one step -----------------------------------------------------------
    def _grad_buffers(self, t=None):
        """The gradient buffers; ``t``: the step about to fill its rows."""
        if self.gx is None:
            self.gx = self.empty((self.T, self.N, self.G))
            self.gh = self.empty((self.T, self.N, self.G)) if self.mode == "gru" else self.gx
            self.filled = set()
        if t is not None:
            self.filled.add(t)
        return self.gx, self.gh

    def _take_grad_buffers(self):
        """The gradient buffers for the root's backward, rows of steps that got no gradient zeroed."""
        gx, gh = self._grad_buffers()
        for t in set(range(self.T)) - self.filled:
            gx[t] = 0
            gh[t] = 0
        self.gx = self.gh = None
        return gx, gh

    def step_backward(self, ctx, g):
        xp, t = self.xp, ctx.t
        need_token, need_h, need_c = ctx.needs_input_grad[:3]
        gx_all, gh_all = self._grad_buffers(t)     # also when only h0 needs a gradient
        direct = gc_prev = None
        if self.mode == "lstm":
            gc = _take_grad_out2(ctx)
            if self.carry is not None and self.carry[0] == t:
                gc = self.carry[1] if gc is None else gc + self.carry[1]
            self.carry = None
            if self.gc_bufs is None:
                self.gc_bufs = [xp.empty((self.N, self.H), dtype=self.dtype) for _ in range(2)]
            buf = self.gc_bufs[0] if gc is not self.gc_bufs[0] else self.gc_bufs[1]
            self.be.lstm_cell_backward(g, self.zeros if gc is None else gc, self.saved[t],
                                       ctx.c_prev, out=(gx_all[t], buf))
            p = self.prev_time(t)
            if p is not None:
                self.carry = (p, buf)
            elif need_c:
                gc_prev = buf.copy()
        else:
            if self.mode == "gru":
                hp, *saved = ctx.saved
                gx_all[t], gh_all[t], direct = _gru_backward(xp, g, saved, hp)
            else:
                h, gxt = self.out[t], gx_all[t]
                if self.mode == "rnn_tanh":         # g * (1 - h^2), written in place
                    xp.multiply(h, h, out=gxt)
                    xp.subtract(1, gxt, out=gxt)
                    gxt *= g
                else:
                    xp.multiply(g, h != 0, out=gxt)     # h >= 0 or NaN (NaN passes g, as PyTorch)
        gh_prev = None
        if need_h and ctx.has_h:
            gh_prev = xp.matmul(gh_all[t], self.w)
            if direct is not None:
                gh_prev += direct
        return (self.token if need_token else None), gh_prev, gc_prev, None, None

    # -- the root's backward: gradients of x, the weights and the biases -------------------
    def param_grads(self, needs):
        need_x, need_wih, need_whh, need_bih, need_bhh = needs[:5]
        xp, T, N, G, H = self.xp, self.T, self.N, self.G, self.H
        gx, gh = self._take_grad_buffers()
        gx2 = gx.reshape(T * N, G)
        g_x = xp.matmul(gx2, self.w_ih).reshape(T, N, -1) if need_x else None
        g_wih = g_bih = None
        if need_wih or (self.has_bias and (need_bih or need_bhh)):
            g_aug = xp.matmul(gx2.T, self.x2)        # (G, I [+ 1 for the bias])
            g_wih = g_aug[:, :self.I] if need_wih else None
            g_bih = g_aug[:, self.I] if self.has_bias else None
        g_whh = None
        if need_whh:
            if T > 1:
                gs, hs = (gh[:-1], self.out[1:]) if self.reverse else (gh[1:], self.out[:-1])
                g_whh = xp.matmul(gs.reshape(-1, G).T, hs.reshape(-1, H))
            else:
                g_whh = xp.zeros((G, H), dtype=gh.dtype)
            if self.h0 is not None:
                g_whh += xp.matmul(gh[self.times[0]].T, self.h0)
        g_bhh = (g_bih if gh is gx else gh.sum(axis=(0, 1))) if need_bhh else None
        return g_x, g_wih, g_whh, (g_bih if need_bih else None), g_bhh, None


class _ScanRoot(Function):
    """Inputs: x, W_ih, W_hh, b_ih, b_hh; output: an empty token that every step takes."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, scan):
        ctx.scan = scan
        # the scan reads these in its backward: saved, so that an in-place change
        # to one of them before backward is caught (see autograd's version counters)
        ctx.save_for_backward(*(a for a in (x, w_ih, w_hh, b_ih, b_hh) if a is not None))
        return scan.token

    @staticmethod
    def backward(ctx, g):
        return ctx.scan.param_grads(ctx.needs_input_grad)


class _ScanStep(Function):
    """One time step: (token, h_prev or None, c0 or None) -> h."""

    @staticmethod
    def forward(ctx, token, h_prev, c0, scan, t):
        ctx.scan, ctx.t, ctx.has_h = scan, t, h_prev is not None
        return scan.step_forward(ctx, t, h_prev, c0)

    @staticmethod
    def backward(ctx, g):
        return ctx.scan.step_backward(ctx, g)


class _ScanOutput(Function):
    """The (T, N, H) output from the steps' h (each a view into it)."""

    @staticmethod
    def forward(ctx, *hs, scan):
        ctx.times = scan.times
        return scan.out

    @staticmethod
    def backward(ctx, g):
        return tuple(g[t] for t in ctx.times)


def rnn_scan(mode, x, w_ih, w_hh, b_ih=None, b_hh=None, h0=None, c0=None, reverse=False):
    """One direction of one recurrent layer over a whole sequence.

    ``mode``: "lstm", "gru", "rnn_tanh" or "rnn_relu" (G = 4, 3, 1 gates).
    ``x`` (T, N, I); ``w_ih`` (G*H, I); ``w_hh`` (G*H, H); ``b_ih``, ``b_hh``
    (G*H,) or both None; ``h0`` / ``c0`` (N, H) or None (zeros; ``c0`` for
    LSTM only).  ``reverse`` runs from the last step to the first.  Returns
    ``(output (T, N, H), h_last, c_last)``; ``c_last`` is None but for LSTM.
    The gates follow PyTorch (i, f, g, o; r, z, n with
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``).
    """
    if mode not in MODES:
        raise ValueError(f"rnn_scan: expected mode in {sorted(MODES)}, got {mode!r}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("rnn_scan: expected both biases or neither")
    tensors = dict(x=(x, 3), w_ih=(w_ih, 2), w_hh=(w_hh, 2))
    for name, t, ndim in (("b_ih", b_ih, 1), ("b_hh", b_hh, 1), ("h0", h0, 2), ("c0", c0, 2)):
        if t is not None:
            tensors[name] = (t, ndim)
    _check("rnn_scan", **tensors)
    T, N, I = x.shape
    G, H = w_hh.shape
    if G != MODES[mode] * H or w_ih.shape != (G, I) or T < 1:
        raise ValueError(f"rnn_scan: expected x (T >= 1, N, I), w_ih ({MODES[mode]} * H, I) and "
                         f"w_hh ({MODES[mode]} * H, H), got {x.shape}, {w_ih.shape} and {w_hh.shape}")
    for name, t, shape in (("b_ih", b_ih, (G,)), ("b_hh", b_hh, (G,)), ("h0", h0, (N, H)),
                           ("c0", c0, (N, H))):
        if t is not None and t.shape != shape:
            raise ValueError(f"rnn_scan: expected {name} of shape {shape}, got {t.shape}")
    if c0 is not None and mode != "lstm":
        raise ValueError(f"rnn_scan: c0 is for mode 'lstm' only, got mode {mode!r}")
    data = lambda t: None if t is None else t.data  # noqa: E731
    scan = _Scan(mode, x.data, w_ih.data, w_hh.data, data(b_ih), data(b_hh), reverse, x.device.backend)
    scan.h0 = data(h0)
    token = _ScanRoot.apply(x, w_ih, w_hh, b_ih, b_hh, scan)
    h, hs = h0, []
    for k, t in enumerate(scan.times):
        h = _ScanStep.apply(token, h, c0 if k == 0 else None, scan, t)
        hs.append(h)
    c = _second_output(h, scan.cs[scan.times[-1]]) if mode == "lstm" else None
    out = _ScanOutput.apply(*hs, scan=scan)
    if out._node is not None:
        # The steps' backward passes read the output buffer (every h is a view of it),
        # h0 and c0 as they were: one version counter for the buffer, shared by out
        # and the h's, and every step checks it and the initial states (an in-place
        # write to one of them before backward is refused, never silently used).
        out._ver = hs[0]._ver
        watched = version_snapshot([hs[0]] + [t for t in (h0, c0) if t is not None])
        for t in hs:
            t._node.versions += watched
    return out, h, c


# ---- embedding ------------------------------------------------------------------------------

class Embedding(Function):
    @staticmethod
    def forward(ctx, weight, ids, padding_idx, scale_grad_by_freq):
        ctx.save_for_backward(ids)            # version-checked: ids changed in place are refused
        ctx.shape, ctx.padding_idx = weight.shape, padding_idx
        ctx.by_freq = scale_grad_by_freq
        return weight[ids]

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        ids = ctx.saved[0].reshape(-1)
        gw = xp.zeros(ctx.shape, dtype=g.dtype)
        xp.add.at(gw, ids, g.reshape(-1, ctx.shape[1]))
        if ctx.by_freq:     # each row's gradient over the number of times the batch used it
            counts = xp.bincount(ids, minlength=ctx.shape[0])
            gw /= xp.maximum(counts, 1).astype(g.dtype)[:, None]
        if ctx.padding_idx is not None:
            gw[ctx.padding_idx] = 0
        return gw, None, None, None


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of ``weight`` (num_embeddings, dim) at the integer ids ``input`` (any shape) -> (*input.shape, dim);
    PyTorch's signature.

    Ids outside [0, num_embeddings) raise ValueError.  No gradient reaches
    row ``padding_idx`` (a negative one counts from the end).  ``max_norm``:
    the rows looked up whose ``norm_type``-norm exceeds it are first scaled
    down to it, in place (as PyTorch does).  ``scale_grad_by_freq``: each
    row's gradient is divided by how often the batch used it.  Dense
    gradients only (``sparse=False``).
    """
    only_supported("embedding", sparse=(sparse, False))
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"embedding: expected weight of shape (num_embeddings, embedding_dim), got "
                         f"{weight.shape if isinstance(weight, Tensor) else type(weight).__name__}")
    if not isinstance(input, Tensor) or input.dtype.kind not in "iu":
        raise TypeError(f"embedding: expected a Tensor of integer token ids, got "
                        f"{input.dtype if isinstance(input, Tensor) else type(input).__name__}")
    if input.device != weight.device:
        raise ValueError(f"embedding: ids on {input.device}, weight on {weight.device}")
    n = weight.shape[0]
    if padding_idx is not None:
        if not isinstance(padding_idx, numbers.Integral) or not -n <= padding_idx < n:
            raise ValueError(f"embedding: expected padding_idx in [-{n}, {n - 1}], got {padding_idx!r}")
        padding_idx = int(padding_idx) % n
    if input.numel():
        d = input.data      # one read-back (a GPU sync) for both bounds
        lo, hi = (int(v) for v in input.device.backend.to_numpy(input.device.backend.xp.stack([d.min(), d.max()])))
        if lo < 0 or hi >= n:
            raise ValueError(f"embedding: token ids must be in [0, {n - 1}] (num_embeddings={n}), "
                             f"got ids in [{lo}, {hi}]")
    if max_norm is not None:
        _renorm_rows(weight, input.data, max_norm, norm_type)
    return Embedding.apply(weight, input, padding_idx, bool(scale_grad_by_freq))


def _renorm_rows(weight, ids, max_norm, norm_type):
    """PyTorch's ``embedding_renorm_``: rows ``ids`` of ``weight`` whose norm
    exceeds ``max_norm`` scaled to it (by max_norm / (norm + 1e-7)), outside
    the graph.  The weight gets new storage when a row changes: a graph
    that already saved the old values (the weight used earlier in this
    forward pass) keeps them, where PyTorch would refuse to backpropagate."""
    for name, v in (("max_norm", max_norm), ("norm_type", norm_type)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"embedding: expected {name} to be a number > 0, got {v!r}")
    xp = weight.device.backend.xp
    rows = xp.unique(ids.reshape(-1))
    w = weight.data
    norms = xp.linalg.norm(w[rows], ord=float(norm_type), axis=1) if norm_type != 2 else \
        xp.sqrt((w[rows] * w[rows]).sum(axis=1))
    big = norms > max_norm
    if not bool(big.any()):
        return
    scale = xp.where(big, max_norm / (norms + 1e-7), 1).astype(w.dtype)
    w = w.copy()
    w[rows] *= scale[:, None]
    weight.data = w
