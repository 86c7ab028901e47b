"""Convolution and pooling: differentiable wrappers over the backend's kernels.

Arguments are checked here, before any kernel runs, so bad input gets an
error naming the argument, the expected and the given value.
"""
from __future__ import annotations

import numbers

import numpy

from ..autograd import Function
from ..tensor import Tensor
from ._util import only_supported


def _pair(v, name, op, minimum=0):
    if isinstance(v, numbers.Integral):
        v = (int(v), int(v))
    try:
        a, b = (int(i) for i in v)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: expected {name} to be an int or a pair of ints, got {v!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{op}: expected {name} >= {minimum}, got {(a, b)}")
    return a, b


def _check_image(x, op, what="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected {what} to be a Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        shapes = "(N, C, H, W) or (C, H, W)" if what == "input" else "(N, C, H, W)"
        raise ValueError(f"{op}: expected {what} of shape {shapes}, got {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point {what}, got {x.dtype}")


def _out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, dilation, groups)
        return ctx.backend.conv2d_forward(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved
        need = ctx.needs_input_grad[:3]
        gx, gw, gb = ctx.backend.conv2d_backward(x, w, g, *ctx.conf, need=need)
        return gx, gw, gb, None, None, None, None


def same_padding(padding, kernel_size, stride, dilation, op):
    """'valid' / 'same' as (F.pad widths to apply first or None, the conv's own
    padding).  'same' keeps the input's size (stride 1 only); when a dilated
    kernel's extent is even the right/bottom get the extra row, as in PyTorch."""
    if padding == "valid":
        return None, (0, 0)
    if padding != "same":
        raise ValueError(f"{op}: expected padding to be an int, a pair, 'valid' or 'same', got {padding!r}")
    if tuple(stride) != (1, 1):
        raise ValueError(f"{op}: padding='same' needs stride 1, got stride={tuple(stride)!r}")
    totals = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
    conv = tuple(t // 2 for t in totals)
    if any(t % 2 for t in totals):
        (th, tw), (ph, pw) = totals, conv
        return (pw, tw - pw, ph, th - ph), (0, 0)
    return None, conv


def _unbatched(fn, input, *args, **kwargs):
    """``fn`` on a (C, H, W) input as a batch of one, as PyTorch takes it."""
    out = fn(input.reshape((1,) + input.shape), *args, **kwargs)
    return out.reshape(out.shape[1:])


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of NCHW (or unbatched CHW) ``input`` with ``weight``
    (C_out, C_in/groups, kH, kW); ``padding`` also 'valid' or 'same'."""
    op = "conv2d"
    if isinstance(input, Tensor) and input.ndim == 3:
        return _unbatched(conv2d, input, weight, bias, stride, padding, dilation, groups)
    _check_image(input, op)
    _check_image(weight, op, "weight")
    stride = _pair(stride, "stride", op, 1)
    dilation = _pair(dilation, "dilation", op, 1)
    if isinstance(padding, str):
        pre, padding = same_padding(padding, weight.shape[2:], stride, dilation, op)
        if pre is not None:
            from .shape import pad
            input = pad(input, pre)
    padding = _pair(padding, "padding", op, 0)
    if not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{op}: expected groups to be a positive int, got {groups!r}")
    n, c, h, w_ = input.shape
    o, cg, kh, kw = weight.shape
    if c != cg * groups:
        raise ValueError(f"{op}: input has {c} channels but weight {weight.shape} with groups={groups} "
                         f"expects {cg * groups}")
    if o % groups:
        raise ValueError(f"{op}: weight has {o} output channels, not divisible by groups={groups}")
    if input.dtype != weight.dtype:
        raise TypeError(f"{op}: input is {input.dtype} but weight is {weight.dtype}")
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.shape != (o,):
            raise ValueError(f"{op}: expected bias of shape ({o},), got "
                             f"{bias.shape if isinstance(bias, Tensor) else type(bias).__name__}")
        if bias.dtype != input.dtype:
            raise TypeError(f"{op}: input is {input.dtype} but bias is {bias.dtype}")
    for axis, size, k, s, p, d in (("height", h, kh, stride[0], padding[0], dilation[0]),
                                   ("width", w_, kw, stride[1], padding[1], dilation[1])):
        if d * (k - 1) + 1 > size + 2 * p:
            raise ValueError(f"{op}: kernel {axis} {k} (dilated to {d * (k - 1) + 1}) is larger than the "
                             f"padded input {axis} {size + 2 * p}")
    return Conv2d.apply(input, weight, bias, stride, padding, dilation, int(groups))


def _pool_args(x, kernel_size, stride, padding, op):
    _check_image(x, op)
    kernel = _pair(kernel_size, "kernel_size", op, 1)
    stride = kernel if stride is None else _pair(stride, "stride", op, 1)
    padding = _pair(padding, "padding", op, 0)
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{op}: expected an input of non-zero height and width (only the batch "
                         f"may be empty, as in PyTorch), got {x.shape}")
    for axis, size, k, s, p in (("height", x.shape[2], kernel[0], stride[0], padding[0]),
                                ("width", x.shape[3], kernel[1], stride[1], padding[1])):
        if _out_size(size, k, s, p, 1) < 1:
            raise ValueError(f"{op}: kernel {axis} {k} is larger than the padded input {axis} {size + 2 * p}")
    return kernel, stride, padding


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        y, argmax = ctx.backend.max_pool2d_forward(x, kernel, stride, padding)
        ctx.save_for_backward(argmax)
        ctx.conf = (x.shape, kernel, stride, padding)
        return y

    @staticmethod
    def backward(ctx, g):
        argmax, = ctx.saved
        return ctx.backend.max_pool2d_backward(g, argmax, *ctx.conf), None, None, None


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows; the gradient goes to the first maximum of each window
    (to its last NaN where it holds NaNs, as in PyTorch).  PyTorch's signature;
    ``ceil_mode`` keeps a last, partial window (one that starts inside the input
    or its left padding); dilation and return_indices only at their defaults."""
    only_supported("max_pool2d", dilation=(_pair(dilation, "dilation", "max_pool2d", 1), (1, 1)),
                   return_indices=(return_indices, False))
    if isinstance(input, Tensor) and input.ndim == 3:
        return _unbatched(max_pool2d, input, kernel_size, stride, padding, ceil_mode=ceil_mode)
    kernel, stride, padding = _pool_args(input, kernel_size, stride, padding, "max_pool2d")
    if ceil_mode:
        input, _ = _ceil_extend(input, kernel, stride, padding, float("-inf"))
    return MaxPool2d.apply(input, kernel, stride, padding)


def _ceil_sizes(L, k, s, p):
    """PyTorch's ceil_mode output length: rounded up, less a window that would
    start in the right padding."""
    n = -(-(L + 2 * p - k) // s) + 1
    if (n - 1) * s >= L + p:
        n -= 1
    return n


def _ceil_extend(x, kernel, stride, padding, fill):
    """``x`` with the rows / columns a ceil_mode pooling reads past the padding
    added (as ``fill``), and the output size."""
    H, W = x.shape[2:]
    out = [_ceil_sizes(L, k, s, p) for L, k, s, p in zip((H, W), kernel, stride, padding)]
    extra = [max(0, (n - 1) * s + k - (L + 2 * p))
             for n, L, k, s, p in zip(out, (H, W), kernel, stride, padding)]
    if any(extra):
        from .shape import pad
        x = pad(x, (0, extra[1], 0, extra[0]), value=fill)
    return x, out


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding, count_include_pad):
        ctx.conf = (x.shape, kernel, stride, padding, count_include_pad)
        return ctx.backend.avg_pool2d_forward(x, kernel, stride, padding, count_include_pad)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.avg_pool2d_backward(g, *ctx.conf), None, None, None, None


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over windows.  PyTorch's signature; with ``ceil_mode`` a last,
    partial window averages over its part inside the padded input (or, without
    ``count_include_pad``, over its real values), as PyTorch does;
    divisor_override only at its default."""
    only_supported("avg_pool2d", divisor_override=(divisor_override, None))
    if isinstance(input, Tensor) and input.ndim == 3:
        return _unbatched(avg_pool2d, input, kernel_size, stride, padding, ceil_mode=ceil_mode,
                          count_include_pad=count_include_pad)
    kernel, stride, padding = _pool_args(input, kernel_size, stride, padding, "avg_pool2d")
    if not ceil_mode:
        return AvgPool2d.apply(input, kernel, stride, padding, bool(count_include_pad))
    H, W = input.shape[2:]
    x, (Ho, Wo) = _ceil_extend(input, kernel, stride, padding, 0.0)
    y = AvgPool2d.apply(x, kernel, stride, padding, True)        # window sums / (kH * kW)
    # PyTorch's divisors: a window is cut at the padded input's end, and without
    # count_include_pad also to the real values
    sizes = []
    for n, L, k, st, p in ((Ho, H, kernel[0], stride[0], padding[0]), (Wo, W, kernel[1], stride[1], padding[1])):
        start = numpy.arange(n) * st - p
        end = numpy.minimum(start + k, L + p)
        if not count_include_pad:
            start, end = numpy.maximum(start, 0), numpy.minimum(end, L)
        sizes.append(end - start)
    scale = (kernel[0] * kernel[1]) / (sizes[0][:, None] * sizes[1][None, :])
    if (scale == 1).all():
        return y
    return y * Tensor._make(input.device.backend.asarray(scale, dtype=input.dtype), input.device)


def adaptive_avg_pool2d(input, output_size):
    """Average-pool to ``output_size`` (an int, a pair, None keeping that
    size); 1 is global average pooling.  PyTorch's windows: cell i of n
    over L averages [floor(i L / n), ceil((i + 1) L / n)), so they overlap
    when n does not divide L."""
    if isinstance(input, Tensor) and input.ndim == 3:
        return _unbatched(adaptive_avg_pool2d, input, output_size)
    _check_image(input, "adaptive_avg_pool2d")
    h, w = input.shape[2:]
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(size if o is None else o for o, size in zip(output_size, (h, w)))
    oh, ow = _pair(output_size, "output_size", "adaptive_avg_pool2d", 1)
    if (oh, ow) == (1, 1):
        return input.mean((2, 3), keepdim=True)
    if h % oh == 0 and w % ow == 0:        # the windows tile the input
        return avg_pool2d(input, (h // oh, w // ow))
    from .shape import cat
    rows = [(i * h // oh, -(-(i + 1) * h // oh)) for i in range(oh)]
    cols = [(j * w // ow, -(-(j + 1) * w // ow)) for j in range(ow)]
    return cat([cat([input[:, :, a:b, c:d].mean((2, 3), keepdim=True) for c, d in cols], 3)
                for a, b in rows], 2)
