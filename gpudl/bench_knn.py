"""KNN benchmark: ``python -m gpudl.bench_knn [--device cpu] [--repeat N] [--json]``.

gpudl's :class:`~gpudl.classic.KNeighborsClassifier` (fit + predict) next
to scikit-learn's ``KNeighborsClassifier(algorithm="brute")`` on the same
data, in one process: random float32 points (10,000 training, 1,000 query,
784 features, 10 classes by default), k=5, L2.  The two run alternately
after warm-up runs, with a short pause between runs so that one library's
spinning BLAS / OpenMP threads do not steal the cores from the other; the
medians and their ratio are printed, with the share of queries on which the
two predict the same class.  scikit-learn is an optional peer
(``pip install scikit-learn``); without it gpudl's time is given alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys


def build_parser():
    p = argparse.ArgumentParser(prog="python -m gpudl.bench_knn", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="device for gpudl: cpu (default), cuda, cuda:N")
    p.add_argument("--repeat", type=int, default=9, help="timed runs per library (default 9)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--train", type=int, default=10000, help="training points (default 10000)")
    p.add_argument("--query", type=int, default=1000, help="query points (default 1000)")
    p.add_argument("--dim", type=int, default=784, help="features per point (default 784)")
    p.add_argument("--classes", type=int, default=10, help="classes (default 10)")
    p.add_argument("-k", type=int, default=5, help="neighbours (default 5)")
    p.add_argument("--metric", choices=("l2", "l1"), default="l2", help="distance (default l2)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="gpudl's query rows per distance block (default: automatic)")
    p.add_argument("--no-sklearn", action="store_true", help="time gpudl only")
    p.add_argument("--seed", type=int, default=0, help="seed of the random data (default 0)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("repeat", "train", "query", "dim", "classes", "k"):
        if getattr(args, name) < 1:
            build_parser().error(f"--{name} must be at least 1")

    import numpy as np
    from gpudl.backend import DeviceError, resolve
    from gpudl.classic import KNeighborsClassifier

    rng = np.random.default_rng(args.seed)
    X = rng.random((args.train, args.dim), dtype=np.float32)
    y = rng.integers(0, args.classes, args.train)
    Q = rng.random((args.query, args.dim), dtype=np.float32)
    try:
        dev = resolve(args.device)
    except DeviceError as e:
        print(f"gpudl bench knn: {e}", file=sys.stderr)
        return 2
    out = {}

    def ours():
        out["gpudl"] = KNeighborsClassifier(args.k, args.metric, args.batch_size, dev).fit(X, y).predict(Q)
        dev.backend.synchronize()

    runners = {"gpudl": ours}
    meta = {"bench": "knn", "device": str(dev), "train": args.train, "query": args.query,
            "dim": args.dim, "classes": args.classes, "k": args.k, "metric": args.metric,
            "batch_size": args.batch_size, "repeat": args.repeat, "dtype": "float32"}
    sklearn = None
    if not args.no_sklearn:
        try:
            import sklearn
            from sklearn.neighbors import KNeighborsClassifier as SkKNN
        except ImportError:
            sklearn = None
            if not args.json:
                print("scikit-learn is not installed: gpudl's numbers only "
                      "(pip install scikit-learn to compare)", file=sys.stderr)
    if sklearn is not None:
        sk_metric = "euclidean" if args.metric == "l2" else "manhattan"
        meta["sklearn"] = sklearn.__version__

        def peer():
            knn = SkKNN(n_neighbors=args.k, algorithm="brute", metric=sk_metric)
            out["sklearn"] = knn.fit(X, y).predict(Q)

        runners["sklearn"] = peer

    from .bench import time_alternately
    times = time_alternately({name: (fn, lambda: None) for name, fn in runners.items()}, args.repeat)
    res = {f"{name}_ms": statistics.median(ts) * 1e3 for name, ts in times.items()}
    res.update({f"{name}_min_ms": min(ts) * 1e3 for name, ts in times.items()})
    if sklearn is not None:
        res["ratio"] = res["gpudl_ms"] / res["sklearn_ms"]
        res["same_predictions"] = float(np.mean(out["gpudl"] == out["sklearn"]))
    if args.json:
        print(json.dumps({**meta, **res}, indent=2))
        return 0
    print(f"gpudl bench knn: device={meta['device']} {args.train} train x {args.query} query x "
          f"{args.dim} float32, {args.classes} classes, k={args.k}, {args.metric}; "
          f"fit + predict, median of {args.repeat}")
    print(f"  gpudl    {res['gpudl_ms']:9.1f} ms  (min {res['gpudl_min_ms']:.1f})")
    if sklearn is not None:
        print(f"  sklearn  {res['sklearn_ms']:9.1f} ms  (min {res['sklearn_min_ms']:.1f}; "
              f"scikit-learn {meta['sklearn']}, brute)")
        print(f"  gpudl / sklearn = {res['ratio']:.2f}; same prediction on "
              f"{res['same_predictions']:.1%} of the queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
