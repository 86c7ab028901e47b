"""Plain CNNs for 3x32x32 images: AlexNet scaled to CIFAR, and a small CIFAR CNN.

Also holds what the model families share: :func:`check_input` (the
shape error every model gives) and :func:`kaiming_init_` (He et al. 2015).
"""
from __future__ import annotations

from .. import nn
from ..tensor import Tensor

CIFAR_SHAPE = (3, 32, 32)


def check_input(model, x, shape=CIFAR_SHAPE):
    """Raise unless ``x`` is a float batch of shape (N, *shape), naming what was expected and what came."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(model).__name__}: expected a Tensor of shape (N, {', '.join(map(str, shape))}), "
                        f"got {type(x).__name__}")
    if x.ndim != 1 + len(shape) or x.shape[1:] != tuple(shape):
        raise ValueError(f"{type(model).__name__}: expected input of shape (N, {', '.join(map(str, shape))}), "
                         f"got {x.shape}")


def kaiming_init_(model):
    """He-normal (fan_in, ReLU gain) conv weights, zero conv biases; BatchNorm weight 1, bias 0.

    Linear layers keep PyTorch's default initialisation.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _conv_relu(cin, cout, **kw):
    return [nn.Conv2d(cin, cout, 3, padding=1, **kw), nn.ReLU(inplace=True)]


class AlexNetCIFAR(nn.Module):
    """AlexNet's layout (Krizhevsky et al. 2012: five conv, three fc) scaled to 3x32x32.

    Layer plan (torchvision's ``features`` / ``classifier`` names and order)::

        conv 3->64 3x3 pad 1 (32x32) - ReLU - maxpool 2 (16x16)
        conv 64->192 3x3 pad 1       - ReLU - maxpool 2 (8x8)
        conv 192->384 3x3 pad 1 - ReLU
        conv 384->256 3x3 pad 1 - ReLU
        conv 256->256 3x3 pad 1 - ReLU - maxpool 2 (4x4)
        flatten 4096 - dropout - fc 1024 - ReLU - dropout - fc 1024 - ReLU - fc 10

    7,506,762 parameters for 10 classes (2,251,584 in the convolutions).
    """

    def __init__(self, num_classes=10, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_relu(3, 64), nn.MaxPool2d(2),
            *_conv_relu(64, 192), nn.MaxPool2d(2),
            *_conv_relu(192, 384), *_conv_relu(384, 256), *_conv_relu(256, 256), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 4 * 4, 1024), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, num_classes),
        )
        kaiming_init_(self)

    def forward(self, x):
        check_input(self, x)
        return self.classifier(self.features(x).flatten(1))


class CifarCNN(nn.Module):
    """The small CIFAR CNN of the benchmarks.

    Layer plan: conv 3->32 3x3 pad 1 - ReLU - conv 32->32 - ReLU - maxpool 2 (16x16) -
    conv 32->64 - ReLU - conv 64->64 - ReLU - maxpool 2 (8x8) - flatten 4096 -
    fc 256 - ReLU - fc 10.  1,116,970 parameters for 10 classes.
    """

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_relu(3, 32), *_conv_relu(32, 32), nn.MaxPool2d(2),
            *_conv_relu(32, 64), *_conv_relu(64, 64), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 8 * 8, 256), nn.ReLU(inplace=True),
                                        nn.Linear(256, num_classes))
        kaiming_init_(self)

    def forward(self, x):
        check_input(self, x)
        return self.classifier(self.features(x).flatten(1))


def alexnet_cifar(num_classes=10, **kwargs):
    return AlexNetCIFAR(num_classes, **kwargs)


def cifar_cnn(num_classes=10):
    return CifarCNN(num_classes)
