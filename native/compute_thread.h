// One long-lived thread for the process's CPU computations, where that is faster than libuv's pool.
//
// libtorch's CPU kernels parallelize with OpenMP, and GNU OpenMP keeps a separate team of threads for each
// thread that starts parallel regions. Node's AsyncWorkers run on whichever of libuv's pool threads is free
// (four by default), so successive calls build up to four teams on the same cores. With more OpenMP threads
// than cores, libgomp lets idle threads spin only briefly ("throttled" waiting), and each of the many
// parallel regions in a training step then waits for its team to wake. Which is faster depends on the
// BLAS (BENCHMARKS.md, "One thread for CPU work"):
// - MKL, or an OpenBLAS built for OpenMP or without threads (a pip torch): its matrix products run in the
//   same OpenMP team, and one calling thread keeps that team hot between regions. A MiniLM-shaped training
//   step took 2-6% less time on one thread than on the pool.
// - OpenBLAS with threads of its own (Debian's libopenblas0-pthread, behind Debian's libtorch): a hot
//   OpenMP team, spinning between regions, takes the cores from OpenBLAS's threads, and the same step took
//   75% more time on one thread. There the pool, whose throttled teams go to sleep, stays.
// GPU work always runs on the pool, so computations on different GPUs can overlap.
#pragma once

#include <functional>

namespace coltrast {

// True when CPU work should go through runOnCpuThread: unless an OpenBLAS with threads of its own is loaded.
// Decided once, on the first call (libtorch and its BLAS are loaded with the addon).
bool cpuWorkOnOwnThread();

// Runs `job` on the CPU compute thread (started on first use) and waits for it; rethrows what it threw.
// Jobs run one at a time, in the order they were submitted. Must not be called from a job.
void runOnCpuThread(const std::function<void()>& job);

}  // namespace coltrast
