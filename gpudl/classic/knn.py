"""k-nearest neighbours on the device: blocked distances, partial top-k, sklearn's votes.

>>> knn = KNeighborsClassifier(k=5).fit(X_train, y_train)
>>> knn.predict(X_test), knn.score(X_test, y_test)
>>> dist, idx = knn.kneighbors(X_test)        # euclidean (or L1) distances, sorted
>>> choose_k(X_train, y_train, ks=[1, 3, 5, 7]) # {k: mean accuracy over 5 folds}

Distances are computed with the device's array module in blocks of query
rows, so memory stays bounded whatever the sizes:

* L2: ``|t|^2 - 2 q.t`` by one matmul a block (``|q|^2`` is the same along a
  row, so it is added only to the k distances kept);
* L1: ``sum |q - t|`` by broadcasting over chunks of training rows, never an
  N x M x D array.

The k smallest of each row are found by k rounds of ``argmin`` (faster than
``argpartition`` for small k: PERF-NOTES), or for large k by a partition and
a sort of the k kept.  Either way neighbours come out ordered by distance,
ties by training index, as a stable argsort would order them, and a vote is
won by the class with most neighbours, a tie by the smallest class label:
scikit-learn's ``KNeighborsClassifier(algorithm="brute")`` with uniform
weights and its rule for vote ties.

One difference from scikit-learn: where several training points tie for the
k-th place, scikit-learn's heap may keep any of them (its choice depends on
heap order and threads); gpudl keeps those with the lowest indices.

This module also holds the input checks :mod:`.linear` shares.
"""
from __future__ import annotations

import numbers

import numpy

from ..backend import resolve
from ..tensor import Tensor, to_host

METRICS = ("l2", "l1")
# above this k, a partition + a sort of the k kept beats k rounds of argmin
# (419 x 10,000 float32 block on the CPU: a round ~0.6 ms, the partition path ~60 ms)
ROUNDS_MAX_K = 64
# elements of one (query rows x training rows) distance block, and of one
# L1 broadcast temporary (rows x training chunk x features)
BLOCK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 26}
L1_TEMP_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 25}


# ---- input checks shared by the classic estimators ----------------------------------

def check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def estimator_device(spec, X):
    """``spec`` resolved; "auto" with a Tensor input means that tensor's device."""
    if (spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto")) \
            and isinstance(X, Tensor):
        return X.device
    return resolve(spec)


def as_features(X, device, n_features=None, name="X"):
    """``X`` as a finite (N, D) float array on ``device``.

    Samples run along the first axis; further axes are flattened.  float64
    stays float64, anything else becomes float32.  ``n_features``: the
    number the estimator was fitted with, checked.
    """
    be = device.backend
    if isinstance(X, Tensor):
        arr = X.detach().to(device).data
    elif be.is_array(X):
        arr = X
    else:
        arr = be.asarray(to_host(X))
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got an array of dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (samples, features), got shape "
                         f"{tuple(arr.shape)}; reshape a single sample with x.reshape(1, -1)")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got shape {tuple(arr.shape)}")
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one feature, got shape {tuple(arr.shape)}")
    dtype = numpy.float64 if arr.dtype == numpy.float64 else numpy.float32
    arr = arr.astype(dtype, copy=False)
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features per sample, but the estimator was "
                         f"fitted with {n_features}")
    xp = be.xp
    if bool(xp.isfinite(arr.sum())):    # one pass, no temporary; NaN and inf propagate
        return arr
    bad = ~xp.isfinite(arr)
    if bool(bad.any()):
        nan, total = int(xp.isnan(arr).sum()), int(bad.sum())
        what = " and ".join(f"{n} {kind} value(s)" for n, kind in
                            ((nan, "NaN"), (total - nan, "infinite")) if n)
        row, col = divmod(int(xp.argmax(bad)), arr.shape[1])
        raise ValueError(f"{name} contains {what}, the first at row {row}, column {col}; "
                         f"remove or impute them first")
    return arr


def encode_labels(y, n_samples, name="y"):
    """(classes, codes): sorted unique labels and each sample's index into them."""
    host = to_host(y)
    if host.ndim != 1:
        host = host.reshape(-1) if host.ndim == 2 and 1 in host.shape else host
    if host.ndim != 1 or host.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} labels (one per sample of X), got shape "
                         f"{host.shape}")
    if host.dtype.kind == "f" and not numpy.isfinite(host).all():
        raise ValueError(f"{name} contains NaN or infinite labels")
    classes, codes = numpy.unique(host, return_inverse=True)
    return classes, codes.reshape(-1).astype(numpy.int64)


def require_fitted(est, attr):
    if getattr(est, attr, None) is None:
        raise ValueError(f"this {type(est).__name__} is not fitted yet: call fit(X, y) first")


def accuracy(pred, y):
    y = to_host(y).reshape(-1)
    if y.shape[0] != pred.shape[0]:
        raise ValueError(f"y: expected {pred.shape[0]} labels (one per sample of X), got {y.shape[0]}")
    return float(numpy.mean(pred == y))


# ---- the k smallest of each row ------------------------------------------------------

def smallest_k(d, k, xp):
    """(values, columns) of the k smallest entries of each row of ``d``, ordered by
    value then column.  ``d`` is overwritten."""
    n = d.shape[0]
    if k > ROUNDS_MAX_K:
        kth = xp.partition(d, k - 1, axis=1)[:, k - 1:k]
        below = d < kth
        tied = d == kth
        need = k - below.sum(axis=1, keepdims=True)
        take = below | (tied & (xp.cumsum(tied, axis=1, dtype=numpy.int32) <= need))
        cols = xp.nonzero(take)[1].reshape(n, k)        # ascending column within a row
        vals = xp.take_along_axis(d, cols, axis=1)
        order = xp.argsort(vals, axis=1, kind="stable")
        return xp.take_along_axis(vals, order, axis=1), xp.take_along_axis(cols, order, axis=1)
    rows = xp.arange(n)
    vals = xp.empty((n, k), dtype=d.dtype)
    cols = xp.empty((n, k), dtype=numpy.int64)
    for j in range(k):
        c = xp.argmin(d, axis=1)        # the first of equal minima: the lowest column
        cols[:, j] = c
        vals[:, j] = d[rows, c]
        d[rows, c] = xp.inf
    return vals, cols


def vote(labels, n_classes, xp):
    """The most common code in each row of ``labels`` (n, k); ties to the smallest code."""
    n = labels.shape[0]
    flat = (xp.arange(n)[:, None] * n_classes + labels).reshape(-1)
    counts = xp.bincount(flat, minlength=n * n_classes).reshape(n, n_classes)
    return xp.argmax(counts, axis=1)


# ---- the classifier -----------------------------------------------------------------

class KNeighborsClassifier:
    """k-nearest-neighbour classifier with the distances computed on a gpudl device.

    k: neighbours that vote.  metric: "l2" (euclidean) or "l1" (manhattan).
    batch_size: query rows per distance block (None: sized to bound the
    block at a few million entries on the CPU, ~64M on a GPU).
    device: "auto", "cpu", "cuda[:N]" or a Device; "auto" with a Tensor
    passed to ``fit`` uses that tensor's device.

    Inputs are numpy arrays (or lists) or gpudl Tensors of shape (N, D) or
    (N, ...) (flattened); outputs are numpy arrays.  Labels may be of any
    type numpy can sort.
    """

    def __init__(self, k=5, metric="l2", batch_size=None, device="auto"):
        self.k = check_int("k", k)
        self.metric = check_choice("metric", metric, METRICS)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size)
        self.device = device
        self.classes_ = None
        self._X = None

    def __repr__(self):
        return (f"KNeighborsClassifier(k={self.k}, metric={self.metric!r}, "
                f"batch_size={self.batch_size}, device={str(self.device)!r})")

    # ---- fitting ----
    def fit(self, X, y):
        """Keep the training set on the device; returns self.

        As scikit-learn does, fit keeps X itself (no copy) when it is already
        a float32 / float64 array or Tensor on the device: do not change it
        in place afterwards.  (L2 data far from the origin are kept as a
        centred copy instead, so that float32 distances stay accurate.)
        """
        dev = estimator_device(self.device, X)
        arr = as_features(X, dev)
        classes, codes = encode_labels(y, arr.shape[0])
        return self._fit_arrays(dev, arr, dev.backend.asarray(codes), classes)

    def _fit_arrays(self, dev, arr, codes, classes):
        n = arr.shape[0]
        if self.k > n:
            raise ValueError(f"k={self.k} is larger than the training set ({n} samples)")
        xp = dev.backend.xp
        self.device_ = dev
        self.classes_ = classes
        self.n_features_in_ = arr.shape[1]
        self._codes = codes
        self._shift = None
        if self.metric == "l2":
            arr, self._shift = _centre_if_far(arr, xp)
            self._sqnorm = xp.einsum("ij,ij->i", arr, arr)
        self._X = arr
        self._xp = xp
        return self

    # ---- queries ----
    def kneighbors(self, X, k=None):
        """(distances, indices), each (n_queries, k), nearest first; numpy arrays.

        L2 distances are euclidean (not squared), as scikit-learn's.
        """
        dist, idx = self._neighbors(X, k)
        be = self.device_.backend
        return be.to_numpy(dist), be.to_numpy(idx)

    def predict(self, X):
        """The predicted label of each row of X (numpy, of the labels' dtype)."""
        _, idx = self._neighbors(X, None, distances=False)
        codes = vote(self._codes[idx], len(self.classes_), self._xp)
        return self.classes_[self.device_.backend.to_numpy(codes)]

    def score(self, X, y):
        """Mean accuracy of ``predict(X)`` against y."""
        return accuracy(self.predict(X), y)

    def _neighbors(self, X, k, distances=True):
        require_fitted(self, "_X")
        k = self.k if k is None else check_int("k", k)
        n_train = self._X.shape[0]
        if k > n_train:
            raise ValueError(f"k={k} is larger than the training set ({n_train} samples)")
        Q = as_features(X, self.device_, self.n_features_in_)
        Q = Q.astype(self._X.dtype, copy=False)
        if self._shift is not None:
            Q = Q - self._shift
        return self._neighbors_arrays(Q, k, distances)

    def _rows_per_block(self, n_train):
        if self.batch_size is not None:
            return self.batch_size
        budget = BLOCK_ELEMENTS["cpu" if self.device_.type == "cpu" else "cuda"]
        return max(1, budget // n_train)

    def _neighbors_arrays(self, Q, k, distances=True):
        """Device arrays (distances, indices) of Q's k nearest training rows."""
        xp, n, n_train = self._xp, Q.shape[0], self._X.shape[0]
        rows = min(self._rows_per_block(n_train), n)
        buf = xp.empty((rows, n_train), dtype=Q.dtype)
        dist = xp.empty((n, k), dtype=Q.dtype)
        idx = xp.empty((n, k), dtype=numpy.int64)
        for s in range(0, n, rows):
            q = Q[s:s + rows]
            d = buf[:q.shape[0]]
            if self.metric == "l2":
                xp.matmul(q * q.dtype.type(-2), self._X.T, out=d)   # x -2 is exact
                d += self._sqnorm
            else:
                self._l1_block(q, d)
            dist[s:s + rows], idx[s:s + rows] = smallest_k(d, k, xp)
            if distances and self.metric == "l2":
                dist[s:s + rows] += (q * q).sum(axis=1, keepdims=True)
        if not bool(xp.isfinite(dist).all()):
            raise ValueError("distances overflowed the floating-point range: scale the data down")
        if distances and self.metric == "l2":
            xp.sqrt(xp.maximum(dist, 0, out=dist), out=dist)
        return dist, idx

    def _l1_block(self, q, out):
        """out[i, j] = sum |q[i] - X[j]| by chunks of training rows."""
        xp, T = self._xp, self._X
        budget = L1_TEMP_ELEMENTS["cpu" if self.device_.type == "cpu" else "cuda"]
        step = max(1, budget // (q.shape[0] * q.shape[1]))
        for s in range(0, T.shape[0], step):
            diff = q[:, None, :] - T[None, s:s + step, :]
            xp.abs(diff, out=diff)
            diff.sum(axis=2, out=out[:, s:s + step])


def _centre_if_far(arr, xp):
    """(arr, None), or (arr - shift, shift) when the data sit far from the origin.

    L2 distances come from |q|^2 - 2 q.t + |t|^2, whose rounding error grows
    with the norms, not with the distances: float32 points around 1000 apart
    by 0.1 all look equally far.  Distances do not change under a shift, so
    when the mean's norm dominates the spread the training set is centred
    (a copy) and queries are shifted alike.  Data near the origin (pixels,
    standardised features) are left as they are, exact ties included."""
    mean = arr.mean(axis=0, dtype=numpy.float64)
    far = float((mean * mean).sum())
    # mean |x|^2 - |mean|^2, the spread: only trusted when it is not swamped by the offset
    spread = float(xp.einsum("ij,ij->", arr, arr, dtype=numpy.float64)) / arr.shape[0] - far
    if far <= 64.0 * max(spread, 0.0):
        return arr, None
    shift = mean.astype(arr.dtype)
    return arr - shift, shift


# ---- choosing k by cross-validation ----------------------------------------------------

def choose_k(X, y, ks, folds=5, metric="l2", seed=0, batch_size=None, device="auto"):
    """{k: mean accuracy over ``folds``-fold cross-validation} for each k in ``ks``.

    The samples are shuffled once (``seed``) and split into folds of nearly
    equal size; each fold is predicted by a classifier fitted on the
    others.  One neighbour search with the largest k serves every k.
    """
    ks = [ks] if isinstance(ks, numbers.Integral) else list(ks)
    if not ks:
        raise ValueError("ks: expected a non-empty list of integers k >= 1, got an empty one")
    ks = list(dict.fromkeys(check_int("each k in ks", k) for k in ks))   # each k once
    folds = check_int("folds", folds, low=2)
    probe = KNeighborsClassifier(max(ks), metric, batch_size, device)
    dev = estimator_device(device, X)
    arr = as_features(X, dev)
    n = arr.shape[0]
    if folds > n:
        raise ValueError(f"folds={folds} is more than the {n} samples")
    classes, codes = encode_labels(y, n)
    xp = dev.backend.xp
    order = numpy.random.default_rng(seed).permutation(n)
    parts = numpy.array_split(order, folds)
    smallest_train = n - max(len(p) for p in parts)
    if max(ks) > smallest_train:
        raise ValueError(f"k={max(ks)} is larger than the smallest training split "
                         f"({smallest_train} samples with {folds} folds of {n})")
    codes_dev = dev.backend.asarray(codes)
    correct = {k: 0.0 for k in ks}
    for i, held in enumerate(parts):
        train = dev.backend.asarray(numpy.concatenate(parts[:i] + parts[i + 1:]))
        held_dev = dev.backend.asarray(held)
        probe._fit_arrays(dev, arr[train], codes_dev[train], classes)
        held_rows = arr[held_dev] if probe._shift is None else arr[held_dev] - probe._shift
        _, idx = probe._neighbors_arrays(held_rows, max(ks), distances=False)
        labels = probe._codes[idx]
        truth = codes_dev[held_dev]
        for k in ks:
            pred = vote(labels[:, :k], len(classes), xp)
            correct[k] += float((pred == truth).mean()) / folds
    return correct
