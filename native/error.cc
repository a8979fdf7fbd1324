#include "error.h"

#include <c10/util/Exception.h>

namespace coltrast {

ErrorInfo describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return {e.code(), e.what()};
  } catch (const c10::Error& e) {
    return {"NATIVE", std::string("libtorch: ") + e.what_without_backtrace()};
  } catch (const std::bad_alloc&) {
    return {"NATIVE", "out of memory in native code (try a smaller batchSize)"};
  } catch (const std::exception& e) {
    return {"NATIVE", e.what()};
  } catch (...) {
    return {"NATIVE", "unknown native exception"};
  }
}

}  // namespace coltrast
