// See fork_guard.h.
#include "fork_guard.h"

#include <pthread.h>

#include <mutex>

namespace coltrast {

std::shared_mutex& nativeWorkMutex() {
  static std::shared_mutex m;
  return m;
}

void installForkGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork([] { nativeWorkMutex().lock(); },    // prepare: wait for running work to finish
                   [] { nativeWorkMutex().unlock(); },  // parent: let work start again
                   [] { nativeWorkMutex().unlock(); });  // child: the copy of the lock is ours to release
  });
}

}  // namespace coltrast
