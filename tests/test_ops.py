"""Every core op: forward against NumPy, backward against float64 central differences."""
import math

import numpy as np
import pytest
import scipy.special

import gpudl
from gpudl.testing import gradcheck
from helpers import t, close

rng = np.random.default_rng(0)


def pos(*shape):
    return rng.uniform(0.5, 2.0, shape)


def any_(*shape):
    return rng.standard_normal(shape)


def apart(*shape):
    """Distinct values spaced apart (no ties) for max/min/clip/relu gradchecks."""
    n = int(np.prod(shape))
    vals = (rng.permutation(n) - n / 2 + 0.37) * 0.1
    return vals.reshape(shape)


def _np_softmax(x, ax):
    e = np.exp(x - x.max(ax, keepdims=True))
    return e / e.sum(ax, keepdims=True)


def _np_gelu(x):
    return 0.5 * x * (1 + scipy.special.erf(x / math.sqrt(2)))


# (id, gpudl function, numpy reference, input makers)
CASES = [
    ("add", lambda a, b: a + b, np.add, [any_(3, 4), any_(4)]),
    ("add_scalar", lambda a: 2.5 + a, lambda a: 2.5 + a, [any_(2, 3)]),
    ("sub", lambda a, b: a - b, np.subtract, [any_(2, 1, 3), any_(4, 1)]),
    ("rsub", lambda a: 1.0 - a, lambda a: 1.0 - a, [any_(5)]),
    ("mul", lambda a, b: a * b, np.multiply, [any_(3, 1), any_(1, 5)]),
    ("div", lambda a, b: a / b, np.divide, [any_(3, 4), pos(3, 4)]),
    ("rdiv", lambda a: 2.0 / a, lambda a: 2.0 / a, [pos(3)]),
    ("pow", lambda a, b: a ** b, np.power, [pos(3, 4), any_(4)]),
    ("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, [any_(2, 3)]),
    ("rpow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [any_(4)]),
    ("neg", lambda a: -a, np.negative, [any_(3)]),
    ("exp", gpudl.exp, np.exp, [any_(3, 2)]),
    ("log", gpudl.log, np.log, [pos(3, 2)]),
    ("sqrt", gpudl.sqrt, np.sqrt, [pos(4)]),
    ("abs", gpudl.abs, np.abs, [apart(2, 3)]),
    ("maximum", gpudl.maximum, np.maximum, [apart(3, 4), apart(4) + 0.013]),
    ("minimum", gpudl.minimum, np.minimum, [apart(3, 4), apart(3, 1) + 0.013]),
    ("clip", lambda a: gpudl.clip(a, -0.3, 0.4), lambda a: np.clip(a, -0.3, 0.4), [apart(3, 5)]),
    ("clip_min", lambda a: a.clamp(min=0.05), lambda a: np.maximum(a, 0.05), [apart(6)]),
    ("matmul", gpudl.matmul, np.matmul, [any_(3, 4), any_(4, 5)]),
    ("matmul_batched", gpudl.matmul, np.matmul, [any_(2, 3, 4), any_(4, 2)]),
    ("matmul_bcast", gpudl.matmul, np.matmul, [any_(2, 1, 3, 4), any_(3, 4, 2)]),
    ("matmul_vec", gpudl.matmul, np.matmul, [any_(4), any_(4, 3)]),
    ("matmul_matvec", gpudl.matmul, np.matmul, [any_(2, 4), any_(4)]),
    ("matmul_dot", gpudl.matmul, np.matmul, [any_(4), any_(4)]),
    ("sum", lambda a: a.sum(), np.sum, [any_(3, 4)]),
    ("sum_axis", lambda a: a.sum(1), lambda a: a.sum(1), [any_(3, 4, 2)]),
    ("sum_keep", lambda a: a.sum((0, 2), keepdim=True), lambda a: a.sum((0, 2), keepdims=True), [any_(3, 4, 2)]),
    ("mean", lambda a: a.mean(-1), lambda a: a.mean(-1), [any_(3, 4)]),
    ("max", lambda a: a.max(), np.max, [apart(3, 4)]),
    ("max_axis", lambda a: a.max(0).values, lambda a: a.max(0), [apart(3, 4)]),
    ("min_keep", lambda a: a.min(1, keepdim=True)[0], lambda a: a.min(1, keepdims=True), [apart(3, 4)]),
    ("amax_dims", lambda a: a.amax((0, 2)), lambda a: a.max((0, 2)), [apart(3, 4, 2)]),
    ("amin_keep", lambda a: gpudl.amin(a, 1, keepdim=True), lambda a: a.min(1, keepdims=True), [apart(3, 4)]),
    ("var", lambda a: a.var(), lambda a: a.var(ddof=1), [any_(3, 4)]),
    ("var_axis", lambda a: a.var(0, correction=0), lambda a: a.var(0), [any_(5, 3)]),
    ("std", lambda a: a.std(1, keepdim=True), lambda a: a.std(1, ddof=1, keepdims=True), [any_(3, 6)]),
    ("logsumexp", lambda a: gpudl.logsumexp(a, 1), lambda a: scipy.special.logsumexp(a, 1), [any_(3, 5)]),
    ("reshape", lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [any_(2, 3, 2)]),
    ("flatten", lambda a: a.flatten(1), lambda a: a.reshape(2, -1), [any_(2, 3, 2)]),
    ("transpose", lambda a: a.transpose(0, 2), lambda a: a.swapaxes(0, 2), [any_(2, 3, 4)]),
    ("permute", lambda a: a.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0), [any_(2, 3, 4)]),
    ("T", lambda a: a.T, lambda a: a.T, [any_(2, 3)]),
    ("squeeze", lambda a: a.squeeze(), np.squeeze, [any_(2, 1, 3, 1)]),
    ("unsqueeze", lambda a: a.unsqueeze(1), lambda a: a[:, None], [any_(2, 3)]),
    ("expand", lambda a: a.expand(3, 2, 4), lambda a: np.broadcast_to(a, (3, 2, 4)), [any_(2, 1)]),
    ("getitem_basic", lambda a: a[1:, None, ::2, 0], lambda a: a[1:, None, ::2, 0], [any_(3, 5, 2)]),
    ("getitem_int_array", lambda a: a[[0, 2, 0, 1]], lambda a: a[[0, 2, 0, 1]], [any_(3, 2)]),
    ("getitem_mixed", lambda a: a[[1, 1], :, [0, 2]], lambda a: a[[1, 1], :, [0, 2]], [any_(2, 3, 4)]),
    ("getitem_bool", lambda a: a[a > 0], lambda a: a[a > 0], [apart(3, 4)]),
    ("cat", lambda a, b: gpudl.cat([a, b, a], 1), lambda a, b: np.concatenate([a, b, a], 1), [any_(2, 3), any_(2, 1)]),
    ("stack", lambda a, b: gpudl.stack([a, b], -1), lambda a, b: np.stack([a, b], -1), [any_(2, 3), any_(2, 3)]),
    ("split", lambda a: gpudl.split(a, [1, 3], 1)[1], lambda a: a[:, 1:], [any_(2, 4)]),
    ("chunk", lambda a: a.chunk(2, 0)[1], lambda a: a[2:], [any_(3, 2)]),
    ("pad", lambda a: gpudl.pad(a, (1, 2, 0, 1), value=0.5),
     lambda a: np.pad(a, ((0, 0), (0, 1), (1, 2)), constant_values=0.5), [any_(2, 2, 3)]),
    ("pad_reflect", lambda a: gpudl.pad(a, (2, 1, 1, 2), "reflect"),
     lambda a: np.pad(a, ((0, 0), (1, 2), (2, 1)), mode="reflect"), [any_(2, 4, 3)]),
    ("pad_replicate", lambda a: gpudl.pad(a, (3, 0, 2, 1), "replicate"),
     lambda a: np.pad(a, ((0, 0), (2, 1), (3, 0)), mode="edge"), [any_(2, 3, 2)]),
    ("pad_circular", lambda a: gpudl.pad(a, (1, 3, 2, 2), "circular"),
     lambda a: np.pad(a, ((0, 0), (2, 2), (1, 3)), mode="wrap"), [any_(2, 3, 4)]),
    ("where", lambda a, b: gpudl.where(a > 0, a, b), lambda a, b: np.where(a > 0, a, b), [apart(3, 4), any_(4)]),
    ("relu", gpudl.relu, lambda a: np.maximum(a, 0), [apart(3, 4)]),
    ("leaky_relu", lambda a: gpudl.leaky_relu(a, 0.1), lambda a: np.where(a > 0, a, 0.1 * a), [apart(3, 4)]),
    ("sigmoid", gpudl.sigmoid, scipy.special.expit, [any_(3, 4) * 4]),
    ("tanh", gpudl.tanh, np.tanh, [any_(3, 4)]),
    ("gelu", gpudl.gelu, _np_gelu, [any_(3, 4) * 2]),
    ("gelu_tanh", lambda a: gpudl.gelu(a, approximate="tanh"),
     lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3))), [any_(3, 4) * 2]),
    ("softmax", lambda a: gpudl.softmax(a, 1), lambda a: _np_softmax(a, 1), [any_(3, 5)]),
    ("softmax0", lambda a: gpudl.softmax(a, 0), lambda a: _np_softmax(a, 0), [any_(3, 5)]),
    ("log_softmax", lambda a: gpudl.log_softmax(a, -1), lambda a: np.log(_np_softmax(a, -1)), [any_(3, 5)]),
]


@pytest.mark.parametrize("name,fn,ref,inputs", CASES, ids=[c[0] for c in CASES])
def test_forward_float32(device, name, fn, ref, inputs):
    args = [t(a, device, dtype=np.float32) for a in inputs]
    out = fn(*args)
    assert out.device == device
    assert out.dtype == np.float32, f"{name} changed float32 to {out.dtype}"
    close(out, ref(*[a.astype(np.float32) for a in inputs]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,fn,ref,inputs", CASES, ids=[c[0] for c in CASES])
def test_gradcheck_float64(device, name, fn, ref, inputs):
    args = [t(a, device, requires_grad=True, dtype=np.float64) for a in inputs]
    close(fn(*args), ref(*inputs), rtol=1e-12, atol=1e-12)
    assert gradcheck(fn, args)


def test_logsumexp_and_softmax_are_stable(device):
    x = t([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]], device, requires_grad=True)
    lse = gpudl.logsumexp(x, 1)
    close(lse, [1e4, -1e4 + math.log(3)], rtol=1e-6)
    s = gpudl.log_softmax(x, 1)
    assert np.isfinite(s.numpy()[:, :2]).all()
    lse.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()
    close(gpudl.softmax(x, 1).sum(1), [1.0, 1.0])
    close(gpudl.sigmoid(t([-1e4, 1e4], device)), [0.0, 1.0])


def test_argmax_argmin(device):
    a = np.array([[1.0, 5.0, 5.0], [7.0, -1.0, 2.0]], dtype=np.float32)
    x = t(a, device)
    assert x.argmax().item() == 3
    assert x.argmax(1).tolist() == [1, 0]        # first of the tied maxima
    assert x.argmin(0, keepdim=True).tolist() == [[0, 1, 1]]
    assert x.argmax(1).dtype == np.int64


def test_comparisons_have_no_grad(device):
    x = t([1.0, 2.0, 3.0], device, requires_grad=True)
    m = x > 1.5
    assert m.dtype == np.bool_ and not m.requires_grad
    assert m.tolist() == [False, True, True]
    assert (x == 2.0).tolist() == [False, True, False]
    assert (~m).tolist() == [True, False, False]


def test_dropout_is_seeded_and_scaled(device):
    x = gpudl.ones(1000, 10, device=device, requires_grad=True)
    gpudl.manual_seed(7)
    a = gpudl.dropout(x, 0.3)
    gpudl.manual_seed(7)
    b = gpudl.dropout(x, 0.3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    vals = np.unique(a.numpy())
    np.testing.assert_allclose(vals, [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((a.numpy() == 0).mean() - 0.3) < 0.02
    a.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), a.numpy())
    assert gpudl.dropout(x, 0.3, training=False) is x


def test_dropout_gradcheck(device):
    x = t(any_(4, 5), device, requires_grad=True, dtype=np.float64)

    def f(a):
        gpudl.manual_seed(3)
        return gpudl.dropout(a, 0.5)
    assert gradcheck(f, [x])


def test_integer_and_bool_promotion(device):
    i = gpudl.arange(4, device=device)
    assert i.dtype == np.int64
    assert (i + 1).dtype == np.int64
    assert (i * 0.5).dtype == np.float32
    assert (i / 2).dtype == np.float32
    f = gpudl.ones(4, device=device)
    assert (f + i).dtype == np.float32 and (i * f).dtype == np.float32
    d = gpudl.ones(2, dtype="float64", device=device)
    assert (d * 2.0).dtype == np.float64
    assert (gpudl.ones(2, device=device) * np.float64(2.0)).dtype == np.float32
    assert gpudl.tensor([True, False], device=device).sum().item() == 1
    # PyTorch: a 0-d tensor of the same category does not widen a tensor with dimensions
    z64 = gpudl.tensor(2.0, dtype="float64", device=device)
    assert (gpudl.ones(2, device=device) + z64).dtype == np.float32
    assert (z64 * gpudl.ones(2, device=device)).dtype == np.float32
    assert gpudl.maximum(gpudl.ones(2, device=device), z64).dtype == np.float32
    assert (gpudl.ones(2, dtype="int32", device=device) + gpudl.tensor(2, device=device)).dtype == np.int32
    assert (i + gpudl.tensor(2.5, dtype="float64", device=device)).dtype == np.float64   # higher category
    assert (z64 + gpudl.tensor(1.0, device=device)).dtype == np.float64                 # both 0-d


def test_mixed_indices_follow_pytorchs_order(device):
    """Integers select first, then index arrays: x[0, :, [0, 1]] is (3, 2), as in
    PyTorch (NumPy gives (2, 3)); reading, writing and the gradient agree."""
    base = np.arange(24.0).reshape(2, 3, 4)
    x = t(base, device, requires_grad=True)
    for idx, want in (((0, slice(None), [0, 1]), base[0][:, [0, 1]]),
                      ((0, None, [1, 1]), base[0][None][:, [1, 1]]),
                      ((slice(None), 1, [0, 2, 3]), base[:, 1][:, [0, 2, 3]]),
                      ((1, Ellipsis, [0, 3]), base[1][..., [0, 3]]),
                      ((gpudl.tensor(1, device=device), slice(None), [0, 1]), base[1][:, [0, 1]]),
                      ((0, slice(None), gpudl.tensor([True, False, True, False], device=device)),
                       base[0][:, [0, 2]])):
        close(x[idx], want, rtol=0)
    w = rng.standard_normal((3, 2))
    (x[0, :, [0, 1]] * t(w, device)).sum().backward()
    g = np.zeros_like(base)
    g[0][:, [0, 1]] = w
    close(x.grad, g, rtol=1e-12)
    y = t(base.copy(), device)
    y[0, :, [0, 1]] = t(np.arange(6.0).reshape(3, 2), device)
    want = base.copy()
    want[0][:, [0, 1]] = np.arange(6.0).reshape(3, 2)
    close(y, want, rtol=0)
    z = gpudl.zeros(2, 2, device=device)
    z[1, 1].copy_(gpudl.tensor(5.0, device=device))      # a view, as in PyTorch
    assert z.tolist() == [[0, 0], [0, 5]]


def test_setitem_and_clone(device):
    x = gpudl.zeros(2, 3, device=device)
    x[0, 1:] = 5.0
    x[1] = gpudl.tensor([1.0, 2.0, 3.0], device=device)
    assert x.tolist() == [[0, 5, 5], [1, 2, 3]]
    w = gpudl.ones(2, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w[0] = 3.0
    with gpudl.no_grad():
        w[0] = 3.0
    assert w.tolist() == [3.0, 1.0]
    c = w.clone()
    (c * c).sum().backward()
    close(w.grad, [6.0, 2.0])


def test_max_with_dim_returns_values_and_indices(device):
    x = t([[0.1, 0.9, 0.9], [0.8, 0.1, 0.1]], device, requires_grad=True)
    values, indices = x.max(1)
    assert indices.tolist() == [1, 0] and indices.dtype == np.int64
    close(values, [0.9, 0.8])
    assert x.min(0, keepdim=True).indices.tolist() == [[0, 1, 1]]
    values.sum().backward()            # the gradient goes to the returned index only (as PyTorch)
    close(x.grad, [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.max().backward()                 # a full reduction shares it between the ties
    close(x.grad, [[0, 0.5, 0.5], [0, 0, 0]])


def test_edge_gradients_match_pytorch(device):
    x = t([2.0], device, requires_grad=True)
    x.std().backward()                 # one sample, Bessel's correction: NaN, not an exception
    assert np.isnan(x.grad.numpy()).all()
    z = t([0.0, 2.0], device, requires_grad=True)
    (z ** 0).sum().backward()
    close(z.grad, [0.0, 0.0])


def test_where_scalars_cat_promotion_randint(device):
    cond = gpudl.tensor([True, False], device=device)
    w = gpudl.where(cond, 1.0, 0.0)
    assert w.tolist() == [1.0, 0.0] and w.dtype == np.float32 and w.device == device
    c = gpudl.cat([gpudl.tensor([1, 2], device=device), gpudl.tensor([0.5], device=device)])
    assert c.dtype == np.float32 and c.tolist() == [1.0, 2.0, 0.5]
    r = gpudl.randint(10, (5,), device=device)
    assert r.shape == (5,) and r.numpy().max() < 10
    with pytest.raises(ValueError, match="low < high"):
        gpudl.randint(3, 3)


def test_setitem_of_values_that_need_grad_is_recorded(device):
    """As PyTorch: a buffer filled row by row with values that require grad
    carries their gradients; what was computed from it before keeps the old
    node; a view of other memory or a leaf that requires grad is refused."""
    w = gpudl.tensor([2.0, 3.0], device=device, requires_grad=True)
    buf = gpudl.zeros(3, 2, device=device)
    before = buf.sum()
    buf[0] = w * 3
    buf[2, [1, 0]] = w * w                   # an index array
    buf[1] = 1.0
    assert before.item() == 0 and not before.requires_grad and buf.requires_grad
    (buf * gpudl.tensor([[1.0], [10.0], [100.0]], device=device)).sum().backward()
    close(w.grad, [3 + 100 * 2 * 2.0, 3 + 100 * 2 * 3.0])
    y = w * 1.0
    z = y + 1                                 # computed before the write: the old node
    y[0] = w[1] * 5
    (z.sum() + (y * y).sum()).backward()
    assert w.grad is not None
    v = gpudl.zeros(4, device=device)[1:3]
    with pytest.raises(RuntimeError, match="views another tensor's memory"):
        v[0] = w[0]
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w[0] = 1.0
    from gpudl.testing import gradcheck
    a = gpudl.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], dtype=gpudl.float64, device=device,
                     requires_grad=True)
    b = gpudl.tensor([0.2, -0.4, 0.9], dtype=gpudl.float64, device=device, requires_grad=True)

    def f(a, b):
        y = a * 2
        y[1] = b * (y[0] + 1)                  # a row of y as it was before the write
        y[:, 2] = b[:2]
        h = gpudl.zeros(2, 3, dtype=gpudl.float64, device=device)
        h[...] = y * b                         # broadcast
        h.copy_(h + b * 2)                     # copy_ records the same way (broadcast)
        return h * y
    assert gradcheck(f, [a, b])


def test_in_place_operators_and_methods_are_recorded_as_pytorch_does(device):
    """y += b, y *= b, y.add_(a, alpha=2) ... on a non-leaf, and h += a on a fresh
    tensor, give PyTorch's gradients (checked in float64); the old values a
    multiplication needs are kept; a product saved before the write refuses."""
    from gpudl.testing import gradcheck
    f64 = gpudl.float64
    a = gpudl.tensor([0.5, -1.2, 2.0], dtype=f64, device=device, requires_grad=True)
    b = gpudl.tensor([1.5, 0.3, -0.7], dtype=f64, device=device, requires_grad=True)

    def f(a, b):
        y = a * 1.0
        z = (y + 1) * a
        y += b
        y *= b
        y -= a
        y /= b * b + 1
        y.add_(a, alpha=2)
        y.mul_(b)
        y **= 2
        h = gpudl.zeros(3, dtype=f64, device=device)
        h += a
        h *= b
        return y * 2 + z + h
    assert gradcheck(f, [a, b])
    y = a * 1.0
    p = y * y
    y += b
    with pytest.raises(RuntimeError, match="changed in place"):
        p.sum().backward()


# ---- PyTorch's semantics at the edges (found by differential testing) -------

def test_var_std_take_pytorch_positional_arguments(device):
    a = any_(3, 4, 5)
    x = t(a, device)
    close(x.var(0, False), a.var(0))                     # (dim, unbiased)
    close(x.var(False), a.var())                         # (unbiased)
    s = x.std(0, True)
    assert s.shape == (4, 5)                             # keepdim is the third argument
    close(s, a.std(0, ddof=1))
    close(x.std(1, True, True), a.std(1, ddof=1, keepdims=True))
    close(x.var(2, correction=0), a.var(2))
    with pytest.raises(TypeError, match="not both"):
        x.var(0, True, correction=1)


def test_std_gradient_is_zero_where_the_spread_is(device):
    x = t([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]], device, requires_grad=True)
    x.std(1).sum().backward()
    g = x.grad.numpy()
    np.testing.assert_array_equal(g[0], [0.0, 0.0, 0.0])
    b = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(g[1], (b - b.mean()) / (2 * b.std(ddof=1)), rtol=1e-6)
    v = t([1.0, 2.0], device).var(correction=2)          # no degrees of freedom left: inf
    assert np.isinf(v.item())


def test_reductions_over_no_dims_and_of_0d_tensors(device):
    a = any_(2, 3)
    x = t(a, device)
    close(x.sum(dim=()), a.sum())
    close(x.mean(dim=()), a.mean())
    s = t(3.0, device, requires_grad=True)
    assert s.sum(0).item() == 3.0
    v, i = s.max(0)
    assert v.item() == 3.0 and i.item() == 0 and v.shape == () and i.shape == ()
    v.backward()
    assert s.grad.item() == 1.0


def test_max_min_of_a_tensor_are_element_wise(device):
    x = t([[1.0, 5.0], [3.0, 2.0]], device)
    y = t([4.0, 0.0], device)
    close(x.max(y), [[4.0, 5.0], [4.0, 2.0]])
    close(gpudl.min(x, y), [[1.0, 0.0], [3.0, 0.0]])


def test_comparing_with_none(device):
    x = t([1.0], device)
    assert (x == None) is False and (x != None) is True  # noqa: E711


def test_pow_exponent_gradient_at_zero_and_negative_bases(device):
    b = t([-2.0, 0.0, 0.0, 2.0], device, requires_grad=True)
    e = t([2.0, -1.0, 2.0, 3.0], device, requires_grad=True)
    (b ** e).sum().backward()
    ge = e.grad.numpy()
    assert np.isnan(ge[0]) and ge[1] == -np.inf and ge[2] == 0.0
    np.testing.assert_allclose(ge[3], 8 * np.log(2), rtol=1e-6)
    gb = b.grad.numpy()
    assert gb[0] == -4.0 and gb[1] == -np.inf and gb[2] == 0.0 and gb[3] == 12.0


def test_relu_passes_the_gradient_at_nan(device):
    x = t([np.nan, -1.0, 0.0, 2.0], device, requires_grad=True)
    gpudl.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 0.0, 1.0])


def test_relu_blocks_a_nan_gradient_where_it_is_off(device):
    """PyTorch's threshold_backward: 0 where the output is 0, whatever comes
    (g * mask would make NaN * 0 = NaN there); g itself where it is on."""
    x = t([-1.0, 0.0, 2.0, np.nan], device, requires_grad=True)
    gpudl.relu(x).backward(t([np.nan, np.inf, np.nan, -np.inf], device))
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, np.nan, -np.inf])


def test_in_place_operators_write_into_the_tensor(device):
    """x -= ... under no_grad updates x (and what views it), as in PyTorch: a
    hand-written SGD loop trains; a leaf that requires grad is refused while
    recording; a write into a non-leaf is recorded in place, as in PyTorch."""
    w = gpudl.tensor([1.0, -2.0], device=device, requires_grad=True)
    params = [w]
    for _ in range(3):
        w.grad = None
        ((w * w).sum() / 2).backward()
        with gpudl.no_grad():
            for p in params:
                p -= 0.25 * p.grad
    close(w, [1.0 * 0.75 ** 3, -2.0 * 0.75 ** 3], rtol=1e-6)
    assert w.requires_grad and w.grad_fn is None
    y = gpudl.zeros(2, 3, device=device)
    row = y[0]
    with gpudl.no_grad():
        row += 1
        row *= 3
        row //= 2
    assert y.tolist() == [[1, 1, 1], [0, 0, 0]]
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad cannot take an in-place operation"):
        w += 1
    a = gpudl.tensor([1.0, 2.0], device=device, requires_grad=True)
    b = a * 2
    b += a                                      # recorded: b = b + a
    b.sum().backward()
    assert a.grad.tolist() == [3.0, 3.0]
    # a tensor a graph saved, then changed in place: backward refuses, as PyTorch's does
    x = gpudl.tensor([3.0, 4.0], device=device)
    s = (a * x).sum()
    x += 10
    assert x.tolist() == [13.0, 14.0]
    with pytest.raises(RuntimeError, match="Mul saved for its gradient was changed in place"):
        s.backward()
    s = (a + x).sum()                           # Add saves nothing: fine
    x *= 2
    a.grad = None
    s.backward()
    assert a.grad.tolist() == [1.0, 1.0]
    e = a.exp()                                 # Exp saves its output
    with gpudl.no_grad():
        e.add_(1)
    with pytest.raises(RuntimeError, match="Exp saved"):
        e.sum().backward()
    v = gpudl.zeros(3, device=device)
    view = v[1:]
    s = (a * view).sum()
    v[0] = 5.0                                  # a write into the base moves the views' counter too
    with pytest.raises(RuntimeError, match="changed in place"):
        s.backward()
    p = nn_param = gpudl.ones(2, device=device, requires_grad=True)
    s = (p * p).sum()
    opt = gpudl.optim.SGD([nn_param], lr=0.1)
    p.grad = gpudl.ones(2, device=device)
    opt.step()                                  # the step writes p in place
    with pytest.raises(RuntimeError, match="Mul saved"):
        s.backward()
    i = gpudl.tensor([1, 2], device=device)
    i += 1
    assert i.tolist() == [2, 3] and i.dtype == np.int64
    for grad_mode in (True, False):
        with gpudl.set_grad_enabled(grad_mode):
            with pytest.raises(TypeError, match="float64, which cannot be stored in place in a tensor of int64"):
                i /= 2
            with pytest.raises(ValueError, match=r"shape \(2, 2\) cannot be written in place into shape \(2,\)"):
                i += gpudl.ones(2, 2, device=device, dtype="int64")
    f = a * 1.0
    f /= gpudl.tensor([2.0, 2.0], dtype="float64", device=device)
    assert f.dtype == np.float32                # the tensor's dtype holds, as in PyTorch


def test_in_place_methods(device):
    x = gpudl.ones(3, device=device)
    assert x.add_(gpudl.tensor([1.0, 2.0, 3.0], device=device), alpha=-2) is x
    assert x.tolist() == [-1.0, -3.0, -5.0]
    x.sub_(1).mul_(2).div_(4)
    assert x.tolist() == [-1.0, -2.0, -3.0]
    x.clamp_(min=-2.5, max=-1.5)
    assert x.tolist() == [-1.5, -2.0, -2.5]
    x.fill_(gpudl.tensor(7.0, device=device))
    assert x.tolist() == [7.0, 7.0, 7.0]
    w = gpudl.ones(2, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w.add_(1)
    with gpudl.no_grad():
        w.add_(1)
        w.clamp_(max=1.5)
    assert w.tolist() == [1.5, 1.5]


def test_integer_and_logical_operators(device):
    """&, |, ^, ~, //, % and any/all with PyTorch's results; integer sums are int64."""
    i = gpudl.tensor([5, -3], device=device)
    assert (i // 2).tolist() == [2, -2] and (i % 2).tolist() == [1, 1]
    assert (7 // i).tolist() == [1, -3] and (7 % i).tolist() == [2, -2]
    assert (i & 3).tolist() == [1, 1] and (i | 8).tolist() == [13, -3] and (i ^ 1).tolist() == [4, -4]
    assert (~i).tolist() == [-6, 2]
    b = (i > 0) & (i < 10)
    assert b.dtype == np.bool_ and b.tolist() == [True, False]
    assert ((i > 0) | (i < -5)).tolist() == [True, False] and (~b).tolist() == [False, True]
    assert i.any().item() is True and (i > 0).all().item() is False
    assert gpudl.tensor([[0.0, 1.0], [0.0, 0.0]], device=device).any(dim=1, keepdim=True).tolist() == [[True], [False]]
    with pytest.raises(TypeError, match="&: expected bool or integer tensors, got float32"):
        gpudl.ones(2, device=device) & gpudl.ones(2, device=device)
    assert gpudl.tensor([200, 100], dtype="uint8", device=device).sum().item() == 300
    assert gpudl.tensor([1, 2], dtype="int32", device=device).sum().dtype == np.int64
    assert gpudl.ones(2, device=device).sum(dtype="float64").dtype == np.float64
    x = t(np.array([3.5, -2.0, 7.25]), device, requires_grad=True)
    d = t(np.array([2.0, 1.5, -3.0]), device, requires_grad=True)
    close(x % d, np.remainder([3.5, -2.0, 7.25], [2.0, 1.5, -3.0]), rtol=1e-12)
    assert gradcheck(lambda a, b: a % b, [x, d])
    close(x // 2, [1.0, -1.0, 3.0], rtol=0)


def test_nan_gradients_follow_pytorch(device):
    """max()/min() of data with NaN: the NaNs share the gradient; maximum and
    minimum pass it to both sides where a NaN makes neither win."""
    x = t(np.array([1.0, np.nan, np.nan]), device, requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5]
    x.grad = None
    x.min().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5]
    a = t(np.array([np.nan, 1.0, 2.0, 3.0]), device, requires_grad=True)
    b = t(np.array([0.0, np.nan, 2.0, 1.0]), device, requires_grad=True)
    gpudl.maximum(a, b).sum().backward()
    assert a.grad.tolist() == [1.0, 1.0, 0.5, 1.0] and b.grad.tolist() == [1.0, 1.0, 0.5, 0.0]
    a.grad = b.grad = None
    gpudl.minimum(a, b).sum().backward()
    assert a.grad.tolist() == [1.0, 1.0, 0.5, 0.0] and b.grad.tolist() == [1.0, 1.0, 0.5, 1.0]


def test_empty_reductions_and_integer_activations_as_pytorch(device):
    z = gpudl.zeros(3, 0, device=device, requires_grad=True)
    assert z.softmax(1).shape == (3, 0) and z.log_softmax(1).shape == (3, 0)
    lse = z.logsumexp(1)
    assert lse.tolist() == [-np.inf] * 3
    lse.sum().backward()
    assert z.grad.shape == (3, 0)
    values, indices = gpudl.zeros(0, 3, device=device).max(1)
    assert values.shape == indices.shape == (0,)
    with pytest.raises(ValueError, match="non-empty tensor along the reduced dims"):
        gpudl.zeros(0, 3, device=device).max(0)
    e = gpudl.zeros(0, 2, device=device)
    assert [p.shape for p in e.split(2)] == [(0, 2)] and [p.shape for p in e.chunk(2)] == [(0, 2), (0, 2)]
    i = gpudl.tensor([1, -2], device=device)
    assert i.relu().tolist() == [1, 0] and i.relu().dtype == np.int64
    assert i.sigmoid().dtype == np.float32 and abs(i.sigmoid().tolist()[0] - 1 / (1 + np.exp(-1))) < 1e-7
    assert gpudl.tensor([True], device=device).tanh().dtype == np.float32


def test_review_edges_of_indexing_sums_and_nan_maxima(device):
    z = gpudl.zeros(2, 3, 4, 5, device=device)
    assert z[True, 0, [1]].shape == (1, 4, 5) and z[True, [0, 1], :, 0].shape == (2, 3, 5)
    assert gpudl.tensor([2, 3], device=device).sum(dtype="int32").dtype == np.int32
    assert gpudl.tensor([200, 100], dtype="uint8", device=device).sum(dtype="uint8").item() == 44
    assert gpudl.tensor([True, True], device=device).sum(dtype="bool").item() is True
    w = gpudl.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="not recorded by autograd"):
        gpudl.zeros(3, device=device).clamp_(min=w * 1.0)
    x = gpudl.tensor([[1.0, np.nan, np.nan], [2.0, 3.0, 3.0]], device=device, requires_grad=True)
    x.amax(1).sum().backward()               # PyTorch's amax: NaN there (max() shares it)
    assert np.isnan(x.grad.numpy()[0]).all() and x.grad.tolist()[1] == [0.0, 0.5, 0.5]


def test_version_counters_are_shared_by_views_detach_and_parameters(device):
    x = gpudl.zeros(4, device=device)
    assert x[1:]._ver is x._ver and x.reshape(2, 2)._ver is x._ver
    assert x.detach()._ver is x._ver
    assert (x + 1)._ver is not x._ver
    p = gpudl.nn.Parameter(x)
    assert p._ver is x._ver
    a = gpudl.ones(4, device=device, requires_grad=True)
    s = (a * x.detach()).sum()
    x.zero_()                                   # through another name for the same memory
    with pytest.raises(RuntimeError, match="changed in place"):
        s.backward()


def test_version_checks_cover_rnn_weights_state_dict_loads_grad_accumulation_and_indices():
    import gpudl.nn as nn
    m = nn.LSTM(3, 4)
    out, _ = m(gpudl.randn(5, 2, 3))
    loss = (out * out).sum()
    with gpudl.no_grad():
        m.weight_hh_l0.mul_(2)
    with pytest.raises(RuntimeError, match="_ScanRoot saved"):
        loss.backward()
    lin = nn.Linear(3, 2)
    x = gpudl.ones(4, 3, requires_grad=True)
    y = (lin(x) * lin(x)).sum()
    lin.load_state_dict({k: v * 2 for k, v in lin.state_dict().items()})
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()
    w = gpudl.ones(3, requires_grad=True)
    (w * 2).sum().backward()
    y = (w * w.grad).sum()
    (w * 3).sum().backward()                    # accumulates into the .grad that y saved
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()
    x = gpudl.zeros(5, requires_grad=True)
    i = gpudl.tensor([0, 1])
    y = x[i].sum()
    i[0] = 4
    with pytest.raises(RuntimeError, match="GetItem saved"):
        y.backward()


@pytest.mark.parametrize("op", ["embedding", "where", "cross_entropy", "cross_entropy_smoothed",
                                "cross_entropy_weighted", "nll_loss", "multiclass_hinge_loss"])
def test_ids_conditions_and_targets_changed_in_place_are_refused(device, op):
    """The integer or bool tensor an op reads in its backward (embedding ids, where's
    condition, a loss's classes) changed in place before backward: refused, as
    PyTorch refuses. Before, the gradient silently used the new values."""
    F = gpudl.nn.functional
    z = t(np.zeros((2, 4), np.float32), device, requires_grad=True)
    other = t(np.array([1, 2]), device)
    if op == "embedding":
        other = t(np.array([1, 0]), device)
        out = F.embedding(other, z)
    elif op == "where":
        other = t(np.array([[True, False, True, False]] * 2), device)
        out = gpudl.where(other, z, z * 2)
    else:
        fn = getattr(F, op.replace("_smoothed", "").replace("_weighted", ""))
        kw = {"label_smoothing": 0.1} if "smoothed" in op else {"weight": gpudl.ones(4, device=device)} \
            if "weighted" in op else {}
        out = fn(z, other, **kw)
    other[0] = other[1]
    with pytest.raises(RuntimeError, match="changed in place"):
        out.sum().backward()


def test_a_saved_operand_whose_gradient_is_not_needed_may_change(device):
    """As PyTorch: w * x with x needing no gradient reads only x in backward,
    so w may change in place meanwhile; x may not."""
    w = gpudl.ones(3, device=device, requires_grad=True)
    x = gpudl.tensor([1.0, 2.0, 3.0], device=device)
    y = (w * x).sum()
    with gpudl.no_grad():
        w.add_(1)
    y.backward()
    assert w.grad.tolist() == [1.0, 2.0, 3.0]
    y = (w @ x.reshape(3, 1)).sum()
    with gpudl.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match="MatMul saved"):
        y.backward()


def test_infinities_and_nan_are_results_not_warnings(device):
    """log(0), 1/0, exp overflow, 0 * inf ... give PyTorch's values and no NumPy
    RuntimeWarning, forward and backward, in operators, comparisons and in-place
    ops; the user's own NumPy still warns afterwards, also after an op failed."""
    import warnings
    F = gpudl.nn.functional
    x = t(np.array([0.0, -1.0, 1e30, -1e30, np.inf, np.nan, 1.0], np.float32), device, requires_grad=True)
    cases = [lambda: x.log(), lambda: x.sqrt(), lambda: x.exp(), lambda: x / 0.0, lambda: 1.0 / x,
             lambda: x ** 2.5, lambda: x ** -1, lambda: F.gelu(x), lambda: x * x, lambda: x.logsumexp(0),
             lambda: x % 0.0, lambda: F.mse_loss(x, x * 0), lambda: F.binary_cross_entropy_with_logits(x, x * 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f in cases:
            f().sum().backward()
            x.grad = None
        with gpudl.no_grad():
            close(x // 0.0, [np.nan, -np.inf, np.inf, -np.inf, np.inf, np.nan, np.inf], rtol=0)
            assert not (x < np.nan).numpy().any()
            y = x.clone()
            y /= 0.0
            y **= 3.0
            y.clamp_(min=0)
        close(x.detach().log(), [-np.inf, np.nan, 69.07755, np.nan, np.inf, np.nan, 0.0], rtol=1e-6)
        # a Python number cast into the tensor's dtype: 1e10 in float16 is inf, as in PyTorch
        h = t(np.array([1.0, -1.0], np.float16), device)
        for f in (lambda: h + 1e10, lambda: h * 1e10, lambda: gpudl.maximum(h, 1e10), lambda: h < 1e10):
            close(f().float(), f().float())
        close((h + 1e10).float(), [np.inf, np.inf], rtol=0)
        with pytest.raises(ValueError):
            gpudl.ones(2, device=device) @ gpudl.ones(3, device=device)
        with pytest.raises(RuntimeWarning):
            np.log(np.zeros(1))


def test_recorded_in_place_writes_at_the_edges(device):
    """Found by review: a view taken before a recorded write is refused (its
    values are new, its graph old), one taken after matches PyTorch; an in-place
    op with no derivative is refused and leaves the graph as it was; a 0-d copy_
    is recorded; RNN outputs and initial states written in place before backward
    are refused (their backward reads them)."""
    w = gpudl.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    v = gpudl.tensor(5.0, device=device, requires_grad=True)
    x = w * 1
    y = x[0:2]
    x.mul_(v)
    with pytest.raises(RuntimeError, match="view taken before an in-place operation"):
        y.sum()
    with pytest.raises(RuntimeError, match="view taken before an in-place operation"):
        x[0:2] = y                              # nor may it be written anywhere
    x[0:2].sum().backward()                     # taken after: as PyTorch, w.grad [5, 5, 0], v.grad 3
    close(w.grad, [5.0, 5.0, 0.0])
    close(v.grad, 3.0)
    z = w * 2
    with pytest.raises(RuntimeError, match="no derivative"):
        z //= 1.5
    assert z.grad_fn is not None and not z.is_leaf
    close(z, [2.0, 4.0, 6.0])                   # refused before writing
    s = w.sum()
    s.copy_(v * 3)
    (s * s).backward()
    close(v.grad, 3.0 + 2 * 15.0 * 3)
    import gpudl.nn as nn
    for make in (lambda: nn.RNN(2, 3), lambda: nn.GRU(2, 3), lambda: nn.LSTM(2, 3)):
        for write in ("out", "h0"):
            m = make().to(device)
            h0 = gpudl.randn(1, 2, 3, device=device)
            state = (h0, gpudl.zeros(1, 2, 3, device=device)) if isinstance(m, nn.LSTM) else h0
            out, _ = m(gpudl.randn(4, 2, 2, device=device), state)
            if write == "out":
                out *= 2.0
            else:
                h0 += 5
            with pytest.raises(RuntimeError, match="changed in place"):
                (out * out).sum().backward()


def test_stale_views_of_memory_that_needed_no_gradient_are_refused_too(device):
    """Found by review: a view of a buffer that required no grad, taken before a
    recorded write gave the buffer a gradient, silently acted as a constant
    (w.grad [1, 1, 1] where PyTorch gives [3, 5, 1]); now refused in grad mode,
    also through .to(); under no_grad its values are fine. x[:, 0] *= w (a view,
    then setitem into x) matches PyTorch."""
    f64 = gpudl.float64
    w = gpudl.tensor([1.0, 2.0, 3.0], dtype=f64, device=device, requires_grad=True)
    x = gpudl.zeros(3, dtype=f64, device=device)
    v = x[0:2]
    x.add_(w)
    with pytest.raises(RuntimeError, match="view taken before"):
        v * v
    if str(device) != "cpu":                     # (on the CPU, .to("cpu") is the tensor itself)
        with pytest.raises(RuntimeError, match="view taken before"):
            v.to("cpu")
    with gpudl.no_grad():
        close(v * 2, [2.0, 4.0])
    close(x[0:2] * 1, [1.0, 2.0])               # taken again: fine
    b = gpudl.zeros(2, 3, dtype=f64, device=device)
    w2 = gpudl.tensor([1.0, 2.0], dtype=f64, device=device, requires_grad=True)
    b[:, 0] += w2
    b[:, 0] *= w2
    (b * b).sum().backward()
    close(w2.grad, [4.0, 32.0])                  # PyTorch's: d/dw sum((w * w)^2) = 4 w^3


def test_mean_and_var_of_nothing_are_nan_without_numpy_warnings(device):
    import warnings
    x = gpudl.zeros(0, 3, device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = x.mean(0)
        assert m.shape == (3,) and np.isnan(m.numpy()).all()
        m.sum().backward()
        assert x.grad.shape == (0, 3)
        assert np.isnan(gpudl.zeros(0, device=device).mean().item())
        assert np.isnan(x.detach().var(0).numpy()).all() and np.isnan(x.detach().std().item())


def test_zero_fill_and_clamp_are_recorded(device):
    """As PyTorch: zero_/fill_ give the old values no gradient (fill_'s 0-d tensor
    value gets the sum), clamp_ passes it inside the bounds; checked in float64
    against central differences; tensor bounds that need a gradient are refused."""
    from gpudl.testing import gradcheck
    f64 = gpudl.float64
    a = gpudl.tensor([[0.5, -1.2, 2.0], [0.1, 0.9, -0.3]], dtype=f64, device=device, requires_grad=True)
    s = gpudl.tensor(0.7, dtype=f64, device=device, requires_grad=True)

    with pytest.raises(RuntimeError, match="views another tensor's memory"):
        (a * 3)[1:].fill_(s)                   # a view: the methods refuse

    def g(a, s):
        y = a * 2
        y.clamp_(min=-1.0, max=gpudl.tensor(1.5, dtype=f64, device=device))
        z = a * 3
        z.fill_(s)
        u = a + 1
        u.zero_()
        return y * a + z * s + u + (a * 5).clamp_(max=0.4)
    assert gradcheck(g, [a, s])
    with pytest.raises(RuntimeError, match="not recorded"):
        (a * 1).clamp_(min=s)


def test_integer_division_by_zero_raises_on_the_cpu():
    """As PyTorch's CPU kernels (NumPy gives 0 and a warning); floats give inf/NaN."""
    i = gpudl.tensor([5, 3])
    for f in (lambda: i // gpudl.tensor([0, 1]), lambda: i % 0, lambda: i.__ifloordiv__(0),
              lambda: i.clone().__imod__(gpudl.tensor([1, 0]))):
        with pytest.raises(ZeroDivisionError, match="integer division by zero"):
            f()
    assert (i // 2).tolist() == [2, 1] and (i % 2).tolist() == [1, 1]
    assert np.isinf((gpudl.tensor([1.0]) // 0.0).numpy()).all()


def test_operators_on_views(device):
    """x[i] += w matches PyTorch (a view, then setitem into x); v = x[i]; v += w,
    where PyTorch writes through into x, is refused (it silently left x as it
    was); a view of a leaf that requires grad is refused before anything is written."""
    f64 = gpudl.float64
    w = gpudl.tensor([1.0, 2.0], dtype=f64, device=device, requires_grad=True)
    x = gpudl.zeros(2, 3, dtype=f64, device=device)
    x[:, 0] += w
    x[1:, 1:] += w[1] * 2
    (x * x).sum().backward()
    close(w.grad, [2.0, 36.0])                   # PyTorch's
    y = gpudl.zeros(4, dtype=f64, device=device)
    v = y[0:2]
    with pytest.raises(RuntimeError, match="PyTorch would write it through"):
        v += w
    close(y, [0.0, 0.0, 0.0, 0.0])
    with gpudl.no_grad():                       # nothing to record: written through
        v += w
    close(y, [1.0, 2.0, 0.0, 0.0])
    lin = gpudl.nn.Linear(3, 2).to(device)
    before = lin.weight.detach().clone()
    row = lin.weight[0]
    with pytest.raises(RuntimeError, match="view of a leaf tensor that requires grad"):
        row *= 2.0
    with pytest.raises(RuntimeError, match="view of a leaf tensor that requires grad"):
        lin.weight[0] += 1
    close(lin.weight.detach(), before.numpy(), rtol=0)
