// common.cuh -- small helpers shared by every gpudl kernel family.
//
// Conventions (see DESIGN.md, "Kernels"):
//   * Kernels are written once as templates over the element type T and
//     instantiated as thin `extern "C"` kernels named <what>_<f32|f64>.
//   * Flat indices are `long long` (gd_index): N*C*H*W may exceed 2^31 even
//     when every single dimension fits in an int.  Shape scalars are `int`.
//   * 1-D launches use a grid-stride loop, so any grid size is correct and the
//     host may cap the grid.
//   * No atomics anywhere: backward passes are gathers, so results are
//     bit-for-bit reproducible run to run.
#pragma once

typedef long long gd_index;

// Grid-stride loop over [0, n) with a 64-bit index.
#define GD_KERNEL_LOOP(i, n) GD_KERNEL_LOOP_T(gd_index, i, n)

// The same loop with an index of type I.  Kernels that split a flat index
// into coordinates (divisions and remainders) run it with I = int where
// gd_fits_int(n) says the loop cannot overflow: 64-bit integer division is
// a long software routine on a GPU, 32-bit division a few instructions.
#define GD_KERNEL_LOOP_T(I, i, n)                                             \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x;                \
         i < (I)(n); i += (I)blockDim.x * (I)gridDim.x)

// f<T, int>(...) when a loop over n fits 32-bit indices, else f<T, gd_index>(...).
#define GD_INDEX_DISPATCH(n, f, T, ...)                                       \
    do {                                                                      \
        if (gd_fits_int(n)) f<T, int>(__VA_ARGS__);                           \
        else f<T, gd_index>(__VA_ARGS__);                                     \
    } while (0)

// r % d, leaving r / d in r (one division).
template <typename I>
__device__ inline int gd_divmod(I& r, int d) {
    const I q = r / d;
    const int m = (int)(r - q * d);
    r = q;
    return m;
}

__device__ inline bool gd_fits_int(gd_index n) {
#ifdef GD_INDEX64
    return false;                    // tests: the 64-bit path that huge tensors take
#else
    return n + (gd_index)blockDim.x * gridDim.x <= (gd_index)2147483647;
#endif
}

// Overloads so templates call the precision that matches T.
__device__ inline float gd_exp(float x) { return expf(x); }
__device__ inline double gd_exp(double x) { return exp(x); }
__device__ inline float gd_log(float x) { return logf(x); }
__device__ inline double gd_log(double x) { return log(x); }
__device__ inline float gd_sqrt(float x) { return sqrtf(x); }
__device__ inline double gd_sqrt(double x) { return sqrt(x); }

template <typename T>
__device__ inline T gd_max(T a, T b) { return a > b ? a : b; }

// -inf (and NaN below) built at run time from a division by zero, so the
// header needs neither <math.h> nor INFINITY (NVRTC has no system headers).
template <typename T>
__device__ inline T gd_neg_inf() {
    volatile T zero = T(0);
    return -T(1) / zero;
}
template <typename T>
__device__ inline T gd_nan() {
    volatile T zero = T(0);
    return zero / zero;
}

// ---- warp / block reductions (blockDim.x must be a multiple of 32) --------

template <typename T>
__device__ inline T gd_warp_sum(T v) {
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

template <typename T>
__device__ inline T gd_warp_max(T v) {
    for (int off = 16; off > 0; off >>= 1)
        v = gd_max(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// Block-wide reductions through a 32-slot shared buffer.  Every thread of
// the block must call them (they contain __syncthreads) and every thread
// gets the result.  `buf` must hold at least 32 elements.
template <typename T>
__device__ T gd_block_sum(T v, T* buf) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = gd_warp_sum(v);
    __syncthreads();                 // buf may still be read by a previous call
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    T r = lane < nwarps ? buf[lane] : T(0);
    return gd_warp_sum(r);           // every warp reduces the same 32 values
}

template <typename T>
__device__ T gd_block_max(T v, T* buf) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = gd_warp_max(v);
    __syncthreads();
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    T r = lane < nwarps ? buf[lane] : buf[0];
    return gd_warp_max(r);
}
