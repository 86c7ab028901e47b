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
        for (gd_index j = threadIdx.x; j < m; j += blockDim.x) {
            const gd_index n = j / L;
            s += xc[n * C * L + (j - n * L)];
        }
        const T mean = gd_block_sum(s, buf) / T(m);
        T v = T(0);
        for (gd_index j = threadIdx.x; j < m; j += blockDim.x) {
            const gd_index n = j / L;
            const T d = xc[n * C * L + (j - n * L)] - mean;
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

template <typename T>
__device__ void bn_apply_impl(const T* __restrict__ x, const T* __restrict__ mean,
                              const T* __restrict__ invstd, const T* __restrict__ weight,
                              const T* __restrict__ bias, T* __restrict__ y, T* __restrict__ xhat,
                              int N, int C, int L, int has_weight, int has_bias) {
    const gd_index total = (gd_index)N * C * L;
    GD_KERNEL_LOOP(i, total) {
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
    const gd_index m = (gd_index)N * L;
    for (gd_index c = blockIdx.x; c < C; c += gridDim.x) {
        const gd_index base = (gd_index)c * L;
        T s = T(0), sx = T(0);
        for (gd_index j = threadIdx.x; j < m; j += blockDim.x) {
            const gd_index n = j / L;
            const gd_index k = base + n * C * L + (j - n * L);
            s += g[k];
            sx += g[k] * xhat[k];
        }
        s = gd_block_sum(s, buf);
        sx = gd_block_sum(sx, buf);
        if (threadIdx.x == 0) {
            sg_out[c] = s;
            sgx_out[c] = sx;
        }
    }
}

template <typename T>
__device__ void bn_grad_input_impl(const T* __restrict__ g, const T* __restrict__ xhat,
                                   const T* __restrict__ invstd, const T* __restrict__ weight,
                                   const T* __restrict__ sg, const T* __restrict__ sgx,
                                   T* __restrict__ gx, int N, int C, int L, int has_weight,
                                   int batch_stats) {
    const gd_index total = (gd_index)N * C * L;
    const T inv_m = T(1) / T((gd_index)N * L);
    GD_KERNEL_LOOP(i, total) {
        const int c = (int)((i / L) % C);
        const T a = has_weight ? invstd[c] * weight[c] : invstd[c];
        T v = g[i];
        if (batch_stats) v -= (xhat[i] * sgx[c] + sg[c]) * inv_m;
        gx[i] = a * v;
    }
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
