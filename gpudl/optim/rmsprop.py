"""RMSprop, optionally centered and with momentum."""
from __future__ import annotations

from .optimizer import Optimizer, check_number


class RMSprop(Optimizer):
    """PyTorch's RMSprop.

    With ``g = (-grad if maximize else grad) + weight_decay * p``::

        v = alpha * v + (1 - alpha) * g * g
        a = alpha * a + (1 - alpha) * g           (centered)
        d = sqrt(v - a * a) + eps   if centered, else   sqrt(v) + eps
        b = momentum * b + g / d;  p = p - lr * b (momentum > 0)
        p = p - lr * g / d                        (otherwise)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _check_group(self, group):
        super()._check_group(group)
        check_number("alpha value", group["alpha"], high=1.0)
        check_number("epsilon value", group["eps"])
        check_number("weight_decay value", group["weight_decay"])
        check_number("momentum value", group["momentum"])

    def _update(self, p, g, state, group):
        v = self._buffer(state, "square_avg", p)
        state["step"] = state.get("step", 0) + 1
        a = self._buffer(state, "grad_avg", p) if group["centered"] else None
        buf = self._buffer(state, "momentum_buffer", p) if group["momentum"] > 0 else None
        p.device.backend.rmsprop_update(p.data, g, v, a, buf, group["lr"], group["alpha"], group["eps"],
                                        group["weight_decay"], group["momentum"], group["maximize"],
                                        scratch=self._cpu_scratch(p))
