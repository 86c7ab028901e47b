"""The functional API with PyTorch's signatures: ``import gpudl.nn.functional as F``."""
from __future__ import annotations

from ..tensor import Tensor
from ..ops.activation import relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax  # noqa: F401
from ..ops.activation import dropout  # noqa: F401
from ..ops.conv import conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d  # noqa: F401
from ..ops.loss import (  # noqa: F401
    cross_entropy, multiclass_hinge_loss, nll_loss, mse_loss, binary_cross_entropy_with_logits,
    l2_penalty,
)
from ..ops.norm import batch_norm  # noqa: F401
from ..ops.shape import pad  # noqa: F401
from ..ops.rnn import embedding  # noqa: F401
from ..ops.math import matmul


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with weight of shape (out_features, in_features)."""
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError(f"linear: expected weight of shape (out_features, in_features), got "
                         f"{weight.shape if isinstance(weight, Tensor) else type(weight).__name__}")
    if not isinstance(input, Tensor) or input.ndim < 1 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: expected input of shape (..., {weight.shape[1]}), got "
                         f"{input.shape if isinstance(input, Tensor) else type(input).__name__}")
    if input.dtype != weight.dtype:
        raise TypeError(f"linear: input is {input.dtype} but weight is {weight.dtype} (convert one, "
                        f"e.g. x.float() or model.to(dtype=...))")
    out = matmul(input, weight.T)
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(f"linear: expected bias of shape ({weight.shape[0]},), got "
                             f"{bias.shape if isinstance(bias, Tensor) else type(bias).__name__}")
        out = out + bias
    return out


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding of integer class indices (a new last dimension)."""
    if not isinstance(tensor, Tensor) or tensor.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer Tensor, got "
                        f"{tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__}")
    xp = tensor.device.backend.xp
    lo = int(tensor.data.min()) if tensor.numel() else 0
    hi = int(tensor.data.max()) if tensor.numel() else -1
    if num_classes < 0:
        num_classes = hi + 1
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"one_hot: expected class indices in [0, {num_classes - 1}], got values in [{lo}, {hi}]")
    out = (tensor.data[..., None] == xp.arange(num_classes)).astype("int64")
    return Tensor._make(out, tensor.device)
