"""Tensor creation, dtypes, conversion, printing, seeding and interop."""
import numpy as np
import pytest

import gpudl
from helpers import close


def test_creation_functions(device):
    assert gpudl.zeros(2, 3, device=device).tolist() == [[0, 0, 0], [0, 0, 0]]
    assert gpudl.ones((2,), device=device).dtype == np.float32
    assert gpudl.full((2, 2), 7, device=device).dtype == np.int64
    assert gpudl.full((2, 2), 0.5, device=device).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert gpudl.arange(5, device=device).tolist() == [0, 1, 2, 3, 4]
    assert gpudl.arange(1.0, 2.0, 0.5, device=device).tolist() == [1.0, 1.5]
    np.testing.assert_array_equal(gpudl.eye(3, device=device).numpy(), np.eye(3))
    for fn in (gpudl.rand, gpudl.randn):
        x = fn(3, 4, device=device, dtype="float64")
        assert x.shape == (3, 4) and x.dtype == np.float64 and x.device == device
    r = gpudl.randint(0, 10, (100,), device=device)
    assert r.dtype == np.int64 and 0 <= r.numpy().min() and r.numpy().max() < 10
    z = gpudl.zeros(2, 3, dtype="float64", device=device)
    for like in (gpudl.zeros_like, gpudl.ones_like, gpudl.rand_like, gpudl.randn_like):
        y = like(z)
        assert y.shape == z.shape and y.dtype == np.float64 and y.device == device
    assert gpudl.full_like(z, 2.0).tolist() == [[2, 2, 2], [2, 2, 2]]
    assert gpudl.randint_like(gpudl.zeros(5, dtype="int64"), 3).numpy().max() < 3


def test_tensor_dtypes_and_properties(device):
    x = gpudl.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert x.dtype == gpudl.float32 and x.shape == (2, 2) and x.ndim == 2 and x.numel() == 4
    assert gpudl.tensor([1, 2], device=device).dtype == gpudl.int64
    assert gpudl.tensor([True], device=device).dtype == gpudl.bool
    assert gpudl.tensor(np.zeros(2), device=device).dtype == gpudl.float64
    assert gpudl.tensor([1, 2], dtype="float64", device=device).dtype == np.float64
    assert x.T.tolist() == [[1, 3], [2, 4]]
    assert x[1, 0].item() == 3.0 and isinstance(x[1, 0].item(), float)
    assert x.double().dtype == np.float64 and x.long().dtype == np.int64
    with pytest.raises(ValueError, match="one element"):
        x.item()
    with pytest.raises(TypeError, match="dtype"):
        gpudl.tensor([1.0], dtype="nonsense")
    with pytest.raises(TypeError, match="numbers"):
        gpudl.tensor(["a", "b"])


def test_repr_shows_device_and_grad_state(device):
    x = gpudl.ones(2, device=device, requires_grad=True)
    r = repr(x)
    assert "requires_grad=True" in r
    if device.type != "cpu":
        assert f"device='{device}'" in r
    assert "grad_fn=<MulBackward>" in repr(x * 2)
    assert "dtype=float64" in repr(gpudl.ones(1, dtype="float64"))


def test_to_and_cpu_move_data_and_gradient(device):
    x = gpudl.tensor([1.0, 2.0], requires_grad=True)   # on the CPU
    y = x.to(device)
    assert y.device == device
    (y * y).sum().backward()
    assert x.grad.device == gpudl.device("cpu")
    close(x.grad, [2.0, 4.0])
    assert y.cpu().device.type == "cpu"
    assert y.to(device) is y
    assert x.to("float64").dtype == np.float64


def test_manual_seed_reproduces_every_draw(device):
    gpudl.manual_seed(42)
    a = [gpudl.rand(3, device=device).numpy(), gpudl.randn(3, device=device).numpy(),
         gpudl.randint(100, size=(3,), device=device).numpy()]
    gpudl.manual_seed(42)
    b = [gpudl.rand(3, device=device).numpy(), gpudl.randn(3, device=device).numpy(),
         gpudl.randint(100, size=(3,), device=device).numpy()]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    gpudl.manual_seed(42)
    cpu = gpudl.randn(3).numpy()
    np.testing.assert_array_equal(cpu, a[1] * 0 + b[0] * 0 + cpu)  # same seed same CPU stream
    gpudl.manual_seed(42)
    gpudl.rand(3)
    np.testing.assert_array_equal(gpudl.randn(3, device=device).numpy(), a[1])  # same values on every device


def test_from_numpy_shares_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = gpudl.from_numpy(a)
    a[0, 0] = 100
    assert x[0, 0].item() == 100
    assert x.numpy() is a or np.shares_memory(x.numpy(), a)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        gpudl.from_numpy([1, 2])


def test_dlpack_round_trip_with_numpy():
    a = np.arange(4, dtype=np.float32)
    x = gpudl.from_dlpack(a)
    assert np.shares_memory(x.numpy(), a)
    b = np.from_dlpack(x)
    assert np.shares_memory(a, b)
    assert x.__dlpack_device__()[0] == 1


def test_dlpack_with_torch():
    torch = pytest.importorskip("torch")
    tt = torch.arange(5, dtype=torch.float32)
    x = gpudl.from_dlpack(tt)
    tt[0] = 42
    assert x[0].item() == 42
    back = torch.from_dlpack(x)
    back[1] = -1
    assert x[1].item() == -1


def test_iteration_and_len(device):
    x = gpudl.arange(6, device=device).reshape(3, 2)
    assert len(x) == 3
    assert [r.tolist() for r in x] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x)


def test_the_face_of_the_package():
    assert gpudl.Trainer.__name__ == "Trainer"
    assert gpudl.nn.Linear and gpudl.optim.SGD and gpudl.data.DataLoader and gpudl.models.create
    with pytest.raises(AttributeError, match="nonesuch"):
        gpudl.nonesuch


def test_numpy_scalars_keep_their_dtype_as_in_pytorch():
    assert gpudl.tensor(np.float64(1.5)).dtype == np.float64
    assert gpudl.tensor(np.float32(1.5)).dtype == np.float32
    assert gpudl.tensor(np.int32(3)).dtype == np.int32
    assert gpudl.tensor([np.float64(1.0), np.float64(2.0)]).dtype == np.float64
    assert gpudl.tensor(1.5).dtype == np.float32 and gpudl.tensor([1, 2]).dtype == np.int64


def test_assigned_gradients_must_match_the_tensor():
    p = gpudl.tensor(np.ones((2, 3)), requires_grad=True)
    p.grad = gpudl.tensor(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="dtype float64, got float32"):
        p.grad = gpudl.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(3,\)"):
        p.grad = gpudl.tensor(np.zeros(3))
    with pytest.raises(TypeError, match="Tensor or None"):
        p.grad = np.zeros((2, 3))
    p.grad = None
    assert p.grad is None


def test_np_array_copies_and_np_asarray_shares():
    x = gpudl.tensor([1.0, 2.0])
    a = np.array(x, copy=True)
    a[0] = 42
    assert x.tolist() == [1.0, 2.0]
    np.asarray(x)[0] = 7                     # as numpy: asarray of a CPU tensor is a view
    assert x.tolist() == [7.0, 2.0]


def test_set_grad_enabled_as_a_decorator_applies_inside_only():
    from gpudl.autograd import is_grad_enabled, set_grad_enabled

    @set_grad_enabled(False)
    def double(t):
        return t * 2

    assert is_grad_enabled()
    w = gpudl.ones(2, requires_grad=True)
    assert not double(w).requires_grad and (w * 2).requires_grad and is_grad_enabled()


def test_in_place_writes_while_recording():
    """zero_ and copy_ into a leaf that requires grad are refused; copy_ of a
    value that requires grad is recorded."""
    w = gpudl.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w.zero_()
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        w.copy_(gpudl.zeros(2))
    buf = gpudl.zeros(2).copy_(w * 3)
    buf.sum().backward()
    assert w.grad.tolist() == [3.0, 3.0]
    with gpudl.no_grad():
        w.zero_()
    assert w.tolist() == [0.0, 0.0]


def test_deepcopy_and_pickle_never_take_the_graph():
    import copy
    import pickle
    w = gpudl.tensor([1.0, 2.0], requires_grad=True)
    w.grad = gpudl.tensor([0.5, 0.5])
    c = copy.deepcopy(w)
    assert c.requires_grad and c.grad.tolist() == [0.5, 0.5] and c.data is not w.data
    y = w * 2
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(y)
    for _ in range(5000):
        y = y + 1
    p = pickle.loads(pickle.dumps(y))        # a long graph is not pickled (nor recursed into)
    assert p.tolist() == (w.numpy() * 2 + 5000).tolist() and p.requires_grad and p.grad_fn is None


def test_moving_to_another_device_copies(device):
    a = gpudl.ones(2)
    b = a.to(device)
    if device.type == "cpu":
        return
    b.data[...] = 5
    assert a.tolist() == [1.0, 1.0]
    assert b.to("cpu").data is not b.data


def test_creation_follows_pytorch():
    np.testing.assert_array_equal(gpudl.arange(16777216, 16777220, 1.0).numpy(),
                                  np.float32([16777216, 16777216, 16777218, 16777220]))
    assert gpudl.arange(1, 2.2, 0.4).numpy()[-1] == np.float32(2.2)
    assert gpudl.arange(1000, 1001, 0.1).numpy()[-1] == np.float32(1000.9)
    with pytest.raises(ValueError, match="step must be nonzero"):
        gpudl.arange(0, 5, 0)
    with pytest.raises(ValueError, match="inconsistent signs"):
        gpudl.arange(0, 5, -1)
    assert gpudl.full((2,), np.float32(1.5)).tolist() == [1.5, 1.5]
    assert gpudl.full((2,), gpudl.tensor(np.float64(2.5))).dtype == np.float64
    assert gpudl.full((2,), np.bool_(True)).dtype == np.bool_
    with pytest.raises(ValueError, match="does not fit in int32"):
        gpudl.randint(0, 2 ** 40, (3,), dtype="int32")
    with pytest.raises(TypeError, match="floating-point dtype"):
        gpudl.rand(3, dtype="int32")
    assert gpudl.rand(100000, dtype="float16").numpy().max() < 1.0
    with pytest.raises(TypeError, match="shape of ints"):
        gpudl.zeros(2.5)
    assert gpudl.tensor([gpudl.tensor(np.float64(1.0)), gpudl.tensor(np.float64(2.0))]).dtype == np.float64
    with pytest.raises(ValueError, match="at most 2 dimensions"):
        gpudl.zeros(2, 3, 4).t()


def test_requires_grad_is_checked_however_it_is_set():
    i = gpudl.tensor([1, 2])
    with pytest.raises(TypeError, match="only floating tensors"):
        i.requires_grad = True
    w = gpudl.ones(2, requires_grad=True)
    y = w * 2
    with pytest.raises(RuntimeError, match="only a leaf's flag"):
        y.requires_grad_(False)
    w.requires_grad = False
    assert not (w * 2).requires_grad


def test_tensors_from_the_constructor_and_copies_take_part_in_ops():
    """gpudl.Tensor(...) made directly (not through gpudl.tensor) has a version
    counter like every other; deepcopy and pickle keep a Parameter a Parameter,
    as PyTorch does."""
    import copy
    import pickle
    t = gpudl.Tensor([1.0, 2.0], requires_grad=True)
    (t * 2).sum().backward()
    assert t.grad.tolist() == [2.0, 2.0]
    p = gpudl.nn.Parameter(gpudl.ones(2))
    m = gpudl.nn.Linear(2, 2)
    for c in (copy.deepcopy(p), pickle.loads(pickle.dumps(p)), copy.deepcopy(m).weight,
              pickle.loads(pickle.dumps(m)).weight):
        assert type(c) is gpudl.nn.Parameter and c.requires_grad
        (c * 2).sum().backward()
    assert type(copy.deepcopy(gpudl.ones(2))) is gpudl.Tensor
