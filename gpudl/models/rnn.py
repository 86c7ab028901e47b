"""Recurrent classifiers: an LSTM that reads an image row by row (sequential MNIST)."""
from __future__ import annotations

from .. import nn
from .alexnet import check_input


class LSTMClassifier(nn.Module):
    """Read an image (N, C, rows, cols) as a sequence of ``rows`` steps of ``C * cols`` values.

    An LSTM (batch first) runs over the rows; a Linear layer classifies its
    last hidden state (of the top layer).  The default, LSTM(28 -> 128) +
    Linear(128 -> 10) on 1x28x28 MNIST, has 82,186 parameters.
    """

    def __init__(self, num_classes=10, hidden_size=128, num_layers=1, in_channels=1, rows=28, cols=28):
        super().__init__()
        self.in_channels, self.rows, self.cols = in_channels, rows, cols
        self.rnn = nn.LSTM(in_channels * cols, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        check_input(self, x, (self.in_channels, self.rows, self.cols))
        seq = x.permute(0, 2, 1, 3).reshape(x.shape[0], self.rows, -1) if self.in_channels > 1 \
            else x.reshape(x.shape[0], self.rows, self.cols)
        _, (h, _) = self.rnn(seq)
        return self.fc(h[-1])


def lstm_classifier(num_classes=10, hidden_size=128, num_layers=1):
    """LSTM(28 -> hidden_size) over the 28 rows of a 1x28x28 image, then Linear(hidden_size -> num_classes)."""
    return LSTMClassifier(num_classes, hidden_size, num_layers)
