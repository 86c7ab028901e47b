// softmax_xent.cu -- fused softmax cross-entropy with label smoothing.
//
// For a row z of C logits, label y and smoothing eps:
//   lse  = log(sum_j exp(z_j))             (computed as m + log(sum exp(z - m)))
//   loss = (1 - eps) * (lse - z_y) + eps * mean_j(lse - z_j)
//        = (1 - eps) * (lse - z_y) + eps * (lse - mean_j z_j)
//   dloss/dz_j = softmax_j - ((1 - eps) * [j == y] + eps / C)
// Forward and backward: one thread block per row (grid-stride over rows),
// block-wide max and sums through warp shuffles + a 32-slot shared buffer.
// blockDim.x must be a multiple of 32.  The backward uses the forward's lse
// while |lse| < 64; beyond, a rounded lse is off by ~1e-3 in float32 (so
// would exp(z - lse) be), and the row is renormalised from its maximum, as
// the CPU twin does.
// A label outside [0, C) gives a NaN loss / NaN gradient row (never an
// out-of-bounds read).
#include "common.cuh"

template <typename T>
__device__ void xent_fwd_impl(const T* __restrict__ logits, const long long* __restrict__ labels,
                              T* __restrict__ loss, T* __restrict__ lse_out,
                              int N, int C, T eps) {
    __shared__ T buf[32];
    for (gd_index row = blockIdx.x; row < N; row += gridDim.x) {
        const T* z = logits + row * C;
        T m = z[0];
        for (gd_index j = threadIdx.x; j < C; j += blockDim.x) m = gd_max(m, z[j]);
        m = gd_block_max(m, buf);
        T s = T(0), sz = T(0);
        for (gd_index j = threadIdx.x; j < C; j += blockDim.x) {
            s += gd_exp(z[j] - m);
            sz += z[j] - m;                  // shifted: no cancellation for large logits
        }
        s = gd_block_sum(s, buf);
        sz = gd_block_sum(sz, buf);
        if (threadIdx.x == 0) {
            const T lse_m = gd_log(s);       // lse - m
            const long long y = labels[row];
            T l;
            if (y < 0 || y >= C) {
                l = gd_nan<T>();
            } else {
                const T zy = z[y] - m;
                l = (T(1) - eps) * (lse_m - zy);
                if (eps != T(0)) l += eps * (lse_m - sz / T(C));   // not 0 * inf for a -inf logit
            }
            loss[row] = l;
            lse_out[row] = m + lse_m;
        }
    }
}

template <typename T>
__device__ void xent_bwd_impl(const T* __restrict__ logits, const long long* __restrict__ labels,
                              const T* __restrict__ lse, const T* __restrict__ gloss,
                              T* __restrict__ glogits, int N, int C, T eps) {
    __shared__ T buf[32];
    const T off = eps / T(C);
    for (gd_index row = blockIdx.x; row < N; row += gridDim.x) {
        const T* z = logits + row * C;
        const long long y = labels[row];
        T shift = lse[row], scale = T(1);
        if (!(shift < T(64) && shift > T(-64))) {   // the same for the whole block
            T m = z[0];
            for (gd_index j = threadIdx.x; j < C; j += blockDim.x) m = gd_max(m, z[j]);
            m = gd_block_max(m, buf);
            T s = T(0);
            for (gd_index j = threadIdx.x; j < C; j += blockDim.x) s += gd_exp(z[j] - m);
            s = gd_block_sum(s, buf);
            shift = m;
            scale = T(1) / s;
        }
        for (gd_index j = threadIdx.x; j < C; j += blockDim.x) {
            T g;
            if (y < 0 || y >= C) {
                g = gd_nan<T>();
            } else {
                const T p = gd_exp(z[j] - shift) * scale;
                const T target = (j == y ? T(1) - eps : T(0)) + off;
                g = gloss[row] * (p - target);
            }
            glogits[row * C + j] = g;
        }
    }
}

extern "C" __global__ void softmax_cross_entropy_forward_f32(
        const float* logits, const long long* labels, float* loss, float* lse,
        int N, int C, float eps) {
    xent_fwd_impl<float>(logits, labels, loss, lse, N, C, eps);
}
extern "C" __global__ void softmax_cross_entropy_forward_f64(
        const double* logits, const long long* labels, double* loss, double* lse,
        int N, int C, double eps) {
    xent_fwd_impl<double>(logits, labels, loss, lse, N, C, eps);
}
extern "C" __global__ void softmax_cross_entropy_backward_f32(
        const float* logits, const long long* labels, const float* lse,
        const float* gloss, float* glogits, int N, int C, float eps) {
    xent_bwd_impl<float>(logits, labels, lse, gloss, glogits, N, C, eps);
}
extern "C" __global__ void softmax_cross_entropy_backward_f64(
        const double* logits, const long long* labels, const double* lse,
        const double* gloss, double* glogits, int N, int C, double eps) {
    xent_bwd_impl<double>(logits, labels, lse, gloss, glogits, N, C, eps);
}
