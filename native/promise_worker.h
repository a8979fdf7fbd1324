// Runs native work off the JS thread and settles a Promise: compute() on a libuv worker thread,
// result() back on the JS thread. Any exception becomes a rejected Promise with a `code`, never an abort.
#pragma once
#include <napi.h>

#include <shared_mutex>

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
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  // Queues the work and returns its promise.
  Napi::Promise start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  virtual void compute() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;

 private:
  void Execute() override {
    try {
      std::shared_lock<std::shared_mutex> noFork(nativeWorkMutex());
      applyThreadSetting();
      compute();
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
};

}  // namespace coltrast
