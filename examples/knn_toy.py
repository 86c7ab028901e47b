"""Two classes of 2-D points where k=3 and k=5 classify the same query point differently.

    python examples/knn_toy.py [--device auto|cpu|cuda] [--out runs/knn_toy]

Around the query point (0, 0) five training points are placed by hand: two
of class 0 at distances 1.0 and 1.1, then three of class 1 at 1.3, 1.4 and
1.5.  With k=3 the vote is 2 to 1 for class 0; with k=5 it is 3 to 2 for
class 1.  Two seeded clouds, one a class, lie farther than 2.0 from the
query, so they never enter its five nearest.  Both predictions are asserted,
then the decision regions for k=3 and k=5 are plotted to
``<out>/knn_toy.png`` when matplotlib is installed.
"""
import argparse
import os

import numpy as np

import gpudl
from gpudl.classic import KNeighborsClassifier

QUERY = np.array([[0.0, 0.0]])


def make_points(per_class=30, seed=0):
    """(X, y): the five planted neighbours of QUERY, then two clouds kept beyond radius 2."""
    near = np.array([[1.0, 0.0], [0.0, 1.1],                       # class 0
                     [-1.3, 0.0], [0.0, -1.4], [-0.9, 1.2]])        # class 1 (|.| = 1.5)
    near_y = np.array([0, 0, 1, 1, 1])
    rng = np.random.default_rng(seed)
    clouds, cloud_y = [], []
    for label, center in ((0, (2.2, 1.6)), (1, (-2.2, -1.6))):
        pts = rng.normal(center, 0.9, size=(4 * per_class, 2))
        pts = pts[np.hypot(*pts.T) > 2.0][:per_class]
        clouds.append(pts)
        cloud_y.append(np.full(len(pts), label))
    return np.concatenate([near, *clouds]), np.concatenate([near_y, *cloud_y])


def plot(models, X, y, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    xs = np.linspace(X[:, 0].min() - 1, X[:, 0].max() + 1, 240)
    ys = np.linspace(X[:, 1].min() - 1, X[:, 1].max() + 1, 240)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.c_[gx.ravel(), gy.ravel()]
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.6))
    light, dark = ListedColormap(["#c6dbef", "#fdd0a2"]), ListedColormap(["#2171b5", "#d94801"])
    for ax, (k, model) in zip(axes, models.items()):
        ax.pcolormesh(gx, gy, model.predict(grid).reshape(gx.shape), cmap=light, shading="auto")
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap=dark, s=18, edgecolors="k", linewidths=0.3)
        label = model.predict(QUERY)[0]
        ax.scatter(*QUERY.T, marker="*", s=260, c="white" if label == 0 else "black", edgecolors="k")
        ax.add_patch(plt.Circle((0, 0), model.kneighbors(QUERY)[0][0, -1], fill=False, linestyle=":"))
        ax.set_title(f"k = {k}: the query (star) is class {label}")
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join("runs", "knn_toy"))
    args = p.parse_args()

    dev = gpudl.device(args.device)
    X, y = make_points()
    models = {k: KNeighborsClassifier(k=k, device=dev).fit(X, y) for k in (3, 5)}
    for k, model in models.items():
        dist, idx = model.kneighbors(QUERY)
        votes = np.bincount(y[idx[0]], minlength=2)
        print(f"k = {k}: neighbours {idx[0].tolist()} at distances {np.round(dist[0], 2).tolist()}, "
              f"classes {y[idx[0]].tolist()} -> votes {votes.tolist()} -> class {model.predict(QUERY)[0]}")
    assert models[3].predict(QUERY)[0] == 0 and models[5].predict(QUERY)[0] == 1, \
        "the construction should make k=3 and k=5 disagree"
    print("k = 3 and k = 5 disagree on the query point, as constructed")
    os.makedirs(args.out, exist_ok=True)
    plot(models, X, y, os.path.join(args.out, "knn_toy.png"))


if __name__ == "__main__":
    main()
