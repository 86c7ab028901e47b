// optim.cu -- one fused, in-place update per parameter for SGD, Adam / AdamW and
// RMSprop (one thread per element; the host computes the per-step scalars).
//
// SGD, with d = (maximize ? -g : g) + weight_decay * p:
//   buf = first ? d : momentum * buf + (1 - dampening) * d        (momentum != 0)
//   d   = nesterov ? d + momentum * buf : buf                       (momentum != 0)
//   p  -= lr * d
// buf is read and written only when momentum != 0.
//
// Adam, with d = (maximize ? -g : g) (+ weight_decay * p unless decoupled):
//   p  *= decay                              (AdamW: decay = 1 - lr * weight_decay)
//   m   = beta1 * m + (1 - beta1) * d
//   v   = beta2 * v + (1 - beta2) * d * d
//   v_max = max(v_max, v), used for v        (amsgrad; v_max is touched only then)
//   p  -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// where step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t).
// 1 - beta1, 1 - beta2 (and RMSprop's 1 - alpha) come from the host, worked out
// in double: in float32, 1 - float(0.9999) is 1.00017e-4, 1.7e-4 off PyTorch's 1e-4.
//   v_max = max(v_max, v) keeps a NaN from either side, as torch.maximum does.
//
// RMSprop, with d = (maximize ? -g : g) + weight_decay * p:
//   v   = alpha * v + (1 - alpha) * d * d
//   a   = alpha * a + (1 - alpha) * d        (centered; a is touched only then)
//   s   = d / ((centered ? sqrt(v - a * a) : sqrt(v)) + eps)
//   buf = momentum * buf + s;  p -= lr * buf  (momentum != 0; buf touched only then)
//   p  -= lr * s                             (otherwise)
#include "common.cuh"

template <typename T>
__device__ void sgd_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf,
                         gd_index n, T lr, T momentum, T dampening, T weight_decay,
                         int nesterov, int maximize, int first) {
    GD_KERNEL_LOOP(i, n) {
        T d = maximize ? -g[i] : g[i];
        if (weight_decay != T(0)) d += weight_decay * p[i];
        if (momentum != T(0)) {
            const T b = first ? d : momentum * buf[i] + (T(1) - dampening) * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] -= lr * d;
    }
}

template <typename T>
__device__ void adam_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                          T* __restrict__ v, T* __restrict__ v_max, gd_index n, T beta1,
                          T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay,
                          T decay, T step_size, T bc2_sqrt, int maximize, int amsgrad) {
    GD_KERNEL_LOOP(i, n) {
        T d = maximize ? -g[i] : g[i];
        T w = p[i];
        if (weight_decay != T(0)) d += weight_decay * w;
        w *= decay;
        const T mi = beta1 * m[i] + one_minus_beta1 * d;
        T vi = beta2 * v[i] + one_minus_beta2 * d * d;
        m[i] = mi;
        v[i] = vi;
        if (amsgrad) {
            const T old = v_max[i];
            if (old > vi || old != old) vi = old;   // a NaN on either side stays NaN
            v_max[i] = vi;
        }
        p[i] = w - step_size * (mi / (gd_sqrt(vi) / bc2_sqrt + eps));
    }
}

template <typename T>
__device__ void rmsprop_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ v,
                             T* __restrict__ a, T* __restrict__ buf, gd_index n, T lr, T alpha,
                             T one_minus_alpha, T eps, T weight_decay, T momentum, int maximize,
                             int centered) {
    GD_KERNEL_LOOP(i, n) {
        T d = maximize ? -g[i] : g[i];
        if (weight_decay != T(0)) d += weight_decay * p[i];
        const T vi = alpha * v[i] + one_minus_alpha * d * d;
        v[i] = vi;
        T spread = vi;
        if (centered) {
            const T ai = alpha * a[i] + one_minus_alpha * d;
            a[i] = ai;
            spread = vi - ai * ai;
        }
        T step = d / (gd_sqrt(spread) + eps);
        if (momentum != T(0)) {
            step += momentum * buf[i];
            buf[i] = step;
        }
        p[i] -= lr * step;
    }
}

extern "C" __global__ void sgd_update_f32(float* p, const float* g, float* buf, long long n,
                                          float lr, float momentum, float dampening,
                                          float weight_decay, int nesterov, int maximize,
                                          int first) {
    sgd_impl<float>(p, g, buf, n, lr, momentum, dampening, weight_decay, nesterov, maximize, first);
}
extern "C" __global__ void sgd_update_f64(double* p, const double* g, double* buf, long long n,
                                          double lr, double momentum, double dampening,
                                          double weight_decay, int nesterov, int maximize,
                                          int first) {
    sgd_impl<double>(p, g, buf, n, lr, momentum, dampening, weight_decay, nesterov, maximize, first);
}
extern "C" __global__ void adam_update_f32(float* p, const float* g, float* m, float* v,
                                           float* v_max, long long n, float beta1,
                                           float one_minus_beta1, float beta2,
                                           float one_minus_beta2, float eps, float weight_decay,
                                           float decay, float step_size, float bc2_sqrt,
                                           int maximize, int amsgrad) {
    adam_impl<float>(p, g, m, v, v_max, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                     weight_decay, decay, step_size, bc2_sqrt, maximize, amsgrad);
}
extern "C" __global__ void adam_update_f64(double* p, const double* g, double* m, double* v,
                                           double* v_max, long long n, double beta1,
                                           double one_minus_beta1, double beta2,
                                           double one_minus_beta2, double eps,
                                           double weight_decay, double decay, double step_size,
                                           double bc2_sqrt, int maximize, int amsgrad) {
    adam_impl<double>(p, g, m, v, v_max, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                      weight_decay, decay, step_size, bc2_sqrt, maximize, amsgrad);
}
extern "C" __global__ void rmsprop_update_f32(float* p, const float* g, float* v, float* a,
                                              float* buf, long long n, float lr, float alpha,
                                              float one_minus_alpha, float eps,
                                              float weight_decay, float momentum, int maximize,
                                              int centered) {
    rmsprop_impl<float>(p, g, v, a, buf, n, lr, alpha, one_minus_alpha, eps, weight_decay,
                        momentum, maximize, centered);
}
extern "C" __global__ void rmsprop_update_f64(double* p, const double* g, double* v, double* a,
                                              double* buf, long long n, double lr, double alpha,
                                              double one_minus_alpha, double eps,
                                              double weight_decay, double momentum, int maximize,
                                              int centered) {
    rmsprop_impl<double>(p, g, v, a, buf, n, lr, alpha, one_minus_alpha, eps, weight_decay,
                         momentum, maximize, centered);
}
