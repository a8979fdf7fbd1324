#include "cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace coltrast {
namespace {

constexpr size_t kLarge = size_t{1} << 20;  // smaller tensors: libtorch's default allocator

// Sizes are rounded up to one of four steps per power of two, so that tensors of nearly the same size
// (the same layer at another sequence length) share blocks.
size_t roundUp(size_t n) {
  size_t power = kLarge;
  while (power * 2 <= n) power *= 2;
  const size_t step = power / 4;
  return (n + step - 1) / step * step;
}

size_t defaultLimit() {
  if (const char* mb = std::getenv("COLTRAST_CPU_CACHE_MB")) return static_cast<size_t>(std::strtoull(mb, nullptr, 10)) << 20;
  const long pages = sysconf(_SC_PHYS_PAGES), pageSize = sysconf(_SC_PAGESIZE);
  return pages > 0 && pageSize > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(pageSize) / 4 : size_t{2} << 30;
}

struct Stats {
  size_t cachedBytes = 0, allocatedBytes = 0, peakAllocatedBytes = 0, hits = 0, misses = 0;
};

class Cache {
 public:
  void* take(size_t n) {
    const size_t size = roundUp(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= 2 * size) {
        void* p = it->second;
        const size_t capacity = it->first;
        free_.erase(it);
        stats_.cachedBytes -= capacity;
        live_[p] = capacity;
        stats_.hits++;
        countLive(capacity);
        return p;
      }
      stats_.misses++;
    }
    void* p = allocateFresh(size);
    std::lock_guard<std::mutex> lock(mutex_);
    live_[p] = size;
    countLive(size);
    return p;
  }

  // Keeps a large block for reuse; frees a small one.
  void give(void* p) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      lock.unlock();
      c10::free_cpu(p);
      return;
    }
    const size_t size = it->second;
    live_.erase(it);
    stats_.allocatedBytes -= size;
    free_.emplace(size, p);
    stats_.cachedBytes += size;
    while (stats_.cachedBytes > limit_ && !free_.empty()) {
      auto largest = std::prev(free_.end());
      stats_.cachedBytes -= largest->first;
      c10::free_cpu(largest->second);
      free_.erase(largest);
    }
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [size, p] : free_) c10::free_cpu(p);
    free_.clear();
    stats_.cachedBytes = 0;
  }

  Stats stats(bool resetPeak) {
    std::lock_guard<std::mutex> lock(mutex_);
    Stats out = stats_;
    if (resetPeak) stats_.peakAllocatedBytes = stats_.allocatedBytes;
    return out;
  }

  size_t limit() const { return limit_; }

 private:
  void countLive(size_t size) {
    stats_.allocatedBytes += size;
    if (stats_.allocatedBytes > stats_.peakAllocatedBytes) stats_.peakAllocatedBytes = stats_.allocatedBytes;
  }

  // A new block; when memory runs out, the cached blocks go back first and it is tried once more.
  void* allocateFresh(size_t size) {
    try {
      return c10::alloc_cpu(size);
    } catch (const c10::Error&) {
      empty();
      return c10::alloc_cpu(size);
    }
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> live_;
  Stats stats_;
  const size_t limit_ = defaultLimit();
};

// Never destroyed: tensors may be freed during process exit, after static destructors have run.
Cache& cache() {
  static Cache* instance = new Cache();
  return *instance;
}

void giveBack(void* p) { cache().give(p); }

}  // namespace

void emptyCpuCache() { cache().empty(); }

namespace {

// Every block, small or large, is freed through giveBack (libtorch's raw_allocate / raw_deallocate need one
// deleter for all of them, with the data pointer as the context).
class CachingCpuAllocator final : public c10::Allocator {
 public:
  // libtorch 1.13 declares allocate() const, PyTorch 2.x non-const: one of these overrides it there.
  c10::DataPtr allocate(size_t n) const { return make(n); }
  c10::DataPtr allocate(size_t n) { return make(n); }
  // Pure virtual in PyTorch 2.x (Allocator::clone), absent in 1.13.
  void copy_data(void* dest, const void* src, size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const override { return &giveBack; }

 private:
  c10::DataPtr make(size_t n) const {
    void* p = n < kLarge ? c10::alloc_cpu(n) : cache().take(n);
    return {p, p, &giveBack, c10::Device(c10::DeviceType::CPU)};
  }
};

bool installed = false;

Napi::Value cpuMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto options = info.Length() > 0 && info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
  const Stats s = cache().stats(options.Get("resetPeak").ToBoolean());
  if (options.Get("emptyCache").ToBoolean()) cache().empty();
  auto out = Napi::Object::New(env);
  out.Set("caching", installed);
  out.Set("allocatedBytes", static_cast<double>(s.allocatedBytes));
  out.Set("peakAllocatedBytes", static_cast<double>(s.peakAllocatedBytes));
  out.Set("cachedBytes", static_cast<double>(s.cachedBytes));
  out.Set("cacheLimitBytes", static_cast<double>(cache().limit()));
  out.Set("hits", static_cast<double>(s.hits));
  out.Set("misses", static_cast<double>(s.misses));
  return out;
}

}  // namespace

void installCpuCachingAllocator() {
  if (installed) return;
  const char* choice = std::getenv("COLTRAST_CPU_ALLOCATOR");
  if (choice && std::string(choice) == "system") return;
  static CachingCpuAllocator* allocator = new CachingCpuAllocator();
  // Priority 1: above libtorch's own registration (0), so a later default registration cannot undo it.
  c10::SetCPUAllocator(allocator, /*priority=*/1);
  installed = true;
}

void defineCpuMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuMemory", Napi::Function::New(env, cpuMemory, "cpuMemory"));
}

}  // namespace coltrast
