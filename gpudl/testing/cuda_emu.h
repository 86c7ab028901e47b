// cuda_emu.h -- run CUDA C kernels on the CPU (gpudl's CUDA emulator).
//
// Force-included (-include) before a .cu file by cuda_emulator.py, which also
// rewrites `extern __shared__ T name[];` into a reference to the pointer to the
// launch's dynamic shared memory (__emu_dyn_smem), and appends one launch
// entry per extern "C" kernel (emu::Kernel<&kernel>::launch, at the end).
//
// Model: blocks run one after another on the calling OS thread.  A kernel that
// never synchronises runs its threads as a plain loop.  Otherwise each thread
// of a block is a fiber (own 64 KiB stack, hand-rolled x86-64 context switch,
// ucontext elsewhere) and a round-robin scheduler resumes fibers until they
// reach a barrier (__syncthreads: the whole block) or a warp operation
// (__shfl_*_sync, __syncwarp, __ballot_sync: the 32 lanes of the warp).
// Because blocks never overlap, `__shared__` can simply be `static`.
// With -fsanitize=address, stack switches are announced to ASan.
#pragma once
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>
#include <sys/mman.h>
#include <type_traits>
#include <utility>
#if !defined(__x86_64__) && !defined(EMU_USE_UCONTEXT)
#define EMU_USE_UCONTEXT 1
#endif
#ifdef EMU_USE_UCONTEXT
#include <ucontext.h>
#endif
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define GPUDL_CUDA_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// Static shared memory lives in one section, so that each block can start with it
// filled with garbage (0xff: NaN / -1), as on a GPU, not with the last block's values.
#define __shared__ static __attribute__((section("gd_smem")))
#define CUDART_INF_F __builtin_huge_valf()
#define CUDART_INF __builtin_huge_val()
#define CUDART_NAN_F __builtin_nanf("")
// __restrict__ is already a g++ keyword.

#pragma GCC visibility push(hidden)

// The bounds of the section (the linker defines them; the anchor makes sure it exists).
extern "C" char __start_gd_smem[], __stop_gd_smem[];
static char gd_smem_anchor[1] __attribute__((section("gd_smem"), used));

// ---- vector types and the thread coordinates ------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};
#define EMU_VEC2(T, N, A) struct __attribute__((aligned(A))) N { T x, y; }; \
  inline N make_##N(T x, T y) { return {x, y}; }
#define EMU_VEC4(T, N, A) struct __attribute__((aligned(A))) N { T x, y, z, w; }; \
  inline N make_##N(T x, T y, T z, T w) { return {x, y, z, w}; }
EMU_VEC2(float, float2, 8) EMU_VEC4(float, float4, 16) EMU_VEC2(double, double2, 16)
EMU_VEC2(int, int2, 8) EMU_VEC4(int, int4, 16) EMU_VEC2(unsigned, uint2, 8)
struct float3 { float x, y, z; };
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;
inline unsigned char* __emu_dyn_smem;  // the launch's dynamic shared memory

// ---- math -----------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * (float)M_SQRT1_2); }
inline double normcdf(double x) { return 0.5 * erfc(-x * M_SQRT1_2); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
template <class To, class From> inline To __emu_bits(From v) {
  To t;
  memcpy(&t, &v, sizeof t);
  return t;
}
inline float __int_as_float(int v) { return __emu_bits<float>(v); }
inline int __float_as_int(float v) { return __emu_bits<int>(v); }
inline float __uint_as_float(unsigned v) { return __emu_bits<float>(v); }
inline unsigned __float_as_uint(float v) { return __emu_bits<unsigned>(v); }
inline double __longlong_as_double(long long v) { return __emu_bits<double>(v); }
inline long long __double_as_longlong(double v) { return __emu_bits<long long>(v); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> inline T __ldg(const T* p) { return *p; }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

// CUDA's min/max overload set (math_functions.hpp), so ambiguities match nvcc.
#define EMU_MM(A, B, R, MN, MX) \
  inline R min(A a, B b) { return MN; } inline R max(A a, B b) { return MX; }
#define EMU_MMI(A, B, R) EMU_MM(A, B, R, (R)a < (R)b ? (R)a : (R)b, (R)a > (R)b ? (R)a : (R)b)
EMU_MMI(int, int, int) EMU_MMI(unsigned, unsigned, unsigned)
EMU_MMI(int, unsigned, unsigned) EMU_MMI(unsigned, int, unsigned)
EMU_MMI(long, long, long) EMU_MMI(unsigned long, unsigned long, unsigned long)
EMU_MMI(long, unsigned long, unsigned long) EMU_MMI(unsigned long, long, unsigned long)
EMU_MMI(long long, long long, long long)
EMU_MMI(unsigned long long, unsigned long long, unsigned long long)
EMU_MMI(long long, unsigned long long, unsigned long long)
EMU_MMI(unsigned long long, long long, unsigned long long)
EMU_MM(float, float, float, fminf(a, b), fmaxf(a, b))
EMU_MM(double, double, double, fmin(a, b), fmax(a, b))
EMU_MM(float, double, double, fmin(a, b), fmax(a, b))
EMU_MM(double, float, double, fmin(a, b), fmax(a, b))

// ---- atomics (blocks and threads never run in parallel: plain updates) -----
#define EMU_ATOMIC(NAME, T, EXPR) inline T NAME(T* p, T v) { T o = *p; *p = (EXPR); return o; }
#define EMU_ATOMIC_INT(T) EMU_ATOMIC(atomicAdd, T, o + v) EMU_ATOMIC(atomicExch, T, v) \
  EMU_ATOMIC(atomicMax, T, o > v ? o : v) EMU_ATOMIC(atomicMin, T, o < v ? o : v) \
  EMU_ATOMIC(atomicAnd, T, o & v) EMU_ATOMIC(atomicOr, T, o | v) EMU_ATOMIC(atomicXor, T, o ^ v) \
  inline T atomicCAS(T* p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }
EMU_ATOMIC_INT(int) EMU_ATOMIC_INT(unsigned) EMU_ATOMIC_INT(unsigned long long)
EMU_ATOMIC(atomicSub, int, o - v) EMU_ATOMIC(atomicSub, unsigned, o - v)
EMU_ATOMIC(atomicMax, long long, o > v ? o : v) EMU_ATOMIC(atomicMin, long long, o < v ? o : v)
EMU_ATOMIC(atomicAdd, float, o + v) EMU_ATOMIC(atomicAdd, double, o + v)
EMU_ATOMIC(atomicExch, float, v)

// ---- fibers ---------------------------------------------------------------
namespace emu {
enum State : unsigned char { RUNNABLE, WAIT_BAR, WAIT_WARP, DONE };
enum { OK = 0, ERR_NARGS = 1, ERR_DEADLOCK = 2, ERR_NOMEM = 3, ERR_SHFL = 4, ERR_BARRIER = 5 };
#ifndef EMU_STACK_KB
#ifdef __SANITIZE_ADDRESS__
#define EMU_STACK_KB 256  // ASan frames are larger
#else
#define EMU_STACK_KB 64   // overflow hits a guard page; GPUDL_EMU_CXXFLAGS=-DEMU_STACK_KB=256
#endif
#endif
constexpr size_t kStack = (size_t)EMU_STACK_KB << 10;
constexpr size_t kGuard = 4096;        // PROT_NONE page below each stack

struct Fiber {
  void* sp; char* stack; uint3 tid; int warp, lane; unsigned xcount; State state;
  void* fake;  // ASan fake stack
#ifdef EMU_USE_UCONTEXT
  ucontext_t uc;
#endif
};
struct Warp { int size, live, arrived; unsigned part; unsigned long long slot[2][32]; };
struct Sched {
  Fiber* f = nullptr; Warp* w = nullptr; int cap = 0, n = 0, live = 0, bar_arrived = 0, err = 0;
  const char* bar_file = nullptr; int bar_line = 0;  // where this phase's first thread waits
  Fiber* cur = nullptr;  // the running fiber; null outside fiber mode
  void* main_sp = nullptr;
  void (*body)(void*) = nullptr; void* ctx = nullptr;
  const void* main_lo = nullptr; size_t main_size = 0;
#ifdef EMU_USE_UCONTEXT
  ucontext_t main_uc;
#endif
};
inline Sched S;

#ifndef EMU_USE_UCONTEXT
// void emu_swap(void** save_sp, void* load_sp): save callee-saved registers
// on the current stack, store rsp, switch to load_sp, restore and return there.
extern "C" void emu_swap(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .globl emu_swap
  .hidden emu_swap
  .type emu_swap,@function
emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_swap,.-emu_swap
)");
#endif

[[noreturn]] inline void fiber_entry();

inline void to_fiber(Fiber* f) {  // scheduler -> fiber
  S.cur = f;
  threadIdx = f->tid;
#ifdef __SANITIZE_ADDRESS__
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, kStack);
#endif
#ifdef EMU_USE_UCONTEXT
  swapcontext(&S.main_uc, &f->uc);
#else
  emu_swap(&S.main_sp, f->sp);
#endif
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  asm volatile("" ::: "memory");
  S.cur = nullptr;
}

inline void to_scheduler(Fiber* f) {  // fiber -> scheduler (returns when resumed)
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_start_switch_fiber(f->state == DONE ? nullptr : &f->fake, S.main_lo, S.main_size);
#endif
#ifdef EMU_USE_UCONTEXT
  swapcontext(&f->uc, &S.main_uc);
#else
  emu_swap(&f->sp, S.main_sp);
#endif
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_finish_switch_fiber(f->fake, &S.main_lo, &S.main_size);
#endif
  asm volatile("" ::: "memory");
}

inline void fiber_entry() {
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_finish_switch_fiber(nullptr, &S.main_lo, &S.main_size);
#endif
  S.body(S.ctx);
  S.cur->state = DONE;
  to_scheduler(S.cur);
  __builtin_unreachable();
}

inline void start_fiber(Fiber* f) {  // (re)start f at fiber_entry on its own stack
#ifdef EMU_USE_UCONTEXT
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->stack;
  f->uc.uc_stack.ss_size = kStack;
  f->uc.uc_link = nullptr;
  makecontext(&f->uc, (void (*)())fiber_entry, 0);
#else
  void** sp = (void**)(((uintptr_t)f->stack + kStack) & ~(uintptr_t)15);
  *--sp = nullptr;                  // fake return address of fiber_entry
  *--sp = (void*)&fiber_entry;      // where emu_swap's `ret` goes
  for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp rbx r12..r15
  f->sp = sp;
#endif
}

inline bool reserve(int n) {  // fibers and stacks are allocated once and reused
  if (n <= S.cap) return true;
  size_t per = kStack + kGuard;
  char* mem = (char*)mmap(nullptr, per * n, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  Fiber* f = (Fiber*)calloc(n, sizeof(Fiber));
  Warp* w = (Warp*)calloc((n + 31) / 32, sizeof(Warp));
  if (mem == MAP_FAILED || !f || !w) { free(f); free(w); return false; }
  for (int i = 0; i < n; i++) {
    mprotect(mem + per * i, kGuard, PROT_NONE);
    f[i].stack = mem + per * i + kGuard;
  }
  if (S.cap) { munmap(S.f[0].stack - kGuard, (kStack + kGuard) * S.cap); free(S.f); free(S.w); }
  S.f = f; S.w = w; S.cap = n;
  return true;
}

inline void release(State st, int lo, int hi) {
  for (int i = lo; i < hi; i++) if (S.f[i].state == st) S.f[i].state = RUNNABLE;
}
inline unsigned live_mask(int wi) {
  unsigned bits = 0;
  for (int l = 0; l < S.w[wi].size; l++)
    if (S.f[wi * 32 + l].state != DONE) bits |= 1u << l;
  return bits;
}
inline void release_warp(Warp& w, int wi) {  // all live lanes arrived: they are `part`
  w.arrived = 0;
  w.part = live_mask(wi);
  release(WAIT_WARP, wi * 32, wi * 32 + w.size);
}

// GPUDL_EMU_ORDER=reverse runs blocks, and the threads of a block, last first:
// a kernel whose result depends on the order (a missing __syncthreads, a
// read-modify-write race) then gives a different answer than in the default
// order.  The CPU tests run every kernel in both orders (make test-asan).
inline bool reverse_order() {
  const char* e = getenv("GPUDL_EMU_ORDER");
  return e && strcmp(e, "reverse") == 0;
}

// Runs one block as fibers until every thread has finished.
inline int run_block(bool rev) {
  int n = (int)(blockDim.x * blockDim.y * blockDim.z);
  S.n = S.live = n; S.bar_arrived = 0; S.err = OK;
  for (int wi = 0; wi < (n + 31) / 32; wi++) {
    S.w[wi].size = S.w[wi].live = n - wi * 32 < 32 ? n - wi * 32 : 32;
    S.w[wi].arrived = 0;
  }
  for (int i = 0; i < n; i++) {
    Fiber* f = &S.f[i];
    f->tid = {i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y)};
    f->warp = i / 32; f->lane = i % 32; f->xcount = 0; f->state = RUNNABLE; f->fake = nullptr;
    start_fiber(f);
  }
  while (S.live > 0) {
    bool ran = false;
    for (int k = 0; k < n; k++) {
      Fiber* f = &S.f[rev ? n - 1 - k : k];
      if (f->state != RUNNABLE) continue;
      ran = true;
      to_fiber(f);
      if (f->state == DONE) {  // finished threads no longer count at barriers
        S.live--;
        Warp& w = S.w[f->warp];
        w.live--;
        if (w.arrived && w.arrived == w.live) release_warp(w, f->warp);
        if (S.bar_arrived && S.bar_arrived == S.live) {
          S.bar_arrived = 0;
          release(WAIT_BAR, 0, n);
        }
      }
    }
    if (!ran) {
#ifdef __SANITIZE_ADDRESS__
      for (int i = 0; i < n; i++) __asan_unpoison_memory_region(S.f[i].stack, kStack);
#endif
      return ERR_DEADLOCK;
    }
  }
  return S.err;
}

inline Fiber* need_fiber(const char* what) {
  if (!S.cur) {
    fprintf(stderr, "cuda_emu: %s called in a kernel launched without fibers "
                    "(the emulator's textual check missed it)\n", what);
    abort();
  }
  return S.cur;
}

inline void warp_wait(Fiber* f) {  // all live lanes of f's warp meet here
  Warp& w = S.w[f->warp];
  if (++w.arrived == w.live) { release_warp(w, f->warp); return; }
  f->state = WAIT_WARP;
  to_scheduler(f);
}

// Every lane publishes v; returns the value published by lane `src` (own v if src < 0).
// Two slot sets alternate, so a fast lane's next exchange cannot clobber this one.
template <class T> inline T shfl(Fiber* f, T v, int src) {
  static_assert(std::is_arithmetic<T>::value && sizeof(T) <= 8, "shuffle of unsupported type");
  Warp& w = S.w[f->warp];
  unsigned long long* slot = w.slot[f->xcount++ & 1];
  slot[f->lane] = 0;
  memcpy(&slot[f->lane], &v, sizeof(T));
  warp_wait(f);
  if (src < 0) return v;                 // outside the width: the lane's own value, as CUDA defines
  if (src >= w.size || !(w.part >> src & 1)) {
    S.err = ERR_SHFL;                    // a lane that exited or does not exist: undefined on a GPU
    return v;
  }
  T r;
  memcpy(&r, &slot[src], sizeof(T));
  return r;
}

inline unsigned ballot(Fiber* f, int pred) {  // bit l: lane l took part and voted true
  shfl(f, pred ? 1 : 0, -1);
  const Warp& w = S.w[f->warp];
  const unsigned long long* slot = w.slot[(f->xcount - 1) & 1];
  unsigned bits = 0;
  for (int l = 0; l < w.size; l++)
    if ((w.part >> l & 1) && slot[l]) bits |= 1u << l;
  return bits;
}

// Runs the grid: `body` calls the kernel with its arguments.
template <class Body>
int launch(const unsigned* g, const unsigned* b, size_t smem, bool fibers, Body& body) {
  gridDim = dim3(g[0], g[1], g[2]);
  blockDim = dim3(b[0], b[1], b[2]);
  void* dyn = nullptr;
  if (posix_memalign(&dyn, 16, smem) != 0 || (smem && !dyn)) return ERR_NOMEM;
  __emu_dyn_smem = (unsigned char*)dyn;
  const bool rev = reverse_order();
  int rc = OK;
  if (fibers) {
    if (!reserve((int)(b[0] * b[1] * b[2]))) { free(dyn); return ERR_NOMEM; }
    S.body = [](void* c) { (*(Body*)c)(); };
    S.ctx = &body;
  }
  // r(i, n): the i-th index of 0 .. n-1 in the chosen order
  auto r = [rev](unsigned i, unsigned n) { return rev ? n - 1 - i : i; };
  for (unsigned bz = 0; bz < g[2] && rc == OK; bz++)
    for (unsigned by = 0; by < g[1] && rc == OK; by++)
      for (unsigned bx = 0; bx < g[0] && rc == OK; bx++) {
        blockIdx = {r(bx, g[0]), r(by, g[1]), r(bz, g[2])};
        memset(dyn, 0xff, smem);  // each block's dynamic shared memory starts as garbage (NaN / -1)
#ifndef __SANITIZE_ADDRESS__      // (ASan's redzones sit between the variables)
        memset(__start_gd_smem, 0xff, (size_t)(__stop_gd_smem - __start_gd_smem));
#endif
        if (fibers) { rc = run_block(rev); continue; }
        for (unsigned z = 0; z < b[2]; z++)
          for (unsigned y = 0; y < b[1]; y++)
            for (unsigned x = 0; x < b[0]; x++) {
              threadIdx = {r(x, b[0]), r(y, b[1]), r(z, b[2])};
              body();
            }
      }
  free(dyn);
  __emu_dyn_smem = nullptr;
  return rc;
}

// Parameter codes for the Python side: "f4" float, "i4"/"u4" ints, "b1" bool,
// "x<size>" other by-value types, "p<code>" typed pointer, "p?" untyped pointer.
template <class T> void put_code(char*& s) {
  if constexpr (std::is_floating_point<T>::value) *s++ = 'f';
  else if constexpr (std::is_same<T, bool>::value) *s++ = 'b';
  else if constexpr (std::is_integral<T>::value) *s++ = std::is_signed<T>::value ? 'i' : 'u';
  else *s++ = 'x';
  s += sprintf(s, "%zu", sizeof(T));
}
template <class P> void put_param(char*& s) {
  if constexpr (std::is_pointer<P>::value) {
    using U = std::remove_cv_t<std::remove_pointer_t<P>>;
    *s++ = 'p';
    if constexpr (!std::is_arithmetic<U>::value || sizeof(U) == 1) *s++ = '?';  // raw / struct
    else put_code<U>(s);
  } else {
    put_code<P>(s);
  }
  *s++ = ' ';
}

template <auto K> struct Kernel;
template <class... P, void (*K)(P...)> struct Kernel<K> {
  static const char* signature() {
    static char buf[32 * sizeof...(P) + 1];
    char* s = buf;
    (put_param<P>(s), ...);
    *s = 0;
    return buf;
  }
  // Unpacks args the way cuLaunchKernel does: args[i] points at parameter i.
  static int launch(const unsigned* g, const unsigned* b, size_t smem, void** args, int nargs,
                    bool fibers) {
    if (nargs != (int)sizeof...(P)) return ERR_NARGS;
    return unpack(g, b, smem, args, fibers, std::index_sequence_for<P...>{});
  }
  template <size_t... I>
  static int unpack(const unsigned* g, const unsigned* b, size_t smem, void** args, bool fibers,
                    std::index_sequence<I...>) {
    return run(g, b, smem, fibers, *static_cast<P*>(args[I])...);
  }
  static int run(const unsigned* g, const unsigned* b, size_t smem, bool fibers, P... v) {
    auto body = [&] { K(v...); };
    return emu::launch(g, b, smem, fibers, body);
  }
};
}  // namespace emu

// ---- synchronisation and warp intrinsics (need fiber mode) -----------------
// Every thread of a phase must wait at the same __syncthreads: two different call
// sites meeting (divergent code) is undefined on a GPU, so it is an error here.
#define __syncthreads() emu_syncthreads(__FILE__, __LINE__)
inline void emu_syncthreads(const char* file, int line) {
  emu::Fiber* f = emu::need_fiber("__syncthreads");
  if (emu::S.bar_arrived == 0) {
    emu::S.bar_file = file;
    emu::S.bar_line = line;
  } else if (line != emu::S.bar_line || strcmp(file, emu::S.bar_file) != 0) {
    emu::S.err = emu::ERR_BARRIER;
  }
  if (++emu::S.bar_arrived == emu::S.live) {
    emu::S.bar_arrived = 0;
    emu::release(emu::WAIT_BAR, 0, emu::S.n);
    return;
  }
  f->state = emu::WAIT_BAR;
  emu::to_scheduler(f);
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_wait(emu::need_fiber("__syncwarp")); }
template <class T> inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
  emu::Fiber* f = emu::need_fiber("__shfl_sync");
  return emu::shfl(f, v, (f->lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T> inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  emu::Fiber* f = emu::need_fiber("__shfl_down_sync");
  return emu::shfl(f, v, (f->lane & (width - 1)) + (int)delta < width ? f->lane + (int)delta : -1);
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  emu::Fiber* f = emu::need_fiber("__shfl_up_sync");
  return emu::shfl(f, v, (f->lane & (width - 1)) >= (int)delta ? f->lane - (int)delta : -1);
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  emu::Fiber* f = emu::need_fiber("__shfl_xor_sync");
  int src = f->lane ^ mask;
  return emu::shfl(f, v, src < (f->lane / width + 1) * width ? src : -1);
}
inline unsigned __ballot_sync(unsigned, int p) {
  return emu::ballot(emu::need_fiber("__ballot_sync"), p);
}
inline int __any_sync(unsigned m, int p) { return __ballot_sync(m, p) != 0; }
inline int __all_sync(unsigned, int p) {
  emu::Fiber* f = emu::need_fiber("__all_sync");
  return emu::ballot(f, p) == emu::S.w[f->warp].part;
}
inline unsigned __activemask() { return emu::live_mask(emu::need_fiber("__activemask")->warp); }

#pragma GCC visibility pop
