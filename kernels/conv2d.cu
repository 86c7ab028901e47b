// conv2d.cu -- im2col / col2im for 2-D convolution (any stride, padding,
// dilation; groups are handled by the host's matmuls, because the column
// layout below is the same with or without groups).
//
// Column layout, for a chunk of `nb` images starting at image `n0`:
//     cols[c * kH * kW + kh * kW + kw][n][oh * Wo + ow]      (C*kH*kW, nb * Ho*Wo)
// holds x[n0 + n][c][oh*sh - ph + kh*dh][ow*sw - pw + kw*dw] (0 outside x).
// Every image's columns sit side by side, so one plain 2-D product per group
// covers the whole chunk (batched products over images cost the host several
// times more per call).  With groups g, rows [gi*Cg*kH*kW, (gi+1)*Cg*kH*kW)
// are group gi's: cols.reshape(g, Cg*kH*kW, nb * Ho*Wo).
//
// conv2d_forward   = W_g @ im2col(x)            -> (O, nb, Ho*Wo), then to NCHW
// weight gradient  = gy_g @ im2col(x)^T         (summed over the chunk by the product)
// data gradient    = col2im(W_g^T @ gy_g)       (col2im below is a gather:
//                    every input pixel sums its own contributions, no atomics)
#include "common.cuh"

template <typename T, typename I>
__device__ void im2col_impl(const T* __restrict__ x, T* __restrict__ cols,
                            int n0, int nb, int C, int H, int W,
                            int kH, int kW, int sh, int sw, int ph, int pw,
                            int dh, int dw, int Ho, int Wo) {
    const gd_index total = (gd_index)nb * C * kH * kW * Ho * Wo;
    GD_KERNEL_LOOP_T(I, i, total) {
        I r = i;
        const int ow = gd_divmod(r, Wo);
        const int oh = gd_divmod(r, Ho);
        const int n = gd_divmod(r, nb);        // image within the chunk
        const int kw = gd_divmod(r, kW);
        const int kh = gd_divmod(r, kH);
        const int c = (int)r;
        const int h = oh * sh - ph + kh * dh;
        const int w = ow * sw - pw + kw * dw;
        T v = T(0);
        if (h >= 0 && h < H && w >= 0 && w < W)
            v = x[(((gd_index)n0 + n) * C + c) * H * W + (gd_index)h * W + w];
        cols[i] = v;
    }
}

template <typename T, typename I>
__device__ void col2im_impl(const T* __restrict__ cols, T* __restrict__ gx,
                            int n0, int nb, int C, int H, int W,
                            int kH, int kW, int sh, int sw, int ph, int pw,
                            int dh, int dw, int Ho, int Wo) {
    const gd_index L = (gd_index)Ho * Wo;
    const gd_index total = (gd_index)nb * C * H * W;
    GD_KERNEL_LOOP_T(I, i, total) {
        I r = i;
        const int w = gd_divmod(r, W);
        const int h = gd_divmod(r, H);
        const int c = gd_divmod(r, C);
        const gd_index n = r;                  // image within the chunk
        const T* col = cols + (gd_index)c * kH * kW * nb * L + n * L;
        T acc = T(0);
        for (int kh = 0; kh < kH; ++kh) {
            const int hh = h + ph - kh * dh;     // = oh * sh
            if (hh < 0) break;                   // decreases with kh
            if (hh % sh != 0) continue;
            const int oh = hh / sh;
            if (oh >= Ho) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int ww = w + pw - kw * dw;  // = ow * sw
                if (ww < 0) break;
                if (ww % sw != 0) continue;
                const int ow = ww / sw;
                if (ow >= Wo) continue;
                acc += col[((gd_index)kh * kW + kw) * nb * L + (gd_index)oh * Wo + ow];
            }
        }
        gx[((gd_index)n0 * C) * H * W + i] = acc;
    }
}

#define GD_CONV_ARGS int n0, int nb, int C, int H, int W, int kH, int kW,      \
    int sh, int sw, int ph, int pw, int dh, int dw, int Ho, int Wo
#define GD_CONV_PASS n0, nb, C, H, W, kH, kW, sh, sw, ph, pw, dh, dw, Ho, Wo

// 32-bit indices unless the flat size needs 64 (common.cuh, GD_KERNEL_LOOP_T).
template <typename T>
__device__ void im2col(const T* x, T* cols, GD_CONV_ARGS) {
    GD_INDEX_DISPATCH((gd_index)nb * C * kH * kW * Ho * Wo, im2col_impl, T, x, cols, GD_CONV_PASS);
}
template <typename T>
__device__ void col2im(const T* cols, T* gx, GD_CONV_ARGS) {
    GD_INDEX_DISPATCH((gd_index)nb * C * H * W, col2im_impl, T, cols, gx, GD_CONV_PASS);
}

extern "C" __global__ void conv2d_im2col_f32(const float* x, float* cols, GD_CONV_ARGS) {
    im2col<float>(x, cols, GD_CONV_PASS);
}
extern "C" __global__ void conv2d_im2col_f64(const double* x, double* cols, GD_CONV_ARGS) {
    im2col<double>(x, cols, GD_CONV_PASS);
}
extern "C" __global__ void conv2d_col2im_f32(const float* cols, float* gx, GD_CONV_ARGS) {
    col2im<float>(cols, gx, GD_CONV_PASS);
}
extern "C" __global__ void conv2d_col2im_f64(const double* cols, double* gx, GD_CONV_ARGS) {
    col2im<double>(cols, gx, GD_CONV_PASS);
}
