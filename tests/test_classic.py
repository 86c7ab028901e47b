"""gpudl.classic: k-nearest neighbours and linear SVM / softmax classifiers."""
import numpy as np
import pytest

import gpudl
from gpudl.classic import KNeighborsClassifier, LinearClassifier, choose_k, linear_loss
from gpudl.classic import knn as knn_module
from gpudl.testing import gradcheck

from helpers import t

METRICS = ("l2", "l1")
SK_METRIC = {"l2": "euclidean", "l1": "manhattan"}


# ---- a brute-force reference: full distance matrix, stable argsort, sklearn's vote ----------

def ref_distances(Q, X, metric):
    diff = Q[:, None, :].astype(np.float64) - X[None, :, :]
    if metric == "l2":
        return np.sqrt((diff ** 2).sum(-1))
    return np.abs(diff).sum(-1)


def ref_knn(X, y, Q, k, metric):
    """(predictions, distances, indices): neighbours by (distance, index); vote ties to the
    smallest label."""
    d = ref_distances(Q, X, metric)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    classes = np.unique(y)
    codes = np.searchsorted(classes, y)[idx]
    counts = np.stack([(codes == c).sum(1) for c in range(len(classes))], axis=1)
    return classes[counts.argmax(1)], np.take_along_axis(d, idx, 1), idx


def tied_data(seed=0, n=60, m=40, dim=3, classes=3, high=3):
    """Small integer points: many equal distances and many equal votes."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, high, (n, dim)).astype(np.float64)
    Q = rng.integers(0, high, (m, dim)).astype(np.float64)
    return X, rng.integers(0, classes, n), Q


def boundary_ties(X, Q, k, metric):
    """Rows whose k-th and (k+1)-th nearest distances are equal."""
    d = np.sort(ref_distances(Q, X, metric), axis=1)
    return d[:, k - 1] == d[:, k]


def vote_ties(X, y, Q, k, metric):
    """Rows where two classes get the most votes."""
    _, _, idx = ref_knn(X, y, Q, k, metric)
    counts = np.stack([(y[idx] == c).sum(1) for c in np.unique(y)], axis=1)
    return (counts == counts.max(1, keepdims=True)).sum(1) > 1


def assert_matches_reference(X, y, Q, k, metric, device):
    knn = KNeighborsClassifier(k=k, metric=metric, device=device).fit(X, y)
    pred, dist, idx = ref_knn(X, y, Q, k, metric)
    got_d, got_i = knn.kneighbors(Q)
    np.testing.assert_array_equal(got_i, idx)
    np.testing.assert_allclose(got_d, dist, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(knn.predict(Q), pred)
    assert knn.score(Q, pred) == 1.0


# ---- KNN ------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_knn_matches_reference_with_ties(device, metric, k):
    X, y, Q = tied_data(seed=k)
    assert vote_ties(X, y, Q, k, metric).any() or k == 1
    assert boundary_ties(X, Q, k, metric).any()
    assert_matches_reference(X, y, Q, k, metric, device)


@pytest.mark.parametrize("metric", METRICS)
def test_knn_large_k_takes_the_partition_path(device, metric):
    X, y, Q = tied_data(seed=5, n=150, m=20)
    assert_matches_reference(X, y, Q, knn_module.ROUNDS_MAX_K + 6, metric, device)


def test_knn_constructed_ties():
    # distances 5, 5, 3, 1 from the query: k=3 keeps indices 3, 2 and the lower of the tied 0, 1
    X = np.array([[5.0], [-5.0], [3.0], [1.0]])
    knn = KNeighborsClassifier(k=3, device="cpu").fit(X, [0, 1, 2, 3])
    d, i = knn.kneighbors([[0.0]])
    np.testing.assert_array_equal(i, [[3, 2, 0]])
    np.testing.assert_array_equal(d, [[1.0, 3.0, 5.0]])
    assert knn.predict([[0.0]])[0] == 0          # one vote each: the smallest label
    # a two-two vote: the smaller label wins although the other class is nearer
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    knn = KNeighborsClassifier(k=4, device="cpu").fit(X, ["b", "b", "a", "a"])
    assert knn.predict([[0.0]])[0] == "a"
    assert KNeighborsClassifier(k=3, device="cpu").fit(X, ["b", "b", "a", "a"]).predict([[0.0]])[0] == "b"


@pytest.mark.parametrize("metric", METRICS)
def test_knn_blocked_equals_unblocked(device, metric, monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 6)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    Q = rng.standard_normal((23, 6)).astype(np.float32)
    whole = KNeighborsClassifier(k=5, metric=metric, batch_size=1000, device=device).fit(X, y)
    d0, i0 = whole.kneighbors(Q)
    monkeypatch.setitem(knn_module.L1_TEMP_ELEMENTS, device.type if device.type == "cpu" else "cuda", 40)
    for b in (1, 4, 7):
        part = KNeighborsClassifier(k=5, metric=metric, batch_size=b, device=device).fit(X, y)
        d, i = part.kneighbors(Q)
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_allclose(d, d0, rtol=1e-6)
        np.testing.assert_array_equal(part.predict(Q), whole.predict(Q))


def test_knn_tensor_inputs_and_auto_device(device):
    X, y, Q = tied_data(seed=9)
    ref = KNeighborsClassifier(k=3, device="cpu").fit(X, y)
    knn = KNeighborsClassifier(k=3).fit(t(X, device), t(y, device))
    assert knn.device_ == device
    np.testing.assert_array_equal(knn.predict(t(Q, device)), ref.predict(Q))
    np.testing.assert_array_equal(knn.predict(Q), ref.predict(Q))
    # images (N, 1, 2, 2) are flattened
    knn4 = KNeighborsClassifier(k=3, device=device).fit(X[:, :, None].repeat(4, 2).reshape(-1, 1, 6, 2), y)
    assert knn4.n_features_in_ == 12


@pytest.mark.parametrize("metric", METRICS)
def test_knn_equals_sklearn(metric):
    sk = pytest.importorskip("sklearn.neighbors")
    # continuous data: no ties anywhere; everything must agree
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 8)), rng.integers(0, 5, 300)
    Q = rng.standard_normal((100, 8))
    for k in (1, 3, 6):
        ours = KNeighborsClassifier(k=k, metric=metric, device="cpu").fit(X, y)
        peer = sk.KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric=SK_METRIC[metric]).fit(X, y)
        np.testing.assert_array_equal(ours.predict(Q), peer.predict(Q))
        d, i = ours.kneighbors(Q)
        pd_, pi = peer.kneighbors(Q)
        np.testing.assert_array_equal(i, pi)
        np.testing.assert_allclose(d, pd_, rtol=1e-9)
        assert ours.score(Q, y[:100]) == peer.score(Q, y[:100])
    # tied data: equal votes and equal distances; scikit-learn's heap may keep another of the
    # points tied for the k-th place, so compare where that place is not tied
    for k in (2, 3, 4, 5):
        X, y, Q = tied_data(seed=k, n=80, m=200, high=5)
        keep = ~boundary_ties(X, Q, k, metric)
        assert keep.sum() >= 20 and vote_ties(X, y, Q[keep], k, metric).sum() >= 5
        inner = np.diff(np.sort(ref_distances(Q[keep], X, metric), axis=1)[:, :k], axis=1) == 0
        assert inner.any(axis=1).sum() >= 5
        ours = KNeighborsClassifier(k=k, metric=metric, device="cpu").fit(X, y)
        peer = sk.KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric=SK_METRIC[metric]).fit(X, y)
        np.testing.assert_array_equal(ours.predict(Q[keep]), peer.predict(Q[keep]))
        np.testing.assert_allclose(ours.kneighbors(Q)[0], peer.kneighbors(Q)[0], rtol=1e-12)


def test_choose_k_is_k_fold_cross_validation(device):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(2, 1, (40, 2))])
    y = np.repeat([0, 1], 40)
    ks = [1, 3, 9]
    got = choose_k(X, y, ks, folds=4, seed=7, device=device)
    assert list(got) == ks
    parts = np.array_split(np.random.default_rng(7).permutation(80), 4)
    for k in ks:
        accs = []
        for i, held in enumerate(parts):
            train = np.concatenate(parts[:i] + parts[i + 1:])
            accs.append(KNeighborsClassifier(k, device="cpu").fit(X[train], y[train]).score(X[held], y[held]))
        assert got[k] == pytest.approx(np.mean(accs), abs=1e-12)
    assert 0.6 < got[9] <= 1.0
    assert choose_k(X, y, [2], folds=2, metric="l1", device=device)[2] > 0.6


def test_knn_errors():
    X, y, Q = tied_data()
    with pytest.raises(ValueError, match=r"metric: expected one of 'l2', 'l1', got 'cosine'"):
        KNeighborsClassifier(metric="cosine")
    with pytest.raises(ValueError, match=r"k: expected an integer >= 1, got 0"):
        KNeighborsClassifier(k=0)
    with pytest.raises(ValueError, match=r"k=61 is larger than the training set \(60 samples\)"):
        KNeighborsClassifier(k=61, device="cpu").fit(X, y)
    knn = KNeighborsClassifier(k=3, device="cpu")
    with pytest.raises(ValueError, match=r"not fitted yet: call fit\(X, y\) first"):
        knn.predict(Q)
    knn.fit(X, y)
    with pytest.raises(ValueError, match=r"k=100 is larger than the training set \(60 samples\)"):
        knn.kneighbors(Q, k=100)
    with pytest.raises(ValueError, match=r"X has 2 features per sample, but the estimator was fitted with 3"):
        knn.predict(Q[:, :2])
    bad = Q.copy()
    bad[4, 1] = np.nan
    bad[6, 0] = np.inf
    with pytest.raises(ValueError, match=r"X contains 1 NaN value\(s\) and 1 infinite value\(s\), "
                                         r"the first at row 4, column 1"):
        knn.predict(bad)
    with pytest.raises(ValueError, match=r"X contains 1 NaN"):
        KNeighborsClassifier(device="cpu").fit(bad, y[:40])
    with pytest.raises(ValueError, match=r"y: expected 60 labels .* got shape \(59,\)"):
        KNeighborsClassifier(device="cpu").fit(X, y[:59])
    with pytest.raises(ValueError, match=r"expected a 2-D array .* got shape \(3,\)"):
        knn.predict(Q[0])
    with pytest.raises(ValueError, match=r"k=50 is larger than the smallest training split \(48 samples"):
        choose_k(X, y, [1, 50], folds=5)
    with pytest.raises(ValueError, match="ks: expected a non-empty list"):
        choose_k(X, y, [])


# ---- linear classifiers -------------------------------------------------------------------------

# CS231n's worked example: a 4-pixel image of a cat (class 0), three classes
X_CAT = np.array([[56.0, 231.0, 24.0, 2.0]])
W_CAT = np.array([[0.2, -0.5, 0.1, 2.0], [1.5, 1.3, 2.1, 0.0], [0.0, 0.25, 0.2, -0.3]])
B_CAT = np.array([1.1, 3.2, -1.2])


def cat_classifier(loss, device, reg=0.0):
    return LinearClassifier(loss=loss, reg=reg, device=device).set_weights(W_CAT, B_CAT)


def test_linear_hand_computed_scores_losses_and_gradients(device):
    svm = cat_classifier("svm", device)
    np.testing.assert_allclose(svm.decision_function(X_CAT), [[-96.8, 437.9, 60.75]], rtol=1e-12)
    loss = svm.loss_of(X_CAT, [0])
    # max(0, 437.9 + 96.8 + 1) + max(0, 60.75 + 96.8 + 1) (the slide misprints 60.75 as 61.95)
    assert loss.item() == pytest.approx(694.25, rel=1e-12)
    loss.backward()
    x = X_CAT[0]
    np.testing.assert_allclose(svm.W.grad.numpy(), [-2 * x, x, x], rtol=1e-12)
    np.testing.assert_allclose(svm.b.grad.numpy(), [-2, 1, 1], rtol=1e-12)

    soft = cat_classifier("softmax", device, reg=0.1)
    loss = soft.loss_of(X_CAT, [0])
    s = np.array([-96.8, 437.9, 60.75])
    p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    assert loss.item() == pytest.approx(-np.log(p[0]) + 0.1 * (W_CAT ** 2).sum(), rel=1e-12)
    loss.backward()
    dW = (p - [1, 0, 0])[:, None] * x[None, :] + 0.2 * W_CAT
    np.testing.assert_allclose(soft.W.grad.numpy(), dW, rtol=1e-10)
    np.testing.assert_allclose(soft.b.grad.numpy(), p - [1, 0, 0], atol=1e-12)


def test_linear_step_is_gradient_descent(device):
    svm = cat_classifier("svm", device)
    before = svm.step(X_CAT, [0], lr=1e-3)
    assert before == pytest.approx(694.25)
    x = X_CAT[0]
    W1 = W_CAT - 1e-3 * np.array([-2 * x, x, x])
    b1 = B_CAT - 1e-3 * np.array([-2, 1, 1])
    np.testing.assert_allclose(svm.W.numpy(), W1, rtol=1e-12)
    np.testing.assert_allclose(svm.decision_function(X_CAT), X_CAT @ W1.T + b1, rtol=1e-12)


def np_linear_loss(W, b, X, y, loss, reg, margin):
    s = X @ W.T + b
    n = len(y)
    if loss == "svm":
        m = np.maximum(0, s - s[np.arange(n), y][:, None] + margin)
        m[np.arange(n), y] = 0
        data = m.sum(1).mean()
    else:
        z = s - s.max(1, keepdims=True)
        data = (np.log(np.exp(z).sum(1)) - z[np.arange(n), y]).mean()
    return data + reg * (W ** 2).sum()


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_linear_loss_value_and_gradcheck(device, loss):
    rng = np.random.default_rng(2)
    Wn, bn = rng.standard_normal((4, 5)), rng.standard_normal(4)
    Xn, yn = rng.standard_normal((7, 5)), rng.integers(0, 4, 7)
    W, b = t(Wn, device, requires_grad=True), t(bn, device, requires_grad=True)
    X, y = t(Xn, device), t(yn, device)
    got = linear_loss(W, b, X, y, loss, reg=0.3, margin=0.5)
    assert got.item() == pytest.approx(np_linear_loss(Wn, bn, Xn, yn, loss, 0.3, 0.5), rel=1e-12)
    assert gradcheck(lambda W, b: linear_loss(W, b, X, y, loss, reg=0.3, margin=0.5), [W, b])


def blobs(seed=0, n=60, dim=5, classes=3):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)) * 4
    y = np.arange(n) % classes
    return (centers[y] + rng.standard_normal((n, dim))).astype(np.float32), y + 10


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_linear_learns_separable_blobs_same_on_every_device(device, loss):
    X, y = blobs()
    clf = LinearClassifier(loss=loss, reg=1e-3, device=device, seed=0).fit(X, y, lr=0.05, epochs=20, batch_size=16)
    assert clf.score(X, y) >= 0.95
    np.testing.assert_array_equal(clf.classes_, [10, 11, 12])
    assert len(clf.loss_history) == 20 * 4
    assert np.mean(clf.loss_history[-4:]) < 0.25 * np.mean(clf.loss_history[:4])
    ref = LinearClassifier(loss=loss, reg=1e-3, device="cpu", seed=0).fit(X, y, lr=0.05, epochs=20, batch_size=16)
    np.testing.assert_allclose(clf.W.numpy(), ref.W.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(clf.loss_history, ref.loss_history, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))


def test_linear_templates_and_seeded_init():
    X, y = blobs(n=30, dim=6)
    imgs = X.reshape(30, 1, 2, 3)
    clf = LinearClassifier(device="cpu", seed=4).fit(imgs, y, epochs=2)
    tpl = clf.templates()
    assert tpl.shape == (3, 1, 2, 3)
    np.testing.assert_array_equal(tpl.reshape(3, 6), clf.W.numpy())
    assert clf.templates((6,)).shape == (3, 6)
    again = LinearClassifier(device="cpu", seed=4).fit(imgs, y, epochs=2)
    np.testing.assert_array_equal(again.W.numpy(), clf.W.numpy())
    gpudl.manual_seed(5)
    a = LinearClassifier(device="cpu").fit(X, y, epochs=1).W.numpy()
    gpudl.manual_seed(5)
    np.testing.assert_array_equal(LinearClassifier(device="cpu").fit(X, y, epochs=1).W.numpy(), a)


def test_linear_errors():
    X, y = blobs(n=12)
    with pytest.raises(ValueError, match=r"loss: expected one of 'svm', 'softmax', got 'hinge'"):
        LinearClassifier(loss="hinge")
    with pytest.raises(ValueError, match=r"reg: expected a finite number >= 0, got -1"):
        LinearClassifier(reg=-1)
    with pytest.raises(ValueError, match=r"loss: expected one of 'svm', 'softmax', got 'mse'"):
        linear_loss(None, None, None, None, loss="mse")
    clf = LinearClassifier(device="cpu")
    with pytest.raises(ValueError, match=r"LinearClassifier is not fitted yet"):
        clf.predict(X)
    with pytest.raises(ValueError, match=r"lr: expected a finite number > 0, got 0"):
        clf.fit(X, y, lr=0)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN value\(s\), the first at row 3, column 2"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match=r"at least 2 classes, got 1"):
        clf.fit(X, np.zeros(12))
    clf.fit(X, y, epochs=1)
    with pytest.raises(ValueError, match=r"X has 4 features per sample, but the estimator was fitted with 5"):
        clf.predict(X[:, :4])
    with pytest.raises(ValueError, match=r"y holds the label 99, not one of the classes \[10, 11, 12\]"):
        clf.loss_of(X[:2], [10, 99])
    with pytest.raises(ValueError, match=r"templates: shape \(2, 2\) holds 4 values, but W has 5"):
        clf.templates((2, 2))


def test_knn_is_accurate_for_float32_data_far_from_the_origin():
    X = np.array([[1000, 1000], [1000.1, 1000.1], [1000.2, 1000]], np.float32)
    knn = KNeighborsClassifier(1).fit(X, [0, 1, 2])
    np.testing.assert_array_equal(knn.predict(X), [0, 1, 2])
    dist, _ = knn.kneighbors(X + np.float32(0.01))
    np.testing.assert_allclose(dist.ravel(), np.full(3, 0.01 * np.sqrt(2)), rtol=0.05)
    r = np.random.default_rng(0)
    X = (r.standard_normal((300, 20)) + 1e4).astype(np.float32)
    assert KNeighborsClassifier(1).fit(X, np.arange(300)).score(X, np.arange(300)) == 1.0
    scores = choose_k(X, np.arange(300) % 3, [1, 3], folds=3)
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_choose_k_counts_a_repeated_k_once():
    r = np.random.default_rng(1)
    X, y = r.standard_normal((50, 3)), r.integers(0, 2, 50)
    once, twice = choose_k(X, y, [3, 5]), choose_k(X, y, [3, 3, 5])
    assert twice == once and max(once.values()) <= 1.0


def test_features_must_be_numbers_and_at_least_one():
    knn = KNeighborsClassifier(1)
    with pytest.raises(ValueError, match="expected at least one feature, got shape"):
        knn.fit(np.zeros((3, 0)), [0, 1, 2])
    for bad in (np.array([["1", "2"], ["3", "4"]]), np.array([[1 + 2j, 0], [0, 1]])):
        with pytest.raises(ValueError, match="expected numbers, got an array of dtype"):
            knn.fit(bad, [0, 1])


def test_set_weights_takes_classes_in_any_order():
    r = np.random.default_rng(2)
    W, b = r.standard_normal((4, 3)), r.standard_normal(4)
    X = r.standard_normal((20, 3))
    classes = np.array([3, 1, 2, 0])
    a = LinearClassifier(loss="softmax").set_weights(W, b, classes=classes)
    ref = classes[np.argmax(X @ W.T + b, axis=1)]
    np.testing.assert_array_equal(a.predict(X), ref)
    a.loss_of(X, ref)                                  # every label is known
    with pytest.raises(ValueError, match="4 distinct labels"):
        LinearClassifier().set_weights(W, b, classes=[0, 1, 1, 2])
