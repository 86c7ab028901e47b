"""Fully connected networks."""
from __future__ import annotations

from .. import nn


class MLP(nn.Module):
    """Flatten, then Linear-activation blocks, then a Linear classifier.

    ``MLP(784, (256,), 10)`` is the classic 784-256-10 net: 203,530 parameters.
    """

    def __init__(self, in_features, hidden=(256,), num_classes=10, activation="relu", dropout=0.0):
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
                "leaky_relu": nn.LeakyReLU}
        if activation not in acts:
            raise ValueError(f"MLP: unknown activation {activation!r}; expected one of {sorted(acts)}")
        layers = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), acts[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def mlp(in_features=784, hidden=(256,), num_classes=10, **kwargs):
    return MLP(in_features, tuple(hidden), num_classes, **kwargs)
