"""Benchmarks: ``python -m gpudl.bench ops|models|knn|all [--device cpu] [--repeat N] [--json]``.

Each subcommand is an entry of :data:`SUBCOMMANDS`: a function that adds its
own options to an argparse parser and a function that runs it.  Every
subcommand gets the common options ``--device``, ``--repeat`` and ``--json``.

``ops`` times the backend's kernel-level functions (forward + backward) next
to PyTorch when PyTorch is installed (it is an optional, benchmark-only peer:
``pip install torch==2.13.0``).  The two are run alternately in one process
and the medians are compared; between runs the process pauses briefly so
that the BLAS / OpenMP worker threads one library leaves spinning do not
steal the cores from the other's next run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time

# ---------------------------------------------------------------------------
# shared plumbing


def get_backend(device):
    """The backend object for ``device`` ("cpu" needs nothing but NumPy)."""
    if device in (None, "cpu"):
        from gpudl.backend import numpy_backend
        return numpy_backend
    from gpudl.backend import resolve
    return resolve(device).backend


def load_torch(threads):
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install
        return None
    torch.set_num_threads(int(threads))
    return torch


def torch_device(device):
    return "cpu" if device in (None, "cpu") else "cuda"


def _timed(fn, sync, inner=1):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    sync()
    return (time.perf_counter() - t0) / inner


def compare(cases, repeat, warmup=2, settle=0.12, inner=1):
    """Time each case's ``ours`` and ``peer`` alternately; medians in ms.

    cases: dicts with ``name``, ``ours`` (callable), ``ours_sync``, and
    optionally ``peer`` / ``peer_sync``.  Each sample is the mean of
    ``inner`` back-to-back calls (a training loop runs warm; a single call
    after the pause measures a cold start).  Returns a list of result dicts.
    """
    results = []
    for c in cases:
        runners = [("ours", c["ours"], c.get("ours_sync") or (lambda: None))]
        if c.get("peer") is not None:
            runners.append(("peer", c["peer"], c.get("peer_sync") or (lambda: None)))
        times = {k: [] for k, _, _ in runners}
        for _, fn, sync in runners:
            for _ in range(warmup):
                fn()
                sync()
            time.sleep(settle)
        for _ in range(repeat):
            for k, fn, sync in runners:
                times[k].append(_timed(fn, sync, inner))
                time.sleep(settle)
        r = {"name": c["name"], "shape": c.get("shape", ""),
             "gpudl_ms": statistics.median(times["ours"]) * 1e3,
             "gpudl_min_ms": min(times["ours"]) * 1e3}
        if "peer" in times:
            r["torch_ms"] = statistics.median(times["peer"]) * 1e3
            r["torch_min_ms"] = min(times["peer"]) * 1e3
            r["ratio"] = r["gpudl_ms"] / r["torch_ms"]
        results.append(r)
    return results


def print_table(results, file=sys.stdout):
    has_peer = any("torch_ms" in r for r in results)
    head = f"{'op (forward + backward)':<28} {'shape':<20} {'gpudl ms':>9}"
    if has_peer:
        head += f" {'torch ms':>9} {'gpudl/torch':>11}"
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in results:
        line = f"{r['name']:<28} {r['shape']:<20} {r['gpudl_ms']:>9.2f}"
        if "torch_ms" in r:
            line += f" {r['torch_ms']:>9.2f} {r['ratio']:>11.2f}"
        print(line, file=file)


# ---------------------------------------------------------------------------
# ops: the kernel-level functions

def _ops_args(p):
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads for the PyTorch peer (default 2)")
    p.add_argument("--no-torch", action="store_true", help="time gpudl only")


def _ops_cases(backend, torch, device, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    sync = backend.synchronize
    A = backend.asarray
    cases = []

    def peer_sync():
        if torch is not None and torch_device(device) == "cuda":
            torch.cuda.synchronize()

    tdev = torch_device(device)   # (TF32 is turned off by _peer for an FP32 comparison)

    def T(a, grad=False):
        return torch.tensor(np.asarray(a), device=tdev, requires_grad=grad)

    # conv2d 3x3, 32 -> 32, padding 1 on (64, 32, 32, 32)
    x = rng.standard_normal((64, 32, 32, 32), dtype=np.float32)
    w = (rng.standard_normal((32, 32, 3, 3), dtype=np.float32) * (2.0 / 288) ** 0.5).astype(np.float32)
    b = np.zeros(32, np.float32)
    gy = rng.standard_normal((64, 32, 32, 32), dtype=np.float32)
    cx, cw, cb, cgy = A(x), A(w), A(b), A(gy)
    one = (1, 1)

    def conv_ours():
        backend.conv2d_forward(cx, cw, cb, one, one, one, 1)
        backend.conv2d_backward(cx, cw, cgy, one, one, one, 1)

    conv = {"name": "conv2d 3x3 32->32 pad1", "shape": "64x32x32x32",
            "ours": conv_ours, "ours_sync": sync}
    if torch is not None:
        tx, tw, tb, tgy = T(x, True), T(w, True), T(b, True), T(gy)
        F = torch.nn.functional

        def conv_peer():
            y = F.conv2d(tx, tw, tb, 1, 1)
            torch.autograd.grad(y, (tx, tw, tb), tgy)

        conv.update(peer=conv_peer, peer_sync=peer_sync)
    cases.append(conv)

    # max and average pool 2x2 on the same tensor
    def max_ours():
        y, arg = backend.max_pool2d_forward(cx, (2, 2), (2, 2), (0, 0))
        backend.max_pool2d_backward(y, arg, cx.shape, (2, 2), (2, 2), (0, 0))

    def avg_ours():
        y = backend.avg_pool2d_forward(cx, (2, 2), (2, 2), (0, 0), True)
        backend.avg_pool2d_backward(y, cx.shape, (2, 2), (2, 2), (0, 0), True)

    for name, ours, peer_fn in (("max_pool2d 2x2", max_ours, "max_pool2d"),
                                ("avg_pool2d 2x2", avg_ours, "avg_pool2d")):
        case = {"name": name, "shape": "64x32x32x32", "ours": ours, "ours_sync": sync}
        if torch is not None:
            def peer(fn=getattr(F, peer_fn)):
                y = fn(tx, 2)
                torch.autograd.grad(y, tx, y.detach())

            case.update(peer=peer, peer_sync=peer_sync)
        cases.append(case)

    # softmax cross-entropy, 512 x 1000
    z = (rng.standard_normal((512, 1000), dtype=np.float32) * 2).astype(np.float32)
    labels = rng.integers(0, 1000, 512)
    gl = np.full(512, 1.0 / 512, np.float32)
    cz, cl, cgl = A(z), A(labels), A(gl)

    def xent_ours():
        loss, lse = backend.softmax_cross_entropy_forward(cz, cl, 0.0)
        backend.softmax_cross_entropy_backward(cz, cl, lse, cgl, 0.0)

    xent = {"name": "softmax_cross_entropy", "shape": "512x1000",
            "ours": xent_ours, "ours_sync": sync}
    if torch is not None:
        tz, tl, tgl = T(z, True), T(labels), T(gl)

        def xent_peer():
            loss = F.cross_entropy(tz, tl, reduction="none")
            torch.autograd.grad(loss, tz, tgl)

        xent.update(peer=xent_peer, peer_sync=peer_sync)
    cases.append(xent)
    return cases


def _report(kind, args, results, torch, meta, what):
    """Print (or dump as JSON) one subcommand's results with the peer's version."""
    meta = {"device": args.device, **meta, "repeat": args.repeat}
    if torch is not None:
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps({"bench": kind, **meta, "results": results}, indent=2))
        return 0
    print(f"gpudl bench {kind}: " + " ".join(f"{k}={v}" for k, v in meta.items() if not k.startswith("torch"))
          + f" ({what})" + (f"; torch {meta['torch']}, {meta['torch_threads']} threads" if torch else ""))
    print_table(results)
    return 0


def _peer(args):
    """PyTorch for the comparison (None with --no-torch or when it is not installed)."""
    torch = None if args.no_torch else load_torch(args.threads)
    if torch is None and not args.no_torch and not args.json:
        print("PyTorch is not installed: gpudl's numbers only "
              "(pip install torch==2.13.0 to compare)", file=sys.stderr)
    if torch is not None and args.device not in (None, "cpu"):
        torch.backends.cudnn.allow_tf32 = False          # an FP32 comparison
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return torch


def _ops_run(args):
    backend = get_backend(args.device)
    torch = _peer(args)
    results = compare(_ops_cases(backend, torch, args.device), args.repeat)
    return _report("ops", args, results, torch, {"backend": getattr(backend, "name", "?")}, "medians")


# ---------------------------------------------------------------------------
# models: whole training steps

def _models_args(p):
    from .bench_models import MODELS
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads for the PyTorch peer (default 2)")
    p.add_argument("--no-torch", action="store_true", help="time gpudl only")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--inner", type=int, default=5,
                   help="steps run back to back per timed sample, as in a training loop (default 5)")


def _models_run(args):
    from .bench_models import cases
    torch = _peer(args)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    results = compare(cases(args.device, torch, names), args.repeat, inner=args.inner)
    return _report("models", args, results, torch, {"inner": args.inner}, "medians of one training step")


# ---------------------------------------------------------------------------
# command line

# name -> (help, add_arguments(parser), run(args) -> exit code)
SUBCOMMANDS = {
    "ops": ("time the kernel-level ops (forward + backward) against PyTorch",
            _ops_args, _ops_run),
    "models": ("time one training step of each model against PyTorch",
               _models_args, _models_run),
}


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cpu",
                        help="device to benchmark: cpu (default), cuda, cuda:N")
    common.add_argument("--repeat", type=int, default=15,
                        help="timed runs per benchmark and library (default 15)")
    common.add_argument("--json", action="store_true", help="print the results as JSON")
    parser = argparse.ArgumentParser(
        prog="python -m gpudl.bench",
        description="gpudl benchmarks, next to PyTorch where it is installed")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add_args, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        add_args(p)
    return parser


def _all(rest):
    """ops, models and knn in turn; with --json, one JSON document holding all three."""
    from .bench_knn import main as knn_main
    knn_rest = ["--json"] * ("--json" in rest)
    if "--device" in rest and rest.index("--device") + 1 < len(rest):
        knn_rest += ["--device", rest[rest.index("--device") + 1]]
    knn_rest += [a for a in rest if a.startswith("--device=")]
    runs = [lambda: main(["ops"] + rest), lambda: main(["models"] + rest), lambda: knn_main(knn_rest)]
    if "--json" not in rest:
        return max(run() for run in runs)
    parts, rc = [], 0
    for run in runs:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = max(rc, run())
        if buf.getvalue().strip():
            parts.append(json.loads(buf.getvalue()))
    print(json.dumps({"bench": "all", "parts": parts}, indent=2))
    return rc


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["knn"]:          # KNN against scikit-learn has its own options
        from .bench_knn import main as knn_main
        return knn_main(argv[1:])
    if argv[:1] == ["all"]:          # ops, models and knn with the shared options
        return _all(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    from gpudl.backend import DeviceError
    try:
        return SUBCOMMANDS[args.command][2](args)
    except DeviceError as e:
        print(f"gpudl bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
