// `ops`: the loss operations exposed to JavaScript (see ops_wrap.cc).
#pragma once
#include <napi.h>

namespace coltrast::ops {

Napi::Object defineOps(Napi::Env env);

}  // namespace coltrast::ops
