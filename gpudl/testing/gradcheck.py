"""Central-difference gradient checking in float64."""
from __future__ import annotations

import numpy

from ..tensor import Tensor
from ..autograd import no_grad


def _scalarize(out, seed):
    """A scalar from fn's output: a fixed random projection for non-scalars."""
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.numel() == 1:
        return out.sum(), None
    proj = numpy.random.default_rng(seed).standard_normal(out.shape)
    w = Tensor._make(out.device.backend.asarray(proj.astype(out.dtype)), out.device)
    return (out * w).sum(), w


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0, raise_exception=True):
    """Compare autograd's gradients of ``fn(*inputs)`` with central differences.

    ``inputs``: Tensors (float64 and ``requires_grad`` for those to check;
    others are passed through).  A non-scalar output is reduced by a fixed
    random projection.  Returns True, or raises AssertionError naming the
    input, the element and both values.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: expected at least one input with requires_grad=True")
    for i in checked:
        if inputs[i].dtype != numpy.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; gradcheck runs in float64")
        inputs[i].grad = None

    loss, _ = _scalarize(fn(*inputs), seed)
    loss.backward()
    analytic = {i: (inputs[i].grad.numpy().copy() if inputs[i].grad is not None
                    else numpy.zeros(inputs[i].shape)) for i in checked}

    def value():
        with no_grad():
            return float(_scalarize(fn(*inputs), seed)[0].item())

    for i in checked:
        t = inputs[i]
        be = t.device.backend
        host = be.to_numpy(t.data).copy()
        numeric = numpy.zeros_like(host)
        flat = host.reshape(-1)
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + eps
            t.data = be.asarray(host.copy())
            plus = value()
            flat[k] = orig - eps
            t.data = be.asarray(host.copy())
            minus = value()
            flat[k] = orig
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        t.data = be.asarray(host)
        a = analytic[i]
        bad = ~numpy.isclose(a, numeric, atol=atol, rtol=rtol)
        if bad.any():
            k = numpy.unravel_index(numpy.argmax(numpy.abs(a - numeric) * bad), a.shape)
            msg = (f"gradcheck: input {i} (shape {t.shape}) disagrees at {tuple(int(j) for j in k)}: "
                   f"autograd {a[k]!r} vs numeric {numeric[k]!r}; "
                   f"{int(bad.sum())} of {a.size} elements off (atol={atol}, rtol={rtol})")
            if raise_exception:
                raise AssertionError(msg)
            return False
    return True
