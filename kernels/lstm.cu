// lstm.cu -- the LSTM cell's element-wise part, fused, forward and backward.
//
// Layout (PyTorch's gate order i, f, g, o; H = hidden size, N = batch):
//   gates  (N, 4H)  pre-activations [i | f | g | o] of one time step
//   c_prev (N, H)   the previous cell state
//   saved  (5, N, H) what the backward pass reads: i, f, g, o, tanh(c) -- the
//                   activated gates and tanh of the new cell state, gate-major
//                   (each a contiguous (N, H) block, like the states)
// Forward, per element (n, j):
//   i = sigma(a_i), f = sigma(a_f), g = tanh(a_g), o = sigma(a_o)
//   c = f * c_prev + i * g,   h = o * tanh(c)
// Backward, per element, with gh = dL/dh and gc = dL/dc (the part of dL/dc
// that does not come through h):
//   gct     = gc + gh * o * (1 - tanh(c)^2)
//   ggates  = [gct * g * i(1-i), gct * c_prev * f(1-f), gct * i * (1-g^2),
//              gh * tanh(c) * o(1-o)]
//   gc_prev = gct * f
// One thread per (n, j) element of the (N, H) state, grid-stride loop; each
// thread reads and writes only its own element's 4 or 5 gate entries, so
// there are no barriers and every result is written by exactly one thread
// (deterministic).
#include "common.cuh"

__device__ inline float gd_tanh(float x) { return tanhf(x); }
__device__ inline double gd_tanh(double x) { return tanh(x); }

// 1 / (1 + e^-x): exp overflows to inf for very negative x, giving 0, never NaN.
template <typename T>
__device__ inline T gd_sigmoid(T x) { return T(1) / (T(1) + gd_exp(-x)); }

// Offset of state element k = n * H + j's column j in row n of an (N, width * H) array.
__device__ inline gd_index lstm_col(gd_index k, int H, int width) {
    const gd_index n = k / H;
    return n * width * H + (k - n * H);
}

template <typename T>
__device__ void lstm_fwd_impl(const T* __restrict__ gates, const T* __restrict__ c_prev,
                              T* __restrict__ h, T* __restrict__ c, T* __restrict__ saved,
                              int N, int H) {
    const gd_index h1 = H, nh = (gd_index)N * H;
    GD_KERNEL_LOOP(k, nh) {
        const T* a = gates + lstm_col(k, H, 4);
        T* s = saved + k;
        const T i = gd_sigmoid(a[0]);
        const T f = gd_sigmoid(a[h1]);
        const T g = gd_tanh(a[2 * h1]);
        const T o = gd_sigmoid(a[3 * h1]);
        const T cn = f * c_prev[k] + i * g;
        const T tc = gd_tanh(cn);
        c[k] = cn;
        h[k] = o * tc;
        s[0] = i;
        s[nh] = f;
        s[2 * nh] = g;
        s[3 * nh] = o;
        s[4 * nh] = tc;
    }
}

template <typename T>
__device__ void lstm_bwd_impl(const T* __restrict__ gh, const T* __restrict__ gc,
                              const T* __restrict__ saved, const T* __restrict__ c_prev,
                              T* __restrict__ ggates, T* __restrict__ gc_prev, int N, int H) {
    const gd_index h1 = H, nh = (gd_index)N * H;
    GD_KERNEL_LOOP(k, nh) {
        const T* s = saved + k;
        T* d = ggates + lstm_col(k, H, 4);
        const T i = s[0], f = s[nh], g = s[2 * nh], o = s[3 * nh], tc = s[4 * nh];
        const T dh = gh[k];
        const T gct = gc[k] + dh * o * (T(1) - tc * tc);
        d[0] = gct * g * i * (T(1) - i);
        d[h1] = gct * c_prev[k] * f * (T(1) - f);
        d[2 * h1] = gct * i * (T(1) - g * g);
        d[3 * h1] = dh * tc * o * (T(1) - o);
        gc_prev[k] = gct * f;
    }
}

extern "C" __global__ void lstm_cell_forward_f32(
        const float* gates, const float* c_prev, float* h, float* c, float* saved, int N, int H) {
    lstm_fwd_impl<float>(gates, c_prev, h, c, saved, N, H);
}
extern "C" __global__ void lstm_cell_forward_f64(
        const double* gates, const double* c_prev, double* h, double* c, double* saved,
        int N, int H) {
    lstm_fwd_impl<double>(gates, c_prev, h, c, saved, N, H);
}
extern "C" __global__ void lstm_cell_backward_f32(
        const float* gh, const float* gc, const float* saved, const float* c_prev,
        float* ggates, float* gc_prev, int N, int H) {
    lstm_bwd_impl<float>(gh, gc, saved, c_prev, ggates, gc_prev, N, H);
}
extern "C" __global__ void lstm_cell_backward_f64(
        const double* gh, const double* gc, const double* saved, const double* c_prev,
        double* ggates, double* gc_prev, int N, int H) {
    lstm_bwd_impl<double>(gh, gc, saved, c_prev, ggates, gc_prev, N, H);
}
