// A caching allocator for libtorch's CPU tensors of 1 MiB and more.
//
// Measured on the development VM (BENCHMARKS.md, "CPU allocator"): with glibc's malloc every large tensor of
// a forward pass (attention scores, activations) is a fresh mmap and munmap, so an embed() of 300 texts with
// a MiniLM-shaped model took 7.6 million page faults, and half its CPU time was the kernel's. Freed blocks
// kept for the next tensor of a similar size remove that, as PyTorch's CUDA caching allocator does on the
// GPU. Replacing malloc itself (tcmalloc, jemalloc) would need LD_PRELOAD before node starts; this needs
// nothing and touches only libtorch's CPU tensors.
//
// Smaller tensors are allocated as libtorch's default CPU allocator does and freed at once. A freed large
// block joins the cache; an allocation takes the smallest cached block that fits and wastes at most half
// of it, else allocates. The cache holds at most COLTRAST_CPU_CACHE_MB (default: a quarter of physical
// memory) and gives the largest blocks back beyond that; cpuMemory({ emptyCache: true }) empties it.
// COLTRAST_CPU_ALLOCATOR=system turns it off (libtorch's default allocator for everything).
#pragma once
#include <napi.h>

#include <cstddef>

namespace coltrast {

// Makes the caching allocator libtorch's CPU allocator, once per process (unless turned off).
void installCpuCachingAllocator();
// Gives the cached blocks back to the system (cpuMemory({ emptyCache: true })); nothing when the cache is off.
void emptyCpuCache();

void defineCpuMemory(Napi::Env env, Napi::Object exports);

}  // namespace coltrast
