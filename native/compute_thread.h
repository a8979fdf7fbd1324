// One long-lived thread for the process's CPU computations.
//
// libtorch's CPU kernels parallelize with OpenMP, and GNU OpenMP keeps a separate team of threads for each
// thread that starts parallel regions. Node's AsyncWorkers run on whichever of libuv's pool threads is free
// (four by default), so successive calls built up to four teams on the same cores. With more OpenMP threads
// than cores, libgomp stops idle threads spinning almost at once ("throttled" waiting), and each of the
// thousands of parallel regions in a training step then pays for waking its team. Running every CPU
// computation on one thread keeps one team, whose threads stay hot between regions: a MiniLM-shaped
// training step took 2-6% less time than with the pool, as much as UV_THREADPOOL_SIZE=1 gave
// (BENCHMARKS.md, "One thread for CPU work").
// GPU work stays on libuv's pool, so computations on different GPUs can overlap.
#pragma once

#include <functional>

namespace coltrast {

// Runs `job` on the CPU compute thread (started on first use) and waits for it; rethrows what it threw.
// Jobs run one at a time, in the order they were submitted. Must not be called from a job.
void runOnCpuThread(const std::function<void()>& job);

}  // namespace coltrast
