"""Linear classifiers: scores f(x) = W x + b, multiclass SVM or softmax loss, SGD.

>>> clf = LinearClassifier(loss="svm", reg=1e-4).fit(X_train, y_train, lr=0.01, epochs=10)
>>> clf.score(X_test, y_test), clf.loss_history[-1]
>>> clf.templates((28, 28))        # one image a class: W's rows

The loss of a batch is the mean data loss (``F.multiclass_hinge_loss`` with
``margin``, or ``F.cross_entropy``) plus ``reg * sum(W**2)``; the bias is
not regularised.  Training is mini-batch SGD with gpudl's autograd and
``gpudl.optim.SGD``, on the device; the step losses are fetched from it once
an epoch.
"""
from __future__ import annotations

import numbers

import numpy

from .. import random as _random
from ..autograd import no_grad
from ..nn import functional as F
from ..optim import SGD
from ..tensor import Tensor, to_host
from .knn import (accuracy, as_features, check_choice, check_int, encode_labels,
                  estimator_device, require_fitted)

LOSSES = ("svm", "softmax")


def _check_real(name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not numpy.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: expected a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


def linear_loss(W, b, X, y, loss="svm", reg=0.0, margin=1.0):
    """Mean data loss of the scores ``X @ W.T + b`` against class indices y, plus reg * sum(W**2).

    W (C, D), b (C,), X (N, D) and y (N,) integer are Tensors on one device;
    the result is a scalar Tensor with its graph.
    """
    check_choice("loss", loss, LOSSES)
    scores = F.linear(X, W, b)
    if loss == "svm":
        data = F.multiclass_hinge_loss(scores, y, margin=margin)
    else:
        data = F.cross_entropy(scores, y)
    return data + reg * (W * W).sum() if reg else data


class LinearClassifier:
    """Multiclass linear classifier: an SVM (hinge loss) or softmax (cross-entropy).

    reg: weight of ``sum(W**2)``.  margin: the SVM's margin (delta).
    device: "auto", "cpu", "cuda[:N]" or a Device ("auto" with a Tensor
    passed to ``fit`` uses that tensor's device).  seed: None draws the
    initial weights and the batch order from gpudl's generator
    (``gpudl.manual_seed``); an int uses a generator of its own.

    After ``fit``: ``W`` (C, D) and ``b`` (C,) are Tensors on the device,
    ``classes_`` the sorted labels, ``loss_history`` the loss of every step.
    """

    def __init__(self, loss="svm", reg=1e-4, margin=1.0, device="auto", seed=None):
        self.loss = check_choice("loss", loss, LOSSES)
        self.reg = _check_real("reg", reg)
        self.margin = _check_real("margin", margin, positive=True)
        self.device = device
        self.seed = seed
        self.W = self.b = self.classes_ = None
        self.loss_history = []
        self._image_shape = None

    def __repr__(self):
        return (f"LinearClassifier(loss={self.loss!r}, reg={self.reg}, margin={self.margin}, "
                f"device={str(self.device)!r}, seed={self.seed})")

    def _rng(self):
        return _random.cpu_generator() if self.seed is None else numpy.random.default_rng(self.seed)

    # ---- weights ----
    def set_weights(self, W, b, classes=None):
        """Use the given W (C, D) and b (C,) (arrays or Tensors); classes default to 0..C-1."""
        dev = estimator_device(self.device, W)
        W_dev = as_features(W, dev, name="W").copy()    # trained in place: never the caller's array
        C, D = W_dev.shape
        b_host = to_host(b).reshape(-1)
        if b_host.shape != (C,):
            raise ValueError(f"b: expected shape ({C},) for W of shape {(C, D)}, got {b_host.shape}")
        classes = numpy.arange(C) if classes is None else numpy.asarray(classes)
        if classes.shape != (C,):
            raise ValueError(f"classes: expected {C} labels, got shape {classes.shape}")
        order = numpy.argsort(classes, kind="stable")
        if len(numpy.unique(classes)) != C:
            raise ValueError(f"classes: expected {C} distinct labels, got {classes.tolist()}")
        if (order != numpy.arange(C)).any():   # kept sorted (labels are looked up by bisection)
            W_dev = W_dev[dev.backend.asarray(order)]
            b_host, classes = b_host[order], classes[order]
        self._set(dev, W_dev, dev.backend.asarray(b_host.astype(W_dev.dtype)), classes)
        return self

    def _set(self, dev, W, b, classes):
        self.device_ = dev
        self.W = Tensor._make(W, dev, requires_grad=True)
        self.b = Tensor._make(b, dev, requires_grad=True)
        self.classes_ = classes
        self.n_features_in_ = W.shape[1]

    # ---- training ----
    def fit(self, X, y, lr=0.01, epochs=10, batch_size=200, verbose=False):
        """Mini-batch SGD from fresh small random weights; returns self."""
        lr = _check_real("lr", lr, positive=True)
        epochs = check_int("epochs", epochs)
        batch_size = check_int("batch_size", batch_size)
        dev = estimator_device(self.device, X)
        Xd = as_features(X, dev)
        classes, codes = encode_labels(y, Xd.shape[0])
        if len(classes) < 2:
            raise ValueError(f"y: expected at least 2 classes, got {len(classes)} ({classes.tolist()})")
        shape = getattr(X, "shape", None)
        self._image_shape = tuple(shape[1:]) if shape is not None and len(shape) > 2 else None
        rng = self._rng()
        C, (N, D) = len(classes), Xd.shape
        W0 = (rng.standard_normal((C, D)) * 1e-3).astype(Xd.dtype)
        be = dev.backend
        self._set(dev, be.asarray(W0), be.xp.zeros(C, dtype=Xd.dtype), classes)
        yd = be.asarray(codes)
        opt = SGD([self.W, self.b], lr=lr)
        self.loss_history = []
        for epoch in range(epochs):
            order = be.asarray(rng.permutation(N))
            losses = []
            for s in range(0, N, batch_size):
                idx = order[s:s + batch_size]
                loss = self._sgd_step(opt, Tensor._make(Xd[idx], dev), Tensor._make(yd[idx], dev))
                losses.append(loss.data)
            epoch_losses = be.to_numpy(be.xp.stack(losses)).tolist()
            self.loss_history.extend(epoch_losses)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: mean loss {numpy.mean(epoch_losses):.4f}")
        return self

    def _loss(self, X, y):
        return linear_loss(self.W, self.b, X, y, self.loss, self.reg, self.margin)

    def _sgd_step(self, opt, X, y):
        loss = self._loss(X, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def _inputs(self, X, y):
        require_fitted(self, "W")
        Xd = Tensor._make(as_features(X, self.device_, self.n_features_in_).astype(self.W.dtype, copy=False),
                          self.device_)
        if y is None:
            return Xd, None
        labels = to_host(y).reshape(-1)
        codes = numpy.searchsorted(self.classes_, labels).clip(0, len(self.classes_) - 1)
        unknown = self.classes_[codes] != labels
        if unknown.any():
            raise ValueError(f"y holds the label {labels[unknown][0].item()!r}, not one of the classes "
                             f"{self.classes_.tolist()}")
        if codes.shape[0] != Xd.shape[0]:
            raise ValueError(f"y: expected {Xd.shape[0]} labels (one per sample of X), got {codes.shape[0]}")
        return Xd, Tensor._make(self.device_.backend.asarray(codes), self.device_)

    def loss_of(self, X, y):
        """The loss (a scalar Tensor with its graph) of the current weights on (X, y)."""
        return self._loss(*self._inputs(X, y))

    def step(self, X, y, lr):
        """One gradient-descent step on (X, y); returns the loss before it.

        Afterwards ``W.grad`` and ``b.grad`` hold the gradient that was used.
        """
        opt = SGD([self.W, self.b], lr=_check_real("lr", lr, positive=True))
        return float(self._sgd_step(opt, *self._inputs(X, y)).item())

    # ---- prediction ----
    def decision_function(self, X):
        """The class scores X @ W.T + b, (N, C) numpy."""
        Xd, _ = self._inputs(X, None)
        with no_grad():
            return F.linear(Xd, self.W, self.b).numpy()

    def predict(self, X):
        Xd, _ = self._inputs(X, None)
        with no_grad():
            codes = F.linear(Xd, self.W, self.b).argmax(1)
        return self.classes_[codes.numpy()]

    def score(self, X, y):
        """Mean accuracy of ``predict(X)`` against y."""
        return accuracy(self.predict(X), y)

    def templates(self, shape=None):
        """W's rows as images: numpy (C, *shape); shape defaults to fit's sample shape."""
        require_fitted(self, "W")
        shape = shape or self._image_shape
        if shape is None:
            raise ValueError("templates: give the image shape, e.g. templates((28, 28)); "
                             "fit was given flat samples")
        shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
        if int(numpy.prod(shape)) != self.n_features_in_:
            raise ValueError(f"templates: shape {shape} holds {int(numpy.prod(shape))} values, "
                             f"but W has {self.n_features_in_} per class")
        return self.W.numpy().reshape((-1,) + shape).copy()
