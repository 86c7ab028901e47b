"""Fit a two-layer net to three interleaved spirals with nothing but tensors and autograd.

    python examples/spirals.py [--device auto|cpu|cuda] [--steps 2000]

The classic CS231n toy problem: a linear classifier gets about 50%; a hidden
layer of 100 ReLUs, trained by full-batch gradient descent on the softmax
loss plus L2, gets above 95%.
"""
import argparse
import time

import numpy as np

import gpudl


def spirals(points_per_class=100, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.zeros((points_per_class * classes, 2), dtype=np.float32)
    y = np.zeros(points_per_class * classes, dtype=np.int64)
    for c in range(classes):
        ix = slice(points_per_class * c, points_per_class * (c + 1))
        r = np.linspace(0.0, 1, points_per_class)
        theta = np.linspace(c * 4, (c + 1) * 4, points_per_class) + rng.standard_normal(points_per_class) * 0.2
        X[ix] = np.c_[r * np.sin(theta), r * np.cos(theta)]
        y[ix] = c
    return X, y


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--reg", type=float, default=1e-3)
    args = p.parse_args()

    gpudl.manual_seed(0)
    dev = gpudl.device(args.device)
    X_np, y_np = spirals()
    X, y = gpudl.tensor(X_np, device=dev), gpudl.tensor(y_np, device=dev)
    n, hidden, classes = len(X_np), 100, 3
    W1 = (gpudl.randn(2, hidden, device=dev) * 0.01).requires_grad_()
    b1 = gpudl.zeros(hidden, device=dev, requires_grad=True)
    W2 = (gpudl.randn(hidden, classes, device=dev) * 0.01).requires_grad_()
    b2 = gpudl.zeros(classes, device=dev, requires_grad=True)
    params = [W1, b1, W2, b2]
    rows = gpudl.arange(n, device=dev)

    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        scores = gpudl.relu(X @ W1 + b1) @ W2 + b2
        data_loss = -gpudl.log_softmax(scores, 1)[rows, y].mean()
        loss = data_loss + 0.5 * args.reg * ((W1 * W1).sum() + (W2 * W2).sum())
        for q in params:
            q.grad = None
        loss.backward()
        with gpudl.no_grad():
            for q in params:
                q -= args.lr * q.grad            # in place, as in PyTorch
        if step % 500 == 0:
            acc = (scores.argmax(1) == y).numpy().mean()
            print(f"step {step:5d}  loss {loss.item():.4f}  train accuracy {acc:.3f}")
    acc = float((scores.argmax(1) == y).numpy().mean())
    print(f"device {dev}: {args.steps} full-batch steps in {time.perf_counter() - t0:.1f} s; "
          f"final training accuracy {acc:.1%}")
    if acc < 0.9:
        raise SystemExit("the net did not fit the spirals (accuracy below 90%)")


if __name__ == "__main__":
    main()
