"""Device and host time of single backend calls on a GPU, printed as one JSON line.

    PYTHONPATH=. python3 scripts/gpu_kernel_times.py LABEL

Each case is timed by cupyx.profiler.benchmark (40 calls after 5 warm-ups): [device ms, host ms],
means.  The device figure is the span between CUDA events around the call, so it includes any
wait for the host's launch; device minus host bounds the kernels' own time.  To compare two
trees, run this file from each with PYTHONPATH pointing at it (not ``python -m``, which puts the
current directory first on sys.path).  SMALL=1 runs tiny shapes on the emulated GPU (a check of
the script, not a timing).  Cases: batch norm and a 16->16 3x3 conv on 64x16x32x32, 2x2 pooling
on 256x64x64x64, softmax cross-entropy on 8192x4096.
"""
import json, os, sys, time
import numpy as np
small = os.environ.get("SMALL") == "1"          # local check on the emulated backend
if small:
    from gpudl.testing import emulated_backend
    be = emulated_backend()
    def bench(fn):
        t = time.perf_counter(); fn(); return ((time.perf_counter() - t) * 1e3, 0.0)
else:
    from gpudl.bench import get_backend
    import cupyx.profiler as P
    be = get_backend("cuda")
    def bench(fn):
        r = P.benchmark(fn, n_repeat=40, n_warmup=5)
        return (float(np.mean(r.gpu_times)) * 1e3, float(np.mean(r.cpu_times)) * 1e3)
rng = np.random.default_rng(0)
def arr(shape): return be.asarray(rng.standard_normal(shape).astype(np.float32))
res = {}
def case(name, fn):
    try:
        res[name] = bench(fn)
    except Exception as e:
        res[name] = repr(e)
N, HW, BIG, Z = (4, 8, (4, 4, 8, 8), (16, 64)) if small else (64, 32, (256, 64, 64, 64), (8192, 4096))
x = arr((N, 16, HW, HW)); w = be.asarray(np.ones(16, np.float32)); b = be.asarray(np.zeros(16, np.float32))
rm = be.asarray(np.zeros(16, np.float32)); rv = be.asarray(np.ones(16, np.float32))
case("bn fwd", lambda: be.batch_norm_forward(x, w, b, rm, rv, 1e-5, 0.1, True))
y, xhat, invstd = be.batch_norm_forward(x, w, b, rm, rv, 1e-5, 0.1, True)
g = arr((N, 16, HW, HW))
case("bn bwd", lambda: be.batch_norm_backward(g, xhat, invstd, w, True))
cw = arr((16, 16, 3, 3)); cb = be.asarray(np.zeros(16, np.float32))
case("conv fwd 16-16", lambda: be.conv2d_forward(x, cw, cb, (1, 1), (1, 1), (1, 1), 1))
case("conv bwd 16-16", lambda: be.conv2d_backward(x, cw, g, (1, 1), (1, 1), (1, 1), 1))
big = arr(BIG)
case("maxpool fwd", lambda: be.max_pool2d_forward(big, (2, 2), (2, 2), (0, 0)))
yb, am = be.max_pool2d_forward(big, (2, 2), (2, 2), (0, 0))
case("maxpool bwd", lambda: be.max_pool2d_backward(yb, am, big.shape, (2, 2), (2, 2), (0, 0)))
case("avgpool bwd", lambda: be.avg_pool2d_backward(yb, big.shape, (2, 2), (2, 2), (0, 0), True))
z = arr(Z); lab = be.asarray(rng.integers(0, Z[1], Z[0]).astype(np.int64))
gl = be.asarray(np.full(Z[0], 1 / Z[0], np.float32))
case("xent fwd", lambda: be.softmax_cross_entropy_forward(z, lab, 0.0))
loss, lse = be.softmax_cross_entropy_forward(z, lab, 0.0)
case("xent bwd", lambda: be.softmax_cross_entropy_backward(z, lab, lse, gl, 0.0))
print(json.dumps({sys.argv[1] if len(sys.argv) > 1 else "gpudl": res}))
