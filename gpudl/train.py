"""Trainer: the loop, metrics, progress, history, checkpoints and resume.

    trainer = Trainer(model, optimizer, scheduler=sched, out_dir="runs/lenet")
    history = trainer.fit(train_loader, epochs=5, val_loader=test_loader)

Each epoch ends with a checkpoint (model, optimizer, scheduler, epoch, RNG
and loader state, history) written atomically to ``out_dir/checkpoint.npz``,
so an interrupted run (Ctrl-C included) leaves the last complete epoch
intact, and ``fit(..., resume=True)`` continues exactly where it stopped.
The history goes to ``history.csv`` / ``history.json`` and, when matplotlib
is installed, ``curves.png``.
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import numbers
import os
import sys
import time

import numpy

from . import io, random as _random
from .autograd import no_grad
from .tensor import Tensor
from .nn import functional as F
from .nn.utils import clip_grad_norm_


def _atomic_write_text(path, text):
    with io.atomic_write(path, "w") as f:
        f.write(text)


def _model_device(model):
    for p in model.parameters():
        return p.device
    from .backend import cpu
    return cpu()


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=True, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5)


def _class_targets(logits, target):
    """Whether ``target`` holds class indices for ``logits`` (N, C, ...):
    integers of shape (N, ...).  Accuracy means nothing for anything else
    (a regression target, soft labels)."""
    return (target.dtype.kind in "iu" and logits.ndim >= 2
            and tuple(target.shape) == (logits.shape[0],) + tuple(logits.shape[2:]))


class _Meter:
    """Sums loss and correct counts on the device; reads them back rarely.
    The accuracy is NaN unless every batch had class-index targets."""

    def __init__(self):
        self.loss_sum = None
        self.correct = None
        self.classes = True
        self.count = 0
        self.positions = 0      # predictions scored: N, or N * L for (N, C, L) logits

    def add(self, loss, logits, target):
        n = target.shape[0]
        with no_grad():
            l = loss.detach() * n
            self.loss_sum = l if self.loss_sum is None else self.loss_sum + l
            self.classes = self.classes and _class_targets(logits, target)
            if self.classes:
                c = (logits.detach().argmax(1) == target).sum()
                self.correct = c if self.correct is None else self.correct + c
                self.positions += math.prod(target.shape)
        self.count += n

    def result(self):
        if not self.count:
            return float("nan"), float("nan")
        acc = self.correct.item() / self.positions if self.classes and self.positions else float("nan")
        return self.loss_sum.item() / self.count, acc


def _acc(a):
    return "" if math.isnan(a) else f" acc {a:.4f}"


def _inputs_targets(batch, op):
    """(inputs, targets) Tensors from one batch of a loader, or a clear error."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(v, Tensor) for v in batch)):
        got = (f"{type(batch).__name__} of {len(batch)}: " + ", ".join(type(v).__name__ for v in batch)
               if isinstance(batch, (tuple, list)) else type(batch).__name__)
        raise TypeError(f"{op}: expected each batch to be (inputs, targets), two Tensors, as a "
                        f"gpudl.data.DataLoader over a dataset of (x, y) samples gives; got {got}")
    return batch


class Trainer:
    """Fit a model with any optimizer, loss and scheduler.  The accuracy is
    reported for class-index targets (integers, one per logits row or
    position); for other targets (regression) it is NaN and not printed.

    ``loss_fn(logits, target)`` defaults to cross-entropy. ``scheduler_step``
    is "epoch" (StepLR, cosine over epochs) or "batch" (OneCycleLR, warm-up).
    ``clip_grad_norm``: scale the gradients to at most this joint norm before
    every step (None: no clipping).  ``early_stopping``: stop after that many epochs without a better
    validation loss (the best weights are kept in ``best.npz``).
    """

    def __init__(self, model, optimizer, loss_fn=None, scheduler=None, scheduler_step="epoch",
                 out_dir=None, progress=True, early_stopping=None, log=print, clip_grad_norm=None):
        if scheduler_step not in ("epoch", "batch"):
            raise ValueError(f"Trainer: expected scheduler_step 'epoch' or 'batch', got {scheduler_step!r}")
        for what, obj, needs in (("model", model, "parameters"), ("optimizer", optimizer, "step"),
                                 ("scheduler", scheduler, "step")):
            if (obj is not None or what != "scheduler") and not callable(getattr(obj, needs, None)):
                raise TypeError(f"Trainer: the {what} must have a .{needs}() method, got {type(obj).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"Trainer: expected loss_fn to be callable, got {type(loss_fn).__name__}")
        if clip_grad_norm is not None and (isinstance(clip_grad_norm, bool) or not isinstance(
                clip_grad_norm, numbers.Real) or not clip_grad_norm > 0):
            raise ValueError(f"Trainer: expected clip_grad_norm > 0 or None, got {clip_grad_norm!r}")
        if early_stopping is not None and (isinstance(early_stopping, bool) or not isinstance(
                early_stopping, numbers.Integral) or early_stopping < 1):
            raise ValueError(f"Trainer: expected early_stopping to be a number of epochs >= 1 or None, "
                             f"got {early_stopping!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn or F.cross_entropy
        self.scheduler = scheduler
        self.scheduler_step = scheduler_step
        self.out_dir = out_dir
        self.progress = progress
        self.early_stopping = early_stopping
        self.clip_grad_norm = clip_grad_norm
        self.log = log or (lambda *a, **k: None)
        self.history = []
        self.epoch = 0
        self.device = _model_device(model)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)

    # ---- paths ------------------------------------------------------------------
    def _path(self, name):
        return os.path.join(self.out_dir, name) if self.out_dir else None

    @property
    def checkpoint_path(self):
        return self._path("checkpoint.npz")

    # ---- one epoch ----------------------------------------------------------------
    def train_epoch(self, loader):
        self.model.train()
        meter = _Meter()
        t0 = time.perf_counter()
        bar = _progress(loader, len(loader), f"epoch {self.epoch + 1}", self.progress)
        for step, batch in enumerate(bar):
            x, y = _inputs_targets(batch, "Trainer.fit")
            x, y = x.to(self.device), y.to(self.device)
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            if self.clip_grad_norm is not None:
                clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
            self.optimizer.step()
            if self.scheduler is not None and self.scheduler_step == "batch":
                self.scheduler.step()
            meter.add(loss, logits, y)
            if bar is not loader and (step % 50 == 0 or step == len(loader) - 1):
                l, a = meter.result()
                rate = meter.count / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"loss {l:.4f}{_acc(a)} {rate:,.0f} img/s")
        if bar is not loader:
            bar.close()
        if not meter.count:
            raise ValueError("Trainer.fit: the training loader gave no batches (an empty dataset, or "
                             "drop_last with fewer samples than batch_size)")
        loss, acc = meter.result()
        return {"train_loss": loss, "train_acc": acc, "images": meter.count,
                "train_time": time.perf_counter() - t0}

    def evaluate(self, loader):
        """{'loss', 'accuracy'} of the model on ``loader`` (eval mode, no graph)."""
        was_training = self.model.training
        self.model.eval()
        meter = _Meter()
        with no_grad():
            for batch in loader:
                x, y = _inputs_targets(batch, "Trainer.evaluate")
                x, y = x.to(self.device), y.to(self.device)
                logits = self.model(x)
                meter.add(self.loss_fn(logits, y), logits, y)
        self.model.train(was_training)
        loss, acc = meter.result()
        return {"loss": loss, "accuracy": acc}

    # ---- the loop -------------------------------------------------------------------
    def fit(self, train_loader, epochs, val_loader=None, resume=False):
        """Train for ``epochs`` epochs in total (a resumed run counts the ones already done)."""
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(f"Trainer.fit: expected epochs to be a positive int, got {epochs!r}")
        planned = getattr(self.scheduler, "T_max", None)   # a cosine schedule's length
        if resume:
            path = resume if isinstance(resume, (str, os.PathLike)) else self.checkpoint_path
            if path and os.path.exists(path):
                self.load_checkpoint(path, train_loader)
                self.log(f"resumed from {path} after epoch {self.epoch}")
            else:
                self.log(f"no checkpoint at {path}; starting from scratch")
        T = getattr(self.scheduler, "T_max", None)
        need = epochs * len(train_loader) if self.scheduler_step == "batch" else epochs
        if planned is not None and T != planned and need > T:
            # the checkpoint's schedule replaced the one built for this run
            unit = "batches" if self.scheduler_step == "batch" else "epochs"
            raise ValueError(
                f"Trainer.fit: the checkpoint's cosine schedule ends after {T} {unit} but {epochs} "
                f"epochs need {need}; past its end the learning rate would rise again. Resume with "
                f"the original number of epochs, or start a new run for a longer schedule")
        total = getattr(self.scheduler, "total_steps", None)
        if total is not None and self.scheduler_step == "batch" and epochs * len(train_loader) > total:
            raise ValueError(
                f"Trainer.fit: the scheduler was built for {total} steps but {epochs} epochs of "
                f"{len(train_loader)} batches need {epochs * len(train_loader)}; a one-cycle schedule "
                f"cannot be extended (resume with the original number of epochs)")
        best, stale = math.inf, 0
        for r in self.history:
            vl = r.get("val_loss", r["train_loss"])
            best, stale = (vl, 0) if vl < best else (best, stale + 1)
        while self.epoch < epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            rec = {"epoch": self.epoch + 1, "lr": lr}
            rec.update(self.train_epoch(train_loader))
            if val_loader is not None:
                ev = self.evaluate(val_loader)
                rec["val_loss"], rec["val_acc"] = ev["loss"], ev["accuracy"]
            if self.scheduler is not None and self.scheduler_step == "epoch":
                self.scheduler.step()
            rec["images_per_s"] = rec["images"] / rec["train_time"]
            self.history.append(rec)
            self.epoch += 1
            self.log(self._summary(rec))
            current = rec.get("val_loss", rec["train_loss"])
            improved = current < best
            if improved:
                best, stale = current, 0
            else:
                stale += 1
            if self.out_dir:
                self.save_checkpoint(self.checkpoint_path, train_loader)
                if improved:
                    io.save({"model": self.model.state_dict(), "epoch": self.epoch}, self._path("best.npz"))
                self.write_history()
            if self.early_stopping is not None and stale >= self.early_stopping:
                self.log(f"early stopping: no improvement for {stale} epoch(s)")
                break
        return self.history

    @staticmethod
    def _summary(r):
        s = f"epoch {r['epoch']}: train loss {r['train_loss']:.4f}{_acc(r['train_acc'])}"
        if "val_loss" in r:
            s += f" | val loss {r['val_loss']:.4f}{_acc(r['val_acc'])}"
        return s + f" | lr {r['lr']:.3g} | {r['train_time']:.1f} s, {r['images_per_s']:,.0f} img/s"

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self, loader=None):
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "rng": _random.get_rng_state(),
            "history": self.history,
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if loader is not None and hasattr(loader, "state_dict"):
            state["loader"] = loader.state_dict()
        return state

    def save_checkpoint(self, path, loader=None):
        io.save(self.state_dict(loader), path)

    def load_checkpoint(self, path, loader=None):
        state = io.load(path, map_location=self.device)
        missing = [k for k in ("model", "optimizer", "epoch") if k not in state]
        if missing:
            raise ValueError(f"{path}: not a Trainer checkpoint (missing {', '.join(missing)})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if loader is not None and "loader" in state and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(state["loader"])
        _random.set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = list(state.get("history", []))

    # ---- history -------------------------------------------------------------------
    def write_history(self):
        if not self.out_dir or not self.history:
            return
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        _atomic_write_text(self._path("history.csv"), buf.getvalue())
        # strict JSON: NaN (no accuracy for regression targets) and inf (a diverged loss) are null
        strict = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
                  for r in self.history]
        _atomic_write_text(self._path("history.json"), json.dumps(strict, indent=1, allow_nan=False))
        plot_history(self.history, self._path("curves.png"))


def plot_history(history, path):
    """Learning curves (loss and accuracy per epoch) as a PNG; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    a2.plot(ep, [r["train_acc"] for r in history], "o-", label="train")
    if "val_loss" in history[0]:
        a1.plot(ep, [r["val_loss"] for r in history], "s-", label="validation")
        a2.plot(ep, [r["val_acc"] for r in history], "s-", label="validation")
    a1.set(xlabel="epoch", ylabel="loss", title="loss")
    a2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    try:
        with io.atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return True


def predict(model, loader):
    """(predictions, targets) as numpy arrays over a loader, in eval mode."""
    device = _model_device(model)
    was = model.training
    model.eval()
    preds, targets = [], []
    with no_grad():
        for batch in loader:
            x, y = _inputs_targets(batch, "predict")
            preds.append(model(x.to(device)).argmax(1).numpy())
            targets.append(y.numpy())
    model.train(was)
    return numpy.concatenate(preds), numpy.concatenate(targets)


def accuracy(model, loader):
    p, t = predict(model, loader)
    return float((p == t).mean())


def confusion_matrix(model_or_predictions, loader_or_targets, num_classes=None):
    """counts[i, j] = how many of class i were predicted as j (classes 0 .. num_classes - 1)."""
    if hasattr(model_or_predictions, "parameters"):
        p, t = predict(model_or_predictions, loader_or_targets)
    else:
        p, t = numpy.asarray(model_or_predictions), numpy.asarray(loader_or_targets)
    if p.shape != t.shape:
        raise ValueError(f"confusion_matrix: {p.shape[0] if p.ndim else p.shape} predictions for "
                         f"{t.shape[0] if t.ndim else t.shape} targets")
    if p.dtype.kind not in "iu" or t.dtype.kind not in "iu":
        raise TypeError(f"confusion_matrix: expected integer classes, got {p.dtype} and {t.dtype}")
    k = num_classes or (int(max(p.max(), t.max()) + 1) if p.size else 0)
    for name, a in (("prediction", p), ("target", t)):
        bad = (a < 0) | (a >= k)
        if bad.any():
            raise ValueError(f"confusion_matrix: a {name} of class {int(a[bad][0])}, expected classes "
                             f"0 .. {k - 1}")
    return numpy.bincount((t * k + p).astype(numpy.int64), minlength=k * k).reshape(k, k)
