"""Tests of the CUDA-on-CPU emulator (gpudl.testing.cuda_emulator).

Every kernel source here is also compiled by ``nvcc --ptx`` when nvcc is on
PATH, so the emulator is not allowed to accept CUDA that CUDA rejects.
"""
import math
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from gpudl.testing import cuda_emulator as emu
from gpudl.testing.cuda_emulator import EmulatorError, compile_module

pytestmark = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                                reason="the CUDA emulator needs a C++ compiler")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SOURCES = {
    "vecadd.cu": r"""
extern "C" __global__ void vecadd(const float* __restrict__ a, const float* __restrict__ b,
                                  float* __restrict__ c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = __ldg(a + i) + b[i];
}
extern "C" __global__ void scale_ll(float* x, long long n, float s) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if ((long long)i < n) x[i] *= s;
}
extern "C" __global__ void nothing(float* x) {}
""",
    "index.cu": r"""
extern "C" __global__ void index2d(float* out, int H, int W) {
  dim3 b = blockDim;
  int x = blockIdx.x * b.x + threadIdx.x, y = blockIdx.y * b.y + threadIdx.y;
  if (x < W && y < H) out[y * W + x] = y * W + x + 0.5f;
}
extern "C" __global__ void index3d(int* out) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  int z = blockIdx.z * blockDim.z + threadIdx.z;
  int X = gridDim.x * blockDim.x, Y = gridDim.y * blockDim.y;
  int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[(z * Y + y) * X + x] = block * 1000 + thread;
}
""",
    "reduce.cu": r"""
__device__ float block_reduce(float v) {
  __shared__ float buf[1024];
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  float r = buf[0];
  __syncthreads();
  return r;
}
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(&count, 1);
  float r = block_reduce(i < n ? x[i] : 0.0f);
  if (threadIdx.x == 0) { out[2 * blockIdx.x] = r; out[2 * blockIdx.x + 1] = count; }
}
extern "C" __global__ void no_sync_here(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = 2.0f * x[i];
}
""",
    "dynsmem.cu": r"""
extern "C" __global__ void reverse_block(const float* x, float* y, int* misaligned) {
  extern __shared__ float smem[];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  smem[threadIdx.x] = x[i];
  __syncthreads();
  y[i] = smem[blockDim.x - 1 - threadIdx.x];
  if (((size_t)smem) % 16) *misaligned = 1;
}
extern "C" __global__ void two_arrays(double* out) {
  extern __shared__ __align__(16) unsigned char raw[];
  double* d = reinterpret_cast<double*>(raw);
  int* k = reinterpret_cast<int*>(raw + blockDim.x * sizeof(double));
  d[threadIdx.x] = threadIdx.x * 0.5;
  k[threadIdx.x] = threadIdx.x;
  __syncthreads();
  int j = blockDim.x - 1 - threadIdx.x;
  out[blockIdx.x * blockDim.x + threadIdx.x] = d[j] + k[j];
}
""",
    "shuffle.cu": r"""
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  return v;
}
template <typename T> __device__ T warp_allsum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
extern "C" __global__ void warp_ops(const float* x, float* down, double* xord, int* xori,
                                    float* bcast, unsigned* ballot, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int lane = threadIdx.x % warpSize, w = i / warpSize;
  float v = i < n ? x[i] : 0.0f;
  float s = warp_sum(v);
  if (lane == 0) down[w] = s;
  xord[i] = warp_allsum((double)v);
  xori[i] = warp_allsum(i < n ? (int)(x[i] * 100.0f) : 0);
  bcast[i] = __shfl_sync(0xffffffff, v, 3);
  unsigned b = __ballot_sync(0xffffffff, v > 0.5f);
  if (lane == 0) ballot[w] = b;
}
extern "C" __global__ void divergent(float* x) {
  if (threadIdx.x < 16) __syncthreads();
  else x[threadIdx.x] = __shfl_down_sync(0xffffffff, x[threadIdx.x], 1);
}
""",
    "atomics.cu": r"""
extern "C" __global__ void atomics(const float* x, float* fsum, double* dsum, int* isum,
                                   unsigned* usum, int* imax, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  atomicAdd(fsum, x[i]);
  atomicAdd(dsum, (double)x[i]);
  atomicAdd(isum, 1);
  atomicAdd(usum, 2u);
  atomicMax(imax, (int)(x[i] * 1000.0f));
}
""",
    "template.cu": r"""
template <typename T>
__host__ __device__ __forceinline__ T axpy_one(T a, T x, T y) { return a * x + y; }

template <typename T>
__device__ void axpy_impl(int n, T a, const T* __restrict__ x, T* __restrict__ y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    y[i] = axpy_one(a, x[i], y[i]);
}

extern "C" {
__global__ void __launch_bounds__(128) saxpy(int n, float a, const float* x, float* y) {
  axpy_impl(n, a, x, y);
}
__global__ void daxpy(int n, double a, const double* x, double* y) { axpy_impl(n, a, x, y); }
}
""",
    "include.cu": r"""
#include "helpers.cuh"
extern "C" __global__ void sum_squares(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  float s = block_sum_dyn(i < n ? square(x[i]) * SCALE : 0.0f);
  if (i < n) y[i] = s;
}
""",
    "math.cu": r"""
extern "C" __global__ void math_f(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
  float* o = y + 17 * i;
  o[0] = expf(v); o[1] = logf(v); o[2] = sqrtf(v); o[3] = rsqrtf(v); o[4] = fmaxf(v, 0.5f);
  o[5] = fminf(v, 0.5f); o[6] = fabsf(-v); o[7] = tanhf(v); o[8] = erff(v); o[9] = powf(v, 1.5f);
  o[10] = __expf(v); o[11] = __logf(v); o[12] = __fdividef(v, 3.0f); o[13] = max(v, 0.25f);
  o[14] = (float)min(i, 3); o[15] = (float)max(i, n - 3); o[16] = fminf(v, INFINITY);
}
extern "C" __global__ void math_d(const double* x, double* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  double v = x[i];
  double* o = y + 9 * i;
  o[0] = exp(v); o[1] = log(v); o[2] = sqrt(v); o[3] = rsqrt(v); o[4] = fmax(v, 0.5);
  o[5] = tanh(v); o[6] = erf(v); o[7] = pow(v, 1.5); o[8] = min(v, 0.5);
}
""",
    "oob.cu": r"""
extern "C" __global__ void oob_write(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) x[i] = 1.0f;  // off by one: writes x[n]
}
""",
}

HEADERS = {
    "helpers.cuh": r"""
#pragma once
#include "sub/consts.cuh"
template <typename T> __device__ __forceinline__ T square(T x) { return x * x; }
__device__ float block_sum_dyn(float v) {
  extern __shared__ float hsm[];
  hsm[threadIdx.x] = v;
  __syncthreads();
  float s = 0.0f;
  for (int k = 0; k < blockDim.x; k++) s += hsm[k];
  __syncthreads();
  return s;
}
""",
    "sub/consts.cuh": '#pragma once\n#include "inner.cuh"\n#define SCALE (2.0f * INNER)\n',
    "sub/inner.cuh": "#pragma once\n#define INNER 1.5f\n",
}


@pytest.fixture(scope="module")
def incdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("inc")
    for rel, text in HEADERS.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return str(d)


def mod(name, incdir=None):
    return compile_module(SOURCES[name], name=name, include_dirs=[incdir] if incdir else ())


def rand(n, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random(n).astype(dtype)


# ---- kernels ------------------------------------------------------------------

def test_vecadd_ragged_grid():
    n = 1000
    a, b, c = rand(n), rand(n, seed=1), np.zeros(n, np.float32)
    mod("vecadd.cu").get_function("vecadd")(((n + 127) // 128,), (128,), (a, b, c, np.int32(n)))
    np.testing.assert_array_equal(c, a + b)
    x = rand(n)
    mod("vecadd.cu").get_function("scale_ll")((8,), (128,), (x.copy(), np.int64(n), np.float32(2)))
    y = x.copy()
    mod("vecadd.cu").get_function("scale_ll")(8, 128, (y, np.int64(n), np.float32(2)))
    np.testing.assert_array_equal(y, 2 * x)


def test_index_maps_2d_3d():
    m = mod("index.cu")
    H, W = 37, 51
    out = np.zeros((H, W), np.float32)
    grid = ((W + 15) // 16, (H + 7) // 8)
    m.get_function("index2d")(grid, (16, 8), (out, np.int32(H), np.int32(W)))
    np.testing.assert_array_equal(out, np.arange(H * W).reshape(H, W) + 0.5)
    grid, block = (3, 2, 2), (4, 2, 3)
    out = np.zeros((grid[2] * block[2], grid[1] * block[1], grid[0] * block[0]), np.int32)
    m.get_function("index3d")(grid, block, (out,))
    z, y, x = np.indices(out.shape)
    bx, by, bz = x // block[0], y // block[1], z // block[2]
    tx, ty, tz = x % block[0], y % block[1], z % block[2]
    want = ((bz * grid[1] + by) * grid[0] + bx) * 1000 + (tz * block[1] + ty) * block[0] + tx
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("block", [256, 1024])
def test_block_reduction_static_shared(block):
    m = mod("reduce.cu")
    # fibers only where needed
    assert m.kernels["block_sum"][0] and not m.kernels["no_sync_here"][0]
    n = 5000
    x = rand(n)
    blocks = (n + block - 1) // block
    out = np.zeros(2 * blocks, np.float32)
    m.get_function("block_sum")((blocks,), (block,), (x, out, np.int32(n)))
    xp = np.zeros(blocks * block, np.float32)
    xp[:n] = x
    np.testing.assert_allclose(out[0::2], xp.reshape(blocks, block).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(out[1::2], np.minimum(block, n - block * np.arange(blocks)))


def test_dynamic_shared_memory():
    m = mod("dynsmem.cu")
    x = rand(512)
    y = np.zeros_like(x)
    bad = np.zeros(1, np.int32)
    m.get_function("reverse_block")((4,), (128,), (x, y, bad), shared_mem=128 * 4)
    np.testing.assert_array_equal(y, x.reshape(4, 128)[:, ::-1].ravel())
    assert bad[0] == 0
    out = np.zeros(3 * 64)
    m.get_function("two_arrays")(3, 64, (out,), shared_mem=64 * 12)
    j = np.tile(np.arange(63, -1, -1), 3)
    np.testing.assert_array_equal(out, j * 0.5 + j)


def test_warp_shuffles():
    n, blocks, block = 1000, 4, 256
    x = rand(n)
    down = np.zeros(32, np.float32)
    xord = np.zeros(1024)
    xori = np.zeros(1024, np.int32)
    bcast = np.zeros(1024, np.float32)
    ballot = np.zeros(32, np.uint32)
    mod("shuffle.cu").get_function("warp_ops")((blocks,), (block,),
                                                (x, down, xord, xori, bcast, ballot, np.int32(n)))
    v = np.zeros(1024, np.float32)
    v[:n] = x
    w = v.reshape(32, 32)
    np.testing.assert_allclose(down, w.sum(1), rtol=1e-5)
    np.testing.assert_allclose(xord, np.repeat(w.astype(np.float64).sum(1), 32), rtol=1e-12)
    wi = (w * np.float32(100)).astype(np.int32)
    np.testing.assert_array_equal(xori, np.repeat(wi.sum(1), 32))
    np.testing.assert_array_equal(bcast, np.repeat(w[:, 3], 32))
    want = [(sum(1 << l for l in range(32) if row[l] > 0.5)) for row in w]
    np.testing.assert_array_equal(ballot, want)


def test_ucontext_fibers(monkeypatch):
    """The portable fiber switch (used off x86-64) gives the same results."""
    monkeypatch.setenv("GPUDL_EMU_CXXFLAGS", "-DEMU_USE_UCONTEXT")
    test_block_reduction_static_shared(1024)
    test_warp_shuffles()


def test_divergent_barrier_is_reported():
    with pytest.raises(EmulatorError, match="deadlock"):
        mod("shuffle.cu").get_function("divergent")(1, 32, (np.zeros(32, np.float32),))
    test_warp_shuffles()  # the module still works after an aborted launch


def test_atomics_across_blocks():
    n = 3000
    x = rand(n)
    f, d, i, u, mx = (np.zeros(1, t)
                      for t in (np.float32, np.float64, np.int32, np.uint32, np.int32))
    mod("atomics.cu").get_function("atomics")((12,), (256,), (x, f, d, i, u, mx, np.int32(n)))
    assert f[0] == pytest.approx(x.sum(dtype=np.float64), rel=1e-4)
    assert d[0] == pytest.approx(x.sum(dtype=np.float64), rel=1e-12)
    assert (i[0], u[0], mx[0]) == (n, 2 * n, (x * np.float32(1000)).astype(np.int32).max())


def test_templated_helper_with_extern_c_wrappers():
    m = mod("template.cu")
    assert set(m.kernels) == {"saxpy", "daxpy"}
    for name, t in (("saxpy", np.float32), ("daxpy", np.float64)):
        x, y = rand(777, t), rand(777, t, seed=1)
        y0 = y.copy()
        m.get_function(name)((2,), (128,), (np.int32(777), t(3), x, y))
        np.testing.assert_allclose(y, 3 * x + y0, rtol=1e-6)
    with pytest.raises(EmulatorError, match="__launch_bounds__"):
        m.get_function("saxpy")(1, 256, (np.int32(1), np.float32(1), x.astype(np.float32),
                                         y.astype(np.float32)))


def test_include_dirs(incdir):
    n = 300
    x = rand(n)
    y = np.zeros(n, np.float32)
    mod("include.cu", incdir).get_function("sum_squares")((3,), (128,), (x, y, np.int32(n)),
                                                           shared_mem=128 * 4)
    xp = np.zeros(384, np.float32)
    xp[:n] = x
    want = np.repeat((3 * xp * xp).reshape(3, 128).sum(1), 128)[:n]
    np.testing.assert_allclose(y, want, rtol=1e-5)


def test_math():
    n = 64
    x = rand(n) + np.float32(0.1)
    y = np.zeros(17 * n, np.float32)
    mod("math.cu").get_function("math_f")(1, n, (x, y, np.int32(n)))
    y = y.reshape(n, 17)
    erf = np.vectorize(math.erf)
    want = [np.exp(x), np.log(x), np.sqrt(x), 1 / np.sqrt(x), np.maximum(x, 0.5),
            np.minimum(x, 0.5), x, np.tanh(x), erf(x), x ** 1.5, np.exp(x), np.log(x), x / 3,
            np.maximum(x, 0.25),
            np.minimum(np.arange(n), 3), np.maximum(np.arange(n), n - 3), x]
    np.testing.assert_allclose(y, np.stack(want, 1), rtol=2e-6)
    xd = x.astype(np.float64)
    yd = np.zeros(9 * n)
    mod("math.cu").get_function("math_d")(2, 32, (xd, yd, np.int32(n)))
    want = [np.exp(xd), np.log(xd), np.sqrt(xd), 1 / np.sqrt(xd), np.maximum(xd, 0.5), np.tanh(xd),
            erf(xd), xd ** 1.5, np.minimum(xd, 0.5)]
    np.testing.assert_allclose(yd.reshape(n, 9), np.stack(want, 1), rtol=1e-14)


# ---- argument and launch checks ----------------------------------------------------

def test_python_scalars_are_rejected():
    a = np.zeros(4, np.float32)
    f = mod("vecadd.cu").get_function("vecadd")
    for bad in (4, 4.0, True):
        with pytest.raises(TypeError, match="numpy scalar"):
            f(1, 4, (a, a, a, bad))


def test_argument_checks():
    a = np.zeros(8, np.float32)
    f = mod("vecadd.cu").get_function("vecadd")
    assert f.params == ["pf4", "pf4", "pf4", "i4"]
    with pytest.raises(ValueError, match="C-contiguous"):
        f(1, 4, (a[::2], a[:4], a[:4], np.int32(4)))
    with pytest.raises(TypeError, match="float64"):
        f(1, 4, (a, a.astype(np.float64), a, np.int32(4)))
    with pytest.raises(TypeError, match="int64"):
        f(1, 4, (a, a, a, np.int64(4)))
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        f(1, 4, (a, a, a))
    with pytest.raises(TypeError, match="array where the kernel takes a value"):
        f(1, 4, (a, a, a, a))
    f(1, 4, (a, a, a, np.uint32(4)))  # same size, signedness differs: as CUDA
    with pytest.raises(KeyError, match="vecadd, nothing, scale_ll|has: nothing, scale_ll, vecadd"):
        mod("vecadd.cu").get_function("vec_add")


def test_launch_configuration_errors():
    a = np.zeros(4, np.float32)
    f = mod("vecadd.cu").get_function("vecadd")
    args = (a, a, a, np.int32(4))
    for grid, block in [(1, 1025), (1, (32, 32, 2)), (0, 32), ((1, 0), 32), (1, (1, 1, 65)),
                        ((1, 1, 1, 1), 1), (1, 0)]:
        with pytest.raises(EmulatorError, match="launch configuration|dimensions"):
            f(grid, block, args)
    with pytest.raises(EmulatorError, match="max_dynamic_shared_size_bytes"):
        f(1, 4, args, shared_mem=48 * 1024 + 4)
    f.max_dynamic_shared_size_bytes = 227 * 1024
    f(1, 4, args, shared_mem=100 * 1024)
    with pytest.raises(EmulatorError, match="dynamic shared memory"):
        f(1, 4, args, shared_mem=228 * 1024)
    with pytest.raises(EmulatorError, match="dynamic shared memory"):
        f(1, 4, args, shared_mem=-1)


def test_compile_error_names_file():
    with pytest.raises(EmulatorError, match=r"(?s)broken\.cu.*broken\.cu:3.*undeclared_thing"):
        compile_module('extern "C" __global__ void k(float* x) {\n'
                       '  int i = threadIdx.x;\n  x[i] = undeclared_thing;\n}\n', name="broken.cu")


def test_asan_requires_preload():
    if emu._asan_loaded():
        pytest.skip("this process has libasan loaded")
    with pytest.raises(EmulatorError, match="LD_PRELOAD"):
        compile_module(SOURCES["oob.cu"], asan=True)


def test_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUDL_EMU_CACHE", str(tmp_path))
    src = SOURCES["vecadd.cu"] + "// %s\n" % uuid.uuid4()
    before = dict(emu.stats)
    m1 = compile_module(src, name="cached.cu")
    assert emu.stats["compiles"] == before["compiles"] + 1
    assert compile_module(src, name="cached.cu") is m1
    assert emu.stats["compiles"] == before["compiles"] + 1
    emu._modules.clear()  # a new process: disk cache only
    m3 = compile_module(src, name="cached.cu")
    assert m3 is not m1 and m3.path == m1.path
    assert emu.stats["compiles"] == before["compiles"] + 1
    assert emu.stats["disk_hits"] == before["disk_hits"] + 1
    assert len(list(tmp_path.glob("*.so"))) == 1


def test_cache_folder_is_the_users_cache(tmp_path, monkeypatch):
    """$GPUDL_EMU_CACHE, else gpudl/emu in $XDG_CACHE_HOME (when absolute) or ~/.cache."""
    monkeypatch.delenv("GPUDL_EMU_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert emu._cache_dir() == str(tmp_path / "xdg" / "gpudl" / "emu")
    monkeypatch.setenv("XDG_CACHE_HOME", "not/absolute")
    assert emu._cache_dir() == str(tmp_path / "home" / ".cache" / "gpudl" / "emu")
    monkeypatch.setenv("GPUDL_EMU_CACHE", str(tmp_path / "own"))
    assert emu._cache_dir() == str(tmp_path / "own")
    assert all((tmp_path / p).is_dir() for p in ("xdg/gpudl/emu", "home/.cache/gpudl/emu", "own"))


def test_barrier_free_kernels_run_as_a_plain_loop():
    """A kernel without __syncthreads runs its threads as a loop, not fibers
    (that is what keeps ~1e6-thread launches cheap); one with barriers gets fibers."""
    m = mod("vecadd.cu")
    f = m.get_function("nothing")
    assert not f.needs_fibers
    f((3907,), (256,), (np.zeros(1, np.float32),))     # ~1e6 threads
    assert mod("reduce.cu").get_function("block_sum").needs_fibers


# ---- against real CUDA and ASan ----------------------------------------------------

@pytest.mark.skipif(not shutil.which("nvcc"), reason="nvcc not on PATH")
def test_sources_compile_with_nvcc(tmp_path, incdir):
    procs = {}
    for name, text in SOURCES.items():
        (tmp_path / name).write_text(text)
        procs[name] = subprocess.Popen(
            ["nvcc", "-arch=sm_90", "--ptx", "-I", incdir, str(tmp_path / name),
             "-o", str(tmp_path / (name + ".ptx"))], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    failed = {n: p.communicate()[0] for n, p in procs.items() if p.wait() != 0}
    assert not failed, failed


ASAN_SCRIPT = r"""
import numpy as np, sys
from gpudl.testing.cuda_emulator import compile_module
from test_emulator import SOURCES
m = compile_module(SOURCES["shuffle.cu"] + SOURCES["dynsmem.cu"], name="clean.cu")
x = np.ones(1024, np.float32)
m.get_function("warp_ops")(4, 256, (x, np.zeros(32, np.float32), np.zeros(1024),
                                    np.zeros(1024, np.int32), np.zeros(1024, np.float32),
                                    np.zeros(32, np.uint32), np.int32(1000)))
y = np.zeros_like(x)
m.get_function("reverse_block")(1, 1024, (x, y, np.zeros(1, np.int32)), shared_mem=4096)
print("CLEAN OK", flush=True)
bad = compile_module(SOURCES["oob.cu"], name="oob.cu")
bad.get_function("oob_write")(4, 256, (np.zeros(1000, np.float32), np.int32(1000)))
print("NOT DETECTED", flush=True)
"""


def test_asan_reports_out_of_bounds_write(tmp_path):
    try:
        env = dict(os.environ, **emu.asan_env())
    except EmulatorError as e:
        pytest.skip("libasan not found: %s" % e)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.dirname(__file__)])
    r = subprocess.run([sys.executable, "-c", ASAN_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300)
    assert "CLEAN OK" in r.stdout, r.stderr[-3000:]
    assert r.returncode != 0 and "NOT DETECTED" not in r.stdout
    assert "AddressSanitizer" in r.stderr and "oob_write" in r.stderr, r.stderr[-3000:]


RACES = r"""
extern "C" __global__ void shift_left(const float* x, float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = x[t];
  out[t] = t ? s[t - 1] : 0.f;            // no __syncthreads: a race
}
struct Sum {
  __device__ float operator()(float* buf) const { __syncthreads(); return buf[0] + buf[1]; }
};
extern "C" __global__ void functor_sync(float* out) {
  __shared__ float buf[2];
  if (threadIdx.x < 2) buf[threadIdx.x] = threadIdx.x + 1.f;
  out[threadIdx.x] = Sum()(buf);
}
extern "C" __global__ void static_garbage(float* out) {
  __shared__ float s[32];
  if (blockIdx.x == 0) s[threadIdx.x] = 7.f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void dyn_garbage(float* out) {
  extern __shared__ float d[];
  if (blockIdx.x == 0) d[threadIdx.x] = 7.f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = d[threadIdx.x];
}
"""


def test_reverse_order_exposes_races_that_the_default_order_hides(monkeypatch):
    m = compile_module(RACES, name="races.cu")
    got = {}
    for k, order in enumerate(("", "reverse")):
        monkeypatch.setenv("GPUDL_EMU_ORDER", order)
        x = np.arange(1, 65, dtype=np.float32) + 100 * k   # new values: what is read was not written yet
        out = np.zeros(64, np.float32)
        m.get_function("shift_left")((1,), (64,), (x, out))
        got[order] = (out[1:], x[:-1])
    np.testing.assert_array_equal(*got[""])                # in index order the race looks right
    assert not np.array_equal(*got["reverse"])             # in reverse it does not


def test_a_functor_that_syncs_runs_with_fibers():
    m = compile_module(RACES, name="races.cu")
    out = np.zeros(32, np.float32)
    m.get_function("functor_sync")((1,), (32,), (out,))
    np.testing.assert_array_equal(out, np.full(32, 3.0))


def test_shared_memory_starts_as_garbage_in_every_block():
    m = compile_module(RACES, name="races.cu")
    for kernel, smem in (("dyn_garbage", 32 * 4), ("static_garbage", 0)):
        for _ in range(2):                                       # nor the last launch's
            out = np.zeros(3 * 32, np.float32)
            m.get_function(kernel)((3,), (32,), (out,), shared_mem=smem)
            assert (out[:32] == 7).all() and np.isnan(out[32:]).all(), kernel   # block 0's values do not leak


def test_a_shuffle_from_an_exited_lane_is_an_error():
    src = r"""
extern "C" __global__ void early_exit_shfl(float* out) {
  if (threadIdx.x >= 10) return;
  float v = threadIdx.x;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[threadIdx.x] = v;
}
extern "C" __global__ void full_warp_shfl(float* out) {
  float v = threadIdx.x;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[threadIdx.x] = v;
}
"""
    m = compile_module(src, name="shfl_exit.cu")
    with pytest.raises(EmulatorError, match="lane that has exited or does not exist"):
        m.get_function("early_exit_shfl")((1,), (32,), (np.zeros(32, np.float32),))
    with pytest.raises(EmulatorError, match="lane that has exited or does not exist"):
        m.get_function("full_warp_shfl")((1,), (48,), (np.zeros(48, np.float32),))   # a partial warp
    out = np.zeros(64, np.float32)
    m.get_function("full_warp_shfl")((1,), (64,), (out,))
    np.testing.assert_array_equal(out, np.r_[np.full(32, 496.0), np.full(32, 1520.0)])


def test_threads_meeting_at_different_barriers_is_an_error():
    src = r"""
extern "C" __global__ void split_barrier(float* out) {
  if (threadIdx.x < 16) { out[threadIdx.x] = 1.f; __syncthreads(); }
  else { out[threadIdx.x] = 2.f; __syncthreads(); }
}
extern "C" __global__ void one_barrier(float* out) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = threadIdx.x;
  __syncthreads();
}
"""
    m = compile_module(src, name="split_barrier.cu")
    with pytest.raises(EmulatorError, match="different __syncthreads"):
        m.get_function("split_barrier")((1,), (32,), (np.zeros(32, np.float32),))
    out = np.zeros(64, np.float32)
    m.get_function("one_barrier")((2,), (32,), (out,))
    np.testing.assert_array_equal(out, np.r_[np.arange(32), np.arange(32)])
