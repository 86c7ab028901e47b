"""gpudl.optim: optimizer trajectories against NumPy re-implementations of the
published update rules (and torch.optim when installed), parameter groups,
state dicts, dtypes, errors; lr schedules against hand-computed values (and
torch.optim.lr_scheduler when installed)."""
import itertools
import math
from bisect import bisect_right

import numpy as np
import pytest

import gpudl
from gpudl import optim
from gpudl.optim import lr_scheduler
from helpers import t

STEPS = 20
_rng = np.random.default_rng(0)
X0, Y0 = _rng.standard_normal((6, 4)), _rng.standard_normal((6, 3))
W0, B0 = _rng.standard_normal((3, 4)), _rng.standard_normal(3)


# ---- the problem: least squares, 0.5 * ||X W^T + b - Y||^2 --------------------

def numpy_grads(W, b):
    r = X0 @ W.T + b - Y0
    return [r.T @ X0, r.sum(0)]


def make_params(device, dtype=np.float64):
    return [t(W0, device, True, dtype), t(B0, device, True, dtype)]


def backward(params, device):
    W, b = params
    X, Y = (t(a, device, dtype=W.dtype) for a in (X0, Y0))
    r = X @ W.transpose(0, 1) + b - Y
    loss = (r * r).sum() * 0.5
    loss.backward()
    return loss


def train(opt, params, device, steps=STEPS):
    """``steps`` optimizer steps; the parameters (as NumPy) after each."""
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        backward(params, device)
        opt.step()
        trajectory.append([p.numpy().copy() for p in params])
    return trajectory


# ---- NumPy re-implementations of the published update rules ------------------

def ref_sgd(p, g, st, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    if momentum:
        st["b"] = g.copy() if "b" not in st else momentum * st["b"] + (1 - dampening) * g
        g = g + momentum * st["b"] if nesterov else st["b"]
    return p - lr * g


def ref_adam(p, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled=False):
    b1, b2 = betas
    st["t"] = k = st.get("t", 0) + 1
    g = -g if maximize else g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    v = st["v"]
    if amsgrad:
        st["vmax"] = v = np.maximum(st.get("vmax", 0.0), v)
    m_hat = st["m"] / (1 - b1 ** k)
    return p - lr * m_hat / (np.sqrt(v) / math.sqrt(1 - b2 ** k) + eps)


def ref_adamw(p, g, st, weight_decay=1e-2, **kw):
    return ref_adam(p, g, st, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(p, g, st, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False, maximize=False):
    g = (-g if maximize else g) + weight_decay * p
    st["v"] = alpha * st.get("v", 0.0) + (1 - alpha) * g * g
    denom = st["v"]
    if centered:
        st["a"] = alpha * st.get("a", 0.0) + (1 - alpha) * g
        denom = denom - st["a"] ** 2
    denom = np.sqrt(denom) + eps
    if momentum > 0:
        st["b"] = momentum * st.get("b", 0.0) + g / denom
        return p - lr * st["b"]
    return p - lr * g / denom


REFERENCES = {"SGD": ref_sgd, "Adam": ref_adam, "AdamW": ref_adamw, "RMSprop": ref_rmsprop}


def reference(name, kwargs, steps=STEPS):
    params, states, trajectory = [W0.copy(), B0.copy()], [{}, {}], []
    for _ in range(steps):
        params = [REFERENCES[name](p, g, st, **kwargs) for p, g, st in zip(params, numpy_grads(*params), states)]
        trajectory.append(params)
    return trajectory


def _grid(**options):
    keys = list(options)
    return [dict(zip(keys, values)) for values in itertools.product(*options.values())]


CASES = (
    [("SGD", dict(lr=0.01, **kw)) for kw in _grid(momentum=[0.0, 0.9], dampening=[0.0, 0.5],
                                                   nesterov=[False, True], weight_decay=[0.0, 0.1],
                                                   maximize=[False, True])
     if not kw["nesterov"] or (kw["momentum"] and not kw["dampening"])]
    + [("Adam", dict(lr=0.05, **kw)) for kw in _grid(amsgrad=[False, True], weight_decay=[0.0, 0.1],
                                                      maximize=[False, True])]
    + [("AdamW", dict(lr=0.05, **kw)) for kw in _grid(amsgrad=[False, True], weight_decay=[0.01, 0.5],
                                                       maximize=[False, True])]
    + [("RMSprop", dict(lr=0.01, **kw)) for kw in _grid(centered=[False, True], momentum=[0.0, 0.5],
                                                         weight_decay=[0.0, 0.1], maximize=[False, True])]
)
CASE_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in kw.items() if k != "lr") for name, kw in CASES]


@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_trajectory_matches_reference(device, name, kwargs):
    params = make_params(device)
    got = train(getattr(optim, name)(params, **kwargs), params, device)
    for step, (g, r) in enumerate(zip(got, reference(name, kwargs))):
        for gp, rp in zip(g, r):
            np.testing.assert_allclose(gp, rp, rtol=1e-9, atol=1e-12, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch(device, name, kwargs):
    torch = pytest.importorskip("torch")
    tparams = [torch.tensor(a, requires_grad=True) for a in (W0, B0)]
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    X, Y = torch.tensor(X0), torch.tensor(Y0)
    for _ in range(STEPS):
        topt.zero_grad()
        r = X @ tparams[0].T + tparams[1] - Y
        (0.5 * (r * r).sum()).backward()
        topt.step()
    params = make_params(device)
    train(getattr(optim, name)(params, **kwargs), params, device)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
])
def test_float32_stays_float32(device, name, kwargs):
    params = make_params(device, np.float32)
    opt = getattr(optim, name)(params, **kwargs)
    got = train(opt, params, device)
    for p in params:
        assert p.dtype == gpudl.float32
        assert p.grad.dtype == gpudl.float32
        for v in opt.state[p].values():
            assert isinstance(v, int) or v.dtype == gpudl.float32
    for gp, rp in zip(got[-1], reference(name, kwargs)[-1]):
        assert gp.dtype == np.float32
        np.testing.assert_allclose(gp, rp, rtol=2e-4, atol=2e-5)


def test_param_groups_with_their_own_options(device):
    W, b = make_params(device)
    opt = optim.SGD([{"params": [W], "lr": 0.05, "momentum": 0.5}, {"params": b}], lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.01]
    assert opt.param_groups[1]["momentum"] == 0.0 and opt.param_groups[1]["params"] == [b]
    got = train(opt, [W, b], device, steps=5)
    params, states = [W0.copy(), B0.copy()], [{}, {}]
    for _ in range(5):
        gW, gb = numpy_grads(*params)
        params = [ref_sgd(params[0], gW, states[0], lr=0.05, momentum=0.5), ref_sgd(params[1], gb, states[1], lr=0.01)]
    for gp, rp in zip(got[-1], params):
        np.testing.assert_allclose(gp, rp, rtol=1e-12)


def test_add_param_group(device):
    W, b = make_params(device)
    opt = optim.Adam([W], lr=0.1)
    opt.add_param_group({"params": [b], "betas": (0.5, 0.9)})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.5, 0.9)
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [W]})
    with pytest.raises(ValueError, match="learning rate"):
        opt.add_param_group({"params": [t(W0, device, True)], "lr": -1.0})
    assert len(opt.param_groups) == 2


def test_zero_grad(device):
    W, b = make_params(device)
    opt = optim.SGD([W, b], lr=0.1)
    backward([W, b], device)
    grad = W.grad
    opt.zero_grad(set_to_none=False)
    assert W.grad is grad and not W.grad.numpy().any() and not b.grad.numpy().any()
    opt.zero_grad()
    assert W.grad is None and b.grad is None


def test_params_without_grad_are_skipped(device):
    W, b = make_params(device)
    unused = t(np.ones(5), device, True)
    opt = optim.Adam([W, unused, b], lr=0.1)
    train(opt, [W, b], device, steps=3)
    assert unused.grad is None
    np.testing.assert_array_equal(unused.numpy(), np.ones(5))
    assert all(p is not unused for p in opt.state)
    assert opt.state[W]["step"] == 3


def test_step_with_closure(device):
    params = make_params(device)
    opt = optim.SGD(params, lr=0.01)

    def closure():
        opt.zero_grad()
        return backward(params, device)

    loss = opt.step(closure)
    r = X0 @ W0.T + B0 - Y0
    assert loss.item() == pytest.approx(0.5 * (r * r).sum())
    np.testing.assert_allclose(params[0].numpy(), W0 - 0.01 * numpy_grads(W0, B0)[0], rtol=1e-12)


def test_update_is_in_place(device):
    params = make_params(device)
    opt = optim.Adam(params, lr=0.1, amsgrad=True)

    def arrays():
        return [p.data for p in params] + [
            v.data for p in params for v in opt.state[p].values() if not isinstance(v, int)]

    train(opt, params, device, steps=1)
    before = arrays()
    train(opt, params, device, steps=2)
    after = arrays()
    assert all(a is b for a, b in zip(before, after)) and len(before) == len(after) == 8


# ---- state_dict ---------------------------------------------------------------

STATEFUL = [
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.05, betas=(0.8, 0.99))),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
]


def as_saved_arrays(obj):
    """What a flat-array checkpoint might give back: NumPy arrays and scalars, lists for tuples."""
    if isinstance(obj, dict):
        return {k: as_saved_arrays(v) for k, v in obj.items()}
    if isinstance(obj, gpudl.Tensor):
        return obj.cpu().numpy().copy()
    if isinstance(obj, (list, tuple)):
        if all(isinstance(v, (int, float)) for v in obj):
            return np.array(obj)
        return [as_saved_arrays(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)):
        return np.array(obj)
    return obj


@pytest.mark.parametrize("as_arrays", [False, True], ids=["tensors", "arrays"])
@pytest.mark.parametrize("name, kwargs", STATEFUL, ids=[c[0] for c in STATEFUL])
def test_state_dict_round_trip_resumes_exactly(device, name, kwargs, as_arrays):
    params = make_params(device)
    opt = getattr(optim, name)(params, **kwargs)
    train(opt, params, device, steps=10)
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1] and sd["param_groups"][0]["params"] == [0, 1]
    assert all(not isinstance(v, int) or k == "step" for s in sd["state"].values() for k, v in s.items())
    if as_arrays:
        sd = as_saved_arrays(sd)
    resumed = [t(p.numpy(), device, True) for p in params]
    opt2 = getattr(optim, name)(resumed, lr=123.0)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    assert opt2.param_groups[0].get("betas", ()) == opt.param_groups[0].get("betas", ())
    straight = make_params(device)
    expected = train(getattr(optim, name)(straight, **kwargs), straight, device, steps=20)[-1]
    snapshot = as_saved_arrays(sd) if not as_arrays else None
    train(opt, params, device, steps=10)      # the original goes on too: the load must not share its state
    if snapshot is not None:                  # and the state_dict taken before is a snapshot
        np.testing.assert_equal(as_saved_arrays(sd), snapshot)
    got = train(opt2, resumed, device, steps=10)[-1]
    for a, b, c in zip(got, [p.numpy() for p in params], expected):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)


def test_load_state_dict_checks_shapes_and_groups(device):
    params = make_params(device)
    opt = optim.Adam(params, lr=0.1)
    train(opt, params, device, steps=1)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        optim.Adam([{"params": [params[0]]}, {"params": [params[1]]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="group 0 has 2 parameters"):
        optim.Adam([params[0]]).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        optim.Adam(list(reversed(params))).load_state_dict(sd)


# ---- errors -------------------------------------------------------------------

@pytest.mark.parametrize("make, error, match", [
    (lambda p: optim.SGD(p), ValueError, "required optimization parameter lr"),
    (lambda p: optim.SGD(p, lr=-0.1), ValueError, "learning rate"),
    (lambda p: optim.SGD(p, lr="0.1"), TypeError, "learning rate"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.9), ValueError, "momentum"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), ValueError, "weight_decay"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), ValueError, "beta parameter at index 0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), ValueError, "beta parameter at index 1"),
    (lambda p: optim.Adam(p, betas=(0.9,)), ValueError, "betas"),
    (lambda p: optim.Adam(p, eps=-1e-8), ValueError, "epsilon"),
    (lambda p: optim.Adam(p, lr=float("nan")), ValueError, "learning rate"),
    (lambda p: optim.AdamW(p, weight_decay=-0.01), ValueError, "weight_decay"),
    (lambda p: optim.RMSprop(p, alpha=1.5), ValueError, "alpha"),
    (lambda p: optim.RMSprop(p, eps=-1.0), ValueError, "epsilon"),
    (lambda p: optim.RMSprop(p, momentum=-0.1), ValueError, "momentum"),
])
def test_bad_hyper_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make([t(W0, "cpu", True)])


@pytest.mark.parametrize("params, error, match", [
    (lambda: [], ValueError, "empty parameter list"),
    (lambda: t(W0, "cpu", True), TypeError, "single Tensor"),
    (lambda: [W0], TypeError, "only optimize Tensors"),
    (lambda: [gpudl.tensor([1, 2])], ValueError, "floating"),
    (lambda: [t(W0, "cpu")], ValueError, "does not require grad"),
    (lambda: [t(W0, "cpu", True) * 2], ValueError, "non-leaf"),
    (lambda: [{"lr": 0.1}], ValueError, "'params'"),
    (lambda: (lambda p: [p, p])(t(W0, "cpu", True)), ValueError, "more than once"),
])
def test_bad_parameters(params, error, match):
    with pytest.raises(error, match=match):
        optim.SGD(params(), lr=0.1)


# ---- no host synchronisation: the update never turns an array into a number ---

class NoSync(np.ndarray):
    """An array that fails whenever it would be read back to the host as Python values."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("the optimizer read an array back to the host")

    __float__ = __int__ = __bool__ = __index__ = __complex__ = item = tolist = _fail


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.1, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("AdamW", dict(lr=0.1, amsgrad=True)),
    ("RMSprop", dict(lr=0.1, centered=True, momentum=0.5, weight_decay=0.1, maximize=True)),
], ids=["SGD", "SGD-nesterov", "Adam", "AdamW", "RMSprop"])
def test_step_never_reads_arrays_back(name, kwargs):
    with pytest.raises(AssertionError):
        float(np.ones(1).view(NoSync))
    p = t(np.ones((2, 3), np.float32), "cpu", True)
    p.data = p.data.view(NoSync)
    opt = getattr(optim, name)([p], **kwargs)
    for step in range(3):
        p.grad = gpudl.Tensor._make(np.full((2, 3), step + 1.0, np.float32).view(NoSync), p.device)
        opt.step()
    assert type(p.data) is NoSync and p.dtype == np.float32
    assert np.all(np.isfinite(np.asarray(p.data))) and not np.array_equal(np.asarray(p.data), np.ones((2, 3)))


# ---- learning-rate schedules ----------------------------------------------------

BASE_LR, EPOCHS = 0.5, 25


def _cos(start, end, pct):
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def _one_cycle(e, total=EPOCHS, top=1.0):
    low, warm = top / 25, 0.3 * total - 1
    if e <= warm:
        return _cos(low, top, e / warm)
    return _cos(top, low / 1e4, (e - warm) / (total - 1 - warm))


SCHEDULES = {  # name: (make(optimizer, lr_scheduler module), the lr at epoch e)
    "StepLR": (lambda o, m: m.StepLR(o, step_size=3, gamma=0.5),
               lambda e: BASE_LR * 0.5 ** (e // 3)),
    "MultiStepLR": (lambda o, m: m.MultiStepLR(o, milestones=[9, 2, 5, 5], gamma=0.5),
                    lambda e: BASE_LR * 0.5 ** bisect_right([2, 5, 5, 9], e)),
    "CosineAnnealingLR": (lambda o, m: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
                          lambda e: _cos(BASE_LR, 0.01, e / 7)),
    "LinearLR": (lambda o, m: m.LinearLR(o, start_factor=0.25, total_iters=4),
                 lambda e: BASE_LR * (0.25 + 0.75 * min(e, 4) / 4)),
    "LambdaLR": (lambda o, m: m.LambdaLR(o, lambda e: 0.9 ** e),
                 lambda e: BASE_LR * 0.9 ** e),
    "OneCycleLR": (lambda o, m: m.OneCycleLR(o, max_lr=1.0, total_steps=EPOCHS),
                   _one_cycle),
    "OneCycleLR-3-linear": (
        lambda o, m: m.OneCycleLR(o, max_lr=1.0, epochs=5, steps_per_epoch=5, three_phase=True,
                                  anneal_strategy="linear", pct_start=0.4),
        lambda e: (0.04 + 0.96 * e / 9 if e <= 9 else 1.0 - 0.96 * (e - 9) / 9 if e <= 18
                   else 0.04 + (4e-6 - 0.04) * (e - 18) / 6)),
    "SequentialLR": (
        lambda o, m: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=3),
                                        m.CosineAnnealingLR(o, T_max=10)], milestones=[3]),
        lambda e: BASE_LR * (0.1 + 0.3 * e) if e < 3 else _cos(BASE_LR, 0.0, (e - 3) / 10)),
}


def lr_sequence(sched, opt, epochs=EPOCHS):
    lrs = [sched.get_last_lr()[0]]
    for _ in range(epochs - 1):
        opt.step()
        sched.step()
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
        lrs.append(sched.get_last_lr()[0])
    return lrs


def gpudl_optimizer(name="SGD"):
    p = t(np.zeros(1), "cpu", True)
    return optim.Adam([p], lr=BASE_LR) if name == "Adam" else optim.SGD([p], lr=BASE_LR, momentum=0.9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_values(name):
    make, expected = SCHEDULES[name]
    opt = gpudl_optimizer()
    got = lr_sequence(make(opt, lr_scheduler), opt)
    np.testing.assert_allclose(got, [expected(e) for e in range(EPOCHS)], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_matches_torch(name, opt_name):
    torch = pytest.importorskip("torch")
    make = SCHEDULES[name][0]
    tp = torch.zeros(1, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=BASE_LR) if opt_name == "Adam" else torch.optim.SGD([tp], lr=BASE_LR, momentum=0.9)
    opt = gpudl_optimizer(opt_name)
    tsched, sched = make(topt, torch.optim.lr_scheduler), make(opt, lr_scheduler)
    momentum = "betas" if opt_name == "Adam" else "momentum"
    for e in range(EPOCHS):
        if e:
            topt.step(), tsched.step(), opt.step(), sched.step()
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12, abs=1e-15), f"epoch {e}"
        assert opt.param_groups[0][momentum] == pytest.approx(topt.param_groups[0][momentum], rel=1e-12)


def _is_plain(obj):
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_is_plain(v) for v in obj)
    return isinstance(obj, (bool, int, float, str))


@pytest.mark.parametrize("as_arrays", [False, True], ids=["plain", "arrays"])
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_state_dict_round_trip(name, as_arrays):
    make = SCHEDULES[name][0]
    opt = gpudl_optimizer()
    sched = make(opt, lr_scheduler)
    lr_sequence(sched, opt, epochs=10)
    sd, opt_sd = sched.state_dict(), opt.state_dict()
    assert _is_plain(sd), sd
    opt2 = gpudl_optimizer()
    sched2 = make(opt2, lr_scheduler)
    opt2.load_state_dict(as_saved_arrays(opt_sd) if as_arrays else opt_sd)
    sched2.load_state_dict(as_saved_arrays(sd) if as_arrays else sd)
    assert sched2.last_epoch == sched.last_epoch == 9 and sched2.get_last_lr() == sched.get_last_lr()
    assert lr_sequence(sched2, opt2, epochs=12) == lr_sequence(sched, opt, epochs=12)


def test_sequential_warmup_then_cosine_drives_training(device):
    """A scheduler changes what the next optimizer step does."""
    W, b = make_params(device)
    opt = optim.SGD([W, b], lr=0.1)
    sched = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2),
                                            lr_scheduler.CosineAnnealingLR(opt, T_max=4)], milestones=[2])
    params = [W0.copy(), B0.copy()]
    for e in range(6):
        lr = 0.1 * (0.5 + 0.25 * e) if e < 2 else _cos(0.1, 0.0, (e - 2) / 4)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-12)
        train(opt, [W, b], device, steps=1)
        params = [p - lr * g for p, g in zip(params, numpy_grads(*params))]
        sched.step()
    np.testing.assert_allclose(W.numpy(), params[0], rtol=1e-12)


@pytest.mark.parametrize("make, error, match", [
    (lambda o, m: m.StepLR(o, step_size=0), ValueError, "step_size"),
    (lambda o, m: m.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o, m: m.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o, m: m.LinearLR(o, end_factor=1.5), ValueError, "end_factor"),
    (lambda o, m: m.LambdaLR(o, [lambda e: 1.0] * 2), ValueError, "lr_lambda"),
    (lambda o, m: m.OneCycleLR(o, max_lr=1.0), ValueError, "total_steps"),
    (lambda o, m: m.OneCycleLR(o, max_lr=1.0, total_steps=10, anneal_strategy="exp"), ValueError, "anneal"),
    (lambda o, m: m.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o, m: m.SequentialLR(o, [m.StepLR(o, 2), m.StepLR(o, 3)], milestones=[]), ValueError, "milestones"),
    (lambda o, m: m.SequentialLR(o, [m.StepLR(gpudl_optimizer(), 2)], milestones=[]), ValueError, "another optimizer"),
    (lambda o, m: m.StepLR(object(), 2), TypeError, "not an Optimizer"),
    (lambda o, m: m.StepLR(o, 2, last_epoch=3), KeyError, "initial_lr"),
])
def test_bad_schedules(make, error, match):
    with pytest.raises(error, match=match):
        make(gpudl_optimizer(), lr_scheduler)


def test_one_cycle_refuses_to_step_past_the_end():
    opt = gpudl_optimizer()
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    sched.step(), sched.step(), sched.step()
    with pytest.raises(ValueError, match="total_steps is 3"):
        sched.step()
