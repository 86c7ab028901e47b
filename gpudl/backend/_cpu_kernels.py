"""Kernel-level ops for the CPU backend, in vectorised NumPy and native C.

Ungrouped convolutions, max pooling, ReLU's backward (and, in
:mod:`._cpu_norm`, batch norm) run in the native kernels of ``kernels/cpu_native.c`` (see
:mod:`._native` and the C source: each output channel a sum of shifted rows
of a zero-padded grid, held in vector registers, with no columns built; a
strided convolution reads one polyphase plane per tap) whenever that library
could be built for this machine.  Each thread packs and computes its own part
of the batch.  Everything below is the NumPy path, which does all the rest
(grouped convolutions, average pooling, softmax, max pooling with tiling
windows on short rows) and all of it where no C compiler answers; the tests
run both paths against the same references.

These are the functions :mod:`gpudl.backend.numpy_backend` exports under the
backend contract (see :mod:`gpudl.backend`).  They take and return
``numpy.ndarray``; the result has the input's floating dtype (float32 stays
float32, float64 works for gradchecks).  Arguments are assumed validated by the
caller; any strides are accepted.

Convolution ("shifted GEMM", no im2col)
    The input is packed once into a flat, zero-padded, channels-last buffer
    ``(groups, phases, rows, C // groups)``: each image is a grid of
    ``Hq x Wq`` rows.  For stride 1 there is one phase, the padded image;
    for stride ``s`` the padded image is split into its polyphase
    components, so that every kernel tap ``(kh, kw)`` reads one phase at a
    fixed *row shift*.  Neighbouring grid lines share their zero padding (a
    read left of a line's data lands in the previous line's trailing zeros),
    so a 32x32 image with padding 1 takes 33x33 rows, not 34x34.  The output
    is computed for every grid row (those off the ``Ho x Wo`` image are
    dropped), so each tap is one product on a contiguous slice:

        Y  (M, O)  += X[shift : shift + M] @ W_tap          forward
        gX[shift : shift + M] += G @ W_tap.T                 input gradient
        gW_tap      = X[shift : shift + M].T @ G             weight gradient

    A 1x1 convolution is a single product.  When the channels per group are
    few (a first layer, depthwise convolutions) such products are too thin,
    so the taps are gathered into columns instead (channels-first, one
    contiguous row copy per tap and channel) and one product per group does
    the work; its gradient is scattered back with one row add per tap.
    How the products are run (cut into single-threaded pieces, spread over
    a thread pool) is explained at ``CPU threads`` below.

Pooling
    One strided view of the (padded) input per window tap (when the windows
    tile the input, one transpose first makes every tap contiguous), reduced
    with ``np.maximum`` / ``np.add`` chains over the taps.  The max pool
    tracks the winning tap in a byte per output (strict ``>``: the first
    maximum in row-major window order wins, as in PyTorch) and turns it into
    the flat index at the end.  Its backward writes each tap's share once
    when the windows tile the input, and otherwise scatter-adds with
    ``np.bincount`` (overlapping windows accumulate; deterministic).

Softmax cross-entropy
    A max-shifted log-sum-exp, stable for logits of any magnitude.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpudl._errstate import quiet

from . import _native
from ._shared import pool_tiles as _tiles

try:  # BLAS with beta = 1 accumulates in place; NumPy's matmul cannot
    from scipy.linalg import blas as _blas
    _GEMM = {np.dtype(np.float32): _blas.sgemm, np.dtype(np.float64): _blas.dgemm}
except Exception:  # pragma: no cover - scipy is a dependency, but be robust
    _GEMM = {}

__all__ = [
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
]

# Below this many input channels per group a tap's GEMM is too thin: gather
# columns instead (see the module docstring).  Measured on 3x3 and 5x5 convs:
# columns win at 1-3 channels, tie at 6, lose from 4-8 up (2x at 16).
_COLS_BELOW = 8
# Channels copied per pass when transposing NCHW <-> channels-last: a longer
# inner run over channels strides the source by whole planes (often a multiple
# of 4 KiB), and the cache's set associativity then thrashes.
_CHUNK = 8


# ---------------------------------------------------------------------------
# small helpers

# kernel-level ops run without NumPy's floating-point warnings: like the CUDA
# kernels (and PyTorch), an inf or NaN in the data is a value, not an event
_quiet = quiet


def _float_dtype(*arrays):
    dt = np.result_type(*arrays)
    if dt.kind != "f":
        dt = np.dtype(np.float64)
    return dt


def _gemm(a, b, c, accumulate):
    """``c (m, n) (+)= a (m, k) @ b (k, n)``, all C-contiguous, in place."""
    if c.size == 0:
        return
    if a.shape[1] == 0:
        if not accumulate:
            c.fill(0)
        return
    f = _GEMM.get(c.dtype)
    if (f is not None and a.dtype == c.dtype and b.dtype == c.dtype
            and a.flags.c_contiguous and b.flags.c_contiguous
            and c.flags.c_contiguous):
        # Column-major view of the same memory: c.T = b.T @ a.T, where every
        # transposed operand is Fortran-contiguous, so f2py copies nothing.
        r = f(1.0, b.T, a.T, 1.0 if accumulate else 0.0, c.T, overwrite_c=1)
        if r.__array_interface__["data"][0] != c.__array_interface__["data"][0]:
            c[...] = r.T  # f2py had to copy: keep the result anyway
        return
    if accumulate:
        c += a @ b
    else:
        np.matmul(a, b, out=c)


# --- the C allocator -----------------------------------------------------------
#
# glibc hands freed memory at the top of a heap back to the system once more
# than its trim threshold lies free there, and the next big array faults
# every page back in, zeroed by the kernel.  A training step frees and
# reallocates tens of MiB of activations and kernel temporaries, so with
# glibc's own (dynamic) thresholds the small CIFAR CNN took 4,200-4,700
# minor page faults a step and ResNet-20 6,500-6,800: 15-20 ms of a 130-150
# ms CIFAR CNN step and 5-7% of ResNet-20's.  Fixed thresholds -- arrays up
# to 32 MiB (glibc's ceiling) from the heap, up to 64 MiB kept free at its
# top -- leave one or two faults a step at the same peak memory (206 vs 202
# MiB for the CIFAR CNN).  PyTorch users get the same effect by preloading
# jemalloc or tcmalloc.  Set once, when this module loads; not where the
# C library is not glibc, where a MALLOC_*_ variable or GLIBC_TUNABLES already
# tunes glibc's malloc, or with GPUDL_MALLOC_TUNING=0.

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3           # glibc's malloc.h
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 64 << 20


def _tune_allocator(environ=os.environ):
    """Fix glibc's thresholds as above; True when they were set."""
    if (environ.get("GPUDL_MALLOC_TUNING", "").strip() == "0" or not sys.platform.startswith("linux")
            or any(k.startswith("MALLOC_") and k.endswith("_") for k in environ)
            or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version                       # glibc only (musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) & bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


_ALLOCATOR_TUNED = _tune_allocator()


# --- CPU threads --------------------------------------------------------------
#
# OpenBLAS parallelises one big GEMM over its own threads, which meet at spin
# barriers; as soon as another process holds a core, every barrier waits for
# a time slice.  On a 2-core machine shared with one other busy process this
# made GEMMs 10-200x slower (worst for the weight gradient, whose reduction
# over every pixel has hundreds of barriers).  OpenBLAS runs a GEMM with
# m * n * k <= 2**18 on the calling thread, so the products here are cut
# into such pieces (one batched ``np.matmul`` per block of rows: one C loop,
# no Python per piece), and the blocks of big products are spread over a
# small thread pool of our own (NumPy releases the GIL).  On an idle machine
# this is as fast as OpenBLAS's threading; on a busy one it degrades
# gracefully.

def _cpu_count():
    """Threads to use: GPUDL_NUM_THREADS, else OMP_NUM_THREADS, else the
    CPUs this process may run on."""
    for var in ("GPUDL_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            n = int(os.environ.get(var, "").strip() or 0)
        except ValueError:
            n = 0
        if n > 0:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_NCPU = _cpu_count()
_SERIAL_FLOPS = 1e8             # convs smaller than this run on the caller alone
                                # (LeNet's 6->16 conv: a 6.5 ms step, not 7.8, native)
_local = threading.local()


# BLAS's own threads and the pool's.  After a multi-threaded call
# OpenBLAS's workers spin for about 0.1 s (2**28 cycles) waiting for more
# work, and the spinning takes a core from whatever runs next.  Alone that
# is cheap (their hand-off is far quicker than the pool's: a 128x784x256
# product takes 280 us on OpenBLAS's two threads, 430 us cut in two over
# the pool), but next to the pool it is not: in a CIFAR CNN step one
# worker, woken by the fully connected layer, spun through 76 ms of each
# 170 ms step (per-thread CPU time from /proc/self/task), and the
# convolutions' backward ran 1.5-2x slower than alone.  So work that uses
# the pool holds BLAS at one thread (a process-wide setting, restored when
# the last such call returns), and while the pool is busy (used in the
# last _POOL_RECENT seconds) big products are cut over the pool rather
# than handed to BLAS's threads.

class _BlasThreads:
    """``with _blas_held:`` -- BLAS at one thread inside, as before outside.

    Counted across threads: the first to enter saves and lowers each
    library's thread count, the last to leave restores it.  Libraries are
    found once with threadpoolctl (OpenBLAS with its own pthreads pool: the
    one whose workers spin); without it this is a no-op.  The count is the
    library's one process-wide setting: another thread that changes it
    meanwhile (threadpoolctl's limits) may find it restored under its feet,
    and the other way round.  A child forked during a hold gets the saved
    counts back and starts unheld."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._libs = None          # [(get, set)] of ctypes functions
        self._saved = ()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self):
        self._lock = threading.Lock()      # a thread that held it is gone
        for set_, n in self._saved:
            set_(n)
        self._depth, self._saved = 0, ()

    @staticmethod
    def _find():
        try:
            from threadpoolctl import ThreadpoolController
            ctls = ThreadpoolController().lib_controllers
        except Exception:          # missing, or a library it cannot read
            return []
        libs = []
        for lc in ctls:
            if (getattr(lc, "internal_api", "") != "openblas"
                    or getattr(lc, "threading_layer", "") != "pthreads"):
                continue
            fns = []
            for base in ("openblas_get_num_threads", "openblas_set_num_threads"):
                for name in (base, "scipy_" + base, base + "64_", "scipy_" + base + "64_"):
                    f = getattr(lc.dynlib, name, None)
                    if f is not None:
                        fns.append(f)
                        break
            if len(fns) == 2:
                libs.append(tuple(fns))
        return libs

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                if self._libs is None:
                    self._libs = self._find()
                saved = []
                for get, set_ in self._libs:
                    n = get()
                    if n > 1:
                        set_(1)
                        saved.append((set_, n))
                self._saved = saved
            self._depth += 1

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for set_, n in self._saved:
                    set_(n)
                self._saved = ()


_blas_held = _BlasThreads()
_NO_HOLD = contextlib.nullcontext()
_POOL_RECENT = 0.25             # seconds: OpenBLAS's spin is ~0.1 s
_pool_used_at = -1e9            # time.monotonic() of the last pool hand-off


def _hold_blas(on=True):
    """``_blas_held`` when the pool may run, else a no-op context."""
    return _blas_held if on and _threads() > 1 else _NO_HOLD


def _threads():
    """Threads the current call may use: 1 inside :func:`_serial`, else _NCPU."""
    return 1 if getattr(_local, "serial", False) else _NCPU


class _serial:
    """Run a small problem on the calling thread: the pool's hand-offs cost
    more than they save below ~1e8 flops (LeNet's convs run 2x faster)."""

    def __init__(self, on):
        self.on = on

    def __enter__(self):
        self.prev = getattr(_local, "serial", False)
        _local.serial = self.prev or self.on

    def __exit__(self, *exc):
        _local.serial = self.prev
_SMALL_MNK = 1 << 18            # OpenBLAS: single-threaded at or below this
_MIN_CHUNK = 32                 # fewer rows per piece than this: use plain BLAS
_SERIAL_MIN_CHUNK = 512         # the same on the caller alone (see _chunk)
_POOL_MIN_MNK = 1 << 22         # less work than this: the pieces run on the caller
_POOL_SPLIT_MIN = 1 << 20       # elements: below this pooling stays on one thread
_BLOCK_ELEMS = 1 << 18          # output elements per task of a tap sum
_pool = None
_pool_pid = None
_pool_lock = threading.Lock()


def _get_pool():
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:       # (re)create after a fork
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                _pool = ThreadPoolExecutor(max_workers=_NCPU,
                                           thread_name_prefix="gpudl-cpu")
                _pool_pid = pid
    return _pool


def _parallel(fn, items, mark=True):
    """``[fn(i) for i in items]``, spread over the pool when it helps;
    ``mark``: count this as the pool being busy (see matmul)."""
    global _pool_used_at
    items = list(items)
    if (_threads() <= 1 or len(items) <= 1 or getattr(_local, "in_task", False)
            or threading.current_thread().name.startswith("gpudl-cpu")):
        return [fn(i) for i in items]       # (inside a task: no nested split)
    if mark:
        _pool_used_at = time.monotonic()
    err = np.geterr()              # the caller's errstate, for each task

    def run(i):
        with np.errstate(**err):
            return fn(i)

    # The first item runs here while the pool runs the rest: one hand-off
    # fewer (~45 us for two items through the pool alone), and the caller's
    # core works instead of waiting.  Every task is waited for before an
    # error leaves, so no kernel still writes into arrays being freed.
    futures = [_get_pool().submit(run, i) for i in items[1:]]
    _local.in_task = True
    try:
        first = fn(items[0])
    finally:
        _local.in_task = False
        for f in futures:
            f.exception()          # waits; an error comes out of result() below
    return [first] + [f.result() for f in futures]


def _run_tasks(fn, tasks):
    """Run ``(pooled, task)`` pairs: the small ones here, the others on the
    pool; results in the order given."""
    results = [None] * len(tasks)
    pooled = [i for i, (p_, _) in enumerate(tasks) if p_]
    for i, (p_, t) in enumerate(tasks):
        if not p_:
            results[i] = fn(t)
    for i, r in zip(pooled, _parallel(fn, [tasks[i][1] for i in pooled])):
        results[i] = r
    return results


def _chunk(k, n, dtype):
    """How to cut a (rows, k) @ (k, n) product into single-threaded pieces:
    ``(rows per piece, columns per piece)``, or None to keep plain BLAS (no
    threads, or a k so wide that even thin pieces would be too small)."""
    if dtype not in _GEMM:
        return None
    if _threads() <= 1:
        # On the caller alone, still cut into pieces that OpenBLAS runs on
        # this thread: one plain call would wake its threads, whose spin
        # barriers make it 5-10x slower while another process holds a core
        # (LeNet's conv2: 5-24 ms instead of 1), and thin products (few rows
        # and columns, a long R: LeNet's conv1) run 2-4x faster as pieces
        # even on an idle machine.
        ch = _SMALL_MNK // max(1, k * n)
        return (ch, n) if ch >= _SERIAL_MIN_CHUNK else None
    if k * n * _MIN_CHUNK <= _SMALL_MNK:
        nt = n
    else:  # wide layers: cut the columns too, aiming at ~64 rows a piece
        nt = max(8, 1 << max(0, (_SMALL_MNK // (k * 64)).bit_length() - 1))
        nt = min(nt, n)
    ch = _SMALL_MNK // max(1, k * nt)
    return (ch, nt) if ch >= _MIN_CHUNK else None


def _blocks(R, ch, per_block):
    """Start rows of the blocks a pooled product is split into."""
    blk = max(ch, min(per_block, -(-R // (2 * _threads()))) // ch * ch)
    return blk, range(0, R, blk)


def _tap_sum(jobs):
    """For each job ``(out, taps)``:
    ``out (R, n) = sum over taps (A, off, B) of A[off : off + R] @ B``.

    Every A is a (rows, k) array whose row slices reshape to views (C- or
    Fortran-ordered), every B (k, n) C-contiguous.  The blocks of all jobs go
    to the thread pool together."""
    tasks = []
    for out, taps in jobs:
        R, n = out.shape
        k = taps[0][2].shape[0]
        cut = _chunk(k, n, out.dtype)
        if cut is None:
            for t, (A, off, B) in enumerate(taps):
                _gemm(A[off:off + R], B, out, t > 0)
            continue
        ch, nt = cut
        # Blocks of up to _BLOCK_ELEMS outputs: big enough that the Python
        # around each block's batched matmuls (which holds the GIL) costs little.
        blk, starts = _blocks(R, ch, _BLOCK_ELEMS // max(1, n))
        pooled = R * k * n * len(taps) >= _POOL_MIN_MNK
        tasks += [(pooled, (out, taps, k, ch, nt, r0, min(R, r0 + blk))) for r0 in starts]

    def run(task):
        out, taps, k, ch, nt, r0, r1 = task
        n = out.shape[1]
        nf = (r1 - r0) // ch
        rr = r0 + nf * ch
        tmp = np.empty((nf, ch, nt), out.dtype) if nf and len(taps) > 1 else None
        for n0 in range(0, n, nt):
            n1 = min(n, n0 + nt)
            o3 = out[r0:rr, n0:n1].reshape(nf, ch, n1 - n0)
            t3 = None if tmp is None else tmp[:, :, :n1 - n0]
            for t, (A, off, B) in enumerate(taps):
                Bt = B[:, n0:n1]
                if nf:
                    a3 = A[off + r0:off + rr].reshape(nf, ch, k)
                    if t == 0:
                        np.matmul(a3, Bt, out=o3)
                    else:
                        np.matmul(a3, Bt, out=t3)
                        np.add(o3, t3, out=o3)
                if rr < r1:
                    part = A[off + rr:off + r1] @ Bt
                    if t == 0:
                        out[rr:r1, n0:n1] = part
                    else:
                        out[rr:r1, n0:n1] += part

    _run_tasks(run, tasks)


def _tap_xty(jobs):
    """For each job ``(taps, Gm, out)``: ``out[t] (k, n) = A[off : off + R].T @ Gm``
    for each tap ``(A, off)``, ``Gm`` (R, n).  The long reduction over R is
    cut into pieces whose partial sums are added up at the end."""
    tasks = []
    for taps, Gm, out in jobs:
        R, n = Gm.shape
        k = taps[0][0].shape[1]
        cut = _chunk(k, n, out.dtype)
        if cut is None:
            for t, (A, off) in enumerate(taps):
                np.matmul(A[off:off + R].T, Gm, out=out[t])
            continue
        ch, nt = cut
        blk, starts = _blocks(R, ch, max(16384, _BLOCK_ELEMS // max(1, n)) // 2)
        pooled = R * k * n * len(taps) >= _POOL_MIN_MNK
        tasks += [(pooled, (taps, Gm, out, k, ch, nt, r0, min(R, r0 + blk))) for r0 in starts]

    def run(task):
        taps, Gm, out, k, ch, nt, r0, r1 = task
        n = Gm.shape[1]
        nf = (r1 - r0) // ch
        rr = r0 + nf * ch
        acc = np.zeros(out.shape, out.dtype)
        for n0 in range(0, n, nt):
            n1 = min(n, n0 + nt)
            g3 = Gm[r0:rr, n0:n1].reshape(nf, ch, n1 - n0)
            for t, (A, off) in enumerate(taps):
                if nf:
                    a3 = A[off + r0:off + rr].reshape(nf, ch, k)
                    np.matmul(a3.transpose(0, 2, 1), g3).sum(axis=0, out=acc[t, :, n0:n1])
                if rr < r1:
                    acc[t, :, n0:n1] += A[off + rr:off + r1].T @ Gm[rr:r1, n0:n1]
        return acc

    done = set()
    for (_, task), acc in zip(tasks, _run_tasks(run, tasks)):
        out = task[2]
        if id(out) in done:
            out += acc
        else:
            np.copyto(out, acc)
            done.add(id(out))


def _batch_split(N, size=0, min_size=0):
    """Slices of range(N) (a batch, channels, elements), one per thread; one
    slice only on one thread, or when ``size`` (the elements the work
    touches) is below ``min_size``."""
    if _threads() <= 1 or N < 2 or size < min_size:
        return [slice(0, N)]
    k = min(_threads(), N)
    bounds = [N * i // k for i in range(k + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(k)]


def _copy_chunked(dst, src, axis):
    """``dst[...] = src`` in slices of ``_CHUNK`` along ``axis`` (see _CHUNK)."""
    n = dst.shape[axis]
    if n <= _CHUNK:
        np.copyto(dst, src)
        return
    idx = [slice(None)] * dst.ndim
    for c0 in range(0, n, _CHUNK):
        idx[axis] = slice(c0, c0 + _CHUNK)
        t = tuple(idx)
        np.copyto(dst[t], src[t])


# ---------------------------------------------------------------------------
# convolution geometry

class _Axis:
    """One spatial axis of a convolution in the polyphase, shared-padding
    layout.

    Grid cell ``i`` of phase ``a`` holds padded sample ``a + s * i``; output
    ``o`` reads cell ``o + q[t]`` of tap t's phase ``r[t]``.  Consecutive
    rows (and images) share their zero padding: a row is ``pitch`` cells,
    the data first and zeros after, and a read left of the data lands in
    the previous row's trailing zeros.  So each grid stores ``pitch`` cells
    a line where the plain padded grid would need ``Lo + q[-1]``."""

    __slots__ = ("L", "p", "d", "Lo", "Lq", "q", "r", "phases", "ranges", "covered")

    def __init__(self, L, k, s, p, d):
        self.L, self.p, self.d = L, p, d
        Lp = L + 2 * p
        self.Lo = Lo = (Lp - d * (k - 1) - 1) // s + 1
        q = [(t * d) // s for t in range(k)]           # grid shift of tap t
        self.r = [(t * d) % s for t in range(k)]       # phase of tap t
        Lg = max(Lo, 0) + q[-1]                        # plain grid length
        self.phases = sorted(set(self.r))
        # For each phase a: grid cells [i0, i0 + n) hold input samples
        # start, start + s, ...  (padded index a + s * i = input index + p).
        ranges = []
        for a in self.phases:
            i0 = max(0, -((a - p) // s))               # ceil((p - a) / s)
            i1 = min(Lg, (p + L - 1 - a) // s + 1)
            ranges.append((i0, max(0, i1 - i0), a + s * i0 - p))
        used = [(i0, n) for i0, n, _ in ranges if n > 0]
        e = min((i0 for i0, _ in used), default=0)    # leading zeros dropped
        # Reads run over cells [0, Lg): those before the data must land in
        # the previous line's zeros (pitch >= i0 + n), those after it in this
        # line's (pitch >= Lg - e); and the outputs must fit (pitch >= Lo).
        self.Lq = max([i0 + n for i0, n in used] + [Lg - e, Lo, 1])
        self.q = [qt - e for qt in q]
        self.ranges = [(i0 - e, n, start) for i0, n, start in ranges]
        self.covered = sum(n for _, n in used) == L    # every input sample used


class _Geom:
    __slots__ = ("N", "C", "H", "W", "O", "G", "Cg", "Og", "kH", "kW",
                 "s", "h", "w", "M", "lead", "tail", "nph", "taps", "dtype", "affine")

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, dtype):
        self.N, self.C, self.H, self.W = (int(v) for v in x_shape)
        self.O, self.Cg, self.kH, self.kW = (int(v) for v in w_shape)
        self.G = G = int(groups)
        self.Og = self.O // G
        self.s = (int(stride[0]), int(stride[1]))
        self.h = h = _Axis(self.H, self.kH, self.s[0], int(padding[0]), int(dilation[0]))
        self.w = w = _Axis(self.W, self.kW, self.s[1], int(padding[1]), int(dilation[1]))
        # The flat buffers: ``lead`` zero rows, the grid (M rows: N images of
        # h.Lq x w.Lq), zeros up to M + tail rows.  Tap t reads rows
        # [shift_t, shift_t + M) for the M output positions.
        self.M = self.N * h.Lq * w.Lq
        self.nph = len(h.phases) * len(w.phases)
        nw = len(w.phases)
        taps = []  # (kh, kw, phase index, flat shift), row-major
        for kh in range(self.kH):
            ih = h.phases.index(h.r[kh])
            for kw in range(self.kW):
                iw = w.phases.index(w.r[kw])
                taps.append((kh, kw, ih * nw + iw, h.q[kh] * w.Lq + w.q[kw]))
        self.lead = lead = max(0, -min(t[3] for t in taps))
        self.taps = [(kh, kw, ph, sh + lead) for kh, kw, ph, sh in taps]
        self.tail = max([lead] + [t[3] for t in self.taps])
        self.dtype = dtype
        # (shift of tap (0, 0), step per kh, step per kw) when every tap reads
        # the one phase at that affine shift (stride 1): the columns are then
        # gathered, and their gradient summed back, through one strided view.
        self.affine = None
        if self.nph == 1 and len(self.taps) > 1:
            s0 = self.taps[0][3]
            a = self.taps[self.kW][3] - s0 if self.kH > 1 else 0
            b = self.taps[1][3] - s0 if self.kW > 1 else 0
            if a >= 0 and b >= 0 and all(sh == s0 + kh * a + kw * b
                                         for kh, kw, _, sh in self.taps):
                self.affine = (s0, a, b)

    @property
    def Mc(self):
        """Grid positions the columns cover: with affine taps only each
        image's first Lo lines (the lines below hold no output), so a 5x5
        conv without padding on 14x14 computes 10x14 positions, not 14x14.
        Not worth it for a line or two (the backward then packs the output
        gradient twice): padded convs keep whole grids."""
        h = self.h
        rows = h.Lo if self.affine is not None and 5 * h.Lo <= 4 * h.Lq else h.Lq
        return self.N * rows * self.w.Lq

    @property
    def use_cols(self):
        return len(self.taps) > 1 and self.Cg < _COLS_BELOW


@functools.lru_cache(maxsize=256)
def _geom_cached(*key):
    return _Geom(*key)


def _geom(x_shape, w_shape, stride, padding, dilation, groups, dtype):
    """A convolution's _Geom, kept for the next call with the same arguments
    (building one costs ~80 us of Python, a LeNet step makes four).  Not to be
    changed by the caller."""
    return _geom_cached(tuple(x_shape), tuple(w_shape), tuple(int(v) for v in stride),
                        tuple(int(v) for v in padding), tuple(int(v) for v in dilation),
                        int(groups), np.dtype(dtype))


def _phase_blocks(g):
    """(phase index, grid rows i0:i0+ni, cols j0:j0+nj, input rows, input cols)."""
    h, w = g.h, g.w
    nw = len(w.phases)
    for ih, (i0, ni, hs) in enumerate(h.ranges):
        for iw, (j0, nj, ws) in enumerate(w.ranges):
            if ni > 0 and nj > 0:
                yield (ih * nw + iw, slice(i0, i0 + ni), slice(j0, j0 + nj),
                       slice(hs, hs + g.s[0] * (ni - 1) + 1, g.s[0]),
                       slice(ws, ws + g.s[1] * (nj - 1) + 1, g.s[1]))


def _pack_input(x, g, cf=False):
    """x (N, C, H, W) -> zero-padded polyphase buffer, channels-last
    (G, nph, M + tail, Cg) or, with ``cf``, channels-first (G, nph, Cg, M + tail)."""
    N, G, Cg, T, M = g.N, g.G, g.Cg, g.tail, g.M
    xg = x.reshape(N, G, Cg, g.H, g.W)
    blocks = list(_phase_blocks(g))
    if cf:
        buf = np.zeros((G, g.nph, Cg, M + T), g.dtype)
        grid = buf[..., g.lead:g.lead + M].reshape(G, g.nph, Cg, N, g.h.Lq, g.w.Lq)

        def run(nb):
            for ph, gi, gj, hi, wi in blocks:
                # (N, G, Cg, ni, nj) -> (G, Cg, N, ni, nj): rows stay rows
                np.copyto(grid[:, ph, :, nb, gi, gj],
                          xg[nb, :, :, hi, wi].transpose(1, 2, 0, 3, 4))
    else:
        # not np.zeros: only the padding is zeroed, the data written once
        buf = np.empty((G, g.nph, M + T, Cg), g.dtype)
        buf[:, :, :g.lead] = 0
        buf[:, :, g.lead + M:] = 0
        grid = buf[:, :, g.lead:g.lead + M].reshape(G, g.nph, N, g.h.Lq, g.w.Lq, Cg)
        empty = sorted(set(range(g.nph)) - {b_[0] for b_ in blocks})

        def run(nb):
            for ph in empty:
                grid[:, ph, nb] = 0
            for ph, gi, gj, hi, wi in blocks:
                _zero_around(grid[:, ph, nb], gi, gj)
                # (N, G, Cg, ni, nj) -> (G, N, ni, nj, Cg)
                _copy_chunked(grid[:, ph, nb, gi, gj, :],
                              xg[nb, :, :, hi, wi].transpose(1, 0, 3, 4, 2), axis=4)

    _parallel(run, _batch_split(N))
    return buf


def _zero_around(v, rows, cols):
    """Zero a channels-last grid v (..., Lq, Wq, C) outside rows x cols."""
    v[..., :rows.start, :, :] = 0
    v[..., rows.stop:, :, :] = 0
    v[..., rows, :cols.start, :] = 0
    v[..., rows, cols.stop:, :] = 0


def _unpack_input(buf, g, out, cf=False):
    """Inverse of :func:`_pack_input`: buffer -> out (N, C, H, W)."""
    N, G, Cg, M = g.N, g.G, g.Cg, g.M
    og = out.reshape(N, G, Cg, g.H, g.W)
    blocks = list(_phase_blocks(g))
    if cf:
        grid = buf[..., g.lead:g.lead + M].reshape(G, g.nph, Cg, N, g.h.Lq, g.w.Lq)

        def run(nb):
            for ph, gi, gj, hi, wi in blocks:
                np.copyto(og[nb, :, :, hi, wi],
                          grid[:, ph, :, nb, gi, gj].transpose(2, 0, 1, 3, 4))
    else:
        grid = buf[:, :, g.lead:g.lead + M].reshape(G, g.nph, N, g.h.Lq, g.w.Lq, Cg)

        def run(nb):
            for ph, gi, gj, hi, wi in blocks:
                np.copyto(og[nb, :, :, hi, wi],
                          grid[:, ph, nb, gi, gj, :].transpose(1, 0, 4, 2, 3))

    _parallel(run, _batch_split(N))


def _pack_output_grad(gy, g):
    """gy (N, O, Ho, Wo) -> (G, tail + M + tail, Og): the output grid with
    zeros off it and ``tail`` zero rows either side."""
    Ho, Wo, Hq, Wq = g.h.Lo, g.w.Lo, g.h.Lq, g.w.Lq
    T = g.tail
    buf = np.empty((g.G, T + g.M + T, g.Og), g.dtype)
    buf[:, :T] = 0
    buf[:, T + g.M:] = 0
    grid = buf[:, T:T + g.M].reshape(g.G, g.N, Hq, Wq, g.Og)
    src = gy.reshape(g.N, g.G, g.Og, Ho, Wo)

    def run(nb):
        _zero_around(grid[:, nb], slice(0, Ho), slice(0, Wo))
        _copy_chunked(grid[:, nb, :Ho, :Wo, :], src[nb].transpose(1, 0, 3, 4, 2), axis=4)

    _parallel(run, _batch_split(g.N))
    return buf


def _write_output(image_view, g, b, y):
    """y (N, O, Ho, Wo) from a grid, adding the bias on the way; ``image_view(nb)``
    gives images ``nb`` of the grid as (n, G, Og, Ho, Wo)."""
    dst = y.reshape(g.N, g.G, g.Og, g.h.Lo, g.w.Lo)
    bias = None if b is None else np.asarray(b).reshape(g.G, g.Og, 1, 1)

    def run(nb):
        if bias is None:
            np.copyto(dst[nb], image_view(nb))
        else:
            np.add(image_view(nb), bias, out=dst[nb])

    _parallel(run, _batch_split(g.N))


def _unpack_output(Y, g, b, y):
    """(G, M, Og) grid -> y (N, O, Ho, Wo), adding the bias on the way."""
    src = Y.reshape(g.G, g.N, g.h.Lq, g.w.Lq, g.Og)
    _write_output(lambda nb: src[:, nb, :g.h.Lo, :g.w.Lo, :].transpose(1, 0, 4, 2, 3), g, b, y)


def _pack_output_grad_cf(gy, g, M):
    """gy (N, O, Ho, Wo) -> channels-first grid (G, Og, M), zeros off it;
    M is g.M (whole image grids) or g.Mc (the lines the columns cover)."""
    Ho, Wo = g.h.Lo, g.w.Lo
    buf = np.zeros((g.G, g.Og, M), g.dtype)
    grid = buf.reshape(g.G, g.Og, g.N, -1, g.w.Lq)
    src = gy.reshape(g.N, g.G, g.Og, Ho, Wo)

    def run(nb):
        np.copyto(grid[:, :, nb, :Ho, :Wo], src[nb].transpose(1, 2, 0, 3, 4))

    _parallel(run, _batch_split(g.N))
    return buf


def _unpack_output_cf(YT, g, b, y):
    """Channels-first grid (G, Og, Mc) -> y (N, O, Ho, Wo), plus the bias."""
    src = YT.reshape(g.G, g.Og, g.N, -1, g.w.Lq)
    _write_output(lambda nb: src[:, :, nb, :g.h.Lo, :g.w.Lo].transpose(2, 0, 1, 3, 4), g, b, y)


def _gather_cols(Xc, g):
    """Transposed columns (G, kH*kW*Cg, Mc) from the channels-first buffer:
    one contiguous row copy per tap and channel (and image, see g.Mc)."""
    M, Cg = g.M, g.Cg
    colsT = np.empty((g.G, len(g.taps) * Cg, g.Mc), g.dtype)
    if g.affine is not None:
        # colsT[(kh, kw, c), (n, j)] = Xc[c, s0 + kh * a + kw * b + n * img + j]
        # for the first J = Mc / N positions of each image's grid: one copy
        s0, a, b = g.affine
        Xc = np.ascontiguousarray(Xc)
        es = Xc.itemsize
        J, img = g.Mc // g.N, g.h.Lq * g.w.Lq
        src = np.lib.stride_tricks.as_strided(
            Xc[:, 0, :, s0:], (g.G, g.kH, g.kW, Cg, g.N, J),
            (Xc.strides[0], a * es, b * es, Xc.strides[2], img * es, es), writeable=False)
        np.copyto(colsT.reshape(g.G, g.kH, g.kW, Cg, g.N, J), src)
        return colsT

    def run(t):
        _, _, ph, sh = g.taps[t]
        np.copyto(colsT[:, t * Cg:(t + 1) * Cg], Xc[:, ph, :, sh:sh + M])

    _parallel(run, range(len(g.taps)))
    return colsT


def _col2im_affine(Wc, GyT, g):
    """Columns' gradient and col2im in one for affine shifts (see _Geom):
    the gradient's rows (tap, c) are written P = M + D apart after D zeros
    (D = the largest shift), their gaps zeroed, so that one strided view
    lines every tap's row up with its shifted place in the input buffer and
    a single sum over the taps adds them all.  Returns (G, 1, Cg, M + tail)."""
    G, Cg, M, T, dt = g.G, g.Cg, g.M, g.tail, g.dtype
    s0, a, b = g.affine
    D = (g.kH - 1) * a + (g.kW - 1) * b
    P = M + D
    rows = len(g.taps) * Cg
    buf = np.empty((G, D + rows * P), dt)
    buf[:, :D] = 0
    grid = buf[:, D:].reshape(G, rows, P)
    grid[:, :, M:] = 0
    _mm([(grid[gi, :, :M], Wc[gi], GyT[gi]) for gi in range(G)])
    es = buf.itemsize
    J = M + D
    # V[gi, c, kh, kw, j] = gcols[gi, (kh, kw, c), j - kh * a - kw * b] (or 0)
    V = np.lib.stride_tricks.as_strided(
        buf[:, D:], (G, Cg, g.kH, g.kW, J),
        (buf.strides[0], P * es, (g.kW * Cg * P - a) * es, (Cg * P - b) * es, es),
        writeable=False)
    gX = np.empty((G, 1, Cg, M + T), dt)
    gX[..., :s0] = 0
    gX[..., s0 + J:] = 0
    np.sum(V, axis=(2, 3), out=gX[:, 0, :, s0:s0 + J])
    return gX


def _mm(jobs):
    """For each job ``(out, a, b)``: ``out (m, R) = a (m, k) @ b (k, R)``,
    ``b`` and ``out`` with unit column stride; cut along R like _tap_sum."""
    tasks = []
    for out, a, b in jobs:
        m, R = out.shape
        k = a.shape[1]
        cut = _chunk(m, k, out.dtype)
        if cut is None or cut[1] < k:
            np.matmul(a, b, out=out)
            continue
        ch = cut[0]
        blk, starts = _blocks(R, ch, _BLOCK_ELEMS // max(1, m))
        pooled = R * m * k >= _POOL_MIN_MNK
        tasks += [(pooled, (out, a, b, ch, r0, min(R, r0 + blk))) for r0 in starts]

    def run(task):
        out, a, b, ch, r0, r1 = task
        m, k = a.shape
        nf = (r1 - r0) // ch
        rr = r0 + nf * ch
        if nf:
            o3 = out[:, r0:rr].reshape(m, nf, ch).transpose(1, 0, 2)
            np.matmul(a, b[:, r0:rr].reshape(k, nf, ch).transpose(1, 0, 2), out=o3)
        if rr < r1:
            np.matmul(a, b[:, rr:r1], out=out[:, rr:r1])

    _run_tasks(run, tasks)


# ---------------------------------------------------------------------------
# matrix product

_SPLIT_MNK = 1 << 23    # m * n * k below this: the pool's hand-off costs more


def matmul(a, b, out=None):
    """``numpy.matmul(a, b, out=out)``.  While the pool is busy (with
    convolutions, pooling...: not with products cut here, so a model of
    products alone goes back to BLAS's threads) a big product is cut into
    row (or column) blocks, one per pool thread, with BLAS held at one
    thread (see _BlasThreads); otherwise BLAS threads it."""
    if (a.ndim < 2 or b.ndim < 2 or _threads() <= 1
            or time.monotonic() - _pool_used_at > _POOL_RECENT):
        return np.matmul(a, b, out=out)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if m * n * k * math.prod(batch) < _SPLIT_MNK or (
            out is not None and (np.may_share_memory(out, a) or np.may_share_memory(out, b))):
        # (an ``out`` over an operand: NumPy copies as needed, the cuts would not)
        with _blas_held:
            return np.matmul(a, b, out=out)
    with _blas_held:
        if out is None:
            out = np.empty(batch + (m, n), np.result_type(a, b))
        if m >= n:
            cuts = [slice(m * i // _NCPU, m * (i + 1) // _NCPU) for i in range(_NCPU)]
            _parallel(lambda r: np.matmul(a[..., r, :], b, out=out[..., r, :]), cuts, mark=False)
        else:
            cuts = [slice(n * i // _NCPU, n * (i + 1) // _NCPU) for i in range(_NCPU)]
            _parallel(lambda c: np.matmul(a, b[..., c], out=out[..., c]), cuts, mark=False)
        return out


# ---------------------------------------------------------------------------
# native kernels (kernels/cpu_native.c, see _native): convolution, max
# pooling and ReLU's backward here, batch norm in _cpu_norm, where the
# library could be built

_NATIVE_CODE = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}
_C_LONG = np.dtype("i%d" % ctypes.sizeof(ctypes.c_long))
_NATIVE_BLOCK = 48              # positions per kernel block (MV vectors of floats in the C source)
_NATIVE_VECTOR = 64             # bytes per vector (VBYTES in the C source)


def _native_fn(name, dt):
    """The native kernel ``name`` for dtype dt, or None (no library, or a dtype
    it has no twin for): the one switch between the C and NumPy paths."""
    lib = _native.lib()
    code = _NATIVE_CODE.get(np.dtype(dt))
    return None if lib is None or code is None else getattr(lib, name + "_" + code)


_NATIVE_POOL_MIN_WO = 16        # output rows at least this long: native max pool (tiling windows)
_ELEMENTWISE_MIN = 1 << 15      # elements: below this NumPy is as fast (a C call costs ~10 us here)
_ELEMENTWISE_SPLIT_MIN = 1 << 18  # elements: below this an elementwise kernel runs on the caller


def native_elementwise(name, out, *ins):
    """out = kernel(ins...) elementwise in C, cut over the threads; False (nothing
    done) for small arrays, where the kernel is not there, or where the arrays
    are not all C-contiguous arrays of out's shape and dtype."""
    if out.size < _ELEMENTWISE_MIN:
        return False
    fn = _native_fn(name, out.dtype)
    if fn is None or not out.flags.c_contiguous or any(
            a.dtype != out.dtype or a.shape != out.shape or not a.flags.c_contiguous for a in ins):
        return False
    ptrs = [a.ctypes.data for a in ins] + [out.ctypes.data]
    _parallel(lambda r: fn(*ptrs, r.start, r.stop),
              _batch_split(out.size, out.size, _ELEMENTWISE_SPLIT_MIN))
    return True


class _Grid:
    """The native kernels' shared-padding grid for a stride-1 convolution
    (see kernels/cpu_native.c), for ``n`` images: each thread packs and
    computes its own part of the batch on its own grid, so that one hand-off
    to the pool does a whole op.  Each line holds W data and ``pitch - W``
    zeros, each image ``Hq`` lines (the last ``Hq - H`` zero), and images
    follow one another, so that a tap's read off the image lands in zeros:
    ``pitch >= W + pw`` and ``Hq >= H + ph`` (and both fit the outputs).
    Input (h, w) of image n is at ``lead + n * img + h * pitch + w`` of a
    channel's row, output (i, j) reads it at ``n * img + i * pitch + j +
    off[t]``.  The output gradient is packed on the same grid with
    ``maxoff`` zeros before it, and the input gradient reads it at the
    reversed shifts."""

    __slots__ = ("g", "n", "pitch", "img", "ximg", "lead", "off", "maxoff", "rowlen")

    def __init__(self, g, n):
        ph, pw, dh, dw = g.h.p, g.w.p, g.h.d, g.w.d
        self.g, self.n = g, n
        self.pitch = pitch = max(g.W + pw, g.w.Lo)
        self.img = max(g.H + ph, g.h.Lo) * pitch
        self.lead = ph * pitch + pw
        self.ximg = self.img             # an image's stride in the packed input
        self._taps([(0, kh * dh, kw * dw) for kh in range(g.kH) for kw in range(g.kW)])

    def _taps(self, taps):
        """taps: (plane, row shift, column shift) each; sets off, maxoff, rowlen."""
        self.maxoff = max(qh * self.pitch + qw for _, qh, qw in taps)
        self.off = np.array([p * self.img + qh * self.pitch + qw for p, qh, qw in taps], _C_LONG)
        # the kernels read up to two blocks past the last position they compute
        self.rowlen = (self.n * max(self.ximg, self.img) + self.lead + int(self.off.max())
                       + self.maxoff + 3 * _NATIVE_BLOCK)

    def pack(self, a, lead, dt):
        """a (n, C, h, w) C-contiguous -> (C, rowlen) rows on the grid, ``lead`` zeros first."""
        n, C, H, W = a.shape
        buf = np.empty((C, self.rowlen), dt)
        _native_fn("gd_pack", dt)(a.ctypes.data, n, C, H, W, buf.ctypes.data, self.rowlen, lead,
                                  self.img, self.pitch, 0, n)
        return buf

    def pack_input(self, x, dt):
        return self.pack(x, self.lead, dt)

    def conv(self, src, off, w2, bias, out, dt, ximg=None):
        """out (n, Co, Ho, Wo) = the shifted sum of src's rows (see the C source);
        ``ximg``: an image's stride in src (the packed input's, else the grid's)."""
        n, Co, Ho, Wo = out.shape
        _native_fn("gd_shift_conv", dt)(
            src.ctypes.data, self.rowlen, w2.shape[1] // len(off), off.ctypes.data, len(off),
            w2.ctypes.data, None if bias is None else bias.ctypes.data, Co, self.img,
            ximg or self.img, self.pitch, Ho, Wo, 0, n, out.ctypes.data)

    def few_outputs(self, dt):
        """Too few output channels to fill a vector: the weight gradient takes
        a lane per position and reads the output gradient on the grid."""
        return 2 * self.g.O * np.dtype(dt).itemsize <= _NATIVE_VECTOR

    def pack_output_grad(self, gy, dt):
        """gy (n, O, Ho, Wo) C-contiguous on the grid, ``maxoff`` zeros first."""
        return self.pack(gy, self.maxoff, dt)

    def weight_grad(self, X, gy, dt, Gp=None):
        """(C * taps, >= O) with gw[o, c, t] at [c * taps + t, o], from the packed
        input and the output gradient (n, O, Ho, Wo) C-contiguous (``Gp``: it
        packed already, see pack_output_grad)."""
        g, T = self.g, self.g.kH * self.g.kW
        if self.few_outputs(dt):
            if Gp is None:
                Gp = self.pack_output_grad(gy, dt)
            gw = np.zeros((g.O, g.C * T), dt)
            gptr = Gp.ctypes.data + self.maxoff * Gp.itemsize
            _native_fn("gd_wgrad_pos", dt)(gptr, self.rowlen, g.O, X.ctypes.data,
                                           self.rowlen, g.C, self.off.ctypes.data, T, self.img,
                                           self.ximg, g.h.Lo * self.pitch, 0, self.n,
                                           gw.ctypes.data)
            return gw.T
        L = _NATIVE_VECTOR // np.dtype(dt).itemsize
        Op = -(-g.O // L) * L                       # a vector lane per output channel
        Gt = np.empty((self.n * self.img, Op), dt)
        _native_fn("gd_pack_cl", dt)(gy.ctypes.data, self.n, g.O, g.h.Lo, g.w.Lo, Gt.ctypes.data,
                                     Op, self.img, self.pitch, 0, self.n)
        acc = np.zeros((g.C * T, Op), dt)
        _native_fn("gd_wgrad_cl", dt)(Gt.ctypes.data, Op, X.ctypes.data, self.rowlen, g.C,
                                      self.off.ctypes.data, T, self.img, self.ximg,
                                      g.h.Lo * self.pitch, 0, self.n, acc.ctypes.data)
        return acc

    def input_grad(self, Gp, w, gx, dt):
        """gx (n, C, H, W) from the packed output gradient (pack_output_grad):
        the same sum over the output channels, each tap's shift reversed."""
        g, T = self.g, self.g.kH * self.g.kW
        wT = np.ascontiguousarray(w.reshape(g.O, g.C, T).transpose(1, 0, 2)).reshape(g.C, g.O * T)
        self.conv(Gp, self.maxoff + self.lead - self.off, wT, None, gx, dt)


class _PhaseGrid(_Grid):
    """A strided convolution on its polyphase planes (see gd_pack_phase in the
    C source): tap (kh, kw) reads plane ((kh * dh) % sh, (kw * dw) % sw) at
    the shift ((kh * dh) // sh, (kw * dw) // sw), every plane on the output's
    own grid of ``Hq x pitch`` cells, its padding written out; an image's
    planes lie side by side."""

    __slots__ = ("planes", "Hq", "tap_plane", "tap_shift")

    def __init__(self, g, n):
        (sh, sw), dh, dw = g.s, g.h.d, g.w.d
        self.g, self.n = g, n
        taps = [((kh * dh) % sh, (kw * dw) % sw, (kh * dh) // sh, (kw * dw) // sw)
                for kh in range(g.kH) for kw in range(g.kW)]
        self.planes = sorted({(rh, rw) for rh, rw, _, _ in taps})
        self.tap_plane = [self.planes.index((rh, rw)) for rh, rw, _, _ in taps]
        self.tap_shift = [(qh, qw) for _, _, qh, qw in taps]
        self.Hq = g.h.Lo + max(qh for qh, _ in self.tap_shift)
        self.pitch = g.w.Lo + max(qw for _, qw in self.tap_shift)
        self.img = self.Hq * self.pitch
        self.ximg = len(self.planes) * self.img
        self.lead = 0
        self._taps([(p, qh, qw) for p, (qh, qw) in zip(self.tap_plane, self.tap_shift)])

    def pack_input(self, x, dt):
        g = self.g
        buf = np.empty((g.C, self.rowlen), dt)
        fn = _native_fn("gd_pack_phase", dt)
        for p, (rh, rw) in enumerate(self.planes):
            fn(x.ctypes.data, self.n, g.C, g.H, g.W, buf.ctypes.data, self.rowlen, self.Hq,
               self.pitch, self.ximg, p * self.img, g.s[0], g.s[1], rh - g.h.p, rw - g.w.p,
               0, self.n)
        return buf

    def input_grad(self, Gp, w, gx, dt):
        """Per plane, the sum over its taps of the output gradient at the
        reversed shifts, on the plane's cells; then the cells into gx."""
        g = self.g
        wr = w.reshape(g.O, g.C, g.kH * g.kW)
        cells = np.empty((self.n, g.C, self.Hq, self.pitch), dt)
        gx[...] = 0
        for p, (rh, rw) in enumerate(self.planes):
            ts = [t for t, tp in enumerate(self.tap_plane) if tp == p]
            wT = np.ascontiguousarray(wr[:, :, ts].transpose(1, 0, 2)).reshape(g.C, -1)
            off = np.array([self.maxoff - qh * self.pitch - qw
                            for qh, qw in (self.tap_shift[t] for t in ts)], _C_LONG)
            self.conv(Gp, off, wT, None, cells, dt)
            hs = _phase_cells(rh - g.h.p, g.s[0], g.H, self.Hq)
            ws = _phase_cells(rw - g.w.p, g.s[1], g.W, self.pitch)
            if hs and ws:
                gx[:, :, hs[1], ws[1]] = cells[:, :, hs[0], ws[0]]


def _phase_cells(start, step, L, cells):
    """(cells slice, input slice) where cell i = input ``start + i * step`` lies
    in [0, L), or None."""
    i0 = max(0, -(start // step)) if start < 0 else 0
    i1 = min(cells, (L - 1 - start) // step + 1) if L - 1 >= start else 0
    if i1 <= i0:
        return None
    h0 = start + i0 * step
    return slice(i0, i1), slice(h0, h0 + step * (i1 - i0 - 1) + 1, step)


@functools.lru_cache(maxsize=256)
def _native_grid(g, n):
    """The grid for n images of g (kept, as g is: see _geom)."""
    return _Grid(g, n) if g.s == (1, 1) else _PhaseGrid(g, n)


def _native_conv_ok(g, dt):
    return g.G == 1 and g.kH * g.kW > 0 and _native_fn("gd_shift_conv", dt) is not None


def _conv2d_forward_native(x, w, b, g, dt):
    y = np.empty((g.N, g.O, g.h.Lo, g.w.Lo), dt)
    if y.size == 0:
        return y
    x = np.ascontiguousarray(x, dt)
    w2 = np.ascontiguousarray(w, dt).reshape(g.O, -1)
    bias = None if b is None else np.ascontiguousarray(b, dt)

    def run(nb):        # one part of the batch, on its own grid, in one hand-off
        q = _native_grid(g, nb.stop - nb.start)
        q.conv(q.pack_input(x[nb], dt), q.off, w2, bias, y[nb], dt, q.ximg)

    _parallel(run, _batch_split(g.N))
    return y


def _conv2d_backward_native(x, w, gy, g, dt, need_x, need_w):
    """(gx, gw) as :func:`_conv2d_backward`, on the native kernels."""
    x, gy = np.ascontiguousarray(x, dt), np.ascontiguousarray(gy, dt)
    w = np.ascontiguousarray(w, dt)
    gx = np.empty((g.N, g.C, g.H, g.W), dt) if need_x else None

    def run(nb):
        q = _native_grid(g, nb.stop - nb.start)
        Gp = q.pack_output_grad(gy[nb], dt) if need_x else None
        acc = q.weight_grad(q.pack_input(x[nb], dt), gy[nb], dt, Gp) if need_w else None
        if need_x:
            q.input_grad(Gp, w, gx[nb], dt)
        return acc

    accs = _parallel(run, _batch_split(g.N))
    gw = None
    if need_w:
        gwt = accs[0] if len(accs) == 1 else np.sum(accs, axis=0)
        gw = np.ascontiguousarray(gwt[:, :g.O].T).reshape(g.O, g.C, g.kH, g.kW)
    return gx, gw


# ---------------------------------------------------------------------------
# convolution

def _conv_flops(g):
    return 2.0 * g.N * g.O * g.h.Lo * g.w.Lo * g.Cg * g.kH * g.kW


@_quiet     # (the grid's positions between the outputs meet input values too: an inf
            # input makes NaNs there that nobody reads, and NumPy would warn about them)
def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """2-D cross-correlation, PyTorch semantics; see the module docstring."""
    dt = _float_dtype(x, w)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups, dt)
    if _native_conv_ok(g, dt):
        with _serial(_conv_flops(g) < _SERIAL_FLOPS):
            return _conv2d_forward_native(x, w, b, g, dt)
    small = _conv_flops(g) < _SERIAL_FLOPS
    with _serial(small), _hold_blas(not small):
        return _conv2d_forward(x, w, b, g, dt)


def _conv2d_forward(x, w, b, g, dt):
    y = np.empty((g.N, g.O, g.h.Lo, g.w.Lo), dt)
    if y.size == 0:
        return y
    # weights as (G, kH, kW, Cg, Og)
    Wt = np.ascontiguousarray(
        w.reshape(g.G, g.Og, g.Cg, g.kH, g.kW).transpose(0, 3, 4, 2, 1), dtype=dt)
    M = g.M
    if g.use_cols:
        # everything channels-first: Y.T (G, Og, Mc) = W_cols.T @ columns.T
        colsT = _gather_cols(_pack_input(x, g, cf=True), g)
        WcT = np.ascontiguousarray(Wt.reshape(g.G, -1, g.Og).transpose(0, 2, 1))
        YT = np.empty((g.G, g.Og, g.Mc), dt)
        _mm([(YT[gi], WcT[gi], colsT[gi]) for gi in range(g.G)])
        del colsT
        _unpack_output_cf(YT, g, b, y)
        return y
    X = _pack_input(x, g)
    Y = np.empty((g.G, M, g.Og), dt)
    _tap_sum([(Y[gi], [(X[gi, ph], sh, Wt[gi, kh, kw]) for kh, kw, ph, sh in g.taps])
              for gi in range(g.G)])
    del X
    _unpack_output(Y, g, b, y)
    return y


@_quiet
def conv2d_backward(x, w, gy, stride, padding, dilation, groups,
                    need=(True, True, True)):
    """Gradients of :func:`conv2d_forward`: ``(gx, gw, gb)``, None where
    ``need`` says so."""
    need_x, need_w, need_b = (bool(v) for v in need)
    dt = _float_dtype(x, w, gy)
    g = _geom(x.shape, w.shape, stride, padding, dilation, groups, dt)
    native = _native_conv_ok(g, dt)
    small = _conv_flops(g) < _SERIAL_FLOPS
    gb = gy.sum(axis=(0, 2, 3), dtype=dt) if need_b else None
    if not (need_x or need_w):
        return None, None, gb
    if gy.size == 0 or x.size == 0:
        return (np.zeros((g.N, g.C, g.H, g.W), dt) if need_x else None,
                np.zeros((g.O, g.Cg, g.kH, g.kW), dt) if need_w else None, gb)
    with _serial(small), _hold_blas(not small and not native):
        w_bad = not np.isfinite(np.add.reduce(w, axis=None))
        gx, gw = (_conv2d_backward_native if native else _conv2d_backward)(
            x, w, gy, g, dt, need_x and not w_bad, need_w)
        # non-finite data: the definition where the fast paths made NaNs it
        # would not (see _tap_windows); a NaN that remains is the data's own
        if need_x and w_bad:
            gx = _conv_input_grad_direct(w, gy, g, dt)
        if gw is not None and np.isnan(np.add.reduce(gw, axis=None)):
            gw = _conv_weight_grad_direct(x, gy, g, dt)
    return gx, gw, gb


# The gradients by their definition -- the zero-padded input, summed over the
# outputs -- tap by tap: slow, for non-finite data only.  The fast paths also
# multiply at the grid's positions between outputs, where the output gradient
# is a packed zero, and 0 * inf = NaN where the definition (the CUDA kernels,
# PyTorch) adds nothing.

def _tap_windows(a, g):
    """(kh, kw, view): tap (kh, kw)'s input sample under every output, over
    the zero-padded array ``a`` (N, C, H + 2 ph, W + 2 pw)."""
    (sh, sw), (dh, dw), (Ho, Wo) = g.s, (g.h.d, g.w.d), (g.h.Lo, g.w.Lo)
    for kh in range(g.kH):
        for kw in range(g.kW):
            yield kh, kw, a[:, :, kh * dh:kh * dh + sh * (Ho - 1) + 1:sh,
                            kw * dw:kw * dw + sw * (Wo - 1) + 1:sw]


def _grouped(a, g, per):
    """(N, G * per, h, w) -> (N, G, per, h, w)."""
    return a.reshape(a.shape[0], g.G, per, *a.shape[2:])


def _padded(g, dt):
    return np.zeros((g.N, g.C, g.H + 2 * g.h.p, g.W + 2 * g.w.p), dt)


def _conv_input_grad_direct(w, gy, g, dt):
    gxp = _padded(g, dt)
    wg = np.asarray(w, dt).reshape(g.G, g.Og, g.Cg, g.kH, g.kW)
    gyg = _grouped(np.asarray(gy, dt), g, g.Og)
    for kh, kw, win in _tap_windows(gxp, g):      # within a tap the windows are distinct
        win += np.einsum("ngohw,goc->ngchw", gyg, wg[..., kh, kw]).reshape(win.shape)
    return np.ascontiguousarray(gxp[:, :, g.h.p:g.h.p + g.H, g.w.p:g.w.p + g.W])


def _conv_weight_grad_direct(x, gy, g, dt):
    xp = _padded(g, dt)
    xp[:, :, g.h.p:g.h.p + g.H, g.w.p:g.w.p + g.W] = x
    gyg = _grouped(np.asarray(gy, dt), g, g.Og)
    gw = np.empty((g.G, g.Og, g.Cg, g.kH, g.kW), dt)
    for kh, kw, win in _tap_windows(xp, g):
        gw[..., kh, kw] = np.einsum("ngchw,ngohw->goc", _grouped(win, g, g.Cg), gyg)
    return gw.reshape(g.O, g.Cg, g.kH, g.kW)


def _conv2d_backward(x, w, gy, g, dt, need_x, need_w):
    """(gx, gw), None where not needed, for non-empty x and gy."""
    gx = gw = None
    M, T, KK, Cg = g.M, g.tail, len(g.taps), g.Cg
    if g.use_cols:
        # (G, Og, Mc) for the weights' gradient, (G, Og, M) for the input's
        GyT = _pack_output_grad_cf(gy, g, g.Mc) if need_w else None
        GyT_x = None
        if need_x:
            GyT_x = GyT if GyT is not None and g.Mc == M else _pack_output_grad_cf(gy, g, M)
    else:
        Gp = _pack_output_grad(gy, g)                # (G, T + M + T, Og)
        Gy = Gp[:, T:T + M]
    if need_w:
        gwt = np.empty((g.G, KK, Cg, g.Og), dt)      # tap-major
        if g.use_cols:
            colsT = _gather_cols(_pack_input(x, g, cf=True), g)
            _tap_xty([([(colsT[gi].T, 0)], GyT[gi].T, gwt[gi].reshape(1, KK * Cg, g.Og))
                      for gi in range(g.G)])
            del colsT
        else:
            X = _pack_input(x, g)
            _tap_xty([([(X[gi, ph], sh) for _, _, ph, sh in g.taps], Gy[gi], gwt[gi])
                      for gi in range(g.G)])
            del X
        gw = np.ascontiguousarray(
            gwt.reshape(g.G, g.kH, g.kW, Cg, g.Og).transpose(0, 4, 3, 1, 2)
        ).reshape(g.O, Cg, g.kH, g.kW)
    if need_x:
        # weights as (G, kH, kW, Og, Cg)
        Wg = np.ascontiguousarray(
            w.reshape(g.G, g.Og, Cg, g.kH, g.kW).transpose(0, 3, 4, 1, 2), dtype=dt)
        if g.use_cols:
            # the columns' gradient, transposed: (G, KK*Cg, M) = W_cols @ Gy.T
            Wc = np.ascontiguousarray(Wg.transpose(0, 1, 2, 4, 3)).reshape(g.G, KK * Cg, g.Og)
            if g.affine is not None:
                gX = _col2im_affine(Wc, GyT_x, g)
            else:
                gcolsT = np.empty((g.G, KK * Cg, M), dt)
                _mm([(gcolsT[gi], Wc[gi], GyT_x[gi]) for gi in range(g.G)])
                gX = np.zeros((g.G, g.nph, Cg, M + T), dt)
                for t, (_, _, ph, sh) in enumerate(g.taps):  # col2im: row adds
                    dst = gX[:, ph, :, sh:sh + M]
                    np.add(dst, gcolsT[:, t * Cg:(t + 1) * Cg], out=dst)
                del gcolsT
            del GyT, GyT_x
        else:
            # gX[ph][r] = sum over the phase's taps of Gy[r - shift] @ W_tap.T,
            # read from the zero-margined Gp so that every row exists
            gX = np.empty((g.G, g.nph, M + T, Cg), dt)
            _tap_sum([(gX[gi, ph], [(Gp[gi], T - sh, Wg[gi, kh, kw])
                                    for kh, kw, p_, sh in g.taps if p_ == ph])
                      for gi in range(g.G) for ph in range(g.nph)])
        full = g.h.covered and g.w.covered
        gx = (np.empty if full else np.zeros)((g.N, g.C, g.H, g.W), dt)
        _unpack_input(gX, g, gx, cf=g.use_cols)
    return gx, gw


# ---------------------------------------------------------------------------
# pooling

def _pool_out(L, k, s, p):
    return (L + 2 * p - k) // s + 1


def _pool_views(xp, kernel, stride, Ho, Wo):
    """Yield (kh, kw, view) for every window tap over the padded array xp."""
    (kh_, kw_), (sh, sw) = kernel, stride
    for a in range(kh_):
        for b in range(kw_):
            yield a, b, xp[:, :, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw]


def _tap_index(a, b, H, W, Ho, Wo, stride, padding):
    """(Ho, Wo) int32: flat input index h * W + w of tap (a, b) per window."""
    hi = np.arange(Ho, dtype=np.int32) * stride[0] + (a - padding[0])
    wi = np.arange(Wo, dtype=np.int32) * stride[1] + (b - padding[1])
    return hi[:, None] * np.int32(W) + wi[None, :]


def _norm2(v):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    return int(v[0]), int(v[1])


def _tap_views(x, kernel, stride, padding, Ho, Wo, fill):
    """Per-tap views (kernel[0] * kernel[1] of them, row-major), shape
    (N, C, Ho, Wo) each, over x padded with ``fill``.  When the windows tile
    the input, the taps are first copied out contiguously (one transpose),
    which makes every later pass a contiguous, vectorised one."""
    N, C, H, W = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    if _tiles(H, W, Ho, Wo, kernel, stride, padding):
        t = np.empty((kh, kw, N, C, Ho, Wo), x.dtype)
        np.copyto(t, x.reshape(N, C, Ho, kh, Wo, kw).transpose(3, 5, 0, 1, 2, 4))
        return [t[a, b] for a in range(kh) for b in range(kw)]
    if ph or pw:
        xp = np.full((N, C, H + 2 * ph, W + 2 * pw), fill, x.dtype)
        xp[:, :, ph:ph + H, pw:pw + W] = x
    else:
        xp = x
    return [v for _, _, v in _pool_views(xp, kernel, stride, Ho, Wo)]


def _pool_split(N, size):
    """Batch slices to spread a pooling op over the threads (big inputs)."""
    return _batch_split(N, size, _POOL_SPLIT_MIN)


def _pool_setup(x_shape, kernel, stride, padding):
    kernel, stride, padding = _norm2(kernel), _norm2(stride), _norm2(padding)
    N, C, H, W = (int(v) for v in x_shape)
    Ho = _pool_out(H, kernel[0], stride[0], padding[0])
    Wo = _pool_out(W, kernel[1], stride[1], padding[1])
    return kernel, stride, padding, N, C, H, W, Ho, Wo


@_quiet
def max_pool2d_forward(x, kernel, stride, padding):
    """Max pooling; returns ``(y, argmax)`` with PyTorch's index semantics."""
    kernel, stride, padding, N, C, H, W, Ho, Wo = _pool_setup(x.shape, kernel, stride, padding)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    y = np.empty((N, C, Ho, Wo), x.dtype)
    arg = np.empty((N, C, Ho, Wo), np.int32)
    if y.size == 0:
        return y, arg
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fn = _native_fn("gd_max_pool", x.dtype)
    if fn is not None and H * W < 2 ** 31 and (Wo >= _NATIVE_POOL_MIN_WO or not _tiles(
            H, W, Ho, Wo, kernel, stride, padding)):
        # one vectorised pass per window tap over each output row, in C, with
        # PyTorch's rule for ties, NaN and -inf.  Rows shorter than 16 cost more
        # in loop overhead than the NumPy path's tiling transpose (2x2 windows
        # on 28x28: 0.60 ms against 0.37; on 32x32: 1.5 ms against 2.3).
        xc = np.ascontiguousarray(x)
        _parallel(lambda r: fn(xc.ctypes.data, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw,
                               r.start, r.stop, y.ctypes.data, arg.ctypes.data),
                  _pool_split(N * C, x.size))
        return y, arg
    KK = kh * kw
    # flat index = window origin (i * s - p) * W + (j * s - p) + tap offset
    offs = (np.arange(kh)[:, None] * W + np.arange(kw)[None, :]).astype(np.int32).reshape(-1)
    origin = _tap_index(0, 0, H, W, Ho, Wo, stride, padding)
    ct = np.uint8 if KK < 256 else np.int32

    def run(nb):
        taps = _tap_views(x[nb], kernel, stride, padding, Ho, Wo, -np.inf)
        ys, args = y[nb], arg[nb]
        # code = the winning tap.  Taps come in increasing order and a later
        # one wins only when strictly greater: code = max(code, k * (v_k > y)).
        code = np.zeros(ys.shape, ct)
        if KK == 1:
            np.copyto(ys, taps[0])
        else:
            mask = np.empty(ys.shape, bool)
            tmp = np.empty(ys.shape, ct)
            np.greater(taps[1], taps[0], out=mask)
            np.maximum(taps[0], taps[1], out=ys)
            np.copyto(code, mask)
            for k in range(2, KK):
                np.greater(taps[k], ys, out=mask)
                np.maximum(ys, taps[k], out=ys)
                np.multiply(mask.view(np.uint8), ct(k), out=tmp, casting="unsafe")
                np.maximum(code, tmp, out=code)
        np.take(offs, code, out=args, mode="clip")
        np.add(args, origin, out=args)

    _parallel(run, _pool_split(N, x.size))
    # one reduction first (no temporary); a NaN there (inf - inf too) takes the exact path
    if np.isnan(np.add.reduce(y, axis=None)) and (bad := np.isnan(y)).any():
        # NaN is the maximum (np.maximum propagated it into y), and the argmax
        # the window's last NaN, as in PyTorch (whose loop takes any NaN it
        # meets); `>` above never picked one.  Taps from the last: first hit wins.
        taps = _tap_views(x, kernel, stride, padding, Ho, Wo, -np.inf)
        for k in reversed(range(KK)):
            hit = bad & np.isnan(taps[k])
            arg[hit] = np.broadcast_to(origin + offs[k], arg.shape)[hit]
            bad &= ~hit
    if ph or pw:
        # a window whose values are all -inf: PyTorch points at its first
        # in-bounds element (the padding itself is never an answer)
        bad = np.isneginf(y)
        if bad.any():
            h0 = np.maximum(np.arange(Ho, dtype=np.int32) * sh - ph, 0)
            w0 = np.maximum(np.arange(Wo, dtype=np.int32) * sw - pw, 0)
            first = np.broadcast_to(h0[:, None] * np.int32(W) + w0[None, :], arg.shape)
            arg[bad] = first[bad]
    return y, arg


@_quiet
def max_pool2d_backward(gy, argmax, x_shape, kernel, stride, padding):
    """Scatter ``gy`` to the argmax positions; overlapping windows add up."""
    kernel, stride, padding, N, C, H, W, Ho, Wo = _pool_setup(x_shape, kernel, stride, padding)
    dt = gy.dtype if gy.dtype.kind == "f" else np.dtype(np.float64)
    fn = _native_fn("gd_max_pool_back", dt)
    if fn is not None:
        # a scatter-add per plane in C: overlapping windows add up, in order
        gx = np.empty((N, C, H, W), dt)
        g, am = np.ascontiguousarray(gy, dt), np.ascontiguousarray(argmax, np.int32)
        _parallel(lambda r: fn(g.ctypes.data, am.ctypes.data, H * W, Ho * Wo, r.start, r.stop,
                               gx.ctypes.data), _pool_split(N * C, gx.size))
        return gx
    # The tiling path multiplies by a 0/1 mask: a non-finite gradient would reach
    # the whole window (0 * inf = NaN), so it takes the scatter, which gives it
    # to the argmax alone.  (One pass over gy, on the tiling layout only.)
    tiles = _tiles(H, W, Ho, Wo, kernel, stride, padding)
    if not tiles or (gy.size and not np.isfinite(np.add.reduce(gy, axis=None))):
        # Any other window layout: one scatter-add over flat indices
        # (bincount sums in float64, in a fixed order: deterministic).
        if gy.size == 0:
            return np.zeros((N, C, H, W), dt)
        base = (np.arange(N * C, dtype=np.intp) * (H * W)).reshape(N, C, 1, 1)
        flat = np.add(argmax, base, dtype=np.intp)
        g = np.bincount(flat.reshape(-1), weights=gy.reshape(-1), minlength=N * C * H * W)
        return g.astype(dt, copy=False).reshape(N, C, H, W)
    # Windows that tile the input: the taps' views partition gx exactly, so
    # each tap writes its part once (the gradient or zero), no scatter needed.
    gx = np.empty((N, C, H, W), dt)
    if gy.size:
        idx = [_tap_index(a, b, H, W, Ho, Wo, stride, padding)
               for a in range(kernel[0]) for b in range(kernel[1])]

        def run(nb):
            g, am = gy[nb], argmax[nb]
            mask = np.empty(g.shape, bool)
            for (_, _, v), ik in zip(_pool_views(gx[nb], kernel, stride, Ho, Wo), idx):
                np.equal(am, ik, out=mask)
                np.multiply(g, mask, out=v)

        _parallel(run, _pool_split(N, gx.size))
    return gx


def _avg_divisor(H, W, Ho, Wo, kernel, stride, padding, count_include_pad, dt):
    """1 / window size: a scalar, or per output position when padding is not counted."""
    if count_include_pad:
        return dt.type(1.0 / (kernel[0] * kernel[1]))
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    h0 = np.arange(Ho) * sh - ph
    w0 = np.arange(Wo) * sw - pw
    nh = np.minimum(h0 + kh, H) - np.maximum(h0, 0)
    nw = np.minimum(w0 + kw, W) - np.maximum(w0, 0)
    return (1.0 / (nh[:, None] * nw[None, :])).astype(dt)


@_quiet
def avg_pool2d_forward(x, kernel, stride, padding, count_include_pad):
    """Average pooling with PyTorch semantics (ceil_mode=False)."""
    kernel, stride, padding, N, C, H, W, Ho, Wo = _pool_setup(x.shape, kernel, stride, padding)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    dt = x.dtype
    y = np.empty((N, C, Ho, Wo), dt)
    if y.size == 0:
        return y
    div = _avg_divisor(H, W, Ho, Wo, kernel, stride, padding, count_include_pad, dt)

    def run(nb):
        taps = _tap_views(x[nb], kernel, stride, padding, Ho, Wo, 0)
        ys = y[nb]
        if len(taps) == 1:
            np.copyto(ys, taps[0])
        else:
            np.add(taps[0], taps[1], out=ys)
            for v in taps[2:]:
                np.add(ys, v, out=ys)
        np.multiply(ys, div, out=ys)

    _parallel(run, _pool_split(N, x.size))
    return y


@_quiet
def avg_pool2d_backward(gy, x_shape, kernel, stride, padding, count_include_pad):
    """Gradient of :func:`avg_pool2d_forward`; overlapping windows add up."""
    kernel, stride, padding, N, C, H, W, Ho, Wo = _pool_setup(x_shape, kernel, stride, padding)
    dt = gy.dtype if gy.dtype.kind == "f" else np.dtype(np.float64)
    (ph, pw) = padding
    div = _avg_divisor(H, W, Ho, Wo, kernel, stride, padding, count_include_pad, dt)
    tiles = _tiles(H, W, Ho, Wo, kernel, stride, padding)
    if tiles:                       # the taps' views partition gx exactly
        gxp = np.empty((N, C, H, W), dt)
    else:
        gxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dt)
    if gy.size:
        def run(nb):
            g = np.multiply(gy[nb], div, dtype=dt)
            for _, _, v in _pool_views(gxp[nb], kernel, stride, Ho, Wo):
                if tiles:
                    np.copyto(v, g)
                else:
                    np.add(v, g, out=v)

        _parallel(run, _pool_split(N, gxp.size))
    if ph or pw:
        return np.ascontiguousarray(gxp[:, :, ph:ph + H, pw:pw + W])
    return gxp


# ---------------------------------------------------------------------------
# softmax cross-entropy

@_quiet
def softmax_cross_entropy_forward(logits, labels, label_smoothing):
    """Per-row loss and log-sum-exp of ``logits`` (N, C) against ``labels``."""
    z = logits if logits.dtype.kind == "f" else logits.astype(np.float64)
    dt = z.dtype
    N, C = z.shape
    if N == 0:
        return np.empty((0,), dt), np.empty((0,), dt)
    if C == 0:
        raise ValueError("softmax_cross_entropy: logits have zero classes")
    m = z.max(axis=1)
    t = np.subtract(z, m[:, None])
    np.exp(t, out=t)
    ls = np.log(t.sum(axis=1))          # lse - m, accurate however large m is
    lse = m + ls
    zy = z[np.arange(N), np.asarray(labels).astype(np.intp, copy=False)]
    eps = float(label_smoothing)
    # lse - z_y as (m - z_y) + ls keeps a small loss accurate next to a huge m
    loss = m - zy
    if eps:
        # (1 - eps) * (lse - z_y) + eps * mean_j (lse - z_j)
        loss *= dt.type(1.0 - eps)
        # the mean of m - z_j, not m - mean(z): a sum of huge logits overflows
        loss += dt.type(eps) * np.subtract(m[:, None], z).mean(axis=1, dtype=dt)
    loss += ls
    return loss.astype(dt, copy=False), lse.astype(dt, copy=False)


@_quiet
def softmax_cross_entropy_backward(logits, labels, lse, gloss, label_smoothing):
    """d loss / d logits = gloss * (softmax - target distribution)."""
    z = logits if logits.dtype.kind == "f" else logits.astype(np.float64)
    dt = z.dtype
    N, C = z.shape
    lse = np.asarray(lse, dt)
    gl = np.asarray(gloss, dt)
    if N == 0:
        return np.empty((0, C), dt)
    if np.abs(lse).max() < 64.0:
        # exp(z - lse): lse's rounding error is tiny at this magnitude
        g = np.subtract(z, lse[:, None])
        np.exp(g, out=g)
        scale = gl
    else:
        # Large logits: a float lse of ~1e4 is off by ~1e-3, so exp(z - lse)
        # would be too.  Renormalise from the row maximum instead.
        m = z.max(axis=1)
        g = np.subtract(z, m[:, None])
        np.exp(g, out=g)
        scale = gl / g.sum(axis=1)
    g *= scale[:, None]                 # gloss * softmax
    eps = float(label_smoothing)
    if eps:
        g -= (dt.type(eps / C) * gl)[:, None]
    rows = np.arange(N)
    lab = np.asarray(labels).astype(np.intp, copy=False)
    g[rows, lab] -= dt.type(1.0 - eps) * gl
    return g
