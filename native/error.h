// Errors raised by native code. `code` matches the ErrorCode union in lib/errors.ts so the JS side can
// turn every native failure into a ColtrastError with a stable code.
#pragma once
#include <stdexcept>
#include <string>

namespace coltrast {

class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& message) : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

// A model file (weights, config) that is missing, malformed or inconsistent.
inline Error modelFilesError(const std::string& message) { return Error("MODEL_FILES", message); }
// A model type or configuration value coltrast does not implement.
inline Error unsupportedError(const std::string& message) { return Error("UNSUPPORTED_MODEL", message); }
// A caller-side mistake that slipped past the JS validation (shapes, option values).
inline Error invalidArgument(const std::string& message) { return Error("INVALID_ARGUMENT", message); }

// Message and code of any exception, with libtorch's C++ backtraces stripped: users get the reason,
// not a stack of ATen frames.
struct ErrorInfo {
  std::string code;
  std::string message;
};
ErrorInfo describe(const std::exception_ptr& error);

}  // namespace coltrast
