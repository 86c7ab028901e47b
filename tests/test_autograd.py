"""The autograd engine: accumulation, deep graphs, freeing, no_grad, errors."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

import gpudl
from gpudl.testing import gradcheck
from helpers import t, close


def test_gradient_accumulates_when_used_twice(device):
    x = t([1.0, 2.0, 3.0], device, requires_grad=True)
    y = x * x + x          # x used three times
    y.sum().backward()
    close(x.grad, [3.0, 5.0, 7.0])
    (x * 2).sum().backward()   # a second backward adds into .grad
    close(x.grad, [5.0, 7.0, 9.0])


def test_diamond_graph(device):
    x = t([0.5, -1.0], device, requires_grad=True)
    a = x.exp()
    b = a * 3
    c = a * a
    (b + c).sum().backward()
    e = np.exp([0.5, -1.0])
    close(x.grad, 3 * e + 2 * e * e, rtol=1e-6)


def test_chain_ten_thousand_ops_deep(device):
    x = t([1.0], device, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    close(x.grad, [1.0001 ** 10_000], rtol=1e-3)
    del y
    gc.collect()


def test_buffers_are_freed_after_backward(device):
    x = t(np.ones((4, 4)), device, requires_grad=True)
    y = x * gpudl.full((4, 4), 3.0, device=device)   # Mul saves both operands
    ref = weakref.ref(y._node.ctx.saved[1])          # the only owner of the 3s is the graph
    z = y.sum()
    gc.collect()
    assert ref() is not None
    z.backward()
    gc.collect()
    assert ref() is None, "the saved operand outlived backward"
    assert y._node.ctx.saved == ()
    with pytest.raises(RuntimeError, match="second time"):
        z.backward()


def test_retain_graph(device):
    x = t([2.0], device, requires_grad=True)
    z = (x * x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    close(x.grad, [24.0])


def test_backward_with_gradient_argument(device):
    x = t([[1.0, 2.0], [3.0, 4.0]], device, requires_grad=True)
    y = x * 2
    y.backward(gpudl.tensor([[1.0, 0.0], [0.5, 2.0]], device=device))
    close(x.grad, [[2.0, 0.0], [1.0, 4.0]])
    with pytest.raises(RuntimeError, match="one element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        (x * 2).backward(gpudl.ones(3, device=device))


def test_no_grad_and_enable_grad(device):
    x = t([1.0], device, requires_grad=True)
    with gpudl.no_grad():
        y = x * 2
        assert not y.requires_grad and y.grad_fn is None
        with gpudl.enable_grad():
            z = x * 2
            assert z.requires_grad
    assert (x * 2).requires_grad

    @gpudl.no_grad()
    def f(a):
        return a * 3
    assert not f(x).requires_grad


def test_detach_cuts_the_graph(device):
    x = t([3.0], device, requires_grad=True)
    y = x * x
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    (y * d).sum().backward()
    close(x.grad, [2 * 3.0 * 9.0])


def test_non_float_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        gpudl.arange(3).requires_grad_()


def test_backward_on_tensor_without_graph():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gpudl.ones(1).backward()


def test_gradcheck_catches_a_wrong_gradient():
    class Wrong(gpudl.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g          # wrong: should be 2 x g
    x = gpudl.tensor([1.5, -2.0], dtype="float64", requires_grad=True)
    with pytest.raises(AssertionError, match="disagrees"):
        gradcheck(lambda a: Wrong.apply(a), [x])
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda a: a * 2, [gpudl.ones(2, requires_grad=True)])


# ---- broadcasting gradients on generated shapes -------------------------------

@st.composite
def broadcast_pair(draw):
    nd = draw(st.integers(1, 4))
    full = draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))
    def sub():
        drop = draw(st.integers(0, nd))
        dims = [1 if draw(st.booleans()) else n for n in full[drop:]]
        return tuple(dims)
    return sub(), sub()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=broadcast_pair(), op=st.sampled_from(["add", "sub", "mul", "div", "maximum"]))
def test_broadcast_gradients_hypothesis(shapes, op):
    sa, sb = shapes
    rng = np.random.default_rng(abs(hash((sa, sb))) % 2**32)
    a = gpudl.tensor(rng.uniform(0.5, 1.5, sa), dtype="float64", requires_grad=True)
    b = gpudl.tensor(rng.uniform(2.0, 3.0, sb), dtype="float64", requires_grad=True)
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y, "maximum": gpudl.maximum}[op]
    out = fn(a, b)
    assert out.shape == np.broadcast_shapes(sa, sb)
    assert gradcheck(fn, [a, b])
    assert a.grad.shape == sa and b.grad.shape == sb


def test_mismatched_shapes_name_both():
    a, b = gpudl.ones(2, 3), gpudl.ones(4)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        a + b
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        a @ b


def test_leaf_gradients_own_writable_storage(device):
    x = gpudl.ones(3, 4, device=device, requires_grad=True)
    x.sum().backward()               # the gradient of sum is a broadcast view internally
    x.grad.data *= 2                 # an optimizer may scale it in place
    close(x.grad, np.full((3, 4), 2.0))
    a = gpudl.ones(2, device=device, requires_grad=True)
    b = gpudl.ones(2, device=device, requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 1                 # must not leak into b.grad
    close(b.grad, [1.0, 1.0])
    g = gpudl.ones(2, device=device)
    c = gpudl.ones(2, device=device, requires_grad=True)
    d = gpudl.ones(2, device=device, requires_grad=True)
    (c + d).backward(g)
    c.grad.data *= 5                 # neither d.grad nor the caller's g may change
    close(d.grad, [1.0, 1.0])
    close(g, [1.0, 1.0])


def test_deepcopy_and_pickle_of_tensors():
    import copy
    import pickle
    x = gpudl.tensor([1.0, 2.0])
    y = copy.deepcopy(x)
    assert y.device is x.device and y.tolist() == [1.0, 2.0]
    z = pickle.loads(pickle.dumps(x))
    assert z.device == x.device and z.tolist() == [1.0, 2.0]


def test_set_grad_enabled_as_call_and_context():
    with gpudl.set_grad_enabled(False):
        assert not gpudl.is_grad_enabled()
    assert gpudl.is_grad_enabled()
    gpudl.set_grad_enabled(False)
    try:
        assert not (gpudl.ones(1, requires_grad=True) * 2).requires_grad
    finally:
        gpudl.set_grad_enabled(True)
    assert gpudl.is_grad_enabled()


def test_dropout_masks_do_not_depend_on_the_hash_seed():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import gpudl; gpudl.manual_seed(0); print(gpudl.dropout(gpudl.ones(16), 0.5).tolist())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=root, PYTHONHASHSEED=s)).stdout for s in ("1", "2")}
    assert len(outs) == 1


def test_rng_state_round_trip_covers_dropout():
    gpudl.manual_seed(5)
    gpudl.dropout(gpudl.ones(8), 0.5)
    state = gpudl.get_rng_state()
    a = gpudl.dropout(gpudl.ones(8), 0.5).tolist()
    gpudl.set_rng_state(state)
    assert gpudl.dropout(gpudl.ones(8), 0.5).tolist() == a
