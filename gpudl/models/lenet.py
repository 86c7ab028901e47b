"""LeNet-5 for 28x28 images."""
from __future__ import annotations

from .. import nn
from .alexnet import check_input


class LeNet5(nn.Module):
    """LeCun et al. 1998, with ReLU and max pooling, on 1x28x28 input.

    Layer plan: conv 1->6 5x5 pad 2 (28x28) - ReLU - maxpool 2 (14x14) -
    conv 6->16 5x5 (10x10) - ReLU - maxpool 2 (5x5) - flatten 400 -
    fc 120 - ReLU - fc 84 - ReLU - fc 10.  61,706 parameters.
    """

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
        )

    def forward(self, x):
        check_input(self, x, (self.features[0].in_channels, 28, 28))
        return self.classifier(self.features(x))


def lenet5(num_classes=10, in_channels=1):
    return LeNet5(num_classes, in_channels)
