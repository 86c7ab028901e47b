"""A linear SVM next to a softmax classifier on MNIST, and the templates each one learns.

    python examples/linear_classifier.py [--train 20000] [--epochs 10] [--lr 0.1] [--reg 1e-4]
                                         [--device auto|cpu|cuda] [--out runs/linear_classifier]

Both score an image x by f(x) = W x + b, one row of W per digit, and are
trained by mini-batch SGD on the mean-subtracted pixels: one on the
multiclass hinge loss, one on the softmax cross-entropy, each plus
reg * sum(W**2).  Their accuracies are printed, and the rows of W, shown as
28x28 images (blue-white-red: negative-zero-positive weight), are saved as
one grid to ``<out>/templates.png``: top row SVM, bottom row softmax.
"""
import argparse
import os
import time

import numpy as np

import gpudl
import gpudl.data
from gpudl.classic import LinearClassifier
from visualize_filters import save_png


def template_grid(rows, scale=3, pad=2):
    """(H, W, 3) uint8: rows of (C, h, w) templates, each mapped blue (-) white (0) red (+)."""
    n_rows, C, h, w = len(rows), rows[0].shape[0], rows[0].shape[1], rows[0].shape[2]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    grid = np.full((n_rows * cell_h + pad, C * cell_w + pad, 3), 255, np.uint8)
    for r, tpl in enumerate(rows):
        for c in range(C):
            v = tpl[c] / (np.abs(tpl[c]).max() or 1.0)          # in [-1, 1]
            img = np.stack([1 - np.clip(-v, 0, 1), 1 - np.abs(v), 1 - np.clip(v, 0, 1)], -1)
            img = (img * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
            y0, x0 = pad + r * cell_h, pad + c * cell_w
            grid[y0:y0 + h * scale, x0:x0 + w * scale] = img
    return grid


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=20000, help="training images used (0: all 60,000)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="data folder (default: $GPUDL_DATA or ~/.cache/gpudl)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join("runs", "linear_classifier"))
    args = p.parse_args()

    dev = gpudl.device(args.device)
    train, test = gpudl.data.mnist("train", root=args.root), gpudl.data.mnist("test", root=args.root)
    rng = np.random.default_rng(args.seed)
    n = len(train) if args.train <= 0 else min(args.train, len(train))
    x, y = train.get_batch(np.sort(rng.choice(len(train), n, replace=False)))
    x_test, y_test = test.get_batch(np.arange(len(test)))
    mean = x.mean(axis=0)
    x, x_test = x - mean, x_test - mean
    print(f"MNIST: {len(x)} training images, {len(x_test)} test images, mean image subtracted; device {dev}")

    templates = []
    for loss in ("svm", "softmax"):
        t0 = time.perf_counter()
        clf = LinearClassifier(loss=loss, reg=args.reg, device=dev, seed=args.seed)
        clf.fit(x, y, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size)
        steps = len(clf.loss_history)
        print(f"{loss:>7}: loss {clf.loss_history[0]:.3f} -> {np.mean(clf.loss_history[-steps // args.epochs:]):.3f} "
              f"(last epoch's mean) in {steps} steps, {time.perf_counter() - t0:.1f} s; "
              f"accuracy train {clf.score(x, y):.4f}, test {clf.score(x_test, y_test):.4f}")
        templates.append(clf.templates((28, 28)))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "templates.png")
    save_png(path, template_grid(templates))
    print(f"templates (top: SVM, bottom: softmax; digits 0-9): {path}")


if __name__ == "__main__":
    main()
