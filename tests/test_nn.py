"""gpudl.nn: Module, containers, layers, losses, init, gradient clipping, PyTorch parity."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import gpudl
import gpudl.nn as nn
import gpudl.nn.functional as F
from gpudl.nn import init
from gpudl.testing import gradcheck
from helpers import t, close

rng = np.random.default_rng(7)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.register_buffer("scale", gpudl.ones(1), persistent=False)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x))) * self.scale


class Net(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
        self.register_parameter("temperature", nn.Parameter(gpudl.ones(())))
        if device is not None:
            self.to(device)

    def forward(self, x):
        return self.head(F.max_pool2d(self.block(x), 2)) / self.temperature


STATE_KEYS = [
    "temperature",
    "block.conv.weight", "block.conv.bias",
    "block.bn.weight", "block.bn.bias",
    "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked",
    "head.1.weight", "head.1.bias",
]


def grads_through(module, *inputs):
    """gradcheck of module(*inputs) with respect to its inputs and all of its parameters."""
    n = len(inputs)
    return gradcheck(lambda *a: module(*a[:n]), [*inputs, *module.parameters()])


# ---- Module surface -------------------------------------------------------------

def test_parameter_is_a_tensor_that_shares_data():
    base = gpudl.zeros(2, 3)
    p = nn.Parameter(base)
    assert isinstance(p, gpudl.Tensor) and p.requires_grad and p.data is base.data
    assert repr(p).startswith("Parameter containing:\ntensor(")
    assert not nn.Parameter([1.0, 2.0], requires_grad=False).requires_grad
    assert type(p * 2) is gpudl.Tensor and type(p.detach()) is gpudl.Tensor
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(gpudl.tensor([1, 2]))


def test_names_and_order():
    net = Net()
    assert [k for k, _ in net.named_parameters()] == [k for k in STATE_KEYS if "running" not in k
                                                      and "num_batches" not in k]
    assert len(list(net.parameters())) == 7
    assert [p.shape for p in net.parameters(recurse=False)] == [()]
    assert [k for k, _ in net.named_buffers()] == [   # a module's own, then its children's (as PyTorch)
        "block.scale", "block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked"]
    assert [k for k, _ in net.named_children()] == ["block", "head"]
    assert list(net.children()) == [net.block, net.head]
    assert [k for k, _ in net.named_modules()] == ["", "block", "block.conv", "block.bn", "head", "head.0", "head.1"]
    assert len(list(net.modules())) == 7
    assert net.get_submodule("head.1") is net.head[1]
    assert net.head[1].weight is net.head[1]._parameters["weight"]


def test_shared_parameters_are_listed_once_but_saved_under_every_name():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_registration_rules():
    m = nn.Module()
    m.w = nn.Parameter(gpudl.zeros(2))
    m.sub = nn.Linear(2, 2)
    m.register_buffer("stat", gpudl.zeros(2))
    m.plain = 3
    m.v = nn.Parameter(gpudl.zeros(1))
    m.w = nn.Parameter(gpudl.ones(2))   # replacing keeps the registration order
    assert list(m._parameters) == ["w", "v"] and list(m._modules) == ["sub"] and m.plain == 3
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'w'"):
        m.w = gpudl.zeros(2)
    with pytest.raises(TypeError, match="buffer 'stat'"):
        m.stat = 5
    m.stat = gpudl.ones(2)             # a tensor replaces the buffer
    assert m.stat.tolist() == [1, 1] and "stat" in m.state_dict()
    m.w = None                          # an absent parameter
    assert "w" not in m.state_dict() and m.w is None
    m.plain = nn.Identity()             # a plain attribute becomes a child
    assert m.plain is m._modules["plain"] and "plain" not in m.__dict__
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("forward", gpudl.zeros(1))
    with pytest.raises(KeyError, match="'stat' already exists"):
        m.register_parameter("stat", nn.Parameter(gpudl.zeros(2)))
    with pytest.raises(KeyError, match="contain"):
        m.register_parameter("a.b", None)
    with pytest.raises(TypeError, match="Module subclass"):
        m.add_module("x", 3)
    del m.sub
    assert not hasattr(m, "sub") and "sub" not in dict(m.named_children())
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        m.nothing

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gpudl.zeros(1))
    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_state_dict_round_trip():
    gpudl.manual_seed(1)
    a = Net()
    a(gpudl.randn(3, 2, 4, 4))          # moves the running statistics
    sd = a.state_dict()
    assert isinstance(sd, OrderedDict) and list(sd) == STATE_KEYS
    assert all(type(v) is gpudl.Tensor and not v.requires_grad for v in sd.values())
    assert sd["block.conv.weight"].data is a.block.conv.weight.data    # shares memory
    assert sd["block.bn.num_batches_tracked"].item() == 1
    gpudl.manual_seed(2)
    b = Net()
    assert not np.allclose(b.head[1].weight.numpy(), a.head[1].weight.numpy())
    w_before = b.head[1].weight
    result = b.load_state_dict({k: v.numpy() for k, v in sd.items()})   # numpy arrays load too
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert b.head[1].weight is w_before
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy(), err_msg=k)
    x = gpudl.randn(2, 2, 4, 4)
    close(b.eval()(x), a.eval()(x).numpy(), rtol=0, atol=0)


def test_load_state_dict_strict_reports_keys_and_copies_nothing():
    net = Net()
    sd = net.state_dict()
    sd = OrderedDict((k, v.numpy() + 1) for k, v in sd.items())
    del sd["head.1.bias"]
    sd["head.2.weight"] = np.zeros(3)
    before = net.head[1].weight.numpy().copy()
    with pytest.raises(RuntimeError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert 'Missing key(s) in state_dict: "head.1.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "head.2.weight"' in msg
    np.testing.assert_array_equal(net.head[1].weight.numpy(), before)   # all or nothing
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert (missing, unexpected) == (["head.1.bias"], ["head.2.weight"])
    close(net.head[1].weight, before + 1)


def test_load_state_dict_shape_mismatch_names_key_and_shapes():
    net = Net()
    sd = net.state_dict()
    sd["head.1.weight"] = gpudl.zeros(5, 12)
    with pytest.raises(RuntimeError, match=r"size mismatch for head\.1\.weight: .*\(5, 12\).*\(4, 12\)"):
        net.load_state_dict(sd, strict=False)
    with pytest.raises(TypeError, match="'head.1.bias'"):
        net.load_state_dict({**sd, "head.1.weight": gpudl.zeros(4, 12), "head.1.bias": object()})


def test_train_eval_are_per_module():
    net = Net()
    assert net.training and net.block.bn.training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.head.train()
    assert net.head[1].training and not net.training and not net.block.training
    assert net.train() is net and all(m.training for m in net.modules())
    other = Net()
    net.eval()
    assert other.training                # no global flag
    with pytest.raises(ValueError, match="bool"):
        net.train("no")


def test_to_device_keeps_parameter_identity(device):
    gpudl.manual_seed(3)
    net = Net()
    x = gpudl.randn(2, 2, 4, 4)
    ref = net(x).numpy()
    net(x).sum().backward()
    params, grads = list(net.parameters()), [p.grad.numpy().copy() for p in net.parameters()]
    ids = [id(p) for p in params]
    assert net.to(device) is net
    assert [id(p) for p in net.parameters()] == ids
    for p, g in zip(net.parameters(), grads):
        assert p.device == device and p.grad.device == device
        close(p.grad, g, rtol=0, atol=0)
    assert all(b.device == device for b in net.buffers())
    close(net(x.to(device)), ref, rtol=1e-4, atol=1e-5)
    net.double()
    assert net.head[1].weight.dtype == np.float64 and net.head[1].weight.grad.dtype == np.float64
    assert net.block.bn.num_batches_tracked.dtype == np.int64     # only floating tensors change
    assert net.cpu().head[1].weight.device == gpudl.device("cpu") and [id(p) for p in net.parameters()] == ids
    with pytest.raises(TypeError, match="floating"):
        net.to(gpudl.int64)


def test_zero_grad_requires_grad_apply():
    net = Net()
    net(gpudl.randn(2, 2, 4, 4)).sum().backward()
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert net.requires_grad_(False) is net and not any(p.requires_grad for p in net.parameters())
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen[-1] == "Net" and seen.index("Conv2d") < seen.index("Block")


def test_forward_hooks():
    lin = nn.Linear(2, 2)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    h2 = lin.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    y = lin(gpudl.ones(3, 2))
    close(y, np.broadcast_to(lin.bias.numpy(), (3, 2)))
    assert calls == [(3, 2)]
    h1.remove()
    h2.remove()
    lin(gpudl.ones(1, 2))
    assert calls == [(3, 2)]


def test_repr():
    text = repr(Net())
    assert text.startswith("Net(\n  (block): Block(\n    (conv): Conv2d(2, 3, kernel_size=(3, 3), stride=(1, 1), "
                           "padding=(1, 1))\n")
    assert "    (bn): BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n" in text
    assert "  (head): Sequential(\n    (0): Flatten(start_dim=1, end_dim=-1)\n" \
           "    (1): Linear(in_features=12, out_features=4, bias=True)\n  )\n)" in text
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False)) == \
        "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), groups=2, bias=False)"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


def test_sequential_modulelist_moduledict():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and seq[np.int64(1)] is b and list(seq) == [a, b]
    assert seq.append(c) is seq and seq[2] is c
    sl = seq[1:]
    assert isinstance(sl, nn.Sequential) and list(sl) == [b, c] and list(sl._modules) == ["1", "2"]
    x = gpudl.randn(4, 2)
    close(seq(x), c(b(a(x))).numpy())
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    a2 = nn.Linear(2, 3)
    seq[0] = a2                          # replaced in place: order kept
    assert list(seq) == [a2, b, c]
    del seq[1]
    assert list(seq._modules) == ["0", "1"] and seq[1] is c
    named = nn.Sequential(OrderedDict(enc=a, act=b))
    assert [k for k, _ in named.named_parameters()] == ["enc.weight", "enc.bias"]

    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    layers.insert(0, nn.Identity())
    assert len(layers) == 4 and isinstance(layers[0], nn.Identity) and len(list(layers.parameters())) == 6
    holder = nn.Module()
    holder.layers = layers
    assert "layers.3.bias" in holder.state_dict()
    with pytest.raises(NotImplementedError):
        layers(x)
    with pytest.raises(TypeError, match="child module '0'"):
        layers[0] = 5

    d = nn.ModuleDict({"lin": nn.Linear(2, 2), "act": nn.Tanh()})
    d["out"] = nn.Linear(2, 1)
    assert list(d) == ["lin", "act", "out"] and "act" in d and len(d) == 3
    assert [k for k, _ in d.named_parameters()] == ["lin.weight", "lin.bias", "out.weight", "out.bias"]
    assert isinstance(d.pop("act"), nn.Tanh) and list(d.keys()) == ["lin", "out"]


# ---- layers --------------------------------------------------------------------------

def ref_conv2d(x, w, b, stride, padding, groups):
    x = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    o, cg, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, groups, cg, oh, ow, kh, kw)
    y = np.einsum("ngchwkl,gockl->ngohw", win, w.reshape(groups, o // groups, cg, kh, kw))
    return y.reshape(n, o, oh, ow) + b[None, :, None, None]


def test_linear(device):
    lin = nn.Linear(3, 2, device=device, dtype="float64")
    assert lin.weight.shape == (2, 3) and lin.bias.shape == (2,) and lin.weight.device == device
    x = rng.standard_normal((4, 3))
    close(lin(t(x, device)), x @ lin.weight.numpy().T + lin.bias.numpy(), rtol=1e-12)
    assert grads_through(lin, t(x, device, True))
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [k for k, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding=(1, 0), groups=2)])
def test_conv2d(device, kw):
    conv = nn.Conv2d(4, 2, (3, 2), dtype="float64", device=device, **kw)
    assert conv.weight.shape == (2, 4 // conv.groups, 3, 2)
    x = rng.standard_normal((2, 4, 5, 6))
    ref = ref_conv2d(x, conv.weight.numpy(), conv.bias.numpy(), conv.stride, conv.padding, conv.groups)
    close(conv(t(x, device)), ref, rtol=1e-10)
    assert grads_through(conv, t(x[:1, :, :4, :4], device, True))


def test_conv2d_same_and_valid_padding(device):
    x = rng.standard_normal((1, 2, 5, 6))
    for k in (3, (2, 4)):
        conv = nn.Conv2d(2, 3, k, padding="same", device=device, dtype="float64")
        assert conv(t(x, device)).shape == (1, 3, 5, 6)
    # even kernel: PyTorch puts the extra zero on the right / bottom
    w, b = conv.weight.numpy(), conv.bias.numpy()
    xp = np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 2)))
    close(conv(t(x, device)), ref_conv2d(xp, w, b, (1, 1), (0, 0), 1), rtol=1e-10)
    assert grads_through(conv, t(x[:, :, :3, :4], device, True))
    assert nn.Conv2d(2, 3, 3, padding="valid", device=device)(t(x, device, dtype=np.float32)).shape == (1, 3, 3, 4)


def test_pooling_flatten_identity(device):
    x = rng.permutation(2 * 3 * 4 * 6).reshape(2, 3, 4, 6) * 0.01
    xt = t(x, device)
    blocks = x.reshape(2, 3, 2, 2, 3, 2)
    close(nn.MaxPool2d(2)(xt), blocks.max((3, 5)), rtol=1e-12)
    close(nn.AvgPool2d(2)(xt), blocks.mean((3, 5)), rtol=1e-12)
    close(nn.MaxPool2d((2, 3), stride=(2, 3))(xt), x.reshape(2, 3, 2, 2, 2, 3).max((3, 5)), rtol=1e-12)
    close(nn.AdaptiveAvgPool2d(1)(xt), x.mean((2, 3), keepdims=True), rtol=1e-12)
    close(nn.AdaptiveAvgPool2d((2, 3))(xt), blocks.mean((3, 5)), rtol=1e-12)
    assert nn.Flatten()(xt).shape == (2, 72) and nn.Flatten(0, 2)(xt).shape == (24, 6)
    assert nn.Identity(3, k=4)(xt) is xt
    xg = t(x[:1, :2], device, True)
    for m in (nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()):
        assert grads_through(m, xg), m


ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.ReLU(inplace=True), lambda x: np.maximum(x, 0)),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh(), np.tanh),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.GELU(), lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    (nn.Softmax(dim=1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (nn.Softmax(dim=0), lambda x: np.exp(x) / np.exp(x).sum(0, keepdims=True)),
    (nn.LogSoftmax(dim=-1), lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
    (nn.Softmax(), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),     # legacy dim=None -> 1 for 2-d
]


@pytest.mark.parametrize("module,ref", ACTIVATIONS, ids=[repr(m) for m, _ in ACTIVATIONS])
def test_activations(device, module, ref):
    x = rng.standard_normal((3, 4)) * 2 + 0.01
    close(module(t(x, device)), ref(x), rtol=1e-9, atol=1e-12)
    assert grads_through(module, t(x, device, True))


def test_dropout_train_and_eval(device):
    drop = nn.Dropout(0.3)
    x = t(np.ones((200, 100)), device, dtype=np.float32)
    y = drop(x).numpy()
    zero = y == 0
    assert abs(zero.mean() - 0.3) < 0.02
    close(y[~zero], np.full((~zero).sum(), 1 / 0.7), rtol=1e-6)
    xg = t(rng.standard_normal((4, 5)), device, True)
    out = drop(xg)
    out.sum().backward()
    close(xg.grad, (out.numpy() != 0) / 0.7, rtol=1e-12)
    assert drop.eval()(x) is x
    assert nn.Dropout(0.0)(x) is x


def test_batchnorm_running_stats_and_eval(device):
    bn = nn.BatchNorm2d(3, device=device, dtype="float64")
    assert [k for k, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [k for k, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    init.normal_(bn.weight)
    init.normal_(bn.bias)
    x = rng.standard_normal((4, 3, 2, 3)) * 3 + 2
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    shape = (1, 3, 1, 1)
    w, b = bn.weight.numpy().reshape(shape), bn.bias.numpy().reshape(shape)
    y = bn(t(x, device))
    close(y, (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5) * w + b, rtol=1e-9, atol=1e-12)
    m = x.size // 3
    close(bn.running_mean, 0.1 * mu, rtol=1e-12)
    close(bn.running_var, 0.9 + 0.1 * var * m / (m - 1), rtol=1e-12)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    rm, rv = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
    close(bn(t(x, device)), (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + 1e-5) * w + b, rtol=1e-9)
    close(bn.running_mean, rm, rtol=0, atol=0)          # eval leaves the statistics alone
    assert bn.num_batches_tracked.item() == 1
    assert grads_through(bn, t(x[:, :, :1], device, True))
    bn.train()
    assert grads_through(bn, t(x[:, :, :1], device, True))
    with pytest.raises(ValueError, match="4-d input"):
        bn(t(x[0], device))


def test_batchnorm_cumulative_average_and_1d(device):
    bn = nn.BatchNorm1d(2, momentum=None, device=device, dtype="float64")
    batches = [rng.standard_normal((5, 2)) + i for i in range(3)]
    for xb in batches:
        bn(t(xb, device))
    close(bn.running_mean, np.mean([xb.mean(0) for xb in batches], 0), rtol=1e-12)
    close(bn.running_var, np.mean([xb.var(0, ddof=1) for xb in batches], 0), rtol=1e-12)
    assert bn.num_batches_tracked.item() == 3
    assert bn(t(rng.standard_normal((4, 2, 3)), device)).shape == (4, 2, 3)
    free = nn.BatchNorm1d(2, affine=False, track_running_stats=False, device=device)
    assert list(free.state_dict()) == [] and free.running_mean is None
    x = rng.standard_normal((6, 2))
    close(free.eval()(t(x, device, dtype=np.float32)), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4)


def test_losses(device):
    logits = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    lt, yt = t(logits, device), gpudl.tensor(y, device=device)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    nll = -logp[np.arange(5), y]
    close(nn.CrossEntropyLoss()(lt, yt), nll.mean(), rtol=1e-9)
    close(nn.CrossEntropyLoss(reduction="none")(lt, yt), nll, rtol=1e-9)
    smooth = 0.9 * nll - 0.1 * logp.mean(1)
    close(nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum")(lt, yt), smooth.sum(), rtol=1e-9)
    y_ign = gpudl.tensor([0, 3, -1, 1, 2], device=device)
    close(nn.CrossEntropyLoss(ignore_index=-1)(lt, y_ign), nll[[0, 1, 3, 4]].mean(), rtol=1e-9)
    close(nn.NLLLoss()(t(logp, device), yt), nll.mean(), rtol=1e-9)
    margins = np.maximum(0, logits - logits[np.arange(5), y][:, None] + 0.5)
    margins[np.arange(5), y] = 0
    close(nn.MultiClassHingeLoss(margin=0.5)(lt, yt), margins.sum(1).mean(), rtol=1e-9)
    a, z = rng.standard_normal((2, 3)), (rng.random((2, 3)) > 0.5).astype(np.float64)
    close(nn.MSELoss(reduction="sum")(t(a, device), t(z, device)), ((a - z) ** 2).sum(), rtol=1e-9)
    bce = np.maximum(a, 0) - a * z + np.log1p(np.exp(-np.abs(a)))
    close(nn.BCEWithLogitsLoss()(t(a, device), t(z, device)), bce.mean(), rtol=1e-9)
    lg = t(logits, device, True)
    for loss in (nn.CrossEntropyLoss(label_smoothing=0.2), nn.MultiClassHingeLoss()):
        assert gradcheck(lambda s: loss(s, yt), [lg])


@pytest.mark.parametrize("make,match", [
    (lambda: nn.Linear(0, 3), "in_features to be an int >= 1, got 0"),
    (lambda: nn.Linear(3.5, 3), "in_features"),
    (lambda: nn.Linear(2, 3, dtype="int64"), "floating-point dtype"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "divisible by groups"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size >= 1"),
    (lambda: nn.Conv2d(3, 4, "3"), "kernel_size"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), "stride 1"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), "'valid' or 'same'"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect"), "padding_mode='reflect' is not supported"),
    (lambda: nn.MaxPool2d(2, padding=2), "at most half"),
    (lambda: nn.MaxPool2d(2, stride=0), "stride >= 1"),
    (lambda: nn.AdaptiveAvgPool2d(0), "output_size"),
    (lambda: nn.Dropout(1.5), r"probability in \[0, 1\]"),
    (lambda: nn.BatchNorm2d(0), "num_features"),
    (lambda: nn.BatchNorm2d(3, eps=0), "eps > 0"),
    (lambda: nn.GELU("fast"), "approximate"),
    (lambda: nn.Softmax(dim=1.0), "dim"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), "reduction"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=2), "label_smoothing"),
    (lambda: nn.CrossEntropyLoss(ignore_index=1.5), "ignore_index to be an int"),
    (lambda: nn.MultiClassHingeLoss(margin=-1), "margin"),
    (lambda: nn.Flatten(start_dim="1"), "start_dim"),
])
def test_constructors_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---- init ------------------------------------------------------------------------------

def test_calculate_gain_and_fans():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    assert init._calculate_fan_in_and_fan_out(gpudl.empty(8, 3, 5, 5)) == (75, 200)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(gpudl.empty(4))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(gpudl.empty(4, 4), mode="fan_avg")


def test_init_statistics(device):
    w = gpudl.empty(256, 128, 3, dtype="float64", device=device)     # fan_in 384, fan_out 768
    assert init.kaiming_uniform_(w, a=math.sqrt(5)) is w and w.device == device
    bound = 1 / math.sqrt(384)                                       # PyTorch's Linear/Conv default
    v = w.numpy()
    assert v.max() <= bound and v.min() >= -bound and v.max() > 0.99 * bound and v.min() < -0.99 * bound
    assert v.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / 768), rel=0.02)
    assert abs(w.numpy().mean()) < 0.01 * math.sqrt(2 / 768) * 5
    init.xavier_uniform_(w)
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / (384 + 768)), rel=0.02)
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / (384 + 768))
    init.xavier_normal_(w, gain=2.0)
    assert w.numpy().std() == pytest.approx(2 * math.sqrt(2 / (384 + 768)), rel=0.02)
    init.uniform_(w, -3, -2)
    assert -3 <= w.numpy().min() and w.numpy().max() < -2
    init.normal_(w, mean=5, std=0.5)
    assert w.numpy().mean() == pytest.approx(5, abs=0.01) and w.numpy().std() == pytest.approx(0.5, rel=0.02)
    assert init.constant_(w, 0.25) is w and (w.numpy() == 0.25).all()
    assert not init.zeros_(w).numpy().any() and (init.ones_(w).numpy() == 1).all()
    with pytest.raises(TypeError, match="floating"):
        init.normal_(gpudl.zeros(3, dtype="int64"))


def test_layer_default_init_bounds():
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.numpy()).max() <= bound and np.abs(p.numpy()).max() > 0.9 * bound
    conv = nn.Conv2d(6, 8, 5)
    assert np.abs(conv.weight.numpy()).max() <= 1 / math.sqrt(150)
    bn = nn.BatchNorm2d(4)
    assert (bn.weight.numpy() == 1).all() and not bn.bias.numpy().any()


def test_one_seed_gives_one_model_on_every_device(device):
    gpudl.manual_seed(11)
    on_cpu = Net()
    gpudl.manual_seed(11)
    on_dev = Net(device=device)
    gpudl.manual_seed(11)
    direct = nn.Linear(5, 3, device=device)
    gpudl.manual_seed(11)
    close(direct.weight, nn.Linear(5, 3).weight.numpy(), rtol=0, atol=0)
    assert direct.weight.device == device
    for (k, a), (_, b) in zip(on_cpu.state_dict().items(), on_dev.state_dict().items()):
        assert b.device == device, k
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    gpudl.manual_seed(12)
    assert not np.array_equal(Net().head[1].weight.numpy(), on_cpu.head[1].weight.numpy())


# ---- gradient clipping ----------------------------------------------------------------

def test_clip_grad_norm_(device):
    ps = [nn.Parameter(gpudl.zeros(3, device=device)), nn.Parameter(gpudl.zeros(2, 2, device=device)),
          nn.Parameter(gpudl.zeros(1, device=device))]
    g = [rng.standard_normal(p.shape) for p in ps[:2]]
    for p, gi in zip(ps, g):
        p.grad = t(gi, device, dtype=np.float32)
    ids = [id(p.grad) for p in ps[:2]]
    total = math.sqrt(sum((gi ** 2).sum() for gi in g))
    norm = nn.utils.clip_grad_norm_(ps, max_norm=total / 2)
    assert isinstance(norm, gpudl.Tensor) and norm.device == device and norm.shape == ()
    close(norm, total, rtol=1e-5)
    for p, gi in zip(ps, g):
        close(p.grad, gi / 2, rtol=1e-4)
    assert [id(p.grad) for p in ps[:2]] == ids and ps[2].grad is None
    before = [p.grad.numpy().copy() for p in ps[:2]]
    close(nn.utils.clip_grad_norm_(ps, max_norm=10 * total), total / 2, rtol=1e-5)   # under: unchanged
    for p, b in zip(ps, before):
        close(p.grad, b, rtol=1e-6)
    inf = nn.utils.clip_grad_norm_(ps[0], 0.1, norm_type=math.inf)
    close(inf, np.abs(before[0]).max(), rtol=1e-6)
    assert np.abs(ps[0].grad.numpy()).max() == pytest.approx(0.1, rel=1e-4)
    nn.utils.clip_grad_value_(ps, 0.05)
    assert all(np.abs(p.grad.numpy()).max() <= 0.05 for p in ps[:2])
    assert nn.utils.clip_grad_norm_([ps[2]], 1.0).item() == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        nn.utils.clip_grad_norm_(ps, -1)


def test_clip_grad_norm_after_backward_on_read_only_grads():
    lin = nn.Linear(3, 2)
    lin(gpudl.ones(4, 3)).sum().backward()
    norm = nn.utils.clip_grad_norm_(lin.parameters(), 0.5)
    assert norm.item() > 0.5
    total = math.sqrt(sum((p.grad.numpy() ** 2).sum() for p in lin.parameters()))
    assert total == pytest.approx(0.5, rel=1e-4)
    lin.zero_grad(set_to_none=False)


# ---- PyTorch parity --------------------------------------------------------------------

def _torch_cnn(tnn):
    return tnn.Sequential(
        tnn.Conv2d(3, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(4, 6, (2, 4), padding="same", bias=False), tnn.ReLU(),
        tnn.Flatten(), tnn.Linear(6 * 3 * 3, 5))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_matches_pytorch_cnn(device):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = _torch_cnn(torch.nn).double()
    ours = _torch_cnn(nn).to(device).double()
    ts, os_ = theirs.state_dict(), ours.state_dict()
    assert list(ts) == list(os_)
    assert [tuple(v.shape) for v in ts.values()] == [v.shape for v in os_.values()]
    ours.load_state_dict({k: v.numpy() for k, v in ts.items()})
    x = rng.standard_normal((4, 3, 6, 6))
    y = rng.integers(0, 5, 4)
    for mode in ("train", "eval"):
        getattr(theirs, mode)()
        getattr(ours, mode)()
        xt = torch.tensor(x, requires_grad=True)
        out_t = theirs(xt)
        loss_t = torch.nn.functional.cross_entropy(out_t, torch.tensor(y))
        loss_t.backward()
        xo = t(x, device, True)
        out = ours(xo)
        loss_o = F.cross_entropy(out, gpudl.tensor(y, device=device))
        loss_o.backward()
        close(out, out_t.detach().numpy(), rtol=1e-9, atol=1e-10)
        close(loss_o, loss_t.item(), rtol=1e-9)
        close(xo.grad, xt.grad.numpy(), rtol=1e-7, atol=1e-10)
        for (k, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            close(p.grad, q.grad.numpy(), rtol=1e-7, atol=1e-10)
        for k, v in theirs.state_dict().items():      # running statistics moved alike
            close(ours.state_dict()[k], v.numpy(), rtol=1e-9, atol=1e-12)
        ours.zero_grad()
        theirs.zero_grad()


def test_gradients_assigned_read_only_are_replaced_not_written():
    w = gpudl.tensor(np.ones(3), requires_grad=True)
    ro = np.full(3, 4.0)
    ro.setflags(write=False)
    w.grad = gpudl.tensor(ro)
    nn.utils.clip_grad_norm_([w], 1.0)
    nn.utils.clip_grad_value_([w], 0.1)
    (w * 2).sum().backward()                     # accumulates onto the clipped gradient
    assert np.allclose(w.grad.numpy(), 2.1) and np.all(ro == 4.0)
    g = w.grad.data
    (w * 3).sum().backward()                     # a gradient backward made is added in place
    assert w.grad.data is g and np.allclose(g, 5.1)
    w.grad = gpudl.tensor(ro)
    (w * 2).sum().backward()                     # onto a read-only one: a new array
    assert np.allclose(w.grad.numpy(), 6.0) and np.all(ro == 4.0)


def test_state_dicts_load_across_devices(device):
    """A model's and its optimizer's state made on one device load on another (both ways)."""
    from gpudl import optim
    for src, dst in ((device, gpudl.device("cpu")), (gpudl.device("cpu"), device)):
        gpudl.manual_seed(3)
        a = nn.Linear(3, 2).to(src)
        opt_a = optim.Adam(a.parameters(), lr=0.1)
        a(gpudl.ones(4, 3, device=src)).sum().backward()
        opt_a.step()
        b = nn.Linear(3, 2).to(dst)
        opt_b = optim.Adam(b.parameters(), lr=0.1)
        b.load_state_dict(a.state_dict())
        opt_b.load_state_dict(opt_a.state_dict())
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert pb.device == dst and np.array_equal(pa.numpy(), pb.numpy())
            sa, sb = opt_a.state[pa], opt_b.state[pb]
            assert sb["exp_avg"].device == dst and np.array_equal(sa["exp_avg"].numpy(), sb["exp_avg"].numpy())
    with pytest.raises(TypeError, match=r"load_state_dict: 'weight': expected a Tensor or an array, got object"):
        nn.Linear(3, 2).load_state_dict({"weight": object(), "bias": np.zeros(2)})


def test_train_calls_each_childs_own_train():
    class FrozenBN(nn.BatchNorm2d):
        def train(self, mode=True):
            return super().train(False)           # always in evaluation mode

    net = nn.Sequential(nn.Conv2d(1, 2, 3), FrozenBN(2), nn.Sequential(nn.ReLU()))
    net.eval()
    net.train()
    assert net.training and net[0].training and net[2][0].training
    assert not net[1].training


def test_batchnorm_loads_a_state_dict_without_its_batch_count():
    bn = nn.BatchNorm2d(3)
    bn.num_batches_tracked.data[...] = 7
    sd = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    sd["running_mean"] = gpudl.tensor(np.arange(3.0, dtype=np.float32))
    result = nn.Sequential(bn).load_state_dict({"0." + k: v for k, v in sd.items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert bn.num_batches_tracked.item() == 7     # keeps its count, as in PyTorch
    close(bn.running_mean, [0.0, 1.0, 2.0])
    with pytest.raises(RuntimeError, match="running_var"):
        bn.load_state_dict({k: v for k, v in sd.items() if k != "running_var"})


def test_batchnorm_follows_track_running_stats_changed_after_construction(device):
    """PyTorch's rules: with running statistics, eval uses them even when
    track_running_stats was turned off; training then uses the batch's and
    leaves the running ones (and the count) alone."""
    x = np.array([[0.0, 10.0], [2.0, 14.0], [4.0, 12.0]])
    bn = nn.BatchNorm1d(2, device=device, dtype="float64")
    bn.track_running_stats = False
    bn.eval()
    close(bn(t(x, device)), x / np.sqrt(1 + 1e-5), rtol=1e-12)           # running mean 0, var 1
    bn.train()
    close(bn(t(x, device)), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-12)
    close(bn.running_mean, [0.0, 0.0], rtol=0, atol=0)
    close(bn.running_var, [1.0, 1.0], rtol=0, atol=0)
    assert bn.num_batches_tracked.item() == 0
    torch = pytest.importorskip("torch")
    tb = torch.nn.BatchNorm1d(2).double()
    tb.track_running_stats = False
    for mode in (False, True):
        tb.train(mode)
        bn.train(mode)
        close(bn(t(x, device)), tb(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_softmax_without_dim_takes_pytorchs_legacy_choice_with_a_warning():
    x = gpudl.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 5)))
    with pytest.warns(UserWarning, match="implicit dimension"):
        y = F.softmax(x)
    close(y.sum(1), np.ones((2, 4, 5)))                 # dim 1 for 4-d input
    with pytest.warns(UserWarning):
        close(nn.LogSoftmax()(x[0]).exp().sum(0), np.ones((4, 5)))   # dim 0 for 3-d input
    close(nn.Softmax(dim=-1)(x).sum(-1), np.ones((2, 3, 4)))


def test_pad_takes_pytorchs_arguments_and_modes():
    x = gpudl.tensor(np.arange(6.0).reshape(1, 2, 3))
    close(F.pad(x, (1, 1), "constant", 2.5)[0, 0], [2.5, 0, 1, 2, 2.5])
    close(F.pad(x, (2, 1), mode="reflect")[0, 0], [2, 1, 0, 1, 2, 1])
    close(F.pad(x, (1, 2), "replicate")[0, 1], [3, 3, 4, 5, 5, 5])
    close(F.pad(x, (1, 1), "circular")[0, 1], [5, 3, 4, 5, 3])
    with pytest.raises(ValueError, match="reflect padding \\(3, 0\\) must be less than the dimension \\(3\\)"):
        F.pad(x, (3, 0), "reflect")
    with pytest.raises(ValueError, match="expected mode 'constant'"):
        F.pad(x, (1, 1), "mirror")


def test_list_containers_add_multiply_pop_and_check_insert():
    a, b, c = nn.ReLU(), nn.Tanh(), nn.Sigmoid()
    s = nn.Sequential(a, b)
    both = s + nn.Sequential(c)
    assert isinstance(both, nn.Sequential) and list(both) == [a, b, c]
    twice = s * 2
    assert list(twice) == [a, b, a, b] and list(twice.state_dict()) == []
    with pytest.raises(TypeError, match="expected a Sequential, got list"):
        s += [c]
    with pytest.raises(IndexError, match="index 5 is out of range for length 2"):
        s.insert(5, c)
    m = nn.ModuleList([a]) + [b, c]
    assert isinstance(m, nn.ModuleList) and m.pop(1) is b and list(m) == [a, c]
    m += nn.ModuleList([b])
    assert list(m) == [a, c, b] and [k for k, _ in m.named_children()] == ["0", "1", "2"]
