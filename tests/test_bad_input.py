"""Bad input gets an error that names what was expected and what came (found by fuzzing the API)."""
import re

import numpy as np
import pytest

import gpudl
import gpudl.nn as nn
import gpudl.nn.functional as F
from gpudl import optim, data
from gpudl.train import Trainer, confusion_matrix  # noqa: F401


@pytest.mark.parametrize("call, error, message", [
    (lambda: gpudl.tensor([[1, 2], [3]]), ValueError, "rectangular nesting"),
    (lambda: gpudl.tensor(np.array([1, "a"], object)), TypeError, "got dtype object"),
    (lambda: gpudl.from_numpy(np.array(["a"])), TypeError, "got dtype <U1"),
    (lambda: gpudl.cat(gpudl.zeros(2, 3)), TypeError, "list or tuple of tensors, got Tensor"),
    (lambda: gpudl.cat([gpudl.tensor(1.0), gpudl.tensor(2.0)]), ValueError, "use stack"),
    (lambda: gpudl.chunk(gpudl.zeros(4), 0), ValueError, "positive number of chunks"),
    (lambda: gpudl.split(gpudl.zeros(2, 3), [4, -1], dim=1), TypeError, "non-negative ints"),
    (lambda: gpudl.zeros(0).argmax(), ValueError, "non-empty tensor"),
    (lambda: gpudl.zeros(0, 3).amax(0), ValueError, "non-empty tensor"),
    (lambda: F.linear(gpudl.zeros(2, 3, dtype="float64"), nn.Linear(3, 2).weight), TypeError,
     "input is float64 but weight is float32"),
    (lambda: nn.BatchNorm2d(3)(gpudl.zeros(2, 4, 5, 5)), ValueError, "the input has 4 channels"),
    (lambda: nn.BatchNorm1d(3)(gpudl.tensor(np.ones((4, 3), np.int64))), TypeError, "floating-point input"),
    (lambda: optim.SGD(nn.Linear(2, 2), lr=0.1), TypeError, "got the Linear module itself"),
    (lambda: optim.Adam(nn.Linear(2, 2).parameters(), betas=0.9), ValueError, "a pair \\(beta1, beta2\\)"),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_setitem_names_the_tensor_and_refuses_none():
    x = gpudl.zeros(3)
    with pytest.raises(ValueError, match=r"setitem: .*tensor of shape \(3,\)"):
        x[:] = np.ones(4)
    with pytest.raises(TypeError, match="got None"):
        x[0] = None


def test_index_out_of_bounds_is_checked_on_the_gpu_backends(device):
    """CuPy wraps an out-of-bounds index array around; the GPU backends check it first."""
    x = gpudl.tensor(np.arange(6.0).reshape(2, 3), device=device)
    idx = gpudl.tensor([0, 9], device=device)
    with pytest.raises(IndexError, match="9 is out of bounds for axis 0 (of|with) size 2"):
        x[idx]
    with pytest.raises(IndexError, match="out of bounds for axis 1 (of|with) size 3"):
        x[..., gpudl.tensor([-4], device=device)]
    np.testing.assert_array_equal(x[gpudl.tensor([1, -1], device=device)].numpy(), [[3, 4, 5], [3, 4, 5]])
    mask = gpudl.tensor([True, False], device=device)
    np.testing.assert_array_equal(x[mask, gpudl.tensor([2], device=device)].numpy(), [2.0])


def test_trainer_says_what_a_batch_must_be():
    m = nn.Linear(4, 2)
    tr = Trainer(m, optim.SGD(m.parameters(), lr=0.1), progress=False, log=None)
    with pytest.raises(TypeError, match=r"each batch to be \(inputs, targets\), two Tensors.*got ndarray"):
        tr.fit([np.zeros((2, 4))], 1)
    with pytest.raises(TypeError, match=r"got tuple of 3"):
        tr.fit([(gpudl.zeros(2, 4), gpudl.zeros(2), gpudl.zeros(2))], 1)
    loader = data.DataLoader(data.TensorDataset(np.zeros((4, 4), np.float32), np.zeros(4, np.int64)), 2)
    assert len(tr.fit(loader, 1)) == 1


def test_schedulers_refuse_arguments_that_would_give_negative_or_broken_rates():
    from gpudl.optim import lr_scheduler as S
    opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"Invalid gamma: expected a value in \[0.0, inf\], got -0.5"):
        S.StepLR(opt, 1, gamma=-0.5)
    with pytest.raises(ValueError, match="MultiStepLR: expected milestones to be a list of epoch numbers, got 5"):
        S.MultiStepLR(opt, 5)
    two = [S.StepLR(opt, 1), S.StepLR(opt, 1)]
    S.SequentialLR(opt, two, milestones=np.array([2]))          # any iterable of ints, as in PyTorch
    S.MultiStepLR(opt, milestones=(m for m in np.array([2, 4])))
    for bad in (None, [2.5], ["3"], [True], "3", 3):
        with pytest.raises(ValueError, match=r"SequentialLR: expected milestones to be a list of epoch numbers, got "
                                             + re.escape(repr(bad))):
            S.SequentialLR(opt, two, milestones=bad)
    with pytest.raises(ValueError, match=r"Invalid max_lr: expected a value in \[0.0, inf\], got -1.0"):
        S.OneCycleLR(opt, max_lr=-1.0, total_steps=10)
    with pytest.raises(ValueError, match="div_factor: expected a number > 0, got 0"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10, div_factor=0)


def test_trainer_scheduler_and_transform_arguments_are_checked_up_front():
    from gpudl.data import transforms as T
    from gpudl.optim import lr_scheduler as S
    m = nn.Linear(2, 2)
    opt = optim.SGD(m.parameters(), lr=0.1)
    for kwargs, message in ((dict(model=3, optimizer=opt), r"the model must have a .parameters\(\) method, got int"),
                            (dict(model=m, optimizer=None), r"the optimizer must have a .step\(\) method, got NoneType"),
                            (dict(model=m, optimizer=opt, scheduler=3), r"the scheduler must have a .step\(\) method"),
                            (dict(model=m, optimizer=opt, loss_fn=3), "loss_fn to be callable"),
                            (dict(model=m, optimizer=opt, clip_grad_norm="x"), "clip_grad_norm > 0")):
        with pytest.raises((TypeError, ValueError), match=message):
            Trainer(progress=False, log=None, **kwargs)
    with pytest.raises(ValueError, match="epochs to be a positive int, got None"):
        Trainer(m, opt, progress=False, log=None).fit([], None)
    with pytest.raises(TypeError, match="lr_lambda to be a function"):
        S.LambdaLR(opt, 0.5)
    with pytest.raises(TypeError, match="a list of transforms, got ToFloat"):
        T.Compose(T.ToFloat())
    with pytest.raises(TypeError, match="a shape of ints"):
        gpudl.zeros(6).reshape(2.5, 3)
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        gpudl.zeros(6).reshape(-3, -2)


def test_state_loaders_sizes_and_empty_loaders_are_checked():
    from gpudl.optim import lr_scheduler as S
    m = nn.Linear(2, 2)
    opt = optim.SGD(m.parameters(), lr=0.1)
    loader = data.DataLoader(data.TensorDataset(np.zeros((4, 2), np.float32), np.zeros(4, np.int64)), 2)
    for target in (opt, S.StepLR(opt, 1), loader):
        with pytest.raises(TypeError, match="expected the dict that state_dict\\(\\) returns"):
            target.load_state_dict(None)
    with pytest.raises(TypeError, match="get_rng_state"):
        gpudl.random.set_rng_state(None)
    for call in (lambda: gpudl.eye(2.5), lambda: gpudl.linspace(0, 1, -1), lambda: gpudl.randperm(-1)):
        with pytest.raises(ValueError, match="non-negative int"):
            call()
    with pytest.raises(TypeError, match="expected an int high, got 5.5"):
        gpudl.randint(0, 5.5)
    with pytest.raises(TypeError, match="manual_seed: expected a non-negative int"):
        gpudl.manual_seed(1.5)
    empty = data.DataLoader(data.TensorDataset(np.zeros((1, 2), np.float32), np.zeros(1, np.int64)), 2,
                            drop_last=True)
    with pytest.raises(ValueError, match="the training loader gave no batches"):
        Trainer(m, opt, progress=False, log=None).fit(empty, 1)
