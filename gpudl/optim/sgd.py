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
        momentum = group["momentum"]
        buf = state.get("momentum_buffer") if momentum else None
        first = bool(momentum) and buf is None
        if first:       # the update fills it; kept only once the update has run
            buf = Tensor._make(p.device.backend.xp.empty_like(p.data), p.device)
        p.device.backend.sgd_update(p.data, g, None if buf is None else buf.data, group["lr"], momentum,
                                    group["dampening"], group["weight_decay"], group["nesterov"],
                                    group["maximize"], first, scratch=self._cpu_scratch(p))
        if first:
            state["momentum_buffer"] = buf
