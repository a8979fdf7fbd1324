// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw data.
// We read by memory-mapping the file and validating the whole header before touching any data, so a
// malformed or hostile file is rejected with a message instead of a crash or a huge allocation.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace coltrast {

class SafetensorsFile {
 public:
  struct Entry {
    torch::ScalarType dtype;
    std::string dtypeName;
    std::vector<int64_t> shape;
    uint64_t begin;  // offsets into the data section
    uint64_t end;
  };

  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return entries_.count(name) > 0; }

  // A fresh tensor (owning its memory, so it outlives the mapping) converted to `dtype`.
  torch::Tensor read(const std::string& name, torch::ScalarType dtype) const;
  // The same, keeping the stored dtype.
  torch::Tensor read(const std::string& name) const;
  // A read-only tensor over the file's own bytes (a mapping of its own, released with the last tensor sharing it):
  // pages load when touched and live in the page cache, not the heap. Never write to it. A copy (read()) when
  // the data is not aligned for its element type or the file cannot be mapped again.
  torch::Tensor map(const std::string& name) const;
  // The tensor's values written into `dst` (a contiguous CPU tensor of its shape, any floating dtype: converted as
  // Tensor::copy_ converts), straight from the mapping (through a 4 MiB buffer when converting), with no copy of the
  // whole tensor in between; then the file's pages under it are
  // let go of (madvise MADV_DONTNEED: they stay in the page cache and come back if touched), so that loading a model
  // holds its weights once, not also the file's pages. The caller checks the shape.
  void copyInto(const std::string& name, torch::Tensor& dst) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;  // start of the data section inside the mapping
  void* mapping_ = nullptr;
  size_t mappingSize_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights in one safetensors file or in shards (model-00001-of-00002.safetensors, ...): each tensor from
// the file that holds it. A tensor in two shards is an error.
class WeightFiles {
 public:
  explicit WeightFiles(const std::vector<std::string>& paths);
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  torch::Tensor read(const std::string& name) const { return where_.at(name)->read(name); }
  const SafetensorsFile::Entry& entry(const std::string& name) const { return where_.at(name)->entries().at(name); }
  void copyInto(const std::string& name, torch::Tensor& dst) const { where_.at(name)->copyInto(name, dst); }
  // Every tensor's name, sorted.
  std::vector<std::string> names() const;
  // The file, or "<first shard> (and N more shards)", for messages.
  const std::string& description() const { return description_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
  std::string description_;
};

// Writes tensors (any device, any layout) to `path` atomically: a temporary file in the same folder,
// flushed, then renamed over the target.
void writeSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata);

}  // namespace coltrast
