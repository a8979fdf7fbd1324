// Fork safety for native work. Node starts child processes with fork(); OpenBLAS's pthreads build
// registers a fork handler that shuts its thread pool down, and if a matrix product is running on one of
// our worker threads at that moment, that thread spins forever and every later native call queues behind
// it. coltrast's own fork handler (registered after OpenBLAS's, so it runs first) waits until no native
// computation is in flight, and keeps new ones from starting until the fork is done.
#pragma once

#include <shared_mutex>

namespace coltrast {

// Held shared by every native computation (PromiseWorker::Execute), exclusively around fork().
std::shared_mutex& nativeWorkMutex();

// Registers the fork handlers; call once when the addon loads (after libtorch and its BLAS are loaded).
void installForkGuard();

}  // namespace coltrast
