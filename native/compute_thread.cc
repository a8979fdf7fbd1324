// See compute_thread.h.
#include "compute_thread.h"

#include <dlfcn.h>
#include <pthread.h>

#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

namespace coltrast {
namespace {

class CpuThread {
 public:
  CpuThread() { std::thread([this] { loop(); }).detach(); }

  void submit(std::packaged_task<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  [[noreturn]] void loop() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      // The task is this thread's until it is destroyed here; the caller holds only its future, which
      // receives the job's exception if it threw.
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<void()>> queue_;
};

std::mutex instanceMutex;
CpuThread* instance = nullptr;

CpuThread& cpuThread() {
  static std::once_flag forkHandler;
  std::call_once(forkHandler, [] {
    // A forked child has no copy of the thread: it starts its own on first use, and the parent's object
    // (whose mutex the thread may have held at the fork) is abandoned. instanceMutex is free at a fork: it is
    // taken only inside PromiseWorker::Execute, which the fork guard (fork_guard.h) keeps out of fork().
    pthread_atfork(nullptr, nullptr, [] { instance = nullptr; });
  });
  std::lock_guard<std::mutex> lock(instanceMutex);
  // Never destroyed: the detached thread may still be waiting for work when the process exits.
  if (instance == nullptr) instance = new CpuThread();
  return *instance;
}

// OpenBLAS's openblas_get_parallel(): 0 without threads, 1 with its own pthreads, 2 with OpenMP. Found
// through its soname, since a library loaded as a dependency of the addon is not in the global namespace.
bool openBlasHasOwnThreads() {
  void* lib = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD);
  if (lib == nullptr) return false;
  using GetParallel = int (*)();
  auto getParallel = reinterpret_cast<GetParallel>(dlsym(lib, "openblas_get_parallel"));
  const bool own = getParallel != nullptr && getParallel() == 1;
  dlclose(lib);  // only drops the reference NOLOAD took
  return own;
}

}  // namespace

bool cpuWorkOnOwnThread() {
  static const bool own = !openBlasHasOwnThreads();
  return own;
}

void runOnCpuThread(const std::function<void()>& job) {
  std::packaged_task<void()> task(job);
  std::future<void> done = task.get_future();
  cpuThread().submit(std::move(task));
  done.get();
}

}  // namespace coltrast
