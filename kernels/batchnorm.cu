// batchnorm.cu -- batch normalisation over axis 1 of a C-contiguous (N, C, L) array
// (L = 1 for (N, C) input, H * W for images).
//
// Forward, training: batch_norm_stats (one thread block per channel, grid-stride
// over channels) computes the channel's mean, then the mean of (x - mean)^2 in a
// second pass over the same values (no cancellation in float32), writes mean, var
// and invstd = 1 / sqrt(var + eps) and, when update_running is set, moves the
// running statistics by momentum (the variance unbiased by m / (m - 1), m = N * L).
// batch_norm_apply (one thread per element) then writes xhat = (x - mean) * invstd
// and y = xhat * weight + bias.
// Backward: batch_norm_grad_reduce (one block per channel) sums g and g * xhat
// (the bias and weight gradients); batch_norm_grad_input (one thread per element)
//   gx = a * (g - (xhat * sum(g xhat) + sum(g)) / m)   with batch statistics,
//   gx = a * g                                          with running statistics,
// where a = invstd * weight.  weight / bias are read only when has_weight /
// has_bias is set; running statistics only when update_running is set.
// blockDim.x must be a multiple of 32 for the reductions.
#include "common.cuh"

// This thread's share of one channel's m = N * L values, x[n][c][l] for
// j = n * L + l in threadIdx.x, threadIdx.x + blockDim.x, ...: `at` is the
// offset n * C * L + l from the channel's first value.  The walk keeps n and
// l as it goes, so the loop divides nothing (64-bit division is slow on a GPU).
struct gd_channel_walk {
    gd_index at;                 // n * C * L + l
    int n, l;
    const int N, L;
    const gd_index row;          // C * L: from one image to the next
    int step_n, step_l;          // blockDim.x = step_n * L + step_l
    __device__ gd_channel_walk(int N_, int C, int L_) : N(N_), L(L_), row((gd_index)C * L_) {
        if (L_ <= 0) {           // empty planes: nothing to walk
            n = N_;
            l = step_n = step_l = 0;
            at = 0;
            return;
        }
        step_n = (int)(blockDim.x / L_);
        step_l = (int)(blockDim.x - (unsigned)step_n * L_);
        n = (int)(threadIdx.x / L_);
        l = (int)(threadIdx.x - (unsigned)n * L_);
        at = (gd_index)n * row + l;
    }
    __device__ bool more() const { return n < N; }
    __device__ void next() {
        n += step_n;
        l += step_l;
        if (l >= L) {
            l -= L;
            ++n;
        }
        at = (gd_index)n * row + l;
    }
};

template <typename T>
__device__ void bn_stats_impl(const T* __restrict__ x, T* __restrict__ mean_out,
                              T* __restrict__ var_out, T* __restrict__ invstd_out,
                              T* __restrict__ running_mean,
                              T* __restrict__ running_var, int N, int C, int L, T eps,
                              T momentum, int update_running) {
    __shared__ T buf[32];
    const gd_index m = (gd_index)N * L;
    for (gd_index c = blockIdx.x; c < C; c += gridDim.x) {
        const T* xc = x + (gd_index)c * L;
        T s = T(0);
        for (gd_channel_walk k(N, C, L); k.more(); k.next()) s += xc[k.at];
        const T mean = gd_block_sum(s, buf) / T(m);
        T v = T(0);
        for (gd_channel_walk k(N, C, L); k.more(); k.next()) {
            const T d = xc[k.at] - mean;
            v += d * d;
        }
        const T var = gd_block_sum(v, buf) / T(m);
        if (threadIdx.x == 0) {
            mean_out[c] = mean;
            var_out[c] = var;
            invstd_out[c] = T(1) / gd_sqrt(var + eps);
            if (update_running) {
                const T unbiased = m > 1 ? var * (T(m) / T(m - 1)) : var;
                running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * mean;
                running_var[c] = (T(1) - momentum) * running_var[c] + momentum * unbiased;
            }
        }
    }
}

template <typename T, typename I>
__device__ void bn_apply_loop(const T* __restrict__ x, const T* __restrict__ mean,
                              const T* __restrict__ invstd, const T* __restrict__ weight,
                              const T* __restrict__ bias, T* __restrict__ y, T* __restrict__ xhat,
                              int N, int C, int L, int has_weight, int has_bias) {
    const gd_index total = (gd_index)N * C * L;
    GD_KERNEL_LOOP_T(I, i, total) {
        const int c = (int)((i / L) % C);
        const T xh = (x[i] - mean[c]) * invstd[c];
        xhat[i] = xh;
        y[i] = (has_weight ? xh * weight[c] : xh) + (has_bias ? bias[c] : T(0));
    }
}

template <typename T>
__device__ void bn_grad_reduce_impl(const T* __restrict__ g, const T* __restrict__ xhat,
                                    T* __restrict__ sg_out, T* __restrict__ sgx_out,
                                    int N, int C, int L) {
    __shared__ T buf[32];
    for (gd_index c = blockIdx.x; c < C; c += gridDim.x) {
        const gd_index base = (gd_index)c * L;
        T s = T(0), sx = T(0);
        for (gd_channel_walk k(N, C, L); k.more(); k.next()) {
            const gd_index at = base + k.at;
            s += g[at];
            sx += g[at] * xhat[at];
        }
        s = gd_block_sum(s, buf);
        sx = gd_block_sum(sx, buf);
        if (threadIdx.x == 0) {
            sg_out[c] = s;
            sgx_out[c] = sx;
        }
    }
}

template <typename T, typename I>
__device__ void bn_grad_input_loop(const T* __restrict__ g, const T* __restrict__ xhat,
                                   const T* __restrict__ invstd, const T* __restrict__ weight,
                                   const T* __restrict__ sg, const T* __restrict__ sgx,
                                   T* __restrict__ gx, int N, int C, int L, int has_weight,
                                   int batch_stats) {
    const gd_index total = (gd_index)N * C * L;
    const T inv_m = T(1) / T((gd_index)N * L);
    GD_KERNEL_LOOP_T(I, i, total) {
        const int c = (int)((i / L) % C);
        const T a = has_weight ? invstd[c] * weight[c] : invstd[c];
        T v = g[i];
        if (batch_stats) v -= (xhat[i] * sgx[c] + sg[c]) * inv_m;
        gx[i] = a * v;
    }
}

// The element-wise passes with 32-bit indices unless the size needs 64.
template <typename T>
__device__ void bn_apply_impl(const T* x, const T* mean, const T* invstd, const T* weight,
                              const T* bias, T* y, T* xhat, int N, int C, int L,
                              int has_weight, int has_bias) {
    GD_INDEX_DISPATCH((gd_index)N * C * L, bn_apply_loop, T, x, mean, invstd, weight, bias, y, xhat,
                      N, C, L, has_weight, has_bias);
}

template <typename T>
__device__ void bn_grad_input_impl(const T* g, const T* xhat, const T* invstd, const T* weight,
                                   const T* sg, const T* sgx, T* gx, int N, int C, int L,
                                   int has_weight, int batch_stats) {
    GD_INDEX_DISPATCH((gd_index)N * C * L, bn_grad_input_loop, T, g, xhat, invstd, weight, sg, sgx, gx,
                      N, C, L, has_weight, batch_stats);
}

extern "C" __global__ void batch_norm_stats_f32(
        const float* x, float* mean, float* var, float* invstd, float* running_mean, float* running_var,
        int N, int C, int L, float eps, float momentum, int update_running) {
    bn_stats_impl<float>(x, mean, var, invstd, running_mean, running_var, N, C, L, eps, momentum,
                       update_running);
}
extern "C" __global__ void batch_norm_apply_f32(
        const float* x, const float* mean, const float* invstd, const float* weight, const float* bias,
        float* y, float* xhat, int N, int C, int L, int has_weight, int has_bias) {
    bn_apply_impl<float>(x, mean, invstd, weight, bias, y, xhat, N, C, L, has_weight, has_bias);
}
extern "C" __global__ void batch_norm_grad_reduce_f32(
        const float* g, const float* xhat, float* sg, float* sgx, int N, int C, int L) {
    bn_grad_reduce_impl<float>(g, xhat, sg, sgx, N, C, L);
}
extern "C" __global__ void batch_norm_grad_input_f32(
        const float* g, const float* xhat, const float* invstd, const float* weight, const float* sg,
        const float* sgx, float* gx, int N, int C, int L, int has_weight, int batch_stats) {
    bn_grad_input_impl<float>(g, xhat, invstd, weight, sg, sgx, gx, N, C, L, has_weight, batch_stats);
}
extern "C" __global__ void batch_norm_stats_f64(
        const double* x, double* mean, double* var, double* invstd, double* running_mean, double* running_var,
        int N, int C, int L, double eps, double momentum, int update_running) {
    bn_stats_impl<double>(x, mean, var, invstd, running_mean, running_var, N, C, L, eps, momentum,
                       update_running);
}
extern "C" __global__ void batch_norm_apply_f64(
        const double* x, const double* mean, const double* invstd, const double* weight, const double* bias,
        double* y, double* xhat, int N, int C, int L, int has_weight, int has_bias) {
    bn_apply_impl<double>(x, mean, invstd, weight, bias, y, xhat, N, C, L, has_weight, has_bias);
}
extern "C" __global__ void batch_norm_grad_reduce_f64(
        const double* g, const double* xhat, double* sg, double* sgx, int N, int C, int L) {
    bn_grad_reduce_impl<double>(g, xhat, sg, sgx, N, C, L);
}
extern "C" __global__ void batch_norm_grad_input_f64(
        const double* g, const double* xhat, const double* invstd, const double* weight, const double* sg,
        const double* sgx, double* gx, int N, int C, int L, int has_weight, int batch_stats) {
    bn_grad_input_impl<double>(g, xhat, invstd, weight, sg, sgx, gx, N, C, L, has_weight, batch_stats);
}
