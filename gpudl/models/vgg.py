"""VGG (Simonyan & Zisserman 2014) with BatchNorm, for 3x32x32 images.

Stacks of 3x3 convolutions (pad 1), each followed by BatchNorm and ReLU, and a
2x2 max pool after each stack: five pools take 32x32 to 1x1x512, and a
CIFAR head -- one ``Linear(512, num_classes)`` -- classifies.  ``features`` is
laid out as torchvision's ``vgg*_bn`` (same indices, same parameter names),
so those convolution weights load into it.
"""
from __future__ import annotations

from .. import nn
from .alexnet import check_input, kaiming_init_

# the widths of the 3x3 convolutions; "M" is a 2x2 max pool
CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def make_features(config, batch_norm=True, in_channels=3):
    layers = []
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers.append(nn.Conv2d(in_channels, v, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG on 3x32x32 input: ``features`` (3x3 conv-BN-ReLU stacks, max pools) then ``classifier``.

    Layer plans (each number a 3x3 conv + BN + ReLU, M a 2x2 max pool),
    then flatten 512 - fc ``num_classes``:

    - vgg11: 64 M 128 M 256 256 M 512 512 M 512 512 M -- 9,231,114 parameters;
    - vgg16: 64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M -- 14,728,266 parameters

    (10 classes, batch_norm=True; the BatchNorm running statistics are buffers).
    """

    def __init__(self, config, num_classes=10, batch_norm=True):
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"VGG: unknown configuration {config!r}; expected one of {sorted(CONFIGS)}")
            config = CONFIGS[config]
        pools = sum(v == "M" for v in config)
        if pools != 5:
            raise ValueError(f"VGG: a 32x32 input needs 5 max pools to reach 1x1, the configuration has {pools}")
        self.features = make_features(config, batch_norm)
        width = [v for v in config if v != "M"][-1]
        self.classifier = nn.Linear(width, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        check_input(self, x)
        return self.classifier(self.features(x).flatten(1))


def vgg11(num_classes=10, batch_norm=True):
    return VGG("vgg11", num_classes, batch_norm)


def vgg16(num_classes=10, batch_norm=True):
    return VGG("vgg16", num_classes, batch_norm)
