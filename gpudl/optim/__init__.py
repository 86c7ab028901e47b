"""Optimizers (SGD, Adam, AdamW, RMSprop) and learning-rate schedules.

>>> opt = gpudl.optim.SGD(params, lr=0.1, momentum=0.9)
>>> sched = gpudl.optim.lr_scheduler.StepLR(opt, step_size=10)
>>> loss.backward(); opt.step(); opt.zero_grad(); sched.step()
"""
from __future__ import annotations

from .optimizer import Optimizer, required  # noqa: F401
from .sgd import SGD  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from . import lr_scheduler  # noqa: F401

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler"]
