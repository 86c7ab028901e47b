"""RMSprop, optionally centered and with momentum."""
from __future__ import annotations

from ..backend._shared import direction, ema
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
        xp, c = p.device.backend.xp, p.dtype.type
        alpha = group["alpha"]
        s, t = self._scratch(p)
        v = self._buffer(state, "square_avg", p)
        state["step"] = state.get("step", 0) + 1
        g = direction(xp, p.data, g, s, group["weight_decay"], group["maximize"])
        ema(xp, v, xp.multiply(g, g, out=t), alpha, t)
        if group["centered"]:
            a = self._buffer(state, "grad_avg", p)
            ema(xp, a, g, alpha, t)
            denom = xp.sqrt(xp.subtract(v, xp.multiply(a, a, out=t), out=t), out=t)
        else:
            denom = xp.sqrt(v, out=t)
        denom += c(group["eps"])
        step = xp.divide(g, denom, out=t)
        if group["momentum"] > 0:
            buf = self._buffer(state, "momentum_buffer", p)
            buf *= c(group["momentum"])
            buf += step
            step = xp.multiply(buf, c(group["lr"]), out=t)
        else:
            step *= c(group["lr"])
        p.data -= step
