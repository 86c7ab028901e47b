// pool2d.cu -- max and average 2-D pooling, forward and backward.
//
// PyTorch semantics with ceil_mode=False and no dilation:
//   Ho = (H + 2*ph - kH) / sh + 1, window of output (oh, ow) starts at
//   (oh*sh - ph, ow*sw - pw).  The host checks ph <= kH/2, pw <= kW/2, so
//   every window holds at least one real input pixel.
// max pool: padding acts as -inf; argmax is the int32 flat index h*W + w into
//   the unpadded input plane of the first maximum in row-major window order
//   (a NaN counts as the maximum and the last NaN wins, as in PyTorch, whose
//   loop takes every NaN it meets).
// avg pool: divisor kH*kW when count_include_pad (windows never reach past
//   the padding when ceil_mode=False), else the number of real pixels.
// Backward passes are gathers: one thread per input pixel scans the output
// windows that can contain it (no atomics, deterministic).
#include "common.cuh"

// Output rows/cols whose window contains input coordinate h: all o with
// o*s - p <= h <= o*s - p + k - 1, clipped to [0, O).
__device__ inline void gd_window_range(int h, int k, int s, int p, int O,
                                       int* lo, int* hi) {
    const int a = h + p - k + 1;             // o*s >= a
    int l = a <= 0 ? 0 : (a - 1) / s + 1;    // ceil(a / s) for a > 0, without a + s overflowing
    int u = (h + p) / s;                     // o*s <= h + p  (h + p >= 0)
    if (u > O - 1) u = O - 1;
    *lo = l;
    *hi = u;                                 // empty when l > u
}

template <typename T>
__device__ void max_pool_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                  int* __restrict__ argmax, int N, int C, int H, int W,
                                  int kH, int kW, int sh, int sw, int ph, int pw,
                                  int Ho, int Wo) {
    const gd_index total = (gd_index)N * C * Ho * Wo;
    GD_KERNEL_LOOP(i, total) {
        gd_index r = i;
        const int ow = (int)(r % Wo); r /= Wo;
        const int oh = (int)(r % Ho); r /= Ho;
        const T* plane = x + r * H * W;      // r = n * C + c
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        T best = gd_neg_inf<T>();
        int best_idx = -1;
        for (int kh = 0; kh < kH; ++kh) {
            const int h = h0 + kh;
            if (h < 0 || h >= H) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int w = w0 + kw;
                if (w < 0 || w >= W) continue;
                const T v = plane[(gd_index)h * W + w];
                // first max wins; NaN beats everything, a later NaN too
                if (best_idx < 0 || v > best || v != v) {
                    best = v;
                    best_idx = h * W + w;
                }
            }
        }
        y[i] = best;
        argmax[i] = best_idx;
    }
}

template <typename T>
__device__ void max_pool_bwd_impl(const T* __restrict__ gy, const int* __restrict__ argmax,
                                  T* __restrict__ gx, int N, int C, int H, int W,
                                  int kH, int kW, int sh, int sw, int ph, int pw,
                                  int Ho, int Wo) {
    const gd_index total = (gd_index)N * C * H * W;
    GD_KERNEL_LOOP(i, total) {
        gd_index r = i;
        const int w = (int)(r % W); r /= W;
        const int h = (int)(r % H); r /= H;
        const gd_index base = r * Ho * Wo;   // r = n * C + c
        const int me = h * W + w;
        int oh0, oh1, ow0, ow1;
        gd_window_range(h, kH, sh, ph, Ho, &oh0, &oh1);
        gd_window_range(w, kW, sw, pw, Wo, &ow0, &ow1);
        T acc = T(0);
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow) {
                const gd_index o = base + (gd_index)oh * Wo + ow;
                if (argmax[o] == me) acc += gy[o];
            }
        gx[i] = acc;
    }
}

// Divisor of window (oh, ow).
__device__ inline int gd_avg_count(int oh, int ow, int H, int W, int kH, int kW,
                                   int sh, int sw, int ph, int pw, int count_include_pad) {
    if (count_include_pad) return kH * kW;
    int h0 = oh * sh - ph, w0 = ow * sw - pw;
    int h1 = h0 + kH, w1 = w0 + kW;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    if (h1 > H) h1 = H;
    if (w1 > W) w1 = W;
    return (h1 - h0) * (w1 - w0);
}

template <typename T>
__device__ void avg_pool_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                  int N, int C, int H, int W, int kH, int kW,
                                  int sh, int sw, int ph, int pw, int Ho, int Wo,
                                  int count_include_pad) {
    const gd_index total = (gd_index)N * C * Ho * Wo;
    GD_KERNEL_LOOP(i, total) {
        gd_index r = i;
        const int ow = (int)(r % Wo); r /= Wo;
        const int oh = (int)(r % Ho); r /= Ho;
        const T* plane = x + r * H * W;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        const int hs = h0 < 0 ? 0 : h0, he = h0 + kH > H ? H : h0 + kH;
        const int ws = w0 < 0 ? 0 : w0, we = w0 + kW > W ? W : w0 + kW;
        T acc = T(0);
        for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w)
                acc += plane[(gd_index)h * W + w];
        y[i] = acc / T(gd_avg_count(oh, ow, H, W, kH, kW, sh, sw, ph, pw,
                                    count_include_pad));
    }
}

template <typename T>
__device__ void avg_pool_bwd_impl(const T* __restrict__ gy, T* __restrict__ gx,
                                  int N, int C, int H, int W, int kH, int kW,
                                  int sh, int sw, int ph, int pw, int Ho, int Wo,
                                  int count_include_pad) {
    const gd_index total = (gd_index)N * C * H * W;
    GD_KERNEL_LOOP(i, total) {
        gd_index r = i;
        const int w = (int)(r % W); r /= W;
        const int h = (int)(r % H); r /= H;
        const gd_index base = r * Ho * Wo;
        int oh0, oh1, ow0, ow1;
        gd_window_range(h, kH, sh, ph, Ho, &oh0, &oh1);
        gd_window_range(w, kW, sw, pw, Wo, &ow0, &ow1);
        T acc = T(0);
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow)
                acc += gy[base + (gd_index)oh * Wo + ow] /
                       T(gd_avg_count(oh, ow, H, W, kH, kW, sh, sw, ph, pw,
                                      count_include_pad));
        gx[i] = acc;
    }
}

#define GD_POOL_ARGS int N, int C, int H, int W, int kH, int kW, int sh, int sw, \
    int ph, int pw, int Ho, int Wo
#define GD_POOL_PASS N, C, H, W, kH, kW, sh, sw, ph, pw, Ho, Wo

extern "C" __global__ void max_pool2d_forward_f32(const float* x, float* y, int* argmax, GD_POOL_ARGS) {
    max_pool_fwd_impl<float>(x, y, argmax, GD_POOL_PASS);
}
extern "C" __global__ void max_pool2d_forward_f64(const double* x, double* y, int* argmax, GD_POOL_ARGS) {
    max_pool_fwd_impl<double>(x, y, argmax, GD_POOL_PASS);
}
extern "C" __global__ void max_pool2d_backward_f32(const float* gy, const int* argmax, float* gx, GD_POOL_ARGS) {
    max_pool_bwd_impl<float>(gy, argmax, gx, GD_POOL_PASS);
}
extern "C" __global__ void max_pool2d_backward_f64(const double* gy, const int* argmax, double* gx, GD_POOL_ARGS) {
    max_pool_bwd_impl<double>(gy, argmax, gx, GD_POOL_PASS);
}
extern "C" __global__ void avg_pool2d_forward_f32(const float* x, float* y, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_fwd_impl<float>(x, y, GD_POOL_PASS, count_include_pad);
}
extern "C" __global__ void avg_pool2d_forward_f64(const double* x, double* y, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_fwd_impl<double>(x, y, GD_POOL_PASS, count_include_pad);
}
extern "C" __global__ void avg_pool2d_backward_f32(const float* gy, float* gx, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_bwd_impl<float>(gy, gx, GD_POOL_PASS, count_include_pad);
}
extern "C" __global__ void avg_pool2d_backward_f64(const double* gy, double* gx, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_bwd_impl<double>(gy, gx, GD_POOL_PASS, count_include_pad);
}
