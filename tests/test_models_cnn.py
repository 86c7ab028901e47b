"""The CIFAR CNNs: parameter counts, shapes on each device, training, gradcheck, PyTorch state_dict parity."""
import numpy as np
import pytest

import gpudl
from gpudl import data, models, nn, optim
from gpudl.models.resnet import BasicBlock
from gpudl.nn import functional as F
from gpudl.testing import gradcheck

from helpers import t

# exact counts: the CIFAR ResNets' option-A numbers are those of He et al. (0.27M, 0.46M, 0.85M;
# 272,474 / 466,906 / 855,770 with the option-B 1x1 shortcuts)
COUNTS = {
    "cifar_cnn": 1_116_970, "alexnet_cifar": 7_506_762, "vgg11": 9_231_114, "vgg16": 14_728_266,
    "resnet20": 269_722, "resnet32": 464_154, "resnet56": 853_018, "resnet18": 11_173_962,
}
BIG = {"vgg16", "resnet18", "resnet56"}        # forward on the CPU only (slow in the emulator)


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_registered_with_exact_parameter_count(name):
    assert name in models.names() and models.input_shape(name) == (3, 32, 32)
    m = models.create(name, num_classes=10)
    assert _count(m) == COUNTS[name]
    doc = (type(m).__doc__ or "") + (getattr(models, name).__doc__ or "")
    assert f"{COUNTS[name]:,}" in doc                                  # documented with its layer plan
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 32, 32\), got \(2, 1, 28, 28\)"):
        m(gpudl.zeros(2, 1, 28, 28))


def test_option_b_and_other_heads():
    assert _count(models.create("resnet20", shortcut="B")) == 272_474
    assert _count(models.create("resnet32", shortcut="B")) == 466_906
    assert _count(models.create("resnet56", shortcut="B")) == 855_770
    assert _count(models.create("resnet20", num_classes=100)) == 269_722 + 90 * 65
    assert _count(models.create("mlp", hidden=(64,))) == 784 * 64 + 64 + 64 * 10 + 10
    assert _count(models.create("mlp", in_features=100, hidden=(), num_classes=3)) == 303
    with pytest.raises(ValueError, match="6n\\+2"):
        models.resnet_cifar(21)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_forward_shape_on_each_device(name, device):
    if name in BIG and device.type != "cpu":
        pytest.skip("large model: forward checked on the CPU")
    m = models.create(name).eval()
    x = gpudl.randn(2, 3, 32, 32)
    want = m(x).numpy() if device.type != "cpu" else None     # one seed: the same model on every device
    m.to(device)
    x = x.to(device)
    y = m(x)
    assert y.shape == (2, 10) and y.device == device and np.isfinite(y.numpy()).all()
    if want is not None:
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-3, atol=1e-4)
    m.train()
    assert m(x).shape == (2, 10)


def _tiny_cifar(tmp_path, n=32):
    """A learnable CIFAR-format set: each class a colour, plus noise, written and read back as the real files."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    colours = rng.integers(30, 226, (10, 3))
    x = colours[labels][:, :, None, None] + rng.normal(0, 25, (n, 3, 32, 32))
    x = np.clip(x, 0, 255).astype(np.uint8)
    data.write_cifar10(tmp_path, (x, labels), (x[:10], labels[:10]))
    return data.cifar10("train", root=tmp_path)


@pytest.mark.parametrize("name", ["resnet20", "cifar_cnn"])
def test_sgd_steps_lower_the_loss(name, device, tmp_path):
    if device.type != "cpu" and (name == "resnet20" or device.backend.xp.__name__ == "numpy"):
        pytest.skip("training runs on the CPU and on a real GPU (the emulated kernels are too slow for it; "
                    "test_parity covers them)")
    ds = _tiny_cifar(tmp_path)
    train_tf, _ = data.cifar10_transforms(seed=0)
    loader = data.DataLoader(ds, batch_size=16, shuffle=True, seed=0, device=device, transform=train_tf)
    m = models.create(name).to(device)
    opt = optim.SGD(m.parameters(), lr=0.05 if name == "resnet20" else 0.01, momentum=0.9, weight_decay=1e-4)
    losses = []
    for _ in range(4):
        for x, y in loader:
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.parametrize("stride,in_planes,shortcut", [(1, 3, "A"), (2, 2, "A"), (2, 2, "B")])
def test_basic_block_gradcheck(stride, in_planes, shortcut):
    block = BasicBlock(in_planes, 3 if stride == 1 else 4, stride, shortcut).double()
    x = t(np.random.default_rng(1).standard_normal((2, in_planes, 4, 4)), "cpu", requires_grad=True)
    params = [p for p in block.parameters()]
    gradcheck(lambda x, *ps: block(x), [x, *params], atol=1e-5, rtol=1e-3)


def test_option_a_shortcut_is_subsampled_identity_padded_with_zeros():
    block = BasicBlock(2, 4, stride=2, shortcut="A")
    x = gpudl.randn(1, 2, 4, 4)
    s = block.downsample(x).numpy()
    assert s.shape == (1, 4, 2, 2)
    np.testing.assert_array_equal(s[:, 1:3], x.numpy()[:, :, ::2, ::2])
    assert not s[:, 0].any() and not s[:, 3].any()
    assert not list(block.downsample.parameters())


# ---- PyTorch layout -------------------------------------------------------------------------------

def _torch_resnet20():
    torch = pytest.importorskip("torch")
    tnn, TF = torch.nn, torch.nn.functional

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x)))))
            sc = x
            if self.stride != 1 or self.extra:      # option A, as He et al.'s CIFAR nets
                sc = TF.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra // 2))
            return TF.relu(out + sc)

    class ResNet20(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            cin = 16
            for k, w in enumerate((16, 32, 64)):
                blocks = []
                for i in range(3):
                    blocks.append(Block(cin, w, 2 if k and not i else 1))
                    cin = w
                setattr(self, f"layer{k + 1}", tnn.Sequential(*blocks))
            self.fc = tnn.Linear(64, 10)

        def forward(self, x):
            out = self.layer3(self.layer2(self.layer1(TF.relu(self.bn1(self.conv1(x))))))
            return self.fc(TF.adaptive_avg_pool2d(out, 1).flatten(1))

    torch.manual_seed(0)
    return torch, ResNet20()


def test_pytorch_state_dict_round_trips():
    torch, tm = _torch_resnet20()
    assert sum(p.numel() for p in tm.parameters()) == COUNTS["resnet20"]
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    tm.train()
    with torch.no_grad():
        for _ in range(3):                                 # running statistics worth comparing
            tm(torch.from_numpy(x) * 2 + 0.5)
    ours = models.create("resnet20")
    result = ours.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert list(result[0]) == [] and list(result[1]) == []
    assert list(ours.state_dict()) == list(tm.state_dict())
    tm.eval(), ours.eval()
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(gpudl.tensor(x)).numpy(), want, rtol=1e-4, atol=1e-4)
    # training mode: batch statistics, and the same gradient
    tm.train(), ours.train()
    y = np.array([1, 5, 7, 2])
    tl = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
    tl.backward()
    gl = F.cross_entropy(ours(gpudl.tensor(x)), gpudl.tensor(y))
    gl.backward()
    np.testing.assert_allclose(gl.item(), tl.item(), rtol=1e-4)
    np.testing.assert_allclose(ours.layer2[0].conv1.weight.grad.numpy(), tm.layer2[0].conv1.weight.grad.numpy(),
                               rtol=1e-3, atol=1e-5)
    # and back: ours -> PyTorch, strictly
    tm.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in ours.state_dict().items()}, strict=True)


def test_first_conv_and_module_names_are_pytorch_like():
    m = models.create("resnet18")
    names = dict(m.named_parameters())
    assert {"conv1.weight", "bn1.weight", "layer2.0.downsample.0.weight", "layer4.1.conv2.weight",
            "fc.weight", "fc.bias"} <= set(names)
    v = models.create("vgg11")
    assert isinstance(v.features[0], nn.Conv2d) and isinstance(v.features[1], nn.BatchNorm2d)
    assert v.classifier.weight.shape == (10, 512)
