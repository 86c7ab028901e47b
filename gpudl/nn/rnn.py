"""Recurrent layers with PyTorch's call convention, parameter names, shapes and initialisation.

``RNN``, ``LSTM`` and ``GRU`` run whole sequences; ``RNNCell``, ``LSTMCell``
and ``GRUCell`` one step.  Parameters are named and shaped as PyTorch's
(``weight_ih_l0`` (G * hidden_size, input_size), ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, ``_reverse`` for the backward direction of a
bidirectional layer; G = 4 for LSTM in gate order i, f, g, o, 3 for GRU in
order r, z, n, 1 for RNN), all initialised from U(-1/sqrt(hidden_size),
1/sqrt(hidden_size)), so a PyTorch ``state_dict`` loads and gives the same
outputs.

Each layer and direction is one :func:`gpudl.ops.rnn.rnn_scan`: the input
projections of all time steps in one matmul, then one gate-projection
matmul per step, backpropagation through time through the autograd graph.
"""
from __future__ import annotations

import math
import warnings

from ..ops.activation import dropout, relu, tanh
from ..ops.rnn import MODES, gru_cell, lstm_cell, rnn_scan
from ..ops.shape import cat, stack
from ..creation import zeros
from ..tensor import Tensor
from . import functional as F
from . import init
from .layers import _finish, _float_dtype, _int, _only, _param, _prob
from .module import Module

_NONLINEARITIES = ("tanh", "relu")


def _shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_tensor(name, what, t, ref):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected {what} to be a Tensor, got {type(t).__name__}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name}: expected {what} of dtype {ref.dtype} (the layer's parameters), "
                        f"got {t.dtype}; convert the module with .double() / .float() or the tensor "
                        f"with .to(dtype)")
    if t.device != ref.device:
        raise ValueError(f"{name}: {what} is on {t.device} but the layer's parameters are on "
                         f"{ref.device}; move one with .to(device)")


def _check_state(name, what, t, shape, ref):
    _check_tensor(name, what, t, ref)
    if t.shape != shape:
        raise ValueError(f"{name}: expected {what} of shape {_shape_str(shape)}, got {_shape_str(t.shape)}")
    return t


def _reset_uniform(module):
    """PyTorch's recurrent initialisation: every parameter from U(-1/sqrt(hidden), 1/sqrt(hidden))."""
    stdv = 1.0 / math.sqrt(module.hidden_size)
    for p in module.parameters():
        init.uniform_(p, -stdv, stdv)


class RNNBase(Module):
    """The common machinery of RNN, LSTM and GRU (``mode`` "RNN_TANH", "RNN_RELU", "LSTM", "GRU")."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self._scan_mode = mode.lower()
        self.input_size = _int(input_size, "input_size", name)
        self.hidden_size = _int(hidden_size, "hidden_size", name)
        self.num_layers = _int(num_layers, "num_layers", name)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = _prob(dropout, "dropout", name)
        _only(name, proj_size=(proj_size, 0))
        self.proj_size = 0
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between layers, so with num_layers=1 it "
                          f"does nothing", stacklevel=3)
        dt = _float_dtype(dtype, name)
        G, H, D = MODES[self._scan_mode] * self.hidden_size, self.hidden_size, self.num_directions
        self._flat_weights_names = []
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes = [("weight_ih", (G, in_size)), ("weight_hh", (G, H))]
                if self.bias:
                    shapes += [("bias_ih", (G,)), ("bias_hh", (G,))]
                for pname, shape in shapes:
                    self.register_parameter(pname + sfx, _param(shape, dt))
                    self._flat_weights_names.append(pname + sfx)
        _finish(self, device)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """Accepted for PyTorch code (cuDNN's weight packing); nothing to do here."""

    @property
    def all_weights(self):
        n = 4 if self.bias else 2
        w = [getattr(self, k) for k in self._flat_weights_names]
        return [w[i:i + n] for i in range(0, len(w), n)]

    def _layer_weights(self, layer, d):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer and direction (biases None without bias)."""
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ())
        return tuple(getattr(self, n + sfx) for n in names) + (None,) * (4 - len(names))

    # ---- argument checks -----------------------------------------------------------
    def _check_input(self, input):
        name, I = type(self).__name__, self.input_size
        expected = ("(N, T, input_size) = (N, T, {I}) with batch_first=True" if self.batch_first
                    else "(T, N, input_size) = (T, N, {I})").format(I=I)
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: expected input to be a Tensor of shape {expected}, got "
                            f"{type(input).__name__}")
        if input.ndim not in (2, 3) or input.shape[-1] != I or 0 in input.shape[:-1]:
            raise ValueError(f"{name}: expected input of shape {expected} (or (T, {I}) unbatched), "
                             f"got {_shape_str(input.shape)}")
        _check_tensor(name, "input", input, self.weight_ih_l0)

    def _initial_state(self, hx, N, batched):
        """(h0, c0) as lists of (N, H) tensors, one per layer and direction, or None."""
        name, K, H = type(self).__name__, self.num_layers * self.num_directions, self.hidden_size
        if hx is None:
            return None, None
        lstm = self.mode == "LSTM"
        if lstm and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: expected hx to be a tuple (h_0, c_0), got {type(hx).__name__}")
        if not lstm and isinstance(hx, (tuple, list)):
            raise TypeError(f"{name}: expected hx to be a Tensor h_0, got a {type(hx).__name__}")
        shape = (K, N, H) if batched else (K, H)
        states = []
        for what, t in zip(("h_0", "c_0"), hx if lstm else (hx,)):
            t = _check_state(name, what, t, shape, self.weight_ih_l0)
            if not batched:
                t = t.unsqueeze(1)
            states.append([t[k] for k in range(K)])
        return states[0], (states[1] if lstm else None)

    # ---- forward ----------------------------------------------------------------
    def forward(self, input, hx=None):
        """``output, h_n`` (RNN, GRU) or ``output, (h_n, c_n)`` (LSTM).

        input (T, N, input_size), or (N, T, input_size) with ``batch_first``,
        or (T, input_size) unbatched; hx: h_0 (num_layers * num_directions,
        N, hidden_size) (a tuple (h_0, c_0) for LSTM), zeros when None.
        output (T, N, num_directions * hidden_size) (batch first when
        ``batch_first``); h_n, c_n like h_0.
        """
        self._check_input(input)
        batched = input.ndim == 3
        x = input if batched else input.unsqueeze(1)
        if self.batch_first and batched:
            x = x.transpose(0, 1)
        T, N = x.shape[:2]
        h0, c0 = self._initial_state(hx, N, batched)
        lstm = self.mode == "LSTM"
        hs, cs = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                out, h, c = rnn_scan(self._scan_mode, x, *self._layer_weights(layer, d),
                                     h0=None if h0 is None else h0[k],
                                     c0=None if c0 is None else c0[k], reverse=d == 1)
                outs.append(out)
                hs.append(h)
                cs.append(c)
            x = outs[0] if len(outs) == 1 else cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = dropout(x, self.dropout, True)
        if self.batch_first and batched:
            x = x.transpose(0, 1)
        # stacked even when there is one: h_n must not share memory with the output's last step
        h_n = stack(hs)
        c_n = stack(cs) if lstm else None
        if not batched:
            x = x.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        return (x, (h_n, c_n)) if lstm else (x, h_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False)):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)}"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNN: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device=device, dtype=dtype)


class LSTM(RNNBase):
    """Long short-term memory; gates i, f, g, o; returns ``output, (h_n, c_n)``.

    The cell's element-wise part is one fused op (:func:`gpudl.ops.rnn.lstm_cell`).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """Gated recurrent unit; gates r, z, n with PyTorch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


# ---- single steps ------------------------------------------------------------------

class RNNCellBase(Module):
    """weight_ih (G * hidden, input), weight_hh (G * hidden, hidden), bias_ih, bias_hh (G * hidden,)."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.input_size = _int(input_size, "input_size", name)
        self.hidden_size = _int(hidden_size, "hidden_size", name)
        self.bias = bool(bias)
        dt = _float_dtype(dtype, name)
        G = num_chunks * self.hidden_size
        self.weight_ih = _param((G, self.input_size), dt)
        self.weight_hh = _param((G, self.hidden_size), dt)
        self.register_parameter("bias_ih", _param((G,), dt) if bias else None)
        self.register_parameter("bias_hh", _param((G,), dt) if bias else None)
        _finish(self, device)

    def reset_parameters(self):
        _reset_uniform(self)

    def _check_step(self, input, states):
        """(input as (N, I), states as (N, H) tensors or None, batched)."""
        name, I, H = type(self).__name__, self.input_size, self.hidden_size
        if not isinstance(input, Tensor) or input.ndim not in (1, 2) or input.shape[-1] != I:
            got = _shape_str(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{name}: expected input of shape (N, input_size) = (N, {I}) "
                             f"(or ({I},) unbatched), got {got}")
        _check_tensor(name, "input", input, self.weight_ih)
        batched = input.ndim == 2
        N = input.shape[0] if batched else 1
        shape = (N, H) if batched else (H,)
        out = []
        for what, t in states:
            if t is None:
                t = zeros(N, H, dtype=input.dtype, device=input.device)
            else:
                t = _check_state(name, what, t, shape, self.weight_ih)
                if not batched:
                    t = t.unsqueeze(0)
            out.append(t)
        return (input if batched else input.unsqueeze(0)), out, batched

    def _projections(self, x, h):
        return F.linear(x, self.weight_ih, self.bias_ih), F.linear(h, self.weight_hh, self.bias_hh)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s


def _unbatch(t, batched):
    return t if batched else t.squeeze(0)


class RNNCell(RNNCellBase):
    """``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNNCell: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, 1, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        x, (h,), batched = self._check_step(input, [("hx", hx)])
        gx, gh = self._projections(x, h)
        h = (tanh if self.nonlinearity == "tanh" else relu)(gx + gh)
        return _unbatch(h, batched)


class LSTMCell(RNNCellBase):
    """One LSTM step: ``h', c' = cell(x, (h, c))``, the element-wise part fused."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2
                                   and hx[0] is not None and hx[1] is not None):
            raise TypeError(f"LSTMCell: expected hx to be a tuple of two Tensors (h, c), got "
                            f"{type(hx).__name__ if not isinstance(hx, (tuple, list)) else [type(v).__name__ for v in hx]}")
        x, (h, c), batched = self._check_step(input, [("h", None if hx is None else hx[0]),
                                                     ("c", None if hx is None else hx[1])])
        gx, gh = self._projections(x, h)
        h, c = lstm_cell(gx + gh, c)
        return _unbatch(h, batched), _unbatch(c, batched)


class GRUCell(RNNCellBase):
    """One GRU step, PyTorch's equations (gates r, z, n)."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        x, (h,), batched = self._check_step(input, [("hx", hx)])
        gx, gh = self._projections(x, h)
        return _unbatch(gru_cell(gx, gh, h), batched)
