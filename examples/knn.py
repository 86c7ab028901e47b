"""k-nearest neighbours on MNIST (or CIFAR-10), with k chosen by cross-validation.

    python examples/knn.py [--dataset mnist|cifar10] [--train 10000] [--test 1000]
                           [--ks 1 3 5 7 10 15 20] [--folds 5] [--metric l2|l1]
                           [--device auto|cpu|cuda] [--out runs/knn]

A random subset of the training images (``--train``) is split into
``--folds`` folds; each k is scored by the mean accuracy on the held-out
fold.  The best k (the smallest among equals) then classifies ``--test``
images of the test split.  The accuracy per k is printed and, when
matplotlib is installed, plotted to ``<out>/knn_cv.png``.  Use ``--train 0
--test 0`` for the whole splits (MNIST: 60,000 x 10,000, a few minutes on
two CPU cores, seconds on a GPU).
"""
import argparse
import os
import time

import numpy as np

import gpudl
import gpudl.data
from gpudl.classic import KNeighborsClassifier, choose_k


def load(name, split, n, rng, root=None):
    """(images float32 in [0, 1], labels): ``n`` random samples of the split (0: all)."""
    ds = {"mnist": gpudl.data.mnist, "cifar10": gpudl.data.cifar10}[name](split, root=root)
    idx = np.arange(len(ds)) if n <= 0 or n >= len(ds) else np.sort(rng.choice(len(ds), n, replace=False))
    return ds.get_batch(idx)


def plot(ks, acc, best, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, acc, "o-")
    ax.axvline(best, color="grey", linestyle=":", label=f"chosen k = {best}")
    ax.set_xlabel("k")
    ax.set_ylabel("cross-validation accuracy")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--root", default=None, help="data folder (default: $GPUDL_DATA or ~/.cache/gpudl)")
    p.add_argument("--train", type=int, default=10000, help="training images used (0: all)")
    p.add_argument("--test", type=int, default=1000, help="test images classified (0: all)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 7, 10, 15, 20])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--metric", choices=("l2", "l1"), default="l2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join("runs", "knn"))
    args = p.parse_args()

    dev = gpudl.device(args.device)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = load(args.dataset, "train", args.train, rng, args.root)
    x_test, y_test = load(args.dataset, "test", args.test, rng, args.root)
    print(f"{args.dataset}: {len(x_train)} training and {len(x_test)} test images of "
          f"{x_train[0].size} values; device {dev}; metric {args.metric}")

    t0 = time.perf_counter()
    cv = choose_k(x_train, y_train, args.ks, folds=args.folds, metric=args.metric,
                  seed=args.seed, device=dev)
    best = max(cv, key=lambda k: (cv[k], -k))
    print(f"{args.folds}-fold cross-validation ({time.perf_counter() - t0:.1f} s):")
    for k, acc in cv.items():
        print(f"  k = {k:3d}: accuracy {acc:.4f}" + ("   <- chosen" if k == best else ""))

    t0 = time.perf_counter()
    knn = KNeighborsClassifier(k=best, metric=args.metric, device=dev).fit(x_train, y_train)
    acc = knn.score(x_test, y_test)
    print(f"test accuracy with k = {best}: {acc:.4f} ({time.perf_counter() - t0:.1f} s)")

    os.makedirs(args.out, exist_ok=True)
    plot(list(cv), list(cv.values()), best, os.path.join(args.out, "knn_cv.png"),
         f"kNN on {args.dataset} ({len(x_train)} images, {args.metric})")


if __name__ == "__main__":
    main()
