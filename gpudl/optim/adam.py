"""Adam and AdamW (Adam with decoupled weight decay)."""
from __future__ import annotations

from .optimizer import Optimizer, check_number


class Adam(Optimizer):
    """PyTorch's Adam.

    With ``g = (-grad if maximize else grad)``, plus ``weight_decay * p``
    (L2) unless ``decoupled_weight_decay``, which instead scales
    ``p *= 1 - lr * weight_decay`` first (AdamW); at step ``t``::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                     (amsgrad; then v_max replaces v)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        if not isinstance(betas, (tuple, list)):
            raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        super()._check_group(group)
        check_number("epsilon value", group["eps"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            check_number(f"beta parameter at index {i}", beta, high=1.0, high_open=True)
        check_number("weight_decay value", group["weight_decay"])

    def _update(self, p, g, state, group):
        (beta1, beta2) = group["betas"]
        m, v = self._buffer(state, "exp_avg", p), self._buffer(state, "exp_avg_sq", p)
        v_max = self._buffer(state, "max_exp_avg_sq", p) if group["amsgrad"] else None
        step = state["step"] = state.get("step", 0) + 1
        p.device.backend.adam_update(p.data, g, m, v, v_max, group["lr"], beta1, beta2, group["eps"],
                                     group["weight_decay"], group["decoupled_weight_decay"],
                                     group["maximize"], step, scratch=self._cpu_scratch(p))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr * weight_decay``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         maximize=maximize, decoupled_weight_decay=True)
