"""Residual networks (He et al. 2015) for 3x32x32 images.

Each block learns a residual F(x) and outputs H(x) = relu(F(x) + x), with
F = conv3x3-BN-ReLU-conv3x3-BN.  Where a block halves the size and widens
the channels the shortcut is

- option A (the CIFAR paper's): the identity, subsampled by 2 and padded
  with zero channels -- no parameters;
- option B: a 1x1 convolution with stride 2 and BatchNorm (``downsample``).

``resnet20/32/56`` are the paper's CIFAR nets (3 stages of 16/32/64
channels, 6n+2 layers, option A by default); ``resnet18`` is the ImageNet
BasicBlock net (64/128/256/512, option B) with a 3x3 stem and no max pool.
Parameter names are torchvision's (``conv1``, ``bn1``, ``layerK.i.conv1``,
``downsample.0``, ``fc``), so a PyTorch state_dict of the same layout loads.
"""
from __future__ import annotations

from .. import nn
from ..nn import functional as F
from .alexnet import check_input, kaiming_init_


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option A: ``x[:, :, ::stride, ::stride]`` padded with zero channels to ``planes``."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"PadShortcut: cannot pad {in_planes} channels down to {planes}")
        self.in_planes, self.planes, self.stride = in_planes, planes, stride

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.planes - self.in_planes
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra else x

    def extra_repr(self):
        return f"{self.in_planes}->{self.planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convolutions.

    ``shortcut``: "A" (zero-padding identity) or "B" (1x1 conv + BN as
    ``downsample``); used only where the shape changes, else the identity.
    """

    expansion = 1

    def __init__(self, in_planes, planes, stride=1, shortcut="A"):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"BasicBlock: expected shortcut 'A' or 'B', got {shortcut!r}")
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = (PadShortcut(in_planes, planes, stride) if shortcut == "A" else
                               nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                             nn.BatchNorm2d(planes)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """A 3x3 stem conv (+BN+ReLU), stages of BasicBlocks, global average pool, ``fc``.

    ``widths[k]`` channels and ``blocks[k]`` blocks in stage k (``layer{k+1}``);
    every stage after the first starts with stride 2.
    """

    def __init__(self, widths, blocks, num_classes=10, shortcut="A"):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"ResNet: expected one block count per stage width, got {widths} and {blocks}")
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for k, (planes, n) in enumerate(zip(widths, blocks)):
            stage = []
            for i in range(n):
                stage.append(BasicBlock(in_planes, planes, 2 if (k and not i) else 1, shortcut))
                in_planes = planes
            setattr(self, f"layer{k + 1}", nn.Sequential(*stage))
        self.num_stages = len(widths)
        self.fc = nn.Linear(in_planes, num_classes)
        kaiming_init_(self)

    def forward(self, x):
        check_input(self, x)
        out = F.relu(self.bn1(self.conv1(x)))
        for k in range(self.num_stages):
            out = getattr(self, f"layer{k + 1}")(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet_cifar(depth, num_classes=10, shortcut="A"):
    """The CIFAR ResNet of ``depth`` = 6n+2 layers: n blocks in each of 3 stages of 16/32/64 channels."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"resnet_cifar: depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    n = (depth - 2) // 6
    return ResNet((16, 32, 64), (n, n, n), num_classes, shortcut)


def resnet20(num_classes=10, shortcut="A"):
    """ResNet-20: conv 16 - 3 stages of 3 blocks (16, 32, 64 channels) - pool - fc.

    269,722 parameters with option A (He et al.'s 0.27M); 272,474 with option B.
    """
    return resnet_cifar(20, num_classes, shortcut)


def resnet32(num_classes=10, shortcut="A"):
    """ResNet-32: 5 blocks a stage; 464,154 parameters (option A; 466,906 with option B)."""
    return resnet_cifar(32, num_classes, shortcut)


def resnet56(num_classes=10, shortcut="A"):
    """ResNet-56: 9 blocks a stage; 853,018 parameters (option A; 855,770 with option B)."""
    return resnet_cifar(56, num_classes, shortcut)


def resnet18(num_classes=10, shortcut="B"):
    """ResNet-18 for 32x32: conv3x3 64 - 2 blocks each of 64, 128, 256, 512 - pool - fc; 11,173,962 parameters."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, shortcut)
