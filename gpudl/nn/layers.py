"""Layers and losses with PyTorch's names, parameter layouts and default initialisation.

Each layer holds its state and calls :mod:`gpudl.nn.functional` for the
computation.  Parameters are made on the CPU, initialised by the seeded CPU
generator, and then moved when ``device=`` is given, so one seed gives the
same model on every device.
"""
from __future__ import annotations

import math
import numbers

import numpy

from ..creation import empty, zeros, ones
from ..tensor import as_dtype, Tensor
from ..ops.conv import _pair as _checked_pair, same_padding
from ..ops._util import only_supported as _only
from ..ops.loss import _reduction as _legacy_reduction
from ..ops.norm import check_batch_statistics
from . import functional as F
from . import init
from .module import Module, Parameter

_REDUCTIONS = ("mean", "sum", "none")


# ---- argument checks ----------------------------------------------------------
def _int(v, name, layer, minimum=1):
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{layer}: expected {name} to be an int >= {minimum}, got {v!r}")
    return int(v)


def _pair(v, name, layer, minimum):
    try:
        return _checked_pair(v, name, layer, minimum)
    except TypeError as e:
        raise ValueError(str(e)) from None


def _prob(p, name, layer):
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{layer}: expected {name} to be a probability in [0, 1], got {p!r}")
    return float(p)


def _float_dtype(dtype, layer):
    dt = as_dtype(dtype) or numpy.dtype("float32")
    if dt.kind != "f":
        raise ValueError(f"{layer}: expected a floating-point dtype for its parameters, got {dt}")
    return dt


def _param(shape, dtype):
    """An uninitialised CPU Parameter (the layer's reset_parameters fills it)."""
    return Parameter(empty(*shape, dtype=dtype))


def _finish(module, device):
    """Initialise on the CPU, then move to ``device`` (when given)."""
    module.reset_parameters()
    if device is not None:
        module.to(device)


def _reset_weight_and_bias(weight, bias):
    """PyTorch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in))."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


# ---- linear and convolution ---------------------------------------------------
class Linear(Module):
    """y = x @ weight.T + bias, weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = _int(in_features, "in_features", "Linear")
        self.out_features = _int(out_features, "out_features", "Linear")
        dt = _float_dtype(dtype, "Linear")
        self.weight = _param((self.out_features, self.in_features), dt)
        self.register_parameter("bias", _param((self.out_features,), dt) if bias else None)
        _finish(self, device)

    def reset_parameters(self):
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution over NCHW input; weight (out_channels, in_channels // groups, kH, kW).

    ``padding`` is an int, a pair, 'valid' (none) or 'same' (output the size
    of the input; stride 1 only, padding the right/bottom more when the
    dilated kernel's extent is even, as PyTorch does).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        name = "Conv2d"
        self.in_channels = _int(in_channels, "in_channels", name)
        self.out_channels = _int(out_channels, "out_channels", name)
        self.groups = _int(groups, "groups", name)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must both be divisible by groups ({groups})")
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = _pair(stride, "stride", name, 1)
        self.dilation = _pair(dilation, "dilation", name, 1)
        _only(name, padding_mode=(padding_mode, "zeros"))
        self.padding_mode = padding_mode
        self._pre_pad = None   # F.pad widths for an uneven 'same'
        if isinstance(padding, str):
            self.padding = padding
            self._pre_pad, self._conv_padding = same_padding(padding, self.kernel_size, self.stride,
                                                             self.dilation, name)
        else:
            self.padding = self._conv_padding = _pair(padding, "padding", name, 0)
        dt = _float_dtype(dtype, name)
        self.weight = _param((self.out_channels, self.in_channels // self.groups) + self.kernel_size, dt)
        self.register_parameter("bias", _param((self.out_channels,), dt) if bias else None)
        _finish(self, device)

    def reset_parameters(self):
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        if self._pre_pad is not None:
            input = F.pad(input, self._pre_pad)
        return F.conv2d(input, self.weight, self.bias, self.stride, self._conv_padding, self.dilation, self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


# ---- pooling and reshaping ------------------------------------------------------
class _Pool2d(Module):
    def __init__(self, kernel_size, stride, padding, ceil_mode):
        super().__init__()
        name = type(self).__name__
        k = _pair(kernel_size, "kernel_size", name, 1)
        if stride is not None:
            _pair(stride, "stride", name, 1)
        p = _pair(padding, "padding", name, 0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"{name}: padding {padding!r} must be at most half of kernel_size {kernel_size!r}")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)


class MaxPool2d(_Pool2d):
    """Max over kernel_size windows (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        _only("MaxPool2d", dilation=(_pair(dilation, "dilation", "MaxPool2d", 1), (1, 1)),
              return_indices=(return_indices, False))
        self.dilation, self.return_indices = dilation, return_indices

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, ceil_mode=self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    """Mean over kernel_size windows (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        _only("AvgPool2d", divisor_override=(divisor_override, None))
        self.count_include_pad, self.divisor_override = bool(count_include_pad), divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average-pool to ``output_size`` (1: global average pooling)."""

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, (tuple, list)) and len(output_size) == 2:   # None: keep that size
            _pair(tuple(1 if o is None else o for o in output_size), "output_size", "AdaptiveAvgPool2d", 1)
        else:
            _pair(output_size, "output_size", "AdaptiveAvgPool2d", 1)
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise ValueError(f"Flatten: expected {name} to be an int, got {v!r}")
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input; takes (and ignores) any constructor arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


# ---- activations ----------------------------------------------------------------
class _Activation(Module):
    """``inplace`` is accepted for PyTorch compatibility; gpudl computes out of place."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Activation):
    def forward(self, input):
        return F.relu(input)


class Sigmoid(Module):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return F.tanh(input)


class LeakyReLU(_Activation):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__(inplace)
        if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
            raise ValueError(f"LeakyReLU: expected negative_slope to be a number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: expected approximate='none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class _SoftmaxBase(Module):
    """``dim=None`` picks PyTorch's legacy default: 0 for 0-, 1- and 3-d input, else 1."""

    def __init__(self, dim=None):
        super().__init__()
        if dim is not None and (not isinstance(dim, numbers.Integral) or isinstance(dim, bool)):
            raise ValueError(f"{type(self).__name__}: expected dim to be an int or None, got {dim!r}")
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    def forward(self, input):
        return F.softmax(input, self.dim)


class LogSoftmax(_SoftmaxBase):
    def forward(self, input):
        return F.log_softmax(input, self.dim)


class Dropout(Module):
    """Zero each element with probability p in training (scaling the rest by 1/(1-p)); identity in eval."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p, self.inplace = _prob(p, "p", "Dropout"), bool(inplace)

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


# ---- normalisation ----------------------------------------------------------------
class _BatchNorm(Module):
    """Batch normalisation with PyTorch's parameters (weight, bias) and buffers
    (running_mean, running_var, num_batches_tracked).

    ``momentum=None`` makes the running statistics a cumulative average.
    """

    _input_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.num_features = _int(num_features, "num_features", name)
        if not isinstance(eps, numbers.Real) or not eps > 0:
            raise ValueError(f"{name}: expected eps > 0, got {eps!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else _prob(momentum, "momentum", name)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dt = _float_dtype(dtype, name)
        c = self.num_features
        self.register_parameter("weight", _param((c,), dt) if affine else None)
        self.register_parameter("bias", _param((c,), dt) if affine else None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(c, dtype=dt))
            self.register_buffer("running_var", ones(c, dtype=dt))
            self.register_buffer("num_batches_tracked", zeros((), dtype="int64"))
        else:
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(b, None)
        _finish(self, device)

    # a state_dict without the count still loads (the count keeps its value), as in PyTorch
    _optional_state = ("num_batches_tracked",)

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            init.zeros_(self.num_batches_tracked)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        if not isinstance(input, Tensor) or input.ndim not in self._input_dims:
            raise ValueError(f"{type(self).__name__}: expected {' or '.join(f'{d}-d' for d in self._input_dims)} "
                             f"input, got {input.shape if isinstance(input, Tensor) else type(input).__name__}")
        # PyTorch's rules, also when track_running_stats is changed after construction:
        # training uses the batch's statistics (and moves the running ones only while
        # tracking); evaluation uses the running statistics whenever there are any
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training:
            check_batch_statistics(input, type(self).__name__)   # before the count moves
        if self.training and self.track_running_stats and self.num_batches_tracked is not None and input.numel():
            self.num_batches_tracked.data += 1   # on the device: no host sync
            if self.momentum is None:            # cumulative average: reads the count
                momentum = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, use_batch_stats, momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) input."""
    _input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) input."""
    _input_dims = (4,)


# ---- losses -------------------------------------------------------------------------
class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        name = type(self).__name__
        reduction = _legacy_reduction(size_average, reduce, reduction, name)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{name}: expected reduction 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction


class _WeightedLoss(_Loss):
    """A loss with per-class ``weight`` (a buffer, so in the state_dict, as in PyTorch)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(f"{type(self).__name__}: expected weight to be a Tensor or None, "
                            f"got {type(weight).__name__}")
        # (a tensor of its own, sharing the values: moving the module leaves the caller's alone)
        self.register_buffer("weight", None if weight is None else weight.detach())


class _IndexLoss(_WeightedLoss):
    def __init__(self, weight, size_average, ignore_index, reduce, reduction):
        super().__init__(weight, size_average, reduce, reduction)
        if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
            raise ValueError(f"{type(self).__name__}: expected ignore_index to be an int, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)


class CrossEntropyLoss(_IndexLoss):
    """Softmax cross-entropy of logits (N, C) against class indices (N,);
    PyTorch's arguments (``weight``: one per class)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)
        self.label_smoothing = _prob(label_smoothing, "label_smoothing", "CrossEntropyLoss")

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_IndexLoss):
    """Negative log-likelihood of log-probabilities (N, C) at class indices (N,)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MultiClassHingeLoss(_Loss):
    """Multiclass SVM loss: sum over j != y of max(0, s_j - s_y + margin) (CS231n form)."""

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction=reduction)
        if not isinstance(margin, numbers.Real) or isinstance(margin, bool) or margin < 0:
            raise ValueError(f"MultiClassHingeLoss: expected margin to be a number >= 0, got {margin!r}")
        self.margin = float(margin)

    def forward(self, input, target):
        return F.multiclass_hinge_loss(input, target, self.margin, self.reduction)

    def extra_repr(self):
        return f"margin={self.margin}"


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """Sigmoid + binary cross-entropy on logits, stable for any size;
    ``weight`` per element (broadcast), ``pos_weight`` per class (buffers)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(weight, size_average, reduce, reduction)
        if pos_weight is not None and not isinstance(pos_weight, Tensor):
            raise TypeError(f"BCEWithLogitsLoss: expected pos_weight to be a Tensor or None, "
                            f"got {type(pos_weight).__name__}")
        self.register_buffer("pos_weight", None if pos_weight is None else pos_weight.detach())

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
