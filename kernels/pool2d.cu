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
// windows that can contain it (no atomics, deterministic).  Windows that tile
// the input exactly (kernel == stride, no padding, H = Ho*kH, W = Wo*kW: the
// 2x2 pooling of every CNN here) take one thread per window instead, which
// writes the window's kH*kW gradients: a quarter of the threads for 2x2, and
// no window search.  Each input pixel still gets its value from the one
// window that holds it: the same values (a -0.0 gradient stays -0.0 here,
// where the gather's 0 + -0.0 gives +0.0).
// Every loop runs with 32-bit indices unless the flat size needs 64 bits
// (GD_KERNEL_LOOP_T; -DGD_INDEX64 forces the 64-bit path, which the ASan test
// run builds so that both are exercised).
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

// True when the windows partition the input exactly (see the top of the file).
__device__ inline bool gd_pool_tiles(int H, int W, int kH, int kW, int sh, int sw,
                                     int ph, int pw, int Ho, int Wo) {
    return ph == 0 && pw == 0 && sh == kH && sw == kW
           && (gd_index)Ho * kH == H && (gd_index)Wo * kW == W;
}

template <typename T, typename I>
__device__ void max_pool_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                  int* __restrict__ argmax, int N, int C, int H, int W,
                                  int kH, int kW, int sh, int sw, int ph, int pw,
                                  int Ho, int Wo) {
    const gd_index total = (gd_index)N * C * Ho * Wo;
    GD_KERNEL_LOOP_T(I, i, total) {
        I plane = i;
        const int ow = gd_divmod(plane, Wo), oh = gd_divmod(plane, Ho);
        const T* xp = x + (gd_index)plane * H * W;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        T best = gd_neg_inf<T>();
        int best_idx = -1;
        for (int kh = 0; kh < kH; ++kh) {
            const int h = h0 + kh;
            if (h < 0 || h >= H) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int w = w0 + kw;
                if (w < 0 || w >= W) continue;
                const T v = xp[h * W + w];
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

// One thread per window (tiling windows): each of its pixels gets gy where it
// is the argmax, else 0.
template <typename T, typename I>
__device__ void max_pool_bwd_tiles(const T* __restrict__ gy, const int* __restrict__ argmax,
                                   T* __restrict__ gx, gd_index total, int H, int W,
                                   int kH, int kW, int Ho, int Wo) {
    GD_KERNEL_LOOP_T(I, o, total) {
        I plane = o;
        const int ow = gd_divmod(plane, Wo), oh = gd_divmod(plane, Ho);
        const int am = argmax[o];
        const T g = gy[o];
        T* gp = gx + (gd_index)plane * H * W;
        for (int kh = 0; kh < kH; ++kh) {
            const int row = (oh * kH + kh) * W + ow * kW;
            for (int kw = 0; kw < kW; ++kw)
                gp[row + kw] = row + kw == am ? g : T(0);
        }
    }
}

// One thread per input pixel: the sum over the windows that hold it and
// point at it.
template <typename T, typename I>
__device__ void max_pool_bwd_gather(const T* __restrict__ gy, const int* __restrict__ argmax,
                                    T* __restrict__ gx, gd_index total, int H, int W,
                                    int kH, int kW, int sh, int sw, int ph, int pw,
                                    int Ho, int Wo) {
    GD_KERNEL_LOOP_T(I, i, total) {
        I plane = i;
        const int w = gd_divmod(plane, W), h = gd_divmod(plane, H);
        const gd_index base = (gd_index)plane * Ho * Wo;
        const int me = h * W + w;
        int oh0, oh1, ow0, ow1;
        gd_window_range(h, kH, sh, ph, Ho, &oh0, &oh1);
        gd_window_range(w, kW, sw, pw, Wo, &ow0, &ow1);
        T acc = T(0);
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow) {
                const gd_index o = base + oh * Wo + ow;
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

template <typename T, typename I>
__device__ void avg_pool_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                  int N, int C, int H, int W, int kH, int kW,
                                  int sh, int sw, int ph, int pw, int Ho, int Wo,
                                  int count_include_pad) {
    const gd_index total = (gd_index)N * C * Ho * Wo;
    GD_KERNEL_LOOP_T(I, i, total) {
        I plane = i;
        const int ow = gd_divmod(plane, Wo), oh = gd_divmod(plane, Ho);
        const T* xp = x + (gd_index)plane * H * W;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        const int hs = h0 < 0 ? 0 : h0, he = h0 + kH > H ? H : h0 + kH;
        const int ws = w0 < 0 ? 0 : w0, we = w0 + kW > W ? W : w0 + kW;
        T acc = T(0);
        for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w)
                acc += xp[h * W + w];
        y[i] = acc / T(gd_avg_count(oh, ow, H, W, kH, kW, sh, sw, ph, pw,
                                    count_include_pad));
    }
}

template <typename T, typename I>
__device__ void avg_pool_bwd_tiles(const T* __restrict__ gy, T* __restrict__ gx, gd_index total,
                                   int H, int W, int kH, int kW, int Ho, int Wo) {
    GD_KERNEL_LOOP_T(I, o, total) {
        I plane = o;
        const int ow = gd_divmod(plane, Wo), oh = gd_divmod(plane, Ho);
        const T g = gy[o] / T(kH * kW);     // no padding: both divisors are kH * kW
        T* gp = gx + (gd_index)plane * H * W;
        for (int kh = 0; kh < kH; ++kh) {
            const int row = (oh * kH + kh) * W + ow * kW;
            for (int kw = 0; kw < kW; ++kw) gp[row + kw] = g;
        }
    }
}

template <typename T, typename I>
__device__ void avg_pool_bwd_gather(const T* __restrict__ gy, T* __restrict__ gx, gd_index total,
                                    int H, int W, int kH, int kW, int sh, int sw, int ph, int pw,
                                    int Ho, int Wo, int count_include_pad) {
    GD_KERNEL_LOOP_T(I, i, total) {
        I plane = i;
        const int w = gd_divmod(plane, W), h = gd_divmod(plane, H);
        const gd_index base = (gd_index)plane * Ho * Wo;
        int oh0, oh1, ow0, ow1;
        gd_window_range(h, kH, sh, ph, Ho, &oh0, &oh1);
        gd_window_range(w, kW, sw, pw, Wo, &ow0, &ow1);
        T acc = T(0);
        for (int oh = oh0; oh <= oh1; ++oh)
            for (int ow = ow0; ow <= ow1; ++ow)
                acc += gy[base + oh * Wo + ow] /
                       T(gd_avg_count(oh, ow, H, W, kH, kW, sh, sw, ph, pw,
                                      count_include_pad));
        gx[i] = acc;
    }
}

#define GD_POOL_ARGS int N, int C, int H, int W, int kH, int kW, int sh, int sw, \
    int ph, int pw, int Ho, int Wo
#define GD_POOL_PASS N, C, H, W, kH, kW, sh, sw, ph, pw, Ho, Wo

// The entry points pick the index width (and, backward, the tiling path).
template <typename T>
__device__ void max_pool_fwd(const T* x, T* y, int* argmax, GD_POOL_ARGS) {
    GD_INDEX_DISPATCH((gd_index)N * C * Ho * Wo, max_pool_fwd_impl, T, x, y, argmax, GD_POOL_PASS);
}

template <typename T>
__device__ void max_pool_bwd(const T* gy, const int* argmax, T* gx, GD_POOL_ARGS) {
    const gd_index windows = (gd_index)N * C * Ho * Wo, pixels = (gd_index)N * C * H * W;
    if (gd_pool_tiles(H, W, kH, kW, sh, sw, ph, pw, Ho, Wo))
        GD_INDEX_DISPATCH(windows, max_pool_bwd_tiles, T, gy, argmax, gx, windows, H, W, kH, kW, Ho, Wo);
    else
        GD_INDEX_DISPATCH(pixels, max_pool_bwd_gather, T, gy, argmax, gx, pixels, H, W, kH, kW,
                          sh, sw, ph, pw, Ho, Wo);
}

template <typename T>
__device__ void avg_pool_fwd(const T* x, T* y, GD_POOL_ARGS, int cip) {
    GD_INDEX_DISPATCH((gd_index)N * C * Ho * Wo, avg_pool_fwd_impl, T, x, y, GD_POOL_PASS, cip);
}

template <typename T>
__device__ void avg_pool_bwd(const T* gy, T* gx, GD_POOL_ARGS, int cip) {
    const gd_index windows = (gd_index)N * C * Ho * Wo, pixels = (gd_index)N * C * H * W;
    if (gd_pool_tiles(H, W, kH, kW, sh, sw, ph, pw, Ho, Wo))
        GD_INDEX_DISPATCH(windows, avg_pool_bwd_tiles, T, gy, gx, windows, H, W, kH, kW, Ho, Wo);
    else
        GD_INDEX_DISPATCH(pixels, avg_pool_bwd_gather, T, gy, gx, pixels, H, W, kH, kW,
                          sh, sw, ph, pw, Ho, Wo, cip);
}

extern "C" __global__ void max_pool2d_forward_f32(const float* x, float* y, int* argmax, GD_POOL_ARGS) {
    max_pool_fwd<float>(x, y, argmax, GD_POOL_PASS);
}
extern "C" __global__ void max_pool2d_forward_f64(const double* x, double* y, int* argmax, GD_POOL_ARGS) {
    max_pool_fwd<double>(x, y, argmax, GD_POOL_PASS);
}
extern "C" __global__ void max_pool2d_backward_f32(const float* gy, const int* argmax, float* gx, GD_POOL_ARGS) {
    max_pool_bwd<float>(gy, argmax, gx, GD_POOL_PASS);
}
extern "C" __global__ void max_pool2d_backward_f64(const double* gy, const int* argmax, double* gx, GD_POOL_ARGS) {
    max_pool_bwd<double>(gy, argmax, gx, GD_POOL_PASS);
}
extern "C" __global__ void avg_pool2d_forward_f32(const float* x, float* y, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_fwd<float>(x, y, GD_POOL_PASS, count_include_pad);
}
extern "C" __global__ void avg_pool2d_forward_f64(const double* x, double* y, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_fwd<double>(x, y, GD_POOL_PASS, count_include_pad);
}
extern "C" __global__ void avg_pool2d_backward_f32(const float* gy, float* gx, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_bwd<float>(gy, gx, GD_POOL_PASS, count_include_pad);
}
extern "C" __global__ void avg_pool2d_backward_f64(const double* gy, double* gx, GD_POOL_ARGS, int count_include_pad) {
    avg_pool_bwd<double>(gy, gx, GD_POOL_PASS, count_include_pad);
}
