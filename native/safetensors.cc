#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "error.h"

namespace coltrast {
namespace {

// The reference implementation refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;

struct DtypeName {
  const char* name;
  torch::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

const char* nameOf(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return d.name;
  throw invalidArgument(std::string("cannot store dtype ") + c10::toString(type) + " in safetensors");
}

std::string errnoText() { return std::strerror(errno); }

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto bad = [&](const std::string& why) {
    return modelFilesError("malformed safetensors file " + path + ": " + why);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw modelFilesError("cannot open weights file " + path + ": " + errnoText());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw modelFilesError("cannot stat " + path + ": " + errnoText());
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw bad("file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  }
  mapping_ = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    throw modelFilesError("cannot memory-map " + path + ": " + errnoText());
  }
  mappingSize_ = size;
  try {
    const auto* bytes = static_cast<const uint8_t*>(mapping_);
    uint64_t headerLen = 0;
    for (int i = 7; i >= 0; --i) headerLen = (headerLen << 8) | bytes[i];
    if (headerLen > kMaxHeaderBytes) throw bad("header length " + std::to_string(headerLen) + " exceeds 100 MB");
    if (headerLen > size - 8)
      throw bad("header length " + std::to_string(headerLen) + " runs past the end of the " +
                std::to_string(size) + "-byte file (truncated download?)");
    const uint64_t dataSize = size - 8 - headerLen;
    data_ = bytes + 8 + headerLen;

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(bytes + 8, bytes + 8 + headerLen);
    } catch (const nlohmann::json::exception& e) {
      throw bad(std::string("header is not valid JSON (") + e.what() + ")");
    }
    if (!header.is_object()) throw bad("header is not a JSON object");

    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        if (!value.is_object()) throw bad("__metadata__ is not an object");
        for (const auto& [k, v] : value.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
        continue;
      }
      const std::string where = "tensor '" + name + "'";
      if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
          !value.contains("data_offsets"))
        throw bad(where + " lacks dtype, shape or data_offsets");
      Entry entry{};
      if (!value["dtype"].is_string()) throw bad(where + " has a non-string dtype");
      entry.dtypeName = value["dtype"].get<std::string>();
      bool known = false;
      for (const auto& d : kDtypes)
        if (entry.dtypeName == d.name) {
          entry.dtype = d.type;
          known = true;
        }
      if (!known) throw bad(where + " has unsupported dtype " + entry.dtypeName);
      const auto& shape = value["shape"];
      if (!shape.is_array()) throw bad(where + " has a non-array shape");
      uint64_t numel = 1;
      for (const auto& dim : shape) {
        if (!dim.is_number_unsigned()) throw bad(where + " has a negative or non-integer dimension");
        const uint64_t d = dim.get<uint64_t>();
        if (d > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, d, &numel))
          throw bad(where + " has a shape whose size overflows");
        entry.shape.push_back(static_cast<int64_t>(d));
      }
      const auto& offsets = value["data_offsets"];
      if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
          !offsets[1].is_number_unsigned())
        throw bad(where + " has data_offsets that are not two non-negative integers");
      entry.begin = offsets[0].get<uint64_t>();
      entry.end = offsets[1].get<uint64_t>();
      if (entry.begin > entry.end) throw bad(where + " has data_offsets with begin > end");
      if (entry.end > dataSize)
        throw bad(where + " ends at byte " + std::to_string(entry.end) + " but the data section has only " +
                  std::to_string(dataSize) + " bytes (truncated file?)");
      uint64_t bytesNeeded = 0;
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(entry.dtype)), &bytesNeeded) ||
          bytesNeeded != entry.end - entry.begin)
        throw bad(where + " has shape/size mismatch: shape needs " + std::to_string(bytesNeeded) +
                  " bytes, data_offsets give " + std::to_string(entry.end - entry.begin));
      if (entry.end > entry.begin) ranges.emplace_back(entry.begin, entry.end);
      entries_.emplace(name, std::move(entry));
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].first < ranges[i - 1].second)
        throw bad("two tensors overlap at data bytes " + std::to_string(ranges[i].first) + ".." +
                  std::to_string(ranges[i - 1].second));
  } catch (...) {
    ::munmap(mapping_, mappingSize_);
    mapping_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mappingSize_);
}

torch::Tensor SafetensorsFile::read(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw modelFilesError("weights file " + path_ + " has no tensor '" + name + "'");
  const Entry& e = it->second;
  // Copy out of the mapping: data offsets need not be aligned for the element type, and the tensor
  // must stay valid after the file is closed.
  torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), data_ + e.begin, e.end - e.begin);
  return t;
}

torch::Tensor SafetensorsFile::map(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw modelFilesError("weights file " + path_ + " has no tensor '" + name + "'");
  const Entry& e = it->second;
  const uint64_t offset = uint64_t(data_ - static_cast<const uint8_t*>(mapping_)) + e.begin;
  if (e.end == e.begin || offset % torch::elementSize(e.dtype) != 0) return read(name);
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return read(name);
  void* base = ::mmap(nullptr, mappingSize_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) return read(name);
  const size_t size = mappingSize_;
  return torch::from_blob(static_cast<uint8_t*>(base) + offset, e.shape, [base, size](void*) { ::munmap(base, size); },
                          torch::TensorOptions().dtype(e.dtype));
}

void SafetensorsFile::copyInto(const std::string& name, torch::Tensor& dst) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw modelFilesError("weights file " + path_ + " has no tensor '" + name + "'");
  const Entry& e = it->second;
  TORCH_CHECK(dst.device().is_cpu() && dst.is_contiguous() && dst.numel() * static_cast<int64_t>(torch::elementSize(e.dtype)) == static_cast<int64_t>(e.end - e.begin),
              "copyInto: the destination does not fit ", name);
  if (e.end == e.begin) return;
  const uint8_t* src = data_ + e.begin;
  if (dst.scalar_type() == e.dtype) {
    // memcpy: the data need not be aligned for its element type.
    std::memcpy(dst.data_ptr(), src, e.end - e.begin);
  } else {
    // Converted a piece (4 MiB) at a time through a buffer: copied out of the mapping at any alignment, in order by
    // one thread, then converted from the cache by libtorch's copy.
    const int64_t itemSize = static_cast<int64_t>(torch::elementSize(e.dtype)), count = dst.numel();
    const int64_t piece = std::min<int64_t>(count, (int64_t{4} << 20) / itemSize);
    torch::Tensor buffer = torch::empty({piece}, torch::TensorOptions().dtype(e.dtype));
    torch::Tensor flat = dst.view({-1});
    for (int64_t at = 0; at < count; at += piece) {
      const int64_t n = std::min(piece, count - at);
      std::memcpy(buffer.data_ptr(), src + at * itemSize, static_cast<size_t>(n * itemSize));
      flat.narrow(0, at, n).copy_(buffer.narrow(0, 0, n));
    }
  }
  // The whole pages the tensor touches (a neighbour's share of a page comes back from the file if it is read).
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(src) / page * page, end = reinterpret_cast<uintptr_t>(src) + (e.end - e.begin);
  ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

torch::Tensor SafetensorsFile::read(const std::string& name, torch::ScalarType dtype) const {
  torch::Tensor t = read(name);
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

void writeSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> sorted;
  sorted.reserve(tensors.size());
  for (const auto& [name, t] : tensors) sorted.emplace_back(name, t.detach().to(torch::kCPU).contiguous());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : sorted) {
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", nameOf(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned

  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw modelFilesError("cannot write " + tmp + ": " + errnoText());
    uint8_t len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, t] : sorted)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
    out.flush();
    if (!out) {
      ::unlink(tmp.c_str());
      throw modelFilesError("failed writing " + tmp + " (disk full?)");
    }
  }
  int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw modelFilesError("cannot move " + tmp + " to " + path + ": " + errnoText());
  }
}

WeightFiles::WeightFiles(const std::vector<std::string>& paths) {
  if (paths.empty()) throw invalidArgument("no weights file given");
  for (const auto& path : paths) {
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const auto& [name, entry] : files_.back()->entries()) {
      if (!where_.emplace(name, files_.back().get()).second) {
        throw modelFilesError("tensor '" + name + "' is in both " + where_.at(name)->path() + " and " + path);
      }
    }
  }
  description_ = paths.size() == 1 ? paths[0] : paths[0] + " (and " + std::to_string(paths.size() - 1) + " more shards)";
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

}  // namespace coltrast
