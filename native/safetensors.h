// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw data.
// We read by memory-mapping the file and validating the whole header before touching any data, so a
// malformed or hostile file is rejected with a message instead of a crash or a huge allocation.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
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

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;  // start of the data section inside the mapping
  void* mapping_ = nullptr;
  size_t mappingSize_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device, any layout) to `path` atomically: a temporary file in the same folder,
// flushed, then renamed over the target.
void writeSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata);

}  // namespace coltrast
