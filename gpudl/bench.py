"""Benchmarks: ``python -m gpudl.bench ops|models|knn|all [--device cpu] [--repeat N] [--json]``;
``python -m gpudl.bench show FILE.json`` prints the tables of a saved ``--json`` document.

``ops`` and ``models`` are entries of :data:`SUBCOMMANDS`: a function that adds
its own options to an argparse parser and a function that runs it; ``knn``
(:mod:`gpudl.bench_knn`, against scikit-learn) has its own parser, and ``all``
runs the three in turn.  Every subcommand takes ``--device``, ``--repeat`` and
``--json`` (``all`` hands them on to each part).

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
    """The backend object for ``device`` (None: the CPU)."""
    from gpudl.backend import resolve
    return resolve(device or "cpu").backend


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


def time_alternately(runners, repeat, warmup=2, settle=0.12, inner=1):
    """{name: [seconds, ...]} for ``runners`` {name: (fn, sync)}: each warmed up, then all
    timed in turn ``repeat`` times with a pause between samples.  Each sample is the
    mean of ``inner`` back-to-back calls (a training loop runs warm; a single call after
    the pause measures a cold start)."""
    for fn, sync in runners.values():
        for _ in range(warmup):
            fn()
            sync()
        time.sleep(settle)
    times = {name: [] for name in runners}
    for _ in range(repeat):
        for name, (fn, sync) in runners.items():
            times[name].append(_timed(fn, sync, inner))
            time.sleep(settle)
    return times


def compare(cases, repeat, warmup=2, settle=0.12, inner=1):
    """Time each case's ``ours`` and ``peer`` alternately (:func:`time_alternately`); medians in ms.

    cases: dicts with ``name``, ``ours`` (callable), ``ours_sync``, and
    optionally ``peer`` / ``peer_sync``.  Returns a list of result dicts.
    """
    results = []
    for c in cases:
        runners = {"ours": (c["ours"], c.get("ours_sync") or (lambda: None))}
        if c.get("peer") is not None:
            runners["peer"] = (c["peer"], c.get("peer_sync") or (lambda: None))
        times = time_alternately(runners, repeat, warmup, settle, inner)
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
    has_bw = any("gbps" in r for r in results)
    head = f"{'op (forward + backward)':<32} {'shape':<20} {'gpudl ms':>9}"
    if has_peer:
        head += f" {'torch ms':>9} {'gpudl/torch':>11}"
    if has_bw:
        head += f" {'GB/s (% of copy)':>17}"
    print(head, file=file)
    print("-" * len(head), file=file)
    for r in results:
        line = f"{r['name']:<32} {r['shape']:<20} {r['gpudl_ms']:>9.2f}"
        if has_peer:
            line += (f" {r['torch_ms']:>9.2f} {r['ratio']:>11.2f}" if "torch_ms" in r else " " * 21)
        if "gbps" in r:
            line += f" {r['gbps']:>9.0f} ({r['pct_of_copy']:3.0f}%)"
        print(line, file=file)


# ---------------------------------------------------------------------------
# ops: the kernel-level functions

_TARGET_INNER = 10      # calls per timed sample of the GPU targets' cases


def _ops_args(p):
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads for the PyTorch peer (default 2)")
    p.add_argument("--no-torch", action="store_true", help="time gpudl only")
    p.add_argument("--targets", action=argparse.BooleanOptionalAction, default=None,
                   help="also the GPU targets' cases: ResNet-20 convolutions at batch 128, pooling on "
                        "256 MiB, softmax cross-entropy on 8192x4096, with GB/s against a copy; "
                        f"each sample is {_TARGET_INNER} calls back to back, as in training "
                        "(default: on for a GPU, off for the CPU)")


class _OpsKit:
    """Builds compare() cases for kernel-level ops on one backend, with PyTorch's op as the peer."""

    def __init__(self, backend, torch, device, seed=0):
        import numpy as np
        self.np, self.backend, self.torch = np, backend, torch
        self.rng = np.random.default_rng(seed)
        self.tdev = torch_device(device)   # (TF32 is turned off by _peer for an FP32 comparison)
        self.F = torch.nn.functional if torch is not None else None

    def _case(self, name, shape, ours, peer=None, nbytes=None):
        case = {"name": name, "shape": shape, "ours": ours, "ours_sync": self.backend.synchronize}
        if peer is not None and self.torch is not None:
            sync = self.torch.cuda.synchronize if self.tdev == "cuda" else None
            case.update(peer=peer, peer_sync=sync)
        if nbytes is not None:
            case["bytes"] = nbytes
        return case

    def _T(self, a, grad=False):
        return self.torch.tensor(self.np.asarray(a), device=self.tdev, requires_grad=grad)

    def randn(self, shape, scale=1.0):
        return (self.rng.standard_normal(shape, dtype=self.np.float32) * scale).astype(self.np.float32)

    def conv(self, x_shape, out_channels, k=3, stride=1, pad=1):
        """conv2d forward + backward (all three gradients)."""
        np, be = self.np, self.backend
        N, C, H, W = x_shape
        x, w = self.randn(x_shape), self.randn((out_channels, C, k, k), (2.0 / (C * k * k)) ** 0.5)
        b = np.zeros(out_channels, np.float32)
        Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
        gy = self.randn((N, out_channels, Ho, Wo))
        cx, cw, cb, cgy = (be.asarray(a) for a in (x, w, b, gy))
        s, p, one = (stride, stride), (pad, pad), (1, 1)

        def ours():
            be.conv2d_forward(cx, cw, cb, s, p, one, 1)
            be.conv2d_backward(cx, cw, cgy, s, p, one, 1)
        peer = None
        if self.torch is not None:
            tx, tw, tb, tgy = self._T(x, True), self._T(w, True), self._T(b, True), self._T(gy)

            def peer():
                y = self.F.conv2d(tx, tw, tb, stride, pad)
                self.torch.autograd.grad(y, (tx, tw, tb), tgy)
        name = f"conv2d {k}x{k} {C}->{out_channels} pad{pad}" + (f" stride{stride}" if stride > 1 else "")
        return self._case(name, "x".join(map(str, x_shape)), ours, peer)

    def pool(self, kind, x_shape):
        """max or avg pool 2x2 forward + backward; bytes: the fewest a GPU must move."""
        be = self.backend
        x = self.randn(x_shape)
        cx = be.asarray(x)
        two, zero = (2, 2), (0, 0)
        if kind == "max":
            def ours():
                y, arg = be.max_pool2d_forward(cx, two, two, zero)
                be.max_pool2d_backward(y, arg, cx.shape, two, two, zero)
            nbytes = x.nbytes * (1 + 1 / 4 + 1 / 4 + 1 / 4 + 1 / 4 + 1)   # x; y, argmax; gy, argmax; gx
        else:
            def ours():
                y = be.avg_pool2d_forward(cx, two, two, zero, True)
                be.avg_pool2d_backward(y, cx.shape, two, two, zero, True)
            nbytes = x.nbytes * (1 + 1 / 4 + 1 / 4 + 1)                   # x; y; gy; gx
        peer = None
        if self.torch is not None:
            tx, fn = self._T(x, True), getattr(self.F, f"{kind}_pool2d")

            def peer():
                y = fn(tx, 2)
                self.torch.autograd.grad(y, tx, y.detach())
        return self._case(f"{kind}_pool2d 2x2", "x".join(map(str, x_shape)), ours, peer, nbytes)

    def xent(self, n, c):
        """softmax cross-entropy forward + backward; bytes: logits read twice, their gradient written."""
        np, be = self.np, self.backend
        z = self.randn((n, c), 2.0)
        labels = self.rng.integers(0, c, n)
        gl = np.full(n, 1.0 / n, np.float32)
        cz, cl, cgl = be.asarray(z), be.asarray(labels), be.asarray(gl)

        def ours():
            loss, lse = be.softmax_cross_entropy_forward(cz, cl, 0.0)
            be.softmax_cross_entropy_backward(cz, cl, lse, cgl, 0.0)
        peer = None
        if self.torch is not None:
            tz, tl, tgl = self._T(z, True), self._T(labels), self._T(gl)

            def peer():
                loss = self.F.cross_entropy(tz, tl, reduction="none")
                self.torch.autograd.grad(loss, tz, tgl)
        return self._case("softmax_cross_entropy", f"{n}x{c}", ours, peer, 3 * z.nbytes)


def _ops_cases(backend, torch, device, seed=0):
    kit = _OpsKit(backend, torch, device, seed)
    x = (64, 32, 32, 32)
    return [kit.conv(x, 32), kit.pool("max", x), kit.pool("avg", x), kit.xent(512, 1000)]


# the GPU targets of the GPU-backend issue: ResNet-20's convolutions at batch 128 (geometric
# mean within 2x of cuDNN), softmax cross-entropy on 8192 x 4096 logits (>= 70% of the memory
# bandwidth), pooling on a 256 MiB tensor (>= 60%)
_RESNET20_CONVS = [((128, 16, 32, 32), 16, 1), ((128, 16, 32, 32), 32, 2), ((128, 32, 16, 16), 32, 1),
                   ((128, 32, 16, 16), 64, 2), ((128, 64, 8, 8), 64, 1)]


def _target_cases(backend, torch, device, seed=0):
    kit = _OpsKit(backend, torch, device, seed)
    big = (256, 64, 64, 64)                                   # 256 MiB of float32
    return ([kit.conv(x, o, stride=s) for x, o, s in _RESNET20_CONVS]
            + [kit.pool("max", big), kit.pool("avg", big), kit.xent(8192, 4096)])


def _copy_bandwidth(backend, nbytes=1 << 29):
    """GB/s of a device-to-device copy (bytes read + written): the practical memory ceiling."""
    import numpy as np
    xp = backend.xp
    a = xp.ones(nbytes // 4, dtype=np.float32)
    b = xp.empty_like(a)
    times = []
    for _ in range(5):
        backend.synchronize()
        t0 = time.perf_counter()
        xp.copyto(b, a)
        backend.synchronize()
        times.append(time.perf_counter() - t0)
    return 2 * a.nbytes / min(times) / 1e9


def _add_bandwidth(results, cases, ceiling):
    """GB/s of the bandwidth-bound cases, and their share of ``ceiling``; a geometric-mean conv row."""
    import math
    for r, c in zip(results, cases):
        if "bytes" in c:
            r["gbps"] = c["bytes"] / (r["gpudl_ms"] * 1e-3) / 1e9
            r["pct_of_copy"] = 100.0 * r["gbps"] / ceiling
    convs = [r for r in results if r["name"].startswith("conv2d") and "ratio" in r]
    if convs:
        def gmean(key):
            return math.prod(r[key] for r in convs) ** (1 / len(convs))
        results.append({"name": "conv2d ResNet-20 shapes", "shape": "geometric mean",
                        "gpudl_ms": gmean("gpudl_ms"), "torch_ms": gmean("torch_ms"), "ratio": gmean("ratio")})


def _report(kind, args, results, torch, meta, what):
    """Print (or dump as JSON) one subcommand's results with the peer's version."""
    meta = {"device": args.device, **meta, "repeat": args.repeat}
    if str(args.device).startswith("cpu"):
        from .backend import _native     # which CPU path ran (GPUDL_NATIVE=0 times the NumPy one)
        meta["native"] = "on" if _native.lib() is not None else "off"
    if torch is not None:
        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    doc = {"bench": kind, **meta, "results": results}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_doc(doc, note=f" ({what})")
    return 0


def _print_doc(d, file=sys.stdout, note=""):
    """One benchmark document's header line (its scalar metadata) and table."""
    print(f"gpudl bench {d['bench']}: " + " ".join(f"{k}={v}" for k, v in d.items()
                                                 if k not in ("bench", "results")
                                                 and not isinstance(v, (dict, list))) + note, file=file)
    if "results" in d:
        print_table(d["results"], file=file)


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
    meta = {"backend": getattr(backend, "name", "?")}
    targets = args.targets if args.targets is not None else args.device not in (None, "cpu")
    if targets:
        cases = _target_cases(backend, torch, args.device)
        # back to back, as in training: the device's throughput, not one call's round trip
        found = compare(cases, args.repeat, inner=_TARGET_INNER)
        meta["target_inner"] = _TARGET_INNER
        meta["copy_gbps"] = _copy_bandwidth(backend)
        _add_bandwidth(found, cases, meta["copy_gbps"])
        results += found
    return _report("ops", args, results, torch, meta, "medians")


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
        description="gpudl benchmarks, next to PyTorch where it is installed",
        epilog="also: knn (k-nearest neighbours against scikit-learn; knn --help for its options) "
               "and all (ops, models and knn in turn, with --device, --repeat and --json handed on); "
               "show FILE.json prints the tables of a saved --json document")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add_args, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        add_args(p)
    return parser


def _all(rest):
    """ops, models and knn in turn; with --json, one JSON document holding all three.

    ``--[no-]targets`` goes to ops alone.  With --json the document is printed even when
    a part fails or the run is stopped (Ctrl-C, or SIGTERM from ``timeout``): the parts
    done so far, and ``"stopped"`` / ``"errors"`` saying what happened.
    """
    import signal
    import traceback

    from .bench_knn import main as knn_main
    shared = [a for a in rest if a not in ("--targets", "--no-targets")]
    knn_rest = ["--json"] * ("--json" in rest)
    for opt in ("--device", "--repeat"):
        if opt in rest and rest.index(opt) + 1 < len(rest):
            knn_rest += [opt, rest[rest.index(opt) + 1]]
        knn_rest += [a for a in rest if a.startswith(opt + "=")]
    runs = [("ops", lambda: main(["ops"] + rest)), ("models", lambda: main(["models"] + shared)),
            ("knn", lambda: knn_main(knn_rest))]
    if "--json" not in rest:
        return max(run() for _, run in runs)
    doc, rc = {"bench": "all", "parts": []}, 0

    def stop(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for name, run in runs:
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    rc = max(rc, run())
            except KeyboardInterrupt:
                doc["stopped"] = f"during {name}"
                rc = 130
                break
            except Exception:                      # keep the other parts
                doc.setdefault("errors", {})[name] = traceback.format_exc(limit=5)
                rc = max(rc, 1)
            if buf.getvalue().strip():
                doc["parts"].append(json.loads(buf.getvalue()))
    finally:
        signal.signal(signal.SIGTERM, previous)
        print(json.dumps(doc, indent=2), flush=True)
    return rc


def show(path, file=sys.stdout):
    """Print the tables of a ``--json`` document (one subcommand's, or ``all``'s parts)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: expected the JSON that `python -m gpudl.bench ... --json` "
                         f"prints ({e})") from None
    parts = doc.get("parts", [doc]) if isinstance(doc, dict) else None
    if not isinstance(parts, list) or not all(isinstance(d, dict) and "bench" in d for d in parts):
        raise ValueError(f"{path}: expected a benchmark document with 'bench' (or 'parts'), "
                         f"got {type(doc).__name__}")
    for d in parts:
        _print_doc(d, file)
        print(file=file)
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["show"]:         # the tables of a saved --json document
        if len(argv) != 2:
            print("usage: python -m gpudl.bench show FILE.json", file=sys.stderr)
            return 2
        try:
            return show(argv[1])
        except ValueError as e:
            print(f"gpudl bench show: {e}", file=sys.stderr)
            return 2
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
