#include <chrono>
#include <memory>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace emu {

int lastError = 0;
static std::map<const void*, int> maxDynamic;
static int smemOptin() { return std::getenv("EMU_A100") ? 166912 : 232448; }
static int multiprocessors() { return std::getenv("EMU_A100") ? 108 : 132; }
static long long ctasRun = 0;

// The order in which runBlock resumes the threads between two scheduling points. A correct kernel's results do
// not depend on it (threads of a block, lanes of a warp too since Volta, are ordered only by barriers and
// collectives), so running the same checks in other orders turns a missing barrier into a wrong result: a
// thread that reads shared memory another thread writes in the same phase sees the new value in one order and
// the old one (at first the 0xFF fill, a NaN) in the other. EMU_SCHEDULE:
//   forward   (the default) every waiting thread one step, thread 0 first, then the next round
//   reverse   the same, the last thread first
//   shuffle   the same in a new random order every round, seeded by EMU_SEED (default 1)
//   warps     one warp at a time as far as it can go (its collectives resolved as it reaches them) up to the
//             next __syncthreads, warp 0 first: a warp that finishes a loop early and overwrites what the others
//             still read (a missing barrier before a buffer is refilled) shows here, where the rounds above keep
//             warps in step
//   warps-reverse  the same, the last warp first
enum class Schedule { Forward, Reverse, Shuffle, Warps, WarpsReverse };
static Schedule schedule() {
  static const Schedule value = [] {
    const char* env = std::getenv("EMU_SCHEDULE");
    const std::string name = env ? env : "forward";
    if (name == "forward") return Schedule::Forward;
    if (name == "reverse") return Schedule::Reverse;
    if (name == "shuffle") return Schedule::Shuffle;
    if (name == "warps") return Schedule::Warps;
    if (name == "warps-reverse") return Schedule::WarpsReverse;
    fail("EMU_SCHEDULE must be forward, reverse, shuffle, warps or warps-reverse");
  }();
  return value;
}
static uint64_t scheduleState = [] {
  const char* env = std::getenv("EMU_SEED");
  return env ? std::strtoull(env, nullptr, 10) * 0x9E3779B97F4A7C15ull + 1 : 1;
}();
static uint64_t nextRandom() {  // splitmix64
  uint64_t z = (scheduleState += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Threads (or, for the warp schedules, warps) in the order of the next round.
static void reorder(std::vector<unsigned>& order) {
  const size_t n = order.size();
  for (size_t i = 0; i < n; ++i) order[i] = unsigned(i);
  const Schedule sc = schedule();
  if (sc == Schedule::Reverse || sc == Schedule::WarpsReverse) std::reverse(order.begin(), order.end());
  if (sc == Schedule::Shuffle)
    for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[nextRandom() % i]);
}

int launchCheck(const void* fn, dim3 grid, dim3 block, size_t smem) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0) return cudaErrorInvalidConfiguration;
  if (grid.y > 65535 || grid.z > 65535 || block.x * block.y * block.z > 1024) return cudaErrorInvalidConfiguration;
  auto it = maxDynamic.find(fn);
  const int limit = it == maxDynamic.end() ? 48 * 1024 : it->second;
  if (smem > size_t(limit)) {
    std::fprintf(stderr, "EMULATOR: launch with %zu bytes of dynamic shared memory, function allows %d\n", smem, limit);
    return cudaErrorInvalidValue;
  }
  return 0;
}

static void entry() {
  auto& s = state();
  s.body();
  Fiber* f = s.current;
  if (!f->groups.empty() || !f->open.empty()) {
    // Completed copies nobody waited for: legal on hardware, but the kernels here always wait.
    fail("thread exits with cp.async groups not waited for");
  }
  f->wait = Wait::Done;
  _longjmp(s.scheduler, 1);  // its stack is left for good
}

static uint16_t half16(uint32_t reg, int which) { return uint16_t(which ? reg >> 16 : reg & 0xffff); }
static float decode(uint16_t v, bool f16) {
  if (f16) {
    __half h;
    h.x = v;
    return __half2float(h);
  }
  __nv_bfloat16 b;
  b.x = v;
  return __bfloat162float(b);
}

void resolveWarp(Fiber* lanes, int count) {
  const Op op = lanes[0].op;
  for (int l = 0; l < count; ++l)
    if (lanes[l].op != op) fail("warp lanes at different collectives");
  if (count != 32) fail("collective in a partial warp");
  switch (op) {
    case Op::ShflXor:
      for (int l = 0; l < 32; ++l) lanes[l].out[0] = lanes[l ^ int(lanes[l].in[1])].in[0];
      break;
    case Op::Ballot: {
      uint64_t m = 0;
      for (int l = 0; l < 32; ++l) m |= (lanes[l].in[0] ? 1ull : 0ull) << l;
      for (int l = 0; l < 32; ++l) lanes[l].out[0] = m;
      break;
    }
    case Op::ReduceAdd: {
      int sum = 0;
      for (int l = 0; l < 32; ++l) sum += unbits<int>(lanes[l].in[0]);
      for (int l = 0; l < 32; ++l) lanes[l].out[0] = bits(sum);
      break;
    }
    case Op::Ldmatrix:
    case Op::LdmatrixTrans: {
      uint16_t M[4][8][8];
      for (int m = 0; m < 4; ++m)
        for (int r = 0; r < 8; ++r) {
          const void* p = lanes[8 * m + r].ptr;
          if ((reinterpret_cast<uintptr_t>(p) & 15) != 0 || !inShared(p, 16)) fail("ldmatrix: bad row address");
          std::memcpy(M[m][r], p, 16);
        }
      for (int l = 0; l < 32; ++l)
        for (int m = 0; m < 4; ++m) {
          uint16_t lo, hi;
          if (op == Op::Ldmatrix) {
            lo = M[m][l / 4][2 * (l % 4)];
            hi = M[m][l / 4][2 * (l % 4) + 1];
          } else {
            lo = M[m][2 * (l % 4)][l / 4];
            hi = M[m][2 * (l % 4) + 1][l / 4];
          }
          lanes[l].out[m] = uint32_t(lo) | (uint32_t(hi) << 16);
        }
      break;
    }
    case Op::MmaBf16:
    case Op::MmaF16: {
      const bool f16 = op == Op::MmaF16;
      float A[16][16], B[16][8];
      for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        const uint32_t* a = nullptr;
        uint32_t av[4];
        for (int i = 0; i < 4; ++i) av[i] = uint32_t(lanes[l].in[i]);
        a = av;
        for (int e = 0; e < 2; ++e) {
          A[g][2 * t + e] = decode(half16(a[0], e), f16);
          A[g + 8][2 * t + e] = decode(half16(a[1], e), f16);
          A[g][2 * t + 8 + e] = decode(half16(a[2], e), f16);
          A[g + 8][2 * t + 8 + e] = decode(half16(a[3], e), f16);
          B[2 * t + e][g] = decode(half16(uint32_t(lanes[l].in[4]), e), f16);
          B[2 * t + 8 + e][g] = decode(half16(uint32_t(lanes[l].in[5]), e), f16);
        }
      }
      for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        for (int h = 0; h < 2; ++h)
          for (int e = 0; e < 2; ++e) {
            double dot = 0.0;
            for (int k = 0; k < 16; ++k) dot += double(A[g + 8 * h][k]) * double(B[k][2 * t + e]);
            const float c = unbits<float>(lanes[l].in[6 + h * 2 + e]);
            lanes[l].out[h * 2 + e] = bits(float(double(c) + dot));
          }
      }
      break;
    }
    default:
      fail("unknown collective");
  }
  for (int l = 0; l < count; ++l) {
    lanes[l].wait = Wait::None;
    lanes[l].op = Op::None;
  }
}

static void runBlock(unsigned threads) {
  auto& s = state();
  s.fibers.clear();
  s.fibers.resize(threads);
  // The fibers' stacks outlive the CTA: allocated once (not zeroed; a stack needs no initial contents), since
  // zeroing 256 threads x 256 KB for every CTA was most of the emulator's time.
  const size_t stackBytes = 256 * 1024;
  static std::vector<std::unique_ptr<char[]>> stacks;
  while (stacks.size() < threads) stacks.emplace_back(new char[stackBytes]);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = s.fibers[t];
    f.tid = dim3(t, 0, 0);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stacks[t].get();
    f.ctx.uc_stack.ss_size = stackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, entry, 0);
  }
  const unsigned warps = (threads + 31) / 32;
  const bool byWarp = schedule() == Schedule::Warps || schedule() == Schedule::WarpsReverse;
  std::vector<unsigned> order(byWarp ? warps : threads);
  // Resolves warp w's collective when every lane that has not exited waits at it.
  auto resolveIfReady = [&](unsigned w) {
    Fiber* lanes = &s.fibers[w * 32];
    const int count = int(std::min<unsigned>(32, threads - w * 32));
    int waiting = 0, done = 0;
    for (int l = 0; l < count; ++l) {
      waiting += lanes[l].wait == Wait::Warp;
      done += lanes[l].wait == Wait::Done;
    }
    if (waiting == 0 || waiting + done != count) return false;
    if (done > 0) fail("warp collective with exited lanes");
    resolveWarp(lanes, count);
    return true;
  };
  auto resume = [&](Fiber& f) {
    if (f.wait != Wait::None) return false;
    s.current = &f;
    if (_setjmp(s.scheduler) == 0) {
      if (!f.started) {
        f.started = true;
        setcontext(&f.ctx);  // the first entry, onto the fiber's stack (emu.h, yield)
      }
      _longjmp(f.jump, 1);
    }
    s.current = nullptr;
    return true;
  };
  for (;;) {
    bool progress = false;
    reorder(order);
    if (byWarp) {
      for (unsigned w : order) {
        const unsigned end = std::min(threads, (w + 1) * 32);
        for (;;) {
          for (unsigned t = w * 32; t < end; ++t) progress = resume(s.fibers[t]) || progress;
          if (!resolveIfReady(w)) break;
          progress = true;
        }
      }
    } else {
      for (unsigned t : order) progress = resume(s.fibers[t]) || progress;
      for (unsigned w = 0; w < warps; ++w) progress = resolveIfReady(w) || progress;
    }
    int sync = 0, done = 0;
    for (auto& f : s.fibers) {
      sync += f.wait == Wait::Sync;
      done += f.wait == Wait::Done;
    }
    if (done == int(threads)) break;
    if (sync > 0 && sync + done == int(threads)) {
      if (done > 0) fail("__syncthreads with exited threads");
      for (auto& f : s.fibers) f.wait = Wait::None;
      progress = true;
    }
    if (!progress) fail("deadlock: threads wait at different barriers / collectives");
  }
}

void runGrid(dim3 grid, dim3 block, size_t smem) {
  auto& s = state();
  s.gDim = grid;
  s.bDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        s.bIdx = dim3(x, y, z);
        s.dynamicBytes = smem;
        s.dynamicSmem = static_cast<unsigned char*>(std::aligned_alloc(128, std::max<size_t>(128, (smem + 127) / 128 * 128)));
        std::memset(s.dynamicSmem, 0xFF, std::max<size_t>(smem, 1));
        for (auto& [k, v] : s.statics) std::free(v.first);
        s.statics.clear();
        runBlock(block.x);
        size_t staticBytes = 0;
        for (auto& [k, v] : s.statics) staticBytes += v.second;
        if (staticBytes + smem > size_t(smemOptin())) fail("static + dynamic shared memory over the device limit");
        if (staticBytes > 48 * 1024) fail("static shared memory over 48 KB");
        std::free(s.dynamicSmem);
        s.dynamicSmem = nullptr;
        ++ctasRun;
      }
}

}  // namespace emu

cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::aligned_alloc(256, (std::max<size_t>(n, 1) + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const int e = emu::lastError;
  emu::lastError = 0;
  return cudaError_t(e);
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "emulated error";
  }
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  if (a == cudaDevAttrMultiProcessorCount) *v = emu::multiprocessors();
  else if (a == cudaDevAttrMaxSharedMemoryPerBlockOptin) *v = emu::smemOptin();
  else return cudaErrorInvalidValue;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof(p->name), "%s", std::getenv("EMU_A100") ? "CPU emulator (A100 limits)" : "CPU emulator (H100 limits)");
  p->major = std::getenv("EMU_A100") ? 8 : 9;
  p->minor = 0;
  p->multiProcessorCount = emu::multiprocessors();
  p->sharedMemPerBlockOptin = size_t(emu::smemOptin());
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttributeImpl(const void* fn, cudaFuncAttribute a, int v) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (v > emu::smemOptin()) return cudaErrorInvalidValue;
  emu::maxDynamic[fn] = v;
  return cudaSuccess;
}
struct EmuEvent {
  std::chrono::steady_clock::time_point t;
};
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new EmuEvent;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
