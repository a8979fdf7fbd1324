// Emulated stand-ins for native/kernels/ptx.cuh.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace coltrast::kernels::detail {

inline void copyAsync16(void* dst, const void* src, bool valid) {
  auto* f = emu::current();
  if ((reinterpret_cast<uintptr_t>(dst) & 15) != 0 || !emu::inShared(dst, 16)) emu::fail("cp.async: bad shared destination");
  if (valid && (reinterpret_cast<uintptr_t>(src) & 15) != 0) emu::fail("cp.async: misaligned global source");
  if (emu::inShared(src, 1)) emu::fail("cp.async: source in shared memory");
  emu::Copy c;
  c.dst = static_cast<unsigned char*>(dst);
  if (valid) std::memcpy(c.bytes, src, 16); else std::memset(c.bytes, 0, 16);
  f->open.push_back(c);
}
inline void copyAsyncCommit() {
  auto* f = emu::current();
  f->groups.push_back(std::move(f->open));
  f->open.clear();
}
template <int Pending>
inline void copyAsyncWait() {
  auto* f = emu::current();
  while (f->groups.size() > size_t(Pending)) {
    for (auto& c : f->groups.front()) std::memcpy(c.dst, c.bytes, 16);
    f->groups.erase(f->groups.begin());
  }
}

inline void ldmatrixX4(uint32_t (&r)[4], const void* p) {
  auto* f = emu::current();
  f->op = emu::Op::Ldmatrix;
  f->ptr = p;
  emu::yield(emu::Wait::Warp);
  for (int i = 0; i < 4; ++i) r[i] = uint32_t(f->out[i]);
}
inline void ldmatrixX4Trans(uint32_t (&r)[4], const void* p) {
  auto* f = emu::current();
  f->op = emu::Op::LdmatrixTrans;
  f->ptr = p;
  emu::yield(emu::Wait::Warp);
  for (int i = 0; i < 4; ++i) r[i] = uint32_t(f->out[i]);
}

template <typename T>
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  auto* f = emu::current();
  f->op = std::is_same<T, __half>::value ? emu::Op::MmaF16 : emu::Op::MmaBf16;
  for (int i = 0; i < 4; ++i) f->in[i] = a[i];
  f->in[4] = b0;
  f->in[5] = b1;
  for (int i = 0; i < 4; ++i) f->in[6 + i] = emu::bits(d[i]);
  emu::yield(emu::Wait::Warp);
  for (int i = 0; i < 4; ++i) d[i] = emu::unbits<float>(f->out[i]);
}

}  // namespace coltrast::kernels::detail
