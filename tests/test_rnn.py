"""Recurrent layers, cells and Embedding: PyTorch's API, the gate equations, BPTT, errors.

Forward passes are compared with a NumPy loop over the gate equations written
here (on every device), gradients with central differences in float64, and
outputs and gradients with PyTorch's own layers (when torch is installed)
after loading PyTorch's ``state_dict``.
"""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import gpudl
import gpudl.nn as nn
import gpudl.optim
from gpudl.testing import gradcheck

from helpers import t

F64 = dict(rtol=1e-10, atol=1e-12)
MODES = {"LSTM": (nn.LSTM, {}), "GRU": (nn.GRU, {}), "RNN": (nn.RNN, {}),
         "RNN_RELU": (nn.RNN, {"nonlinearity": "relu"})}


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference(mode, x, params, num_layers, bidirectional, h0=None, c0=None):
    """The recurrent equations as a plain NumPy loop; x (T, N, I) -> (output, h_n, c_n)."""
    T, N, _ = x.shape
    D = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    hn, cn, inp = [], [], x
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            Wi, Wh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            bi, bh = params.get("bias_ih" + sfx, 0.0), params.get("bias_hh" + sfx, 0.0)
            k = layer * D + d
            h = np.zeros((N, H)) if h0 is None else h0[k]
            c = np.zeros((N, H)) if c0 is None else c0[k]
            out = np.zeros((T, N, H))
            for s in (range(T - 1, -1, -1) if d else range(T)):
                gi, gh = inp[s] @ Wi.T + bi, h @ Wh.T + bh
                if mode == "LSTM":
                    i, f, g, o = np.split(gi + gh, 4, axis=1)
                    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                    h = sigmoid(o) * np.tanh(c)
                elif mode == "GRU":
                    (xr, xz, xn), (hr, hz, hn_) = np.split(gi, 3, axis=1), np.split(gh, 3, axis=1)
                    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
                    n = np.tanh(xn + r * hn_)
                    h = (1 - z) * n + z * h
                elif mode == "RNN":
                    h = np.tanh(gi + gh)
                else:
                    h = np.maximum(gi + gh, 0)
                out[s] = h
            outs.append(out)
            hn.append(h)
            cn.append(c)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(hn), np.stack(cn)


def make(mode, *args, **kw):
    cls, extra = MODES[mode]
    return cls(*args, **extra, **kw)


def host_params(m):
    return {k: v.numpy().astype(np.float64) for k, v in m.state_dict().items()}


# ---- construction -------------------------------------------------------------------------

@pytest.mark.parametrize("mode,gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_parameter_names_shapes_and_init(mode, gates):
    m = make(mode, 5, 6, num_layers=2, bidirectional=True)
    names = [n for n, _ in m.named_parameters()]
    want = [f"{w}_l{layer}{sfx}" for layer in range(2) for sfx in ("", "_reverse")
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert names == want
    shapes = dict((n, p.shape) for n, p in m.named_parameters())
    assert shapes["weight_ih_l0"] == (gates * 6, 5) and shapes["weight_ih_l1_reverse"] == (gates * 6, 12)
    assert shapes["weight_hh_l1"] == (gates * 6, 6) and shapes["bias_hh_l0_reverse"] == (gates * 6,)
    bound = 1 / math.sqrt(6)
    v = np.concatenate([p.numpy().ravel() for p in m.parameters()])
    assert np.abs(v).max() <= bound and abs(v.std() - bound / math.sqrt(3)) < 0.1 * bound   # U(-b, b)
    assert [n for n, _ in make(mode, 5, 6, bias=False).named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert len(m.all_weights) == 4 and m.all_weights[1][0] is m.weight_ih_l0_reverse


def test_cells_parameters():
    for cls, g in ((nn.RNNCell, 1), (nn.LSTMCell, 4), (nn.GRUCell, 3)):
        c = cls(3, 5)
        assert [(n, p.shape) for n, p in c.named_parameters()] == [
            ("weight_ih", (5 * g, 3)), ("weight_hh", (5 * g, 5)), ("bias_ih", (5 * g,)), ("bias_hh", (5 * g,))]


# ---- forward against the gate equations, on every device ---------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
def test_forward_matches_the_equations(device, mode):
    rng = np.random.default_rng(0)
    T, N, I, H, L = 5, 3, 4, 6, 2
    m = make(mode, I, H, num_layers=L, bidirectional=True, dtype="float64").to(device)
    x = rng.standard_normal((T, N, I))
    h0, c0 = rng.standard_normal((2, 2 * L, N, H))
    hx = (t(h0, device), t(c0, device)) if mode == "LSTM" else t(h0, device)
    out, hn = m(t(x, device), hx)
    want = reference(mode, x, host_params(m), L, True, h0, c0 if mode == "LSTM" else None)
    np.testing.assert_allclose(out.numpy(), want[0], **F64)
    if mode == "LSTM":
        hn, cn = hn
        np.testing.assert_allclose(cn.numpy(), want[2], **F64)
    np.testing.assert_allclose(hn.numpy(), want[1], **F64)
    assert out.device == device and out.shape == (T, N, 2 * H) and hn.shape == (2 * L, N, H)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_batch_first_unbatched_and_default_state(mode):
    rng = np.random.default_rng(1)
    m = make(mode, 3, 4, batch_first=True, dtype="float64")
    x = rng.standard_normal((2, 7, 3))                       # (N, T, I)
    out, hn = m(t(x, "cpu"))
    want = reference(mode, x.transpose(1, 0, 2), host_params(m), 1, False)
    np.testing.assert_allclose(out.numpy(), want[0].transpose(1, 0, 2), **F64)
    one, hn1 = m(t(x[0], "cpu"))                              # unbatched (T, I)
    np.testing.assert_allclose(one.numpy(), want[0][:, 0], **F64)
    h1 = hn1[0] if mode == "LSTM" else hn1
    assert h1.shape == (1, 4)
    np.testing.assert_allclose(h1.numpy(), want[1][:, 0], **F64)


def test_cells_match_the_equations():
    rng = np.random.default_rng(2)
    x, h, c = rng.standard_normal((3, 4)), rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    for cls, mode in ((nn.RNNCell, "RNN"), (nn.LSTMCell, "LSTM"), (nn.GRUCell, "GRU")):
        cell = cls(4, 5, dtype="float64")
        p = {k + "_l0": v for k, v in host_params(cell).items()}
        _, hn, cn = reference(mode, x[None], p, 1, False, h[None], c[None])
        if mode == "LSTM":
            h2, c2 = cell(t(x, "cpu"), (t(h, "cpu"), t(c, "cpu")))
            np.testing.assert_allclose(c2.numpy(), cn[0], **F64)
            assert cell(t(x[0], "cpu"))[0].shape == (5,)
        else:
            h2 = cell(t(x, "cpu"), t(h, "cpu"))
            assert cell(t(x[0], "cpu")).shape == (5,)
        np.testing.assert_allclose(h2.numpy(), hn[0], **F64)


# ---- gradients ------------------------------------------------------------------------------------

def _module_gradcheck(m, x, hx=None):
    params = list(m.parameters())
    states = [] if hx is None else list(hx if isinstance(hx, tuple) else (hx,))

    def fn(x, *args):
        s = args[len(params):]
        out, hn = m(x, None if not s else (tuple(s) if len(s) == 2 else s[0]))
        parts = [out.flatten()] + [a.flatten() for a in (hn if isinstance(hn, tuple) else (hn,))]
        return gpudl.cat(parts)

    return gradcheck(fn, [x] + params + states)


@pytest.mark.parametrize("mode", list(MODES))
def test_two_layer_bidirectional_gradcheck(mode):
    rng = np.random.default_rng(3)
    m = make(mode, 2, 2, num_layers=2, bidirectional=True, dtype="float64")
    x = t(rng.standard_normal((3, 2, 2)), "cpu", True)
    states = [t(rng.standard_normal((4, 2, 2)), "cpu", True) for _ in range(2 if mode == "LSTM" else 1)]
    assert _module_gradcheck(m, x, tuple(states) if mode == "LSTM" else states[0])


def test_lstm_gradcheck_on_device(device):
    rng = np.random.default_rng(4)
    m = nn.LSTM(2, 3, batch_first=True, dtype="float64").to(device)
    x = t(rng.standard_normal((2, 3, 2)), device, True)
    assert _module_gradcheck(m, x)


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_cell_gradcheck(cls):
    rng = np.random.default_rng(5)
    cell = cls(3, 2, dtype="float64")
    x = t(rng.standard_normal((2, 3)), "cpu", True)
    h = t(rng.standard_normal((2, 2)), "cpu", True)
    c = t(rng.standard_normal((2, 2)), "cpu", True)
    params = list(cell.parameters())

    def fn(x, h, c, *ps):
        if cls is nn.LSTMCell:
            h2, c2 = cell(x, (h, c))
            return gpudl.cat([h2, c2], dim=1)
        return cell(x, h) + 0 * c

    assert gradcheck(fn, [x, h, c] + params)


def test_loss_on_the_final_cell_state_alone_reaches_everything():
    m = nn.LSTM(2, 3, dtype="float64")
    x = t(np.random.default_rng(6).standard_normal((4, 2, 2)), "cpu", True)
    _, (_, c) = m(x)
    (c * c).sum().backward()
    assert np.abs(x.grad.numpy()[0]).sum() > 0 and np.abs(m.weight_hh_l0.grad.numpy()).sum() > 0


def test_retain_graph_accumulates_twice():
    m = nn.GRU(2, 3, dtype="float64")
    x = t(np.random.default_rng(7).standard_normal((4, 2, 2)), "cpu", True)
    out, _ = m(x)
    loss = (out * out).sum()
    loss.backward(retain_graph=True)
    g1 = m.weight_hh_l0.grad.numpy().copy()
    loss.backward()
    np.testing.assert_allclose(m.weight_hh_l0.grad.numpy(), 2 * g1, rtol=1e-12)


def test_kept_outputs_are_not_overwritten_by_the_next_call():
    m = nn.LSTM(3, 4)
    rng = np.random.default_rng(8)
    xs = [t(rng.standard_normal((6, 2, 3)), "cpu", dtype=np.float32) for _ in range(4)]
    kept = [m(x) for x in xs]
    for x, (out, (h, c)) in zip(xs, kept):
        again, (h2, c2) = m(x)
        np.testing.assert_array_equal(out.numpy(), again.numpy())
        np.testing.assert_array_equal(c.numpy(), c2.numpy())


def test_thousand_steps_train_without_recursion_or_memory_blowup():
    """BPTT over 1,000 steps: the engine is iterative and the graph holds O(T * N * H) floats."""
    gpudl.manual_seed(0)
    m, head = nn.LSTM(2, 8), nn.Linear(8, 1)
    opt = gpudl.optim.SGD(list(m.parameters()) + list(head.parameters()), lr=0.05)
    rng = np.random.default_rng(9)
    x = t(rng.standard_normal((1000, 4, 2)), "cpu", dtype=np.float32)
    y = t(rng.standard_normal((4, 1)), "cpu", dtype=np.float32)
    losses = []
    tracemalloc.start()
    try:
        for _ in range(3):
            out, (h, c) = m(x)
            loss = ((head(h[0]) - y) ** 2).mean() + (out[0] ** 2).mean() * 1e-3
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert all(np.isfinite(p.grad.numpy()).all() for p in m.parameters())
    assert np.abs(m.weight_ih_l0.grad.numpy()).sum() > 0
    assert losses[-1] < losses[0]


# ---- PyTorch ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("batch_first", [False, True])
def test_pytorch_weights_load_and_agree(mode, batch_first):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first)
    tcls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(mode, torch.nn.RNN)
    textra = {"nonlinearity": "relu"} if mode == "RNN_RELU" else {}
    tm = tcls(3, 4, **kw, **textra).double()
    m = make(mode, 3, 4, dtype="float64", **kw)
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 5, 3) if batch_first else (5, 2, 3))
    states = [rng.standard_normal((4, 2, 4)) for _ in range(2 if mode == "LSTM" else 1)]
    tx = torch.tensor(x, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    gx = t(x, "cpu", True)
    gs = [t(s, "cpu", True) for s in states]
    to, th = tm(tx, tuple(ts) if mode == "LSTM" else ts[0])
    go, gh = m(gx, tuple(gs) if mode == "LSTM" else gs[0])
    th, gh = (th, gh) if mode == "LSTM" else ((th,), (gh,))
    np.testing.assert_allclose(go.numpy(), to.detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(gh, th):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = rng.standard_normal(x.shape[:2] + (8,))
    ((to * torch.tensor(w)).sum() + sum((s ** 2).sum() for s in th)).backward()
    ((go * t(w, "cpu")).sum() + sum((s * s).sum() for s in gh)).backward()
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=n)
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for a, b in zip(gs, ts):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_pytorch_cells_and_embedding_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    for ours, theirs in ((nn.LSTMCell, torch.nn.LSTMCell), (nn.GRUCell, torch.nn.GRUCell),
                         (nn.RNNCell, torch.nn.RNNCell)):
        tc = theirs(3, 4).double()
        oc = ours(3, 4, dtype="float64")
        oc.load_state_dict({k: v.numpy() for k, v in tc.state_dict().items()})
        if ours is nn.LSTMCell:
            want = tc(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))[1]
            got = oc(t(x, "cpu"), (t(h, "cpu"), t(c, "cpu")))[1]
        else:
            want, got = tc(torch.tensor(x), torch.tensor(h)), oc(t(x, "cpu"), t(h, "cpu"))
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)
    te = torch.nn.Embedding(7, 3, padding_idx=2)
    oe = nn.Embedding(7, 3, padding_idx=2)
    oe.load_state_dict({k: v.numpy() for k, v in te.state_dict().items()})
    ids = np.array([[1, 2, 2], [6, 0, 1]])
    te(torch.tensor(ids)).pow(2).sum().backward()
    (oe(t(ids, "cpu")) ** 2).sum().backward()
    np.testing.assert_allclose(oe.weight.grad.numpy(), te.weight.grad.numpy(), rtol=1e-6)


# ---- dropout, errors -------------------------------------------------------------------------------

def test_dropout_between_layers_only_in_training():
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.5, dtype="float64")
    x = t(np.random.default_rng(12).standard_normal((5, 2, 3)), "cpu")
    want = reference("LSTM", x.numpy(), host_params(m), 2, False)[0]
    assert not np.allclose(m(x)[0].numpy(), want)
    m.eval()
    np.testing.assert_allclose(m(x)[0].numpy(), want, **F64)
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.GRU(3, 4, dropout=0.2)


def test_bad_inputs_say_what_was_expected():
    m = nn.LSTM(28, 16)
    with pytest.raises(ValueError, match=r"\(T, N, input_size\) = \(T, N, 28\).*got \(4, 2, 27\)"):
        m(gpudl.zeros(4, 2, 27))
    with pytest.raises(ValueError, match=r"\(T, N, input_size\).*got \(2, 3, 4, 28\)"):
        m(gpudl.zeros(2, 3, 4, 28))
    with pytest.raises(ValueError, match=r"\(N, T, input_size\) = \(N, T, 28\) with batch_first"):
        nn.GRU(28, 16, batch_first=True)(gpudl.zeros(28))
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(1, 2, 16\), got \(2, 16\)"):
        m(gpudl.zeros(4, 2, 28), (gpudl.zeros(2, 16), gpudl.zeros(1, 2, 16)))
    with pytest.raises(ValueError, match=r"expected c_0 of shape \(1, 2, 16\), got \(1, 3, 16\)"):
        m(gpudl.zeros(4, 2, 28), (gpudl.zeros(1, 2, 16), gpudl.zeros(1, 3, 16)))
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        m(gpudl.zeros(4, 2, 28), gpudl.zeros(1, 2, 16))
    with pytest.raises(ValueError, match=r"h_0 of shape \(4, 2, 8\)"):
        nn.RNN(3, 8, num_layers=2, bidirectional=True)(gpudl.zeros(5, 2, 3), gpudl.zeros(2, 2, 8))
    with pytest.raises(TypeError, match="dtype float32"):
        m(gpudl.zeros(4, 2, 28, dtype="float64"))
    with pytest.raises(ValueError, match=r"\(N, input_size\) = \(N, 3\)"):
        nn.GRUCell(3, 4)(gpudl.zeros(2, 5))
    with pytest.raises(ValueError, match=r"expected hx of shape \(2, 4\)"):
        nn.RNNCell(3, 4)(gpudl.zeros(2, 3), gpudl.zeros(2, 5))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=2)


# ---- Embedding ----------------------------------------------------------------------------------------

def test_embedding_lookup_gradient_and_padding(device):
    e = nn.Embedding(6, 3, padding_idx=-1).to(device)
    assert e.padding_idx == 5 and not e.weight.numpy()[5].any()
    ids = t(np.array([[0, 5, 2], [2, 2, 5]]), device)
    out = e(ids)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.numpy(), e.weight.numpy()[ids.numpy()])
    w = np.random.default_rng(13).standard_normal((2, 3, 3)).astype(np.float32)
    (out * t(w, device)).sum().backward()
    g = e.weight.grad.numpy()
    np.testing.assert_allclose(g[2], w[0, 2] + w[1, 0] + w[1, 1], rtol=1e-6)   # repeated ids add up
    np.testing.assert_allclose(g[0], w[0, 0], rtol=1e-6)
    assert not g[5].any() and not g[[1, 3, 4]].any()


def test_embedding_max_norm_and_scale_grad_by_freq(device):
    """max_norm scales the rows looked up (in place, by max_norm / (norm + 1e-7));
    scale_grad_by_freq divides each row's gradient by its count in the batch."""
    W = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0], [1.0, 0.0]])
    e = nn.Embedding(4, 2, None, 1.0, 2.0, True, dtype="float64").to(device)
    e.weight.data[...] = t(W, device).data
    ids = t(np.array([0, 2, 2, 1]), device)
    out = e(ids)
    want = W.copy()
    want[[0, 2]] *= (1.0 / (np.array([5.0, 10.0]) + 1e-7))[:, None]   # row 3 not looked up: untouched
    np.testing.assert_allclose(e.weight.numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), want[[0, 2, 2, 1]], rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(e.weight.grad.numpy(), [[1, 1], [1, 1], [1, 1], [0, 0]], rtol=1e-12)
    f = nn.Embedding(4, 2, None, None, 1.0, False).to(device)                 # norm_type alone changes nothing
    f(ids).sum().backward()
    assert f.weight.grad.numpy()[2].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="sparse=True is not supported"):
        nn.Embedding(4, 2, sparse=True)
    with pytest.raises(ValueError, match="max_norm to be a number > 0"):
        nn.Embedding(4, 2, max_norm=0)


def test_embedding_options_agree_with_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    W = r.standard_normal((6, 4)) * 2
    ids = np.array([[0, 2, 2], [5, 2, 1]])
    for mn, nt, sg, pi in [(1.5, 2.0, False, None), (1.0, 1.0, True, 2), (2.0, 3.0, True, 5)]:
        te = torch.nn.Embedding(6, 4, pi, mn, nt, sg).double()
        with torch.no_grad():
            te.weight.copy_(torch.tensor(W))
        ge = nn.Embedding(6, 4, pi, mn, nt, sg, dtype="float64")
        ge.weight.data[...] = W
        g = r.standard_normal((2, 3, 4))
        a = te(torch.tensor(ids))
        a.backward(torch.tensor(g))
        b = ge(gpudl.tensor(ids))
        b.backward(gpudl.tensor(g))
        np.testing.assert_allclose(b.numpy(), a.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(ge.weight.grad.numpy(), te.weight.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ge.weight.numpy(), te.weight.detach().numpy(), rtol=1e-12)


def test_embedding_errors_and_from_pretrained():
    e = nn.Embedding(10, 4)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 9\].*got ids in \[0, 10\]"):
        e(gpudl.tensor([[0, 10]]))
    with pytest.raises(ValueError, match=r"in \[0, 9\].*\[-1, 3\]"):
        e(gpudl.tensor([3, -1]))
    with pytest.raises(TypeError, match="integer token ids"):
        e(gpudl.zeros(3))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(10, 4, padding_idx=10)
    f = nn.Embedding.from_pretrained(gpudl.ones(3, 2))
    assert not f.weight.requires_grad and f(gpudl.tensor([1])).numpy().tolist() == [[1.0, 1.0]]


# ---- the registered model and dataset ------------------------------------------------------------------

def test_lstm_model_reads_rows_as_time_steps():
    from gpudl import models
    from gpudl.cli import DATASETS
    assert "lstm" in models.names() and "seqmnist" in DATASETS
    m = models.create("lstm")
    out = m(gpudl.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert m.rnn.weight_ih_l0.shape == (4 * 128, 28)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        m(gpudl.randn(3, 28, 28))


# ---- the recurrent scan's internals ------------------------------------------------------------------------

def test_workspace_reuses_only_arrays_nothing_else_holds():
    from gpudl.ops.rnn import _Workspace
    ws = _Workspace()
    a = ws.empty(np, "cpu", (4, 5), np.dtype("float32"))
    view = a[1:]
    b = ws.empty(np, "cpu", (4, 5), np.dtype("float32"))
    assert b is not a                           # a is held (by `a` and by its view)
    del a, view, b
    c = ws.empty(np, "cpu", (4, 5), np.dtype("float32"))
    d = ws.empty(np, "cpu", (4, 5), np.dtype("float32"))
    assert c is not d and len(ws._cache[("cpu", (4, 5), "float32")]) == 2   # both were free again


def test_rnn_scan_checks_its_arguments():
    from gpudl.ops.rnn import rnn_scan
    x, w_ih, w_hh = gpudl.zeros(3, 2, 5), gpudl.zeros(8, 5), gpudl.zeros(8, 2)
    out, h, c = rnn_scan("lstm", x, w_ih, w_hh)
    assert out.shape == (3, 2, 2) and h.shape == (2, 2) and c.shape == (2, 2)
    with pytest.raises(ValueError, match="mode"):
        rnn_scan("lstmx", x, w_ih, w_hh)
    with pytest.raises(ValueError, match=r"w_ih \(4 \* H, I\)"):
        rnn_scan("lstm", x, gpudl.zeros(8, 4), w_hh)
    with pytest.raises(ValueError, match="both biases or neither"):
        rnn_scan("lstm", x, w_ih, w_hh, b_ih=gpudl.zeros(8))
    with pytest.raises(ValueError, match=r"h0 of shape \(2, 2\)"):
        rnn_scan("gru", x, gpudl.zeros(6, 5), gpudl.zeros(6, 2), h0=gpudl.zeros(3, 2))
    with pytest.raises(ValueError, match="c0 is for mode 'lstm' only"):
        rnn_scan("rnn_tanh", x, gpudl.zeros(2, 5), gpudl.zeros(2, 2), c0=gpudl.zeros(2, 2))


@pytest.mark.parametrize("mode", ["RNN", "LSTM", "GRU"])
def test_final_state_does_not_share_the_outputs_memory(mode):
    gpudl.manual_seed(0)
    layer = getattr(nn, mode)(3, 4)
    x = gpudl.tensor(np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32))
    out, state = layer(x)
    h = state[0] if mode == "LSTM" else state
    want = h.numpy().copy()
    np.testing.assert_array_equal(want[0], out.numpy()[-1])
    out.data[...] = 0                              # writing the output leaves h_n alone, as in PyTorch
    np.testing.assert_array_equal(h.numpy(), want)


def test_relu_rnn_passes_the_gradient_at_nan():
    gpudl.manual_seed(0)
    layer = nn.RNN(2, 3, nonlinearity="relu")
    with gpudl.no_grad():
        layer.weight_ih_l0.data[...] = 1.0
    x = gpudl.tensor(np.array([[[np.nan, 1.0]]], np.float32))
    out, _ = layer(x)
    out.sum().backward()
    np.testing.assert_array_equal(layer.weight_ih_l0.grad.numpy()[:, 1], [1.0, 1.0, 1.0])


def test_lstm_cell_needs_both_states():
    cell = nn.LSTMCell(2, 3)
    x = gpudl.zeros((1, 2))
    with pytest.raises(TypeError, match=r"tuple of two Tensors \(h, c\)"):
        cell(x, (gpudl.zeros((1, 3)), None))


def test_embedding_max_norm_leaves_an_earlier_use_of_the_weight_correct():
    """The renormalised weight gets new storage: a graph that saved the old
    values (the weight used before the lookup) still backpropagates them."""
    W = np.array([[3.0, 4.0], [0.3, 0.4]])
    w = gpudl.tensor(W, requires_grad=True)
    a = (w * w).sum()
    e = nn.functional.embedding(gpudl.tensor([0, 1]), w, max_norm=1.0)
    (a + e.sum()).backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * W + 1, rtol=1e-12)
    np.testing.assert_allclose(w.numpy()[0], W[0] / (5 + 1e-7), rtol=1e-12)
