// A small CPU emulator for CUDA kernels written in plain CUDA C++: one fiber per CUDA thread, run one CTA at
// a time; __syncthreads and warp collectives (shfl, ballot, reduce, ldmatrix, mma) are scheduling points;
// cp.async copies land only at cp.async.wait_group (deferred, so a missing wait reads stale data); launches
// check grid / block / shared-memory limits like the driver; the order in which threads are resumed between
// scheduling points is EMU_SCHEDULE's (emu.cpp), so one check can run in several. For verification without a GPU.
#pragma once
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };

namespace emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "EMULATOR ERROR: %s\n", what);
  std::abort();
}

enum class Wait { None, Sync, Warp, Done };
enum class Op { None, ShflXor, Ballot, ReduceAdd, Ldmatrix, LdmatrixTrans, MmaBf16, MmaF16 };

struct Copy {
  unsigned char* dst;
  unsigned char bytes[16];
};

struct Fiber {
  ucontext_t ctx;  // where the fiber starts (makecontext); entered once
  jmp_buf jump;    // where it goes on after a scheduling point
  bool started = false;
  dim3 tid;
  Wait wait = Wait::None;
  Op op = Op::None;
  uint64_t in[12];
  uint64_t out[4];
  const void* ptr = nullptr;
  std::vector<std::vector<Copy>> groups;
  std::vector<Copy> open;
};

struct State {
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  jmp_buf scheduler;  // where runBlock's loop goes on when a fiber yields or ends
  std::function<void()> body;
  unsigned char* dynamicSmem = nullptr;
  size_t dynamicBytes = 0;
  std::map<int, std::pair<void*, size_t>> statics;
  dim3 bIdx, bDim, gDim;
};
inline State& state() {
  static State s;
  return s;
}
inline Fiber* current() { return state().current; }

inline bool inShared(const void* p, size_t n) {
  auto& s = state();
  auto* c = static_cast<const unsigned char*>(p);
  if (c >= s.dynamicSmem && c + n <= s.dynamicSmem + s.dynamicBytes) return true;
  for (auto& [k, v] : s.statics) {
    auto* b = static_cast<const unsigned char*>(v.first);
    if (c >= b && c + n <= b + v.second) return true;
  }
  return false;
}

// Fibers switch with _setjmp/_longjmp, not swapcontext, which also saves and restores the signal mask: a system call
// each way, millions per check, about half the emulator's time (75 s user, 67 s system for test_kernels --quick,
// 2026-12-06). A fiber is entered once with setcontext, onto its own stack (emu.cpp, runBlock). Built without
// _FORTIFY_SOURCE (build.sh), whose checked longjmp refuses a jump to another stack.
inline void yield(Wait w) {
  Fiber* f = current();
  f->wait = w;
  if (_setjmp(f->jump) == 0) _longjmp(state().scheduler, 1);
}

inline unsigned char* dynamicShared() { return state().dynamicSmem; }
template <typename T>
T* staticShared(size_t count, int key) {
  auto& s = state();
  auto it = s.statics.find(key);
  if (it == s.statics.end()) {
    const size_t bytes = std::max<size_t>(16, (count * sizeof(T) + 15) / 16 * 16);
    void* p = std::aligned_alloc(16, bytes);
    std::memset(p, 0xFF, bytes);  // uninitialized shared memory reads as NaN
    it = s.statics.emplace(key, std::make_pair(p, bytes)).first;
  }
  return static_cast<T*>(it->second.first);
}

void resolveWarp(Fiber* lanes, int count);

template <typename T>
inline uint64_t bits(T v) {
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
inline T unbits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

int launchCheck(const void* fn, dim3 grid, dim3 block, size_t smem);
void runGrid(dim3 grid, dim3 block, size_t smem);
extern int lastError;

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, void* /*stream*/, A&&... args) {
  if (int e = launchCheck(reinterpret_cast<const void*>(kernel), grid, block, smem)) {
    lastError = e;
    return;
  }
  std::tuple<std::decay_t<P>...> bound(std::forward<A>(args)...);
  state().body = [&] { std::apply(kernel, bound); };
  runGrid(grid, block, smem);
}

}  // namespace emu

#define threadIdx (emu::current()->tid)
#define blockIdx (emu::state().bIdx)
#define blockDim (emu::state().bDim)
#define gridDim (emu::state().gDim)

inline void __syncthreads() { emu::yield(emu::Wait::Sync); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) emu::fail("partial shfl");
  auto* f = emu::current();
  f->op = emu::Op::ShflXor;
  f->in[0] = emu::bits(v);
  f->in[1] = unsigned(laneMask);
  emu::yield(emu::Wait::Warp);
  return emu::unbits<T>(f->out[0]);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  if (mask != 0xffffffffu) emu::fail("partial ballot");
  auto* f = emu::current();
  f->op = emu::Op::Ballot;
  f->in[0] = pred != 0;
  emu::yield(emu::Wait::Warp);
  return unsigned(f->out[0]);
}
inline int __reduce_add_sync(unsigned mask, int v) {
  if (mask != 0xffffffffu) emu::fail("partial reduce");
  auto* f = emu::current();
  f->op = emu::Op::ReduceAdd;
  f->in[0] = emu::bits(v);
  emu::yield(emu::Wait::Warp);
  return emu::unbits<int>(f->out[0]);
}
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
// A product rounded once, never contracted into an FMA, as on the GPU. build.sh's default flags give g++ no FMA
// instruction to contract into, but extra ones may (-march=native, -mfma): the empty asm makes the product a
// value in memory that the subtraction after it cannot fuse with.
inline float __fmul_rn(float a, float b) {
  float product = a * b;
  __asm__("" : "+m"(product));
  return product;
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
T max(T a, T b) {
  return a < b ? b : a;
}
#ifndef INFINITY
#define INFINITY __builtin_inff()
#endif
