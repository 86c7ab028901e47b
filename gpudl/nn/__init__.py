"""Neural-network building blocks with PyTorch's names.

``gpudl.nn.functional`` holds the stateless ops, ``gpudl.nn.init`` the
initialisers, ``gpudl.nn.utils`` gradient clipping; the rest is here:
:class:`Module`, :class:`Parameter`, containers, layers and losses.
"""
from . import functional, init, utils  # noqa: F401
from .module import Module, Parameter, Sequential, ModuleList, ModuleDict  # noqa: F401
from .layers import (  # noqa: F401
    Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Identity,
    ReLU, Sigmoid, Tanh, LeakyReLU, GELU, Softmax, LogSoftmax, Dropout,
    BatchNorm1d, BatchNorm2d,
    CrossEntropyLoss, NLLLoss, MultiClassHingeLoss, MSELoss, BCEWithLogitsLoss,
)
from .rnn import RNNBase, RNN, LSTM, GRU, RNNCellBase, RNNCell, LSTMCell, GRUCell  # noqa: F401
from .embedding import Embedding  # noqa: F401

__all__ = [
    "functional", "init", "utils",
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Identity",
    "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "GELU", "Softmax", "LogSoftmax", "Dropout",
    "BatchNorm1d", "BatchNorm2d",
    "CrossEntropyLoss", "NLLLoss", "MultiClassHingeLoss", "MSELoss", "BCEWithLogitsLoss",
    "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell", "Embedding",
]
