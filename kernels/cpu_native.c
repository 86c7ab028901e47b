/* gpudl's native CPU kernels: convolution, max pooling, batch norm, ReLU's backward.
 *
 * Built at first use by gpudl/backend/_native.py with the system C compiler
 * (-O3 -march=native), loaded with ctypes, called from the CPU backend's
 * thread pool (ctypes releases the GIL); every function works on a range (of
 * images, planes, channels or elements) so that the threads split the work.
 * Where no compiler answers, the backend keeps its NumPy path, which the
 * tests compare with this one.
 *
 * Convolution on a shared-padding grid.  Each channel of the input is one
 * flat row: image n's pixel (h, w) sits at lead + n * img + h * pitch + w,
 * everything else is zero (the pack function writes the zeros too).  Output
 * (i, j) of image n is grid position m = n * img + i * pitch + j, and tap t
 * = (kh, kw) reads the row at m + off[t]: every tap is a fixed shift, so an
 * output channel is a sum over (channel, tap) of shifted rows times a
 * scalar weight.  The kernel holds a block of output channels x 48
 * positions in vector registers, streams the rows once per block and writes
 * only the positions that are outputs.  The input gradient is the same sum
 * over the output gradient packed on the same grid (transposed weights,
 * reversed shifts).  The weight gradient reads the output gradient
 * channels-last, a vector lane per output channel (or, for a few output
 * channels, a lane per position).  A strided convolution reads one
 * polyphase plane of the input per tap (gd_pack_phase).
 *
 * GCC/Clang vector extensions, not intrinsics: the compiler lowers a
 * 64-byte vector to AVX-512, AVX2 pairs, NEON quads, whatever the machine
 * has.  No fast-math, only -ffp-contract=fast (a * b + c as one fused
 * multiply-add, as BLAS does): each position sums in a fixed order, and NaN
 * and inf propagate as in the NumPy path.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#define VBYTES 64
/* A block: OB output channels x MV vectors of positions, OB * MV accumulators
 * in registers.  8 x 3 reads 3 vectors and 8 weights for 24 multiply-adds;
 * it ran 10-12% faster than 12 x 2 on ResNet's and LeNet's layers (one
 * thread, AVX-512).  gpudl/backend/_cpu_kernels.py's _NATIVE_BLOCK must be
 * at least MV * VBYTES / sizeof(float). */
#ifndef OB
#define OB 8
#endif
#ifndef MV
#define MV 3
#endif

typedef float vf __attribute__((vector_size(VBYTES)));
typedef double vd __attribute__((vector_size(VBYTES)));

#define API __attribute__((visibility("default")))
#define INLINE static inline __attribute__((always_inline))

/* ---- packing ------------------------------------------------------------
 * x (N, C, H, W) contiguous -> buf (C, rowlen): images n0..n1-1 onto the
 * grid, zeros around them; the thread with n0 == 0 also zeroes [0, lead),
 * the one with n1 == N everything after the last image. */
#define DEF_PACK(T, S)                                                           \
API void gd_pack_##S(const T* x, long N, long C, long H, long W, T* buf,        \
                     long rowlen, long lead, long img, long pitch,             \
                     long n0, long n1)                                          \
{                                                                               \
    for (long c = 0; c < C; c++) {                                              \
        T* row = buf + c * rowlen;                                              \
        if (n0 == 0) memset(row, 0, sizeof(T) * lead);                          \
        for (long n = n0; n < n1; n++) {                                        \
            T* dst = row + lead + n * img;                                      \
            const T* src = x + (n * C + c) * H * W;                             \
            for (long h = 0; h < H; h++) {                                      \
                memcpy(dst + h * pitch, src + h * W, sizeof(T) * W);            \
                memset(dst + h * pitch + W, 0, sizeof(T) * (pitch - W));        \
            }                                                                   \
            memset(dst + H * pitch, 0, sizeof(T) * (img - H * pitch));          \
        }                                                                       \
        if (n1 == N) {                                                          \
            long end = lead + N * img;                                          \
            memset(row + end, 0, sizeof(T) * (rowlen - end));                   \
        }                                                                       \
    }                                                                           \
}
DEF_PACK(float, f)
DEF_PACK(double, d)

/* Strided convolutions read one polyphase plane per tap: plane (rh, rw) of
 * image n holds, at (i, j) < (Hq, pitch), the input sample
 * (i * sh + rh - ph, j * sw + rw - pw), or zero off the image.  x (N, C, H,
 * W) -> buf (C, rowlen) for one plane: image n's cells at n * ximg + base
 * (an image's planes side by side, so that a block reads near addresses),
 * images n0..n1-1, and zeros past the last image for the thread with
 * n1 == N. */
#define DEF_PACK_PHASE(T, S)                                                     \
API void gd_pack_phase_##S(const T* x, long N, long C, long H, long W, T* buf,  \
                           long rowlen, long Hq, long pitch, long ximg,         \
                           long base, long sh, long sw, long h0, long w0,       \
                           long n0, long n1)                                    \
{                                                                               \
    /* the cells j in [jl, jh) hold input columns j * sw + w0 inside [0, W) */  \
    long jl = w0 >= 0 ? 0 : (-w0 + sw - 1) / sw;                                \
    long jh = W - 1 >= w0 ? (W - 1 - w0) / sw + 1 : 0;                          \
    if (jh > pitch) jh = pitch;                                                 \
    if (jl > jh) jl = jh;                                                       \
    for (long c = 0; c < C; c++) {                                              \
        T* row = buf + c * rowlen;                                              \
        for (long n = n0; n < n1; n++) {                                        \
            const T* src = x + (n * C + c) * H * W;                             \
            T* dst = row + n * ximg + base;                                     \
            for (long i = 0; i < Hq; i++) {                                     \
                long h = i * sh + h0;                                           \
                T* d = dst + i * pitch;                                         \
                if (h < 0 || h >= H) { memset(d, 0, sizeof(T) * pitch); continue; } \
                const T* s = src + h * W + w0;                                  \
                memset(d, 0, sizeof(T) * jl);                                   \
                for (long j = jl; j < jh; j++) d[j] = s[j * sw];                \
                memset(d + jh, 0, sizeof(T) * (pitch - jh));                    \
            }                                                                   \
        }                                                                       \
        if (n1 == N) memset(row + N * ximg, 0, sizeof(T) * (rowlen - N * ximg)); \
    }                                                                           \
}
DEF_PACK_PHASE(float, f)
DEF_PACK_PHASE(double, d)

/* ---- the shifted sum ------------------------------------------------------
 * y[n, o, i, j] = bias[o] + sum_{c < C, t < T} w[o, c * T + t] * X[c * xs + m + off[t]]
 * for m = n * ximg + i * pitch + j, i < Ho, j < Wo; images n0..n1-1 of img
 * grid positions each (rows of pitch), y (N, O, Ho, Wo).
 * X rows must be readable MV vectors past the last position read. */
#define CONV_CASE(S, k)                                                          \
    case k: if (k <= OB) conv_blk_##S(xb, xs, off, nt, C, wb, K, bb, k <= OB ? k : OB, res, m); break;
#define DEF_CONV(T, S, V)                                                        \
enum { L_##S = VBYTES / sizeof(T) };                                            \
INLINE V ld_##S(const T* p) { V v; memcpy(&v, p, sizeof v); return v; }         \
INLINE void st_##S(T* p, V v) { memcpy(p, &v, sizeof v); }                      \
INLINE void conv_blk_##S(const T* X, long xs, const long* off, int nt, int C,   \
                         const T* w, long K, const T* bias, int ob,             \
                         T acc_out[OB][MV * L_##S], long m)                     \
{                                                                               \
    V acc[OB][MV];                                                              \
    for (int o = 0; o < OB; o++)                                                \
        for (int v = 0; v < MV; v++)                                            \
            acc[o][v] = (V){0} + (o < ob && bias ? bias[o] : (T)0);            \
    for (int c = 0; c < C; c++) {                                               \
        const T* xc = X + c * xs + m;                                           \
        const T* wc = w + (long)c * nt;                                         \
        for (int t = 0; t < nt; t++) {                                          \
            const T* xp = xc + off[t];                                          \
            V xv[MV];                                                           \
            _Pragma("GCC unroll 4")                                             \
            for (int v = 0; v < MV; v++) xv[v] = ld_##S(xp + v * L_##S);        \
            _Pragma("GCC unroll 12")                                            \
            for (int o = 0; o < OB; o++) {                                      \
                if (o < ob) {                                                   \
                    T wv = wc[o * K + t];                                       \
                    _Pragma("GCC unroll 4")                                     \
                    for (int v = 0; v < MV; v++) acc[o][v] += wv * xv[v];       \
                }                                                               \
            }                                                                   \
        }                                                                       \
    }                                                                           \
    _Pragma("GCC unroll 12")                                                    \
    for (int o = 0; o < OB; o++)                                                \
        if (o < ob) {                                                           \
            _Pragma("GCC unroll 4")                                             \
            for (int v = 0; v < MV; v++) st_##S(acc_out[o] + v * L_##S, acc[o][v]); \
        }                                                                       \
}                                                                               \
API void gd_shift_conv_##S(const T* X, long xs, int C, const long* off, int nt, \
                           const T* w, const T* bias, int O, long img,          \
                           long ximg, long pitch, long Ho, long Wo,             \
                           long n0, long n1, T* y)                              \
{                                                                               \
    enum { B = MV * L_##S };                                                    \
    long K = (long)C * nt, span = Ho * pitch, rows = img / pitch, HW = Ho * Wo; \
    /* With the images back to back in X (ximg == img) the blocks may run on  \
     * across them (no block tail per image): where that makes fewer blocks. */ \
    int across = ximg == img && n1 > n0                                         \
        && ((n1 - n0 - 1) * img + span + B - 1) / B < (n1 - n0) * ((span + B - 1) / B); \
    T res[OB][B];                                                               \
    for (long n = n0; n < n1; n++) {                                            \
        long g0 = n * img, g1 = g0 + span;                                      \
        const T* xb = X + n * (ximg - img);                                     \
        if (across) {                                                           \
            if (n > n0) break;                                                  \
            g1 = (n1 - 1) * img + span;                                         \
        }                                                                       \
        for (long m = g0; m < g1; m += B) {                                     \
            /* the output runs in positions m .. m + B - 1 */                   \
            long run_l[B + 2], run_d[B + 2], run_n[B + 2];                      \
            int nruns = 0;                                                      \
            long ni = m / img, r = m - ni * img, i = r / pitch, j = r - i * pitch, l = 0; \
            while (l < B && ni < n1) {                                          \
                long take = pitch - j < B - l ? pitch - j : B - l;              \
                if (i < Ho && j < Wo) {                                         \
                    run_l[nruns] = l;                                           \
                    run_d[nruns] = ni * O * HW + i * Wo + j;                    \
                    run_n[nruns++] = (Wo - j) < take ? (Wo - j) : take;         \
                }                                                               \
                l += take; j += take;                                           \
                if (j >= pitch) { j = 0; if (++i >= rows) { i = 0; ni++; } }    \
            }                                                                   \
            /* blocks of even size (20 channels: 7 + 7 + 6, not 8 + 8 + 4) */    \
            int nblk = (O + OB - 1) / OB;                                       \
            for (int bk = 0; bk < nblk; bk++) {                                 \
                int ob = O / nblk + (bk < O % nblk);                            \
                int o0 = bk * (O / nblk) + (bk < O % nblk ? bk : O % nblk);     \
                const T* wb = w + o0 * K;                                       \
                const T* bb = bias ? bias + o0 : 0;                             \
                switch (ob) {                                                   \
                CONV_CASE(S, 12) CONV_CASE(S, 11) CONV_CASE(S, 10) CONV_CASE(S, 9) \
                CONV_CASE(S, 8) CONV_CASE(S, 7) CONV_CASE(S, 6) CONV_CASE(S, 5)  \
                CONV_CASE(S, 4) CONV_CASE(S, 3) CONV_CASE(S, 2) CONV_CASE(S, 1)  \
                }                                                               \
                for (int o = 0; o < ob; o++) {                                  \
                    T* yo = y + (o0 + o) * HW;                                  \
                    for (int q = 0; q < nruns; q++)                             \
                        memcpy(yo + run_d[q], res[o] + run_l[q], sizeof(T) * run_n[q]); \
                }                                                               \
            }                                                                   \
        }                                                                       \
    }                                                                           \
}
DEF_CONV(float, f, vf)
DEF_CONV(double, d, vd)

/* ---- the weight gradient for few output channels ---------------------------
 * gw[o, c * nt + t] += sum over outputs m of G[o * gs + m] * X[c * xs + m + off[t]]
 * with a lane per position: for O too small to fill a vector of channels
 * (a first layer's 6), each vector of G read once per channel and block of
 * taps.  G is the output grid (zeros off the outputs); positions past Ho
 * lines of an image are masked. */
#define PGO 4        /* output channels per block */
#define PGT 6        /* taps per block */
#define DEF_WGRAD_POS(T, S, V)                                                   \
INLINE void wgp_blk_##S(const T* G, long gs, const T* X, const long* off,       \
                        int ob, int tb, long n0, long n1, long img, long ximg,  \
                        long span, T* out, long K)                              \
{                                                                               \
    V acc[PGO][PGT] = {{{0}}};                                                  \
    for (long n = n0; n < n1; n++) {                                            \
        const T* g = G + n * img;                                               \
        const T* x = X + n * ximg;                                              \
        for (long p = 0; p < span; p += L_##S) {                                \
            V gv[PGO] = {{0}};                                                  \
            T tmp[L_##S];                                                       \
            _Pragma("GCC unroll 4")                                             \
            for (int o = 0; o < PGO; o++) {                                     \
                if (o >= ob) continue;                                          \
                if (p + L_##S <= span) gv[o] = ld_##S(g + o * gs + p);          \
                else {                                                          \
                    for (int l = 0; l < L_##S; l++)                             \
                        tmp[l] = p + l < span ? g[o * gs + p + l] : (T)0;       \
                    gv[o] = ld_##S(tmp);                                        \
                }                                                               \
            }                                                                   \
            _Pragma("GCC unroll 6")                                             \
            for (int t = 0; t < PGT; t++) {                                     \
                if (t >= tb) continue;                                          \
                V xv = ld_##S(x + off[t] + p);                                  \
                _Pragma("GCC unroll 4")                                         \
                for (int o = 0; o < PGO; o++)                                   \
                    if (o < ob) acc[o][t] += gv[o] * xv;                        \
            }                                                                   \
        }                                                                       \
    }                                                                           \
    for (int o = 0; o < ob; o++)                                                \
        for (int t = 0; t < tb; t++) {                                          \
            T s = 0;                                                            \
            for (int l = 0; l < L_##S; l++) s += acc[o][t][l];                  \
            out[o * K + t] += s;                                                \
        }                                                                       \
}                                                                               \
API void gd_wgrad_pos_##S(const T* G, long gs, int O, const T* X, long xs,      \
                          int C, const long* off, int nt, long img, long ximg,  \
                          long span, long n0, long n1, T* gw)                   \
{                                                                               \
    long K = (long)C * nt;                                                      \
    for (int o0 = 0; o0 < O; o0 += PGO) {                                       \
        int ob = O - o0 < PGO ? O - o0 : PGO;                                   \
        for (int c = 0; c < C; c++)                                             \
            for (int t0 = 0; t0 < nt; t0 += PGT) {                              \
                int tb = nt - t0 < PGT ? nt - t0 : PGT;                         \
                const T* g = G + o0 * gs;                                       \
                const T* x = X + c * xs;                                        \
                T* out = gw + o0 * K + (long)c * nt + t0;                       \
                if (ob == PGO && tb == PGT)                                     \
                    wgp_blk_##S(g, gs, x, off + t0, PGO, PGT, n0, n1, img, ximg, span, out, K); \
                else                                                            \
                    wgp_blk_##S(g, gs, x, off + t0, ob, tb, n0, n1, img, ximg, span, out, K); \
            }                                                                   \
    }                                                                           \
}
DEF_WGRAD_POS(float, f, vf)
DEF_WGRAD_POS(double, d, vd)

/* ---- the weight gradient ----------------------------------------------------
 * gw[c * nt + t, o] += sum over outputs m of gy[o at m] * X[c * xs + m + off[t]],
 * the output gradient channels-last, Gt (positions, Op):
 * position m = n * img + i * pitch + j holds gy[n, :, i, j], zeros in the
 * gaps and for o >= O (Op, a multiple of the vector length).  A lane per
 * output channel, a broadcast input value per (channel, tap): no horizontal
 * sums and no masks.  gw is (C * nt, Op), added to. */
#define WCL_K 12     /* (channel, tap) pairs per block, x 2 vectors of channels */
#define WCL_P 256    /* positions per chunk (stays in L1/L2 across the blocks) */
#define DEF_WGRAD_CL(T, S, V)                                                    \
INLINE void wcl_blk_##S(const T* Gt, long Op, const T* const* xk, int kb, int nv,\
                        long p0, long p1, T* gw)                                 \
{                                                                               \
    V acc[WCL_K][2] = {{{0}}};                                                  \
    _Pragma("GCC unroll 12")                                                    \
    for (int k = 0; k < WCL_K; k++)                                             \
        if (k < kb) {                                                           \
            acc[k][0] = ld_##S(gw + k * Op);                                    \
            if (nv > 1) acc[k][1] = ld_##S(gw + k * Op + L_##S);                \
        }                                                                       \
    for (long m = p0; m < p1; m++) {                                            \
        V g0 = ld_##S(Gt + m * Op), g1 = g0;                                    \
        if (nv > 1) g1 = ld_##S(Gt + m * Op + L_##S);                           \
        _Pragma("GCC unroll 12")                                                \
        for (int k = 0; k < WCL_K; k++)                                         \
            if (k < kb) {                                                       \
                T xv = xk[k][m];                                                \
                acc[k][0] += xv * g0;                                           \
                if (nv > 1) acc[k][1] += xv * g1;                               \
            }                                                                   \
    }                                                                           \
    _Pragma("GCC unroll 12")                                                    \
    for (int k = 0; k < WCL_K; k++)                                             \
        if (k < kb) {                                                           \
            st_##S(gw + k * Op, acc[k][0]);                                     \
            if (nv > 1) st_##S(gw + k * Op + L_##S, acc[k][1]);                 \
        }                                                                       \
}                                                                               \
API void gd_wgrad_cl_##S(const T* Gt, long Op, const T* X, long xs, int C,      \
                         const long* off, int nt, long img, long ximg,          \
                         long span,                                             \
                         long n0, long n1, T* gw)                               \
{                                                                               \
    const T* xk[WCL_K];                                                         \
    long K = (long)C * nt;                                                      \
    for (long n = n0; n < n1; n++)                                              \
        for (long p0 = 0; p0 < span; p0 += WCL_P) {                             \
            long p1 = p0 + WCL_P < span ? p0 + WCL_P : span;                    \
            const T* gn = Gt + n * img * Op;                                    \
            for (long ov = 0; ov < Op; ov += 2 * L_##S) {                       \
                int nv = Op - ov >= 2 * L_##S ? 2 : 1;                          \
                for (long k0 = 0; k0 < K; k0 += WCL_K) {                        \
                    int kb = K - k0 < WCL_K ? (int)(K - k0) : WCL_K;            \
                    for (int k = 0; k < kb; k++) {                              \
                        long c = (k0 + k) / nt, t = (k0 + k) - c * nt;          \
                        xk[k] = X + c * xs + off[t] + n * ximg;                 \
                    }                                                           \
                    T* out = gw + k0 * Op + ov;                                 \
                    if (kb == WCL_K && nv == 2)                                 \
                        wcl_blk_##S(gn + ov, Op, xk, WCL_K, 2, p0, p1, out);    \
                    else if (kb == WCL_K)                                       \
                        wcl_blk_##S(gn + ov, Op, xk, WCL_K, 1, p0, p1, out);    \
                    else                                                        \
                        wcl_blk_##S(gn + ov, Op, xk, kb, nv, p0, p1, out);      \
                }                                                               \
            }                                                                   \
        }                                                                       \
}                                                                               \
API void gd_pack_cl_##S(const T* g, long N, long O, long Ho, long Wo, T* buf,   \
                        long Op, long img, long pitch, long n0, long n1)        \
{                                                                               \
    (void)N;                                                                    \
    for (long n = n0; n < n1; n++) {                                            \
        T* dst = buf + n * img * Op;                                            \
        memset(dst, 0, sizeof(T) * img * Op);                                   \
        for (long o = 0; o < O; o++) {                                          \
            const T* src = g + (n * O + o) * Ho * Wo;                           \
            for (long i = 0; i < Ho; i++)                                       \
                for (long j = 0; j < Wo; j++)                                   \
                    dst[(i * pitch + j) * Op + o] = src[i * Wo + j];            \
        }                                                                       \
    }                                                                           \
}
DEF_WGRAD_CL(float, f, vf)
DEF_WGRAD_CL(double, d, vd)

/* ---- batch normalisation ------------------------------------------------------
 * x (N, C, L) contiguous, channels c0..c1-1.  A channel's N rows are read
 * three times (sum, squared deviations, normalise) while they sit in the
 * cache.  Sums: vector partial sums per row, rows added in double. */
#define DEF_BN(T, S, V)                                                          \
INLINE double row_sum_##S(const T* p, long L)                                   \
{                                                                               \
    V a0 = {0}, a1 = {0};                                                       \
    long l = 0;                                                                 \
    for (; l + 2 * L_##S <= L; l += 2 * L_##S) {                                \
        a0 += ld_##S(p + l);                                                    \
        a1 += ld_##S(p + l + L_##S);                                            \
    }                                                                           \
    a0 += a1;                                                                   \
    double s = 0;                                                               \
    for (int k = 0; k < L_##S; k++) s += a0[k];                                 \
    for (; l < L; l++) s += p[l];                                               \
    return s;                                                                   \
}                                                                               \
INLINE double row_sqdev_##S(const T* p, long L, T mean)                         \
{                                                                               \
    V a0 = {0}, a1 = {0};                                                       \
    long l = 0;                                                                 \
    for (; l + 2 * L_##S <= L; l += 2 * L_##S) {                                \
        V d0 = ld_##S(p + l) - mean, d1 = ld_##S(p + l + L_##S) - mean;         \
        a0 += d0 * d0;                                                          \
        a1 += d1 * d1;                                                          \
    }                                                                           \
    a0 += a1;                                                                   \
    double s = 0;                                                               \
    for (int k = 0; k < L_##S; k++) s += a0[k];                                 \
    for (; l < L; l++) { T d = p[l] - mean; s += d * d; }                       \
    return s;                                                                   \
}                                                                               \
INLINE void row_sum_dot_##S(const T* g, const T* h, long L, double* sg, double* sgh) \
{                                                                               \
    V a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};                                   \
    long l = 0;                                                                 \
    for (; l + 2 * L_##S <= L; l += 2 * L_##S) {                                \
        V g0 = ld_##S(g + l), g1 = ld_##S(g + l + L_##S);                       \
        a0 += g0; a1 += g1;                                                     \
        b0 += g0 * ld_##S(h + l); b1 += g1 * ld_##S(h + l + L_##S);             \
    }                                                                           \
    a0 += a1; b0 += b1;                                                         \
    double s = 0, t = 0;                                                        \
    for (int k = 0; k < L_##S; k++) { s += a0[k]; t += b0[k]; }                 \
    for (; l < L; l++) { s += g[l]; t += g[l] * h[l]; }                         \
    *sg += s; *sgh += t;                                                        \
}                                                                               \
/* mean, var: the batch's (written) or, with stats, the given ones (read) */    \
API void gd_bn_fwd_##S(const T* x, long N, long C, long L, const T* w,          \
                       const T* b, int stats, T* mean, T* var, T eps,           \
                       long c0, long c1, T* y, T* xhat, T* invstd)              \
{                                                                               \
    T m = (T)(N * L);                                                           \
    for (long c = c0; c < c1; c++) {                                            \
        if (!stats) {                                                           \
            double s = 0;                                                       \
            for (long n = 0; n < N; n++) s += row_sum_##S(x + (n * C + c) * L, L); \
            T mu = (T)s / m;                                                    \
            double q = 0;                                                       \
            for (long n = 0; n < N; n++) q += row_sqdev_##S(x + (n * C + c) * L, L, mu); \
            mean[c] = mu;                                                       \
            var[c] = (T)q / m;                                                  \
        }                                                                       \
        T mu = mean[c], inv = (T)1 / (T)sqrt(var[c] + eps);                     \
        T wc = w ? w[c] : (T)1, bc = b ? b[c] : (T)0;                           \
        invstd[c] = inv;                                                        \
        for (long n = 0; n < N; n++) {                                          \
            const T* xp = x + (n * C + c) * L;                                  \
            T* hp = xhat + (n * C + c) * L;                                     \
            T* yp = y + (n * C + c) * L;                                        \
            for (long l = 0; l < L; l++) {                                      \
                T h = (xp[l] - mu) * inv;                                       \
                hp[l] = h;                                                      \
                yp[l] = h * wc + bc;                                            \
            }                                                                   \
        }                                                                       \
    }                                                                           \
}                                                                               \
/* sg, sgx (C,) written; gx when not NULL */                                    \
API void gd_bn_bwd_##S(const T* g, const T* xhat, long N, long C, long L,       \
                       const T* invstd, const T* w, int batch, long c0, long c1,\
                       T* gx, T* sg, T* sgx)                                    \
{                                                                               \
    T m = (T)(N * L);                                                           \
    for (long c = c0; c < c1; c++) {                                            \
        double s = 0, t = 0;                                                    \
        for (long n = 0; n < N; n++)                                            \
            row_sum_dot_##S(g + (n * C + c) * L, xhat + (n * C + c) * L, L, &s, &t); \
        sg[c] = (T)s;                                                           \
        sgx[c] = (T)t;                                                          \
        if (!gx) continue;                                                      \
        T a = w ? invstd[c] * w[c] : invstd[c];                                 \
        T k1 = batch ? a * (T)t / m : (T)0, k2 = batch ? a * (T)s / m : (T)0;   \
        for (long n = 0; n < N; n++) {                                          \
            const T* gp = g + (n * C + c) * L;                                  \
            const T* hp = xhat + (n * C + c) * L;                                   \
            T* op = gx + (n * C + c) * L;                                       \
            if (!batch) { for (long l = 0; l < L; l++) op[l] = gp[l] * a; continue; } \
            for (long l = 0; l < L; l++) op[l] = gp[l] * a - hp[l] * k1 - k2;   \
        }                                                                       \
    }                                                                           \
}
DEF_BN(float, f, vf)
DEF_BN(double, d, vd)

/* ---- ReLU's backward ---------------------------------------------------------
 * Elements i0..i1-1: g where the output is not 0 (positive or NaN), as
 * PyTorch's threshold_backward, in one pass (NumPy needs a mask and a fix-up
 * for NaN gradients).  The forward stays in NumPy: np.maximum is as fast. */
#define DEF_RELU(T, S)                                                           \
API void gd_relu_back_##S(const T* g, const T* y, T* gx, long i0, long i1)      \
{                                                                               \
    for (long i = i0; i < i1; i++) gx[i] = y[i] != 0 ? g[i] : (T)0;             \
}
DEF_RELU(float, f)
DEF_RELU(double, d)

/* ---- max pooling ------------------------------------------------------------
 * Planes p0..p1-1 of x (planes, H, W): PyTorch's rule, the window's first
 * maximum in row-major order, a NaN taken whenever met (so the last NaN),
 * and a window of -inf alone points at its first element inside the image. */
#define DEF_MAXPOOL(T, S)                                                        \
API void gd_max_pool_##S(const T* x, long H, long W, long Ho, long Wo,          \
                         long kh, long kw, long sh, long sw, long ph, long pw,  \
                         long p0, long p1, T* y, int* arg)                      \
{                                                                               \
    for (long pl = p0; pl < p1; pl++) {                                         \
        const T* xp = x + pl * H * W;                                           \
        for (long i = 0; i < Ho; i++) {                                         \
            T* best = y + (pl * Ho + i) * Wo;                                   \
            int* at = arg + (pl * Ho + i) * Wo;                                 \
            long hs = i * sh - ph, h0 = hs < 0 ? 0 : hs;                        \
            for (long j = 0; j < Wo; j++) {                                     \
                long w0 = j * sw - pw;                                          \
                best[j] = -INFINITY;                                            \
                at[j] = (int)(h0 * W + (w0 < 0 ? 0 : w0));                      \
            }                                                                   \
            /* taps in row-major window order, each a branch-free pass over  \
             * the row (vectorised): a strictly greater value or a NaN wins */ \
            for (long a = 0; a < kh; a++) {                                     \
                long h = hs + a;                                                \
                if (h < 0 || h >= H) continue;                                  \
                for (long b = 0; b < kw; b++) {                                 \
                    long c0 = b - pw;           /* column of output j: j * sw + c0 */ \
                    long jl = c0 >= 0 ? 0 : (-c0 + sw - 1) / sw;                \
                    long jh = W - 1 >= c0 ? (W - 1 - c0) / sw + 1 : 0;          \
                    if (jh > Wo) jh = Wo;                                       \
                    const T* row = xp + h * W + c0;                             \
                    int base = (int)(h * W + c0);                               \
                    for (long j = jl; j < jh; j++) {                            \
                        T v = row[j * sw];                                      \
                        int take = (v > best[j]) | (v != v);                    \
                        best[j] = take ? v : best[j];                           \
                        at[j] = take ? base + (int)(j * sw) : at[j];            \
                    }                                                           \
                }                                                               \
            }                                                                   \
        }                                                                       \
    }                                                                           \
}                                                                               \
API void gd_max_pool_back_##S(const T* gy, const int* arg, long HW, long HWo,   \
                              long p0, long p1, T* gx)                          \
{                                                                               \
    for (long pl = p0; pl < p1; pl++) {                                         \
        T* g = gx + pl * HW;                                                    \
        const T* gp = gy + pl * HWo;                                            \
        const int* ap = arg + pl * HWo;                                         \
        memset(g, 0, sizeof(T) * HW);                                           \
        for (long k = 0; k < HWo; k++) g[ap[k]] += gp[k];                       \
    }                                                                           \
}
DEF_MAXPOOL(float, f)
DEF_MAXPOOL(double, d)
