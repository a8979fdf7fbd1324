// Which libtorch this is compiled against, for code that differs between libtorch 1.13 (Debian's) and 2.x.
#pragma once
#include <torch/version.h>

// libtorch MAJOR.MINOR or newer.
#define COLTRAST_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
