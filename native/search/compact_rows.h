// Removing rows from a store in place: what dense_store.cc and residual_store.cc share.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "error.h"
#include "promise_worker.h"

namespace coltrast {

// Moves the rows of `rows` rows of `rowBytes` bytes at `base` whose flag in `keep` is nonzero down over the others,
// in order, one memmove per run of kept rows; returns how many are kept. No second copy of the store, and no fresh
// pages to fault in (BENCHMARKS.md, "Removing documents").
inline int64_t compactRows(uint8_t* base, int64_t rowBytes, const std::vector<uint8_t>& keep, int64_t rows) {
  int64_t to = 0;
  for (int64_t i = 0; i < rows;) {
    if (!keep[i]) {
      ++i;
      continue;
    }
    int64_t end = i + 1;
    while (end < rows && keep[end]) ++end;
    if (to != i) std::memmove(base + to * rowBytes, base + i * rowBytes, size_t((end - i) * rowBytes));
    to += end - i;
    i = end;
  }
  return to;
}

// A store's remove(keep) off the JS thread: under the store's lock, flags for another row count are refused (the store
// changed after the call), then `compact` keeps the flagged rows in place and sets the store's rows. Resolves to the
// rows left.
template <class Store>
class RemoveRowsWorker : public PromiseWorker {
 public:
  using Compact = std::function<void(Store&, const std::vector<uint8_t>&)>;
  RemoveRowsWorker(Napi::Env env, std::shared_ptr<Store> store, std::vector<uint8_t> keep, Compact compact)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), keep_(std::move(keep)), compact_(std::move(compact)) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    if (int64_t(keep_.size()) != store_->rows) throw invalidArgument("the store changed before remove() ran; remove again");
    compact_(*store_, keep_);
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, double(store_->rows)); }

 private:
  std::shared_ptr<Store> store_;
  std::vector<uint8_t> keep_;
  Compact compact_;
};

}  // namespace coltrast
