"""Full-batch vs stochastic vs mini-batch gradient descent on the same problem.

    python examples/gradient_descent_variants.py [--examples 60000] [--out runs/gd_variants]

Softmax regression on 5,000 MNIST digits; each variant gets the same budget of
examples seen. The DataLoader's batch size is what makes the variant:
``len(dataset)`` is full-batch gradient descent, ``1`` is stochastic, anything
between is mini-batch; each also gets a learning rate that suits its step count
(smaller steps for noisier gradients) and the stochastic ones shuffle. Writes a
plot of training loss against examples seen.
"""
import argparse
import os
import time

import numpy as np

import gpudl
import gpudl.nn.functional as F
from gpudl import data, nn, optim


def run(name, batch_size, lr, budget, X, y, dev, log_every):
    gpudl.manual_seed(0)
    model = nn.Linear(784, 10).to(dev)
    opt = optim.SGD(model.parameters(), lr=lr)
    loader = data.DataLoader(data.TensorDataset(X, y), batch_size, shuffle=batch_size < len(X), seed=0, device=dev)
    Xall, yall = gpudl.tensor(X, device=dev), gpudl.tensor(y, device=dev)
    seen, curve, t0 = 0, [], time.perf_counter()
    next_log = 0          # the first entry is the loss before any step
    while seen < budget:
        for xb, yb in loader:
            if seen >= next_log:
                with gpudl.no_grad():
                    curve.append((seen, F.cross_entropy(model(Xall), yall).item()))
                next_log += log_every
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
            if seen >= budget:
                break
    with gpudl.no_grad():
        curve.append((seen, F.cross_entropy(model(Xall), yall).item()))
    acc = (model(Xall).argmax(1) == yall).numpy().mean()
    print(f"{name:>22s}: batch {batch_size:>5d}, lr {lr:<5g} final loss {curve[-1][1]:.4f}, "
          f"train accuracy {acc:.1%}, {time.perf_counter() - t0:.1f} s")
    return curve


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="training examples used")
    p.add_argument("--examples", type=int, default=60000, help="budget: examples seen by each variant")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/gd_variants")
    args = p.parse_args()

    dev = gpudl.device(args.device)
    ds = data.mnist("train")
    X = (ds.images[:args.n].reshape(args.n, -1) / 255.0).astype(np.float32)
    y = ds.labels[:args.n]
    log_every = max(args.examples // 60, 1)
    curves = {
        "full-batch GD": run("full-batch GD", len(X), 0.5, args.examples, X, y, dev, log_every),
        "mini-batch SGD (64)": run("mini-batch SGD (64)", 64, 0.1, args.examples, X, y, dev, log_every),
        "stochastic GD (1)": run("stochastic GD (1)", 1, 0.01, args.examples, X, y, dev, log_every),
    }
    os.makedirs(args.out, exist_ok=True)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        ax.plot([s for s, _ in c], [l for _, l in c], label=name)
    ax.set(xlabel="training examples seen", ylabel="training loss (all examples)", yscale="log",
           title="Gradient descent: full batch vs mini-batch vs stochastic")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(args.out, "loss_vs_examples.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
