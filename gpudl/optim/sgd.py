"""Stochastic gradient descent with momentum, Nesterov and L2 weight decay."""
from __future__ import annotations

from ..tensor import Tensor
from .optimizer import Optimizer, check_number, required


class SGD(Optimizer):
    """PyTorch's SGD.

    With ``g = (-grad if maximize else grad) + weight_decay * p``::

        b = g                                     (first step)
        b = momentum * b + (1 - dampening) * g    (later steps)
        g = g + momentum * b if nesterov else b   (when momentum != 0)
        p = p - lr * g
    """

    def __init__(self, params, lr=required, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _check_group(self, group):
        super()._check_group(group)
        check_number("momentum value", group["momentum"])
        check_number("dampening value", group["dampening"], high=1.0)
        check_number("weight_decay value", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, p, g, state, group):
        xp, c = p.device.backend.xp, p.dtype.type
        s, t = self._scratch(p)
        g = self._effective_grad(p, g, s, group["weight_decay"], group["maximize"])
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = g.copy()
                state["momentum_buffer"] = Tensor._make(buf, p.device)
            else:
                buf = buf.data
                buf *= c(momentum)
                dampening = group["dampening"]
                buf += xp.multiply(g, c(1 - dampening), out=t) if dampening else g
            if group["nesterov"]:
                g = xp.add(g, xp.multiply(buf, c(momentum), out=t), out=t)
            else:
                g = buf
        p.data -= xp.multiply(g, c(group["lr"]), out=t)
