// Removing rows from a store in place: what dense_store.cc and residual_store.cc share.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace coltrast {

// Moves the rows of `rows` rows of `rowBytes` bytes at `base` whose flag in `keep` is nonzero down over the others,
// in order, one memmove per run of kept rows; returns how many are kept. No second copy of the store, and no fresh
// pages to fault in (BENCHMARKS.md, "Removing documents").
inline int64_t compactRows(uint8_t* base, int64_t rowBytes, const std::vector<uint8_t>& keep, int64_t rows) {
  int64_t to = 0;
  for (int64_t i = 0; i < rows;) {
    if (!keep[i]) {
      ++i;
      continue;
    }
    int64_t end = i + 1;
    while (end < rows && keep[end]) ++end;
    if (to != i) std::memmove(base + to * rowBytes, base + i * rowBytes, size_t((end - i) * rowBytes));
    to += end - i;
    i = end;
  }
  return to;
}

}  // namespace coltrast
