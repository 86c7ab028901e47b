"""Model zoo: ``gpudl.models.create(name, num_classes=10)`` and ``gpudl.models.names()``."""
from __future__ import annotations

from .mlp import mlp, MLP  # noqa: F401
from .lenet import lenet5, LeNet5  # noqa: F401
from .alexnet import alexnet_cifar, cifar_cnn, AlexNetCIFAR, CifarCNN  # noqa: F401
from .vgg import vgg11, vgg16, VGG  # noqa: F401
from .resnet import resnet18, resnet20, resnet32, resnet56, resnet_cifar, ResNet, BasicBlock  # noqa: F401
from .rnn import lstm_classifier, LSTMClassifier  # noqa: F401

_MNIST, _CIFAR = (1, 28, 28), (3, 32, 32)
# name -> (constructor, expected input shape without the batch axis, description)
_REGISTRY = {name: (fn, shape, desc) for name, fn, shape, desc in (
    ("mlp", mlp, _MNIST,
     "fully connected 784-256-10 with ReLU (flattens its input)"),
    ("lenet5", lenet5, _MNIST, "LeNet-5: conv5(pad 2)-pool-conv5-pool-fc120-fc84-fc10"),
    ("lstm", lstm_classifier, _MNIST,
     "sequential MNIST: LSTM(28->128) over the 28 rows, Linear(128->10) on the last h"),
    ("cifar_cnn", cifar_cnn, _CIFAR, "small CIFAR CNN: conv3x3 32-32-pool-64-64-pool-fc256-fc10 (1.12M)"),
    ("alexnet_cifar", alexnet_cifar, _CIFAR, "AlexNet's 5 conv + 3 fc scaled to 32x32 (7.51M)"),
    ("vgg11", vgg11, _CIFAR, "VGG-11 with BatchNorm, CIFAR head (9.23M)"),
    ("vgg16", vgg16, _CIFAR, "VGG-16 with BatchNorm, CIFAR head (14.73M)"),
    ("resnet20", resnet20, _CIFAR, "CIFAR ResNet-20, 16/32/64 channels, option-A shortcuts (0.27M)"),
    ("resnet32", resnet32, _CIFAR, "CIFAR ResNet-32, option-A shortcuts (0.46M)"),
    ("resnet56", resnet56, _CIFAR, "CIFAR ResNet-56, option-A shortcuts (0.85M)"),
    ("resnet18", resnet18, _CIFAR, "ResNet-18 (BasicBlock) for 32x32: 3x3 stem, no max pool (11.17M)"),
)}


def register(name, constructor, input_shape, description):
    """Add a model of your own: ``constructor(num_classes=..., **kwargs)`` builds it; then
    :func:`create` and ``gpudl train --model NAME`` know it."""
    _REGISTRY[name] = (constructor, tuple(input_shape), description)


def names():
    """The names ``create`` accepts, sorted."""
    return sorted(_REGISTRY)


def describe():
    """{name: description} for ``--help`` texts."""
    return {n: _REGISTRY[n][2] for n in names()}


def input_shape(name):
    return _get(name)[1]


def _get(name):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(names())}") from None


def create(name, num_classes=10, **kwargs):
    """A freshly initialised model by name (see :func:`names`)."""
    return _get(name)[0](num_classes=num_classes, **kwargs)
