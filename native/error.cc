#include "error.h"

#include <c10/util/Exception.h>

namespace coltrast {

namespace {

// What to do about memory running out, after what ran out.
ErrorInfo outOfMemory(const std::string& what) {
  return {"OUT_OF_MEMORY", "out of memory (" + what +
                               "): use smaller batches (batchSize) or shorter inputs (maxSeqLength); to train, also "
                               "gradient caching (miniBatchSize), gradientCheckpointing, bfloat16 precision or LoRA"};
}

}  // namespace

ErrorInfo describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return {e.code(), e.what()};
  } catch (const c10::OutOfMemoryError& e) {  // CUDA's caching allocator
    return outOfMemory(std::string("libtorch: ") + e.what_without_backtrace());
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    // The CPU allocator's failure is a plain c10::Error in libtorch 1.13 and 2.x ("[enforce fail at alloc_cpu.cpp:75]
    // err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes. Error code 12 (...)").
    const std::string cpu = "DefaultCPUAllocator: ";
    const size_t at = what.find(cpu + "can't allocate memory");
    if (at != std::string::npos) return outOfMemory("libtorch's CPU allocator: " + what.substr(at + cpu.size()));
    return {"NATIVE", "libtorch: " + what};
  } catch (const std::bad_alloc&) {
    return outOfMemory("a native allocation failed");
  } catch (const std::exception& e) {
    return {"NATIVE", e.what()};
  } catch (...) {
    return {"NATIVE", "unknown native exception"};
  }
}

}  // namespace coltrast
