// Runs native work off the JS thread and settles a Promise: compute() on the CPU compute thread
// (compute_thread.h) for work on the CPU where that is faster, otherwise on a libuv worker thread; result()
// back on the JS thread. Any exception becomes a rejected Promise with a `code`, never an abort.
#pragma once
#include <napi.h>

#include <functional>
#include <shared_mutex>

#include "compute_thread.h"
#include "error.h"
#include "fork_guard.h"
#include "runtime.h"

namespace coltrast {

// A JS Error carrying `code` (see lib/errors.ts), for rejecting promises and throwing from sync methods.
inline Napi::Error jsError(Napi::Env env, const ErrorInfo& info) {
  Napi::Error error = Napi::Error::New(env, info.message);
  error.Set("code", Napi::String::New(env, info.code));
  return error;
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  // `device`: the device the work's tensors live on, which decides where compute() runs.
  PromiseWorker(Napi::Env env, const torch::Device& device) : PromiseWorker(env, OnCpu{device.is_cpu()}) {}
  // A device string not yet validated ("cpu", "cuda:1"): anything but "cpu" leaves the CPU thread free.
  PromiseWorker(Napi::Env env, const std::string& device) : PromiseWorker(env, OnCpu{device == "cpu"}) {}
  // Queues the work and returns its promise.
  Napi::Promise start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  virtual void compute() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;

  // Long work made of many steps (generation) returns true: compute() then runs on its libuv thread and hands each
  // step to step(), which runs it where compute() would have run (the CPU compute thread when that is in use), so
  // that other calls' work is queued between its steps instead of waiting for the whole call. A step must take the
  // model's mutex itself (holding it across steps would block the compute thread's other jobs on it).
  virtual bool inSteps() const { return false; }
  void step(const std::function<void()>& fn) {
    if (inSteps() && onCpu_ && cpuWorkOnOwnThread()) {
      runOnCpuThread([&] {
        applyThreadSetting();
        fn();
      });
    } else {
      fn();
    }
  }

 private:
  struct OnCpu {
    bool value;
  };
  PromiseWorker(Napi::Env env, OnCpu onCpu)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), onCpu_(onCpu.value) {}

  void Execute() override {
    try {
      std::shared_lock<std::shared_mutex> noFork(nativeWorkMutex());
      const auto work = [this] {
        applyThreadSetting();
        compute();
      };
      if (inSteps()) {
        applyThreadSetting();
        compute();
      } else if (onCpu_ && cpuWorkOnOwnThread()) {
        runOnCpuThread(work);
      } else {
        work();
      }
    } catch (...) {
      error_ = describe(std::current_exception());
      SetError(error_.message);
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      deferred_.Reject(jsError(env, describe(std::current_exception())).Value());
    }
  }
  void OnError(const Napi::Error&) override {
    Napi::HandleScope scope(Env());
    deferred_.Reject(jsError(Env(), error_).Value());
  }

  Napi::Promise::Deferred deferred_;
  ErrorInfo error_;
  bool onCpu_;
};

}  // namespace coltrast
