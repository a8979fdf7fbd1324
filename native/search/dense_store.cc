// The JS class `NativeDenseStore`: the vectors of an Index in native memory, searched exactly.
//
// Rows live in one [capacity, width] tensor that doubles when full: float32; float16 (half the memory); int8
// (a quarter: each dimension scalar-quantized to 256 buckets between its minimum and maximum over the first
// rows added, codes as sentence-transformers' quantize_embeddings(precision="int8") makes them); or binary (a
// 32nd: the sign bits, packed eight to a byte, most significant first, as numpy's packbits and
// quantize_embeddings(precision="ubinary")).
// A float or int8 search multiplies the queries by blocks of kBlockRows rows (BLAS; float16 and int8 blocks
// are widened to float32 first, int8 codes to their buckets' midpoints), keeps each block's top k and merges
// those, so memory beyond the store is one block of scores whatever the number of rows. A binary search
// ranks every row by the Hamming distance between its bits and the query's (popcount over 64-bit words), keeps
// the nearest k × rescoreMultiplier, and orders those by the float query's cosine with the row's ±1 sign
// vector (the asymmetric score; sentence-transformers' rescoring with the unpacked 0/1 bits orders rows the
// same, as q·b = (q·s + Σq) / 2). A filter (one flag per row) limits a search to the rows it allows: float and int8
// blocks are then gathered from those rows only, and a binary search puts the others past every Hamming distance.
// Work runs on the CPU thread (compute_thread.h); a mutex orders calls on one store.
#include "search/dense_store.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <numeric>

#include "error.h"
#include "napi_args.h"
#include "promise_worker.h"
#include "safetensors.h"
#include "search/compact_rows.h"

namespace coltrast {

enum class Storage { Float32, Float16, Int8, Binary };

// The vectors and their lock (outside the anonymous namespace below: DenseStoreWrap::Impl holds one).
struct DenseVectors {
  // [capacity, width]: float32 / float16 / int8 [.., dim]; binary uint8 [.., ceil(dim / 8)].
  torch::Tensor data;
  // int8: [2, dim] float32, each dimension's bucket start and step; undefined until the first rows arrive.
  torch::Tensor ranges;
  int64_t rows = 0;
  int64_t dim = 0;
  Storage storage = Storage::Float32;
  // data is a read-only mapping of the index file (load with map): changes copy it into memory first.
  bool mapped = false;
  std::mutex mutex;
  int64_t width() const { return storage == Storage::Binary ? (dim + 7) / 8 : dim; }
};

namespace {
using Store = DenseVectors;

// 8192 rows x 384 dims is 12 MiB of float32: small enough that widening a float16 block stays in cache
// (65536-row blocks made float16 search 6x slower at one million rows), large enough for BLAS.
constexpr int64_t kBlockRows = 8192;

// Sign bits of float rows [n, dim], packed most significant first: [n, ceil(dim / 8)] uint8.
torch::Tensor packSigns(const torch::Tensor& x) {
  const int64_t n = x.size(0), dim = x.size(1), width = (dim + 7) / 8;
  const torch::Tensor rows = x.contiguous();
  torch::Tensor out = torch::zeros({n, width}, torch::kUInt8);
  const float* in = rows.data_ptr<float>();
  uint8_t* bits = out.data_ptr<uint8_t>();
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < dim; ++c) {
        if (in[r * dim + c] > 0) bits[r * width + c / 8] |= uint8_t(0x80u >> (c % 8));
      }
    }
  });
  return out;
}

// int8 codes of float rows [n, dim] with `ranges` [2, dim] (start, step): floor((x - start) / step) clipped to
// [0, 255], minus 128, one pass in float32 arithmetic (the same operations, so the same codes, as
// quantize_embeddings). Filling a store with a million 384-wide rows took 17.3 s with elementwise tensor
// operations and 10.6 s with this loop.
torch::Tensor int8Codes(const torch::Tensor& x, const torch::Tensor& ranges) {
  const int64_t n = x.size(0), dim = x.size(1);
  const torch::Tensor rows = x.contiguous(), r = ranges.contiguous();
  torch::Tensor out = torch::empty({n, dim}, torch::kInt8);
  const float* in = rows.data_ptr<float>();
  const float* start = r.data_ptr<float>();
  const float* step = start + dim;
  int8_t* codes = out.data_ptr<int8_t>();
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < dim; ++c) {
        // clip(floor(v), 0, 255) without a floor call: below 0 (or NaN) is 0, from 255 on is 255, and in
        // between truncation is the floor.
        const float v = (in[r * dim + c] - start[c]) / step[c];
        const int bucket = !(v > 0) ? 0 : v >= 255 ? 255 : int(v);
        codes[r * dim + c] = int8_t(bucket - 128);
      }
    }
  });
  return out;
}

// Float rows [n, dim] as the store keeps them. int8: codes floor((x - start) / step) clipped to [0, 255],
// minus 128, in float32 arithmetic as quantize_embeddings does; the first rows set the ranges.
torch::Tensor encodeRows(Store& s, const torch::Tensor& x) {
  switch (s.storage) {
    case Storage::Float32:
      return x;
    case Storage::Float16:
      return x.to(torch::kFloat16);
    case Storage::Binary:
      return packSigns(x);
    case Storage::Int8: {
      if (!s.ranges.defined()) {
        const torch::Tensor lo = std::get<0>(x.min(0)), hi = std::get<0>(x.max(0));
        torch::Tensor step = (hi - lo) / 255;
        step = torch::where(step == 0, torch::ones_like(step), step);
        s.ranges = torch::stack({lo, step});
      }
      return int8Codes(x, s.ranges);
    }
  }
  return x;
}

// Stored rows [n, width] as float32 vectors [n, dim]: int8 codes at their buckets' midpoints, binary rows as
// their ±1 sign vectors scaled to unit length.
torch::Tensor decodeRows(const Store& s, const torch::Tensor& stored) {
  switch (s.storage) {
    case Storage::Float32:
    case Storage::Float16:
      return stored.to(torch::kFloat32);
    case Storage::Int8:
      return (stored.to(torch::kFloat32) + 128.5) * s.ranges[1] + s.ranges[0];
    case Storage::Binary: {
      const torch::Tensor shifts = torch::arange(7, -1, -1, torch::kInt64).to(torch::kUInt8);
      const torch::Tensor bits = stored.unsqueeze(-1).bitwise_right_shift(shifts).bitwise_and(1).flatten(1).narrow(1, 0, s.dim);
      return (bits.to(torch::kFloat32) * 2 - 1) / std::sqrt(double(s.dim));
    }
  }
  return stored;
}

void append(Store& s, const float* values, int64_t n) {
  if (n == 0) return;
  const torch::Tensor rows = encodeRows(s, torch::from_blob(const_cast<float*>(values), {n, s.dim}, torch::kFloat32));
  if (s.rows + n > s.data.size(0)) {
    const int64_t capacity = std::max<int64_t>({2 * s.data.size(0), s.rows + n, 1024});
    torch::Tensor grown = torch::empty({capacity, s.width()}, s.data.options());
    grown.narrow(0, 0, s.rows).copy_(s.data.narrow(0, 0, s.rows));
    s.data = grown;
    s.mapped = false;
  }
  s.data.narrow(0, s.rows, n).copy_(rows);
  s.rows += n;
}

// The Hamming distance between `rows` rows of `width` bytes at `data` and `query`, into out[0 .. rows). GCC
// compiles this twice on x86-64 and picks at load time (target_clones): with the POPCNT instruction where the
// CPU has it (every x86-64 CPU since 2008), and the baseline, which counts bits in software, elsewhere. Other
// compilers and architectures get one version.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("popcnt", "default")))
#endif
void hammingBlock(const uint8_t* data, int64_t rows, int64_t width, const uint8_t* query, int32_t* out) {
  const int64_t words = width / 8;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = data + r * width;
    int32_t d = 0;
    for (int64_t w = 0; w < words; ++w) {
      uint64_t a, b;
      std::memcpy(&a, row + 8 * w, 8);
      std::memcpy(&b, query + 8 * w, 8);
      d += __builtin_popcountll(a ^ b);
    }
    for (int64_t c = 8 * words; c < width; ++c) d += __builtin_popcount(unsigned(row[c] ^ query[c]));
    out[r] = d;
  }
}

// The `candidates` rows nearest to each of `count` queries' bits (`queries`: [count, width] uint8) by Hamming
// distance, ties going to the lower row: the set a sort by (distance, row) would take first, found by counting,
// in two parallel passes over blocks of rows that keep no distance per row (a million rows' distances were
// mostly page faults on fresh memory). Pass 1: each query's histogram of distances (0..dim), which gives the
// distance t up to which rows are taken and how many rows at t are. Pass 2: the distances again (popcounts are
// cheap), each block keeping its rows below t and its rows at t; the rows at t are then taken in row order.
// Each block is compared with every query while it is in cache. Returns each query's rows, in no order.
// `allowed` (empty: every row) flags the rows a search may find, 1 each; the others are put at distance dim + 1,
// past every row it may find, and `candidates` is at most the allowed rows.
std::vector<std::vector<int64_t>> nearestRows(const Store& s, const uint8_t* queries, int64_t count, int64_t candidates,
                                              const std::vector<uint8_t>& allowed) {
  const int64_t width = s.width(), bins = s.dim + 2;
  const int32_t past = int32_t(s.dim + 1);
  const auto exclude = [&](int64_t r0, int64_t n, int32_t* d) {
    if (allowed.empty()) return;
    for (int64_t r = 0; r < n; ++r) d[r] = allowed[size_t(r0 + r)] ? d[r] : past;
  };
  const uint8_t* data = s.data.data_ptr<uint8_t>();
  constexpr int64_t kRows = 2048;
  const int64_t blocks = (s.rows + kRows - 1) / kRows;
  std::vector<int64_t> histogram(size_t(count * bins), 0);
  std::mutex merge;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> local(size_t(count * bins), 0);
    std::vector<int32_t> d(kRows);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kRows, n = std::min(kRows, s.rows - r0);
      for (int64_t q = 0; q < count; ++q) {
        hammingBlock(data + r0 * width, n, width, queries + q * width, d.data());
        exclude(r0, n, d.data());
        for (int64_t r = 0; r < n; ++r) ++local[size_t(q * bins + d[size_t(r)])];
      }
    }
    std::lock_guard<std::mutex> lock(merge);
    for (size_t i = 0; i < local.size(); ++i) histogram[i] += local[i];
  });
  std::vector<int32_t> threshold(static_cast<size_t>(count));
  std::vector<int64_t> ties(static_cast<size_t>(count));
  for (int64_t q = 0; q < count; ++q) {
    int64_t below = 0, t = 0;
    while (below + histogram[size_t(q * bins + t)] < candidates) below += histogram[size_t(q * bins + t++)];
    threshold[size_t(q)] = int32_t(t);
    ties[size_t(q)] = candidates - below;
  }
  // [block][query]: the block's rows below the threshold, and its rows at it.
  std::vector<std::vector<int64_t>> near(static_cast<size_t>(blocks * count)), at(size_t(blocks * count));
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> d(kRows);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kRows, n = std::min(kRows, s.rows - r0);
      for (int64_t q = 0; q < count; ++q) {
        hammingBlock(data + r0 * width, n, width, queries + q * width, d.data());
        exclude(r0, n, d.data());
        const int32_t t = threshold[size_t(q)];
        for (int64_t r = 0; r < n; ++r) {
          if (d[size_t(r)] < t) near[size_t(b * count + q)].push_back(r0 + r);
          else if (d[size_t(r)] == t) at[size_t(b * count + q)].push_back(r0 + r);
        }
      }
    }
  });
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(count));
  for (int64_t q = 0; q < count; ++q) {
    auto& rows = out[size_t(q)];
    rows.reserve(size_t(candidates));
    for (int64_t b = 0; b < blocks; ++b) {
      const auto& v = near[size_t(b * count + q)];
      rows.insert(rows.end(), v.begin(), v.end());
    }
    int64_t take = ties[size_t(q)];
    for (int64_t b = 0; b < blocks && take > 0; ++b) {
      const auto& v = at[size_t(b * count + q)];
      const int64_t n = std::min<int64_t>(take, int64_t(v.size()));
      rows.insert(rows.end(), v.begin(), v.begin() + n);
      take -= n;
    }
  }
  return out;
}

// Queries whose nearest rows one call of nearestRows finds (its per-block lists grow with it).
constexpr int64_t kQueriesPerPass = 16;

class SearchWorker : public PromiseWorker {
 public:
  // allow: a flag per row of a store of `rows` rows, 1 for a row the search may find (all when absent).
  SearchWorker(Napi::Env env, std::shared_ptr<Store> store, std::vector<float> queries, int64_t k, int64_t rescoreMultiplier,
               std::optional<std::vector<uint8_t>> allow, int64_t rows)
      : PromiseWorker(env, torch::Device(torch::kCPU)),
        store_(std::move(store)),
        queries_(std::move(queries)),
        k_(k),
        multiplier_(rescoreMultiplier),
        allow_(std::move(allow)),
        rows_(rows) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    if (allow_ && store_->rows != rows_) throw invalidArgument("the store changed between the search's call and its work; search again");
    const int64_t dim = store_->dim, nq = int64_t(queries_.size()) / dim;
    const torch::Tensor q = torch::from_blob(queries_.data(), {nq, dim}, torch::kFloat32);
    // Each query's row of results is k wide; past the rows it may find (a filter), index -1 and score -inf.
    const int64_t k = std::min(k_, store_->rows);
    int64_t total = store_->rows;  // the rows it may find
    if (allow_) total = std::count_if(allow_->begin(), allow_->end(), [](uint8_t f) { return f != 0; });
    const int64_t found = std::min(k, total);
    torch::NoGradGuard noGrad;
    scores_ = torch::full({nq, k}, -std::numeric_limits<float>::infinity());
    indices_ = torch::full({nq, k}, -1, torch::kInt32);
    if (found == 0) return;  // an empty store or no row allowed: no blocks below
    if (store_->storage == Storage::Binary) {
      binarySearch(q, k, total);
      return;
    }
    // int8: q · (start + (code + 128.5) · step) = (q ∘ step) · code + q · start + 128.5 Σ(q ∘ step), so a block's
    // scores are one product with its codes (widened to float32) and a per-query constant.
    const bool int8 = store_->storage == Storage::Int8;
    const torch::Tensor qs = int8 ? q * store_->ranges[1] : q;
    const torch::Tensor bias = int8 ? (q.mv(store_->ranges[0]) + 128.5 * qs.sum(1)).unsqueeze(1) : torch::Tensor();
    // A filter that leaves most rows: every block scored, the others' scores -inf. One that leaves fewer: blocks of
    // its rows only, gathered (at a million float16 rows, gathering all rows took 1.25 times a plain search, and
    // half of them 0.6 times).
    const bool gather = allow_ && total < store_->rows * 3 / 4;
    std::vector<int64_t> picked;
    if (gather) picked = allowedRows(*allow_);
    const torch::Tensor pickedRows = gather ? torch::from_blob(picked.data(), {total}, torch::kInt64) : torch::Tensor();
    const torch::Tensor flags = allow_ && !gather ? torch::from_blob(allow_->data(), {store_->rows}, torch::kUInt8).to(torch::kBool) : torch::Tensor();
    const int64_t blockRows = gather ? total : store_->rows;
    std::vector<torch::Tensor> scores, indices;
    for (int64_t r0 = 0; r0 < blockRows; r0 += kBlockRows) {
      const int64_t n = std::min(kBlockRows, blockRows - r0);
      const torch::Tensor rows = gather ? pickedRows.narrow(0, r0, n) : torch::Tensor();
      const torch::Tensor block = (gather ? store_->data.index_select(0, rows) : store_->data.narrow(0, r0, n)).to(torch::kFloat32);
      torch::Tensor blockScores = torch::mm(qs, block.t());
      if (int8) blockScores = blockScores + bias;
      if (flags.defined()) blockScores.masked_fill_(flags.narrow(0, r0, n).logical_not(), -std::numeric_limits<float>::infinity());
      auto top = blockScores.topk(std::min(found, n), 1);
      scores.push_back(std::get<0>(top));
      indices.push_back(gather ? rows.index({std::get<1>(top)}) : std::get<1>(top) + r0);
    }
    const torch::Tensor all = torch::cat(scores, 1), allIdx = torch::cat(indices, 1);
    auto best = all.topk(found, 1);
    scores_.narrow(1, 0, found).copy_(std::get<0>(best));
    indices_.narrow(1, 0, found).copy_(allIdx.gather(1, std::get<1>(best)));
  }

  // Binary rows: the nearest k × multiplier rows by Hamming distance (ties: lower row first; nearestRows),
  // ordered by the query's cosine with their sign vectors (ties: lower row first), the best k kept. Queries share
  // passes over the rows, kQueriesPerPass at a time.
  void binarySearch(const torch::Tensor& q, int64_t k, int64_t findable) {
    const int64_t nq = q.size(0), dim = store_->dim, width = store_->width();
    static const std::vector<uint8_t> everyRow;
    const std::vector<uint8_t>& allowed = allow_ ? *allow_ : everyRow;
    const int64_t candidates = std::min(findable, k * multiplier_);
    const torch::Tensor queryBits = packSigns(q);
    const torch::Tensor queries = q.contiguous();
    auto scoreOut = scores_.accessor<float, 2>();
    auto indexOut = indices_.accessor<int32_t, 2>();
    const uint8_t* data = store_->data.data_ptr<uint8_t>();
    const double scale = 1.0 / std::sqrt(double(dim));
    for (int64_t begin = 0; begin < nq; begin += kQueriesPerPass) {
      const int64_t end = std::min(nq, begin + kQueriesPerPass);
      const std::vector<std::vector<int64_t>> nearest = nearestRows(*store_, queryBits.data_ptr<uint8_t>() + begin * width, end - begin, candidates, allowed);
      for (int64_t i = begin; i < end; ++i) {
        const std::vector<int64_t>& picked = nearest[size_t(i - begin)];
        // The cosine of the float query with a row's ±1 sign vector: (2 Σ_{bit set} q_c - Σ q_c) / sqrt(dim).
        const float* qi = queries.data_ptr<float>() + i * dim;
        double total = 0;
        for (int64_t c = 0; c < dim; ++c) total += qi[c];
        std::vector<float> score(picked.size());
        for (size_t j = 0; j < picked.size(); ++j) {
          const uint8_t* row = data + picked[j] * width;
          double set = 0;
          for (int64_t c = 0; c < dim; ++c) {
            if (row[c / 8] & (0x80u >> (c % 8))) set += qi[c];
          }
          score[j] = float((2 * set - total) * scale);
        }
        std::vector<size_t> rank(picked.size());
        std::iota(rank.begin(), rank.end(), size_t{0});
        std::sort(rank.begin(), rank.end(), [&](size_t a, size_t b) { return score[a] > score[b] || (score[a] == score[b] && picked[a] < picked[b]); });
        for (int64_t j = 0; j < std::min<int64_t>(k, int64_t(picked.size())); ++j) {
          scoreOut[i][j] = score[rank[size_t(j)]];
          indexOut[i][j] = int32_t(picked[rank[size_t(j)]]);
        }
      }
    }
  }
  Napi::Value result(Napi::Env env) override {
    return rankedRows(env, scores_.data_ptr<float>(), indices_.data_ptr<int32_t>(), size_t(scores_.numel()), scores_.size(1));
  }

 private:
  std::shared_ptr<Store> store_;
  std::vector<float> queries_;
  int64_t k_, multiplier_;
  std::optional<std::vector<uint8_t>> allow_;
  int64_t rows_;
  torch::Tensor scores_, indices_;
};

class FileWorker : public PromiseWorker {
 public:
  // map: load by mapping the file (SafetensorsFile::map) when its dtype is the store's, instead of reading it.
  FileWorker(Napi::Env env, std::shared_ptr<Store> store, std::string path, bool save, bool map = false)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), path_(std::move(path)), save_(save), map_(map) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    if (save_) {
      std::vector<std::pair<std::string, torch::Tensor>> tensors{{"vectors", store_->data.narrow(0, 0, store_->rows)}};
      if (store_->ranges.defined()) tensors.emplace_back("ranges", store_->ranges);
      writeSafetensors(path_, tensors, {{"format", "coltrast-index"}});
      return;
    }
    SafetensorsFile file(path_);
    if (!file.has("vectors")) throw modelFilesError(path_ + " holds no \"vectors\" tensor");
    const auto& entry = file.entries().at("vectors");
    if (entry.shape.size() != 2 || entry.shape[1] != store_->width()) {
      throw modelFilesError(path_ + ": vectors must be [rows, " + std::to_string(store_->width()) + "]");
    }
    const bool quantized = store_->storage == Storage::Int8 || store_->storage == Storage::Binary;
    if (quantized && entry.dtype != store_->data.scalar_type()) {
      throw modelFilesError(path_ + ": vectors are " + entry.dtypeName + ", not the index's quantized storage");
    }
    if (store_->storage == Storage::Int8) {
      const bool empty = entry.shape[0] == 0;
      if (!file.has("ranges") && !empty) throw modelFilesError(path_ + " holds int8 vectors without their \"ranges\"");
      if (file.has("ranges")) {
        const auto& r = file.entries().at("ranges");
        if (r.shape != std::vector<int64_t>{2, store_->dim}) throw modelFilesError(path_ + ": ranges must be [2, " + std::to_string(store_->dim) + "]");
        store_->ranges = file.read("ranges", torch::kFloat32);
      }
    }
    // A mapped store is read only: append() grows it into memory first (its capacity is its rows) and remove()
    // copies, so nothing writes to the mapping.
    store_->mapped = map_ && entry.dtype == store_->data.scalar_type();
    store_->data = store_->mapped ? file.map("vectors") : file.read("vectors", store_->data.scalar_type());
    store_->rows = store_->data.size(0);
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, double(store_->rows)); }

 private:
  std::shared_ptr<Store> store_;
  std::string path_;
  bool save_;
  bool map_;
};

// remove()'s work, in place (compactRows; copying the kept rows twice on the JS thread held the event loop for 0.1 s
// at a million rows of 32 dimensions). A mapped store is copied into memory instead (the mapping is read only).
void keepRows(Store& s, const std::vector<uint8_t>& keep) {
  if (s.mapped) {
    const torch::Tensor flags = torch::from_blob(const_cast<uint8_t*>(keep.data()), {s.rows}, torch::kUInt8).to(torch::kBool);
    s.data = s.data.narrow(0, 0, s.rows).index({flags}).clone();
    s.rows = s.data.size(0);
    s.mapped = false;
    return;
  }
  s.rows = compactRows(static_cast<uint8_t*>(s.data.data_ptr()), s.width() * int64_t(s.data.element_size()), keep, s.rows);
}

}  // namespace

struct DenseStoreWrap::Impl {
  std::shared_ptr<Store> store = std::make_shared<Store>();
};

Napi::Function DenseStoreWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeDenseStore",
                     {
                         InstanceMethod<&DenseStoreWrap::add>("add"),
                         InstanceMethod<&DenseStoreWrap::remove>("remove"),
                         InstanceMethod<&DenseStoreWrap::size>("size"),
                         InstanceMethod<&DenseStoreWrap::rows>("rows"),
                         InstanceMethod<&DenseStoreWrap::search>("search"),
                         InstanceMethod<&DenseStoreWrap::save>("save"),
                         InstanceMethod<&DenseStoreWrap::load>("load"),
                     });
}

// new NativeDenseStore(dim, 'float32' | 'float16' | 'int8' | 'binary')
DenseStoreWrap::DenseStoreWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DenseStoreWrap>(info), impl_(std::make_unique<Impl>()) {
  Napi::Env env = info.Env();
  int64_t dim = 0;
  try {
    dim = integerIn(info[0], "dim", 1);
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  const std::string dtype = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "float32";
  auto& s = *impl_->store;
  if (dtype == "float32") s.storage = Storage::Float32;
  else if (dtype == "float16") s.storage = Storage::Float16;
  else if (dtype == "int8") s.storage = Storage::Int8;
  else if (dtype == "binary") s.storage = Storage::Binary;
  else throw jsError(env, {"INVALID_ARGUMENT", "storage must be 'float32', 'float16', 'int8' or 'binary'"});
  s.dim = dim;
  const torch::ScalarType types[] = {torch::kFloat32, torch::kFloat16, torch::kInt8, torch::kUInt8};
  s.data = torch::empty({0, s.width()}, types[int(s.storage)]);
}

DenseStoreWrap::~DenseStoreWrap() = default;

// add(rows: Float32Array): appends rows (synchronous: a copy).
Napi::Value DenseStoreWrap::add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto& s = *impl_->store;
    const auto values = floatsOf(info[0], s.dim, "rows");
    std::lock_guard<std::mutex> lock(s.mutex);
    append(s, values.data(), int64_t(values.size()) / s.dim);
    return Napi::Number::New(env, double(s.rows));
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// remove(keep: Uint8Array of size()) -> Promise<rows>: keeps the rows whose flag is nonzero, in order, on a worker
// thread (keepRows); the JS thread only copies the flags.
Napi::Value DenseStoreWrap::remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    return (new RemoveRowsWorker<Store>(env, impl_->store, keepFlagsCopy(info[0], impl_->store->rows), keepRows))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// rows(start, count) -> Float32Array [count, dim]: a copy of those rows (widened to float32).
Napi::Value DenseStoreWrap::rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& s = *impl_->store;
  int64_t start = 0, count = 0;
  try {
    std::tie(start, count) = rowRange(info[0], info[1], s.rows);
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  std::lock_guard<std::mutex> lock(s.mutex);
  const torch::Tensor out = decodeRows(s, s.data.narrow(0, start, count)).contiguous();
  return float32Array(env, out);
}

Napi::Value DenseStoreWrap::size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(impl_->store->rows)); }

// search(queries: Float32Array, k, rescoreMultiplier = 1, allow?: Uint8Array) -> Promise<{ scores: Float32Array,
// indices: Int32Array, k }>, row-major [nq, min(k, rows)]; rescoreMultiplier: a binary store's candidates per result
// (k × it), rescored; allow: one flag per row, 1 where a row may be found (a filter), rows past those found -1.
Napi::Value DenseStoreWrap::search(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto values = floatsOf(info[0], impl_->store->dim, "queries");
    const int64_t k = integerIn(info[1], "k", 1);
    const int64_t multiplier = info[2].IsUndefined() ? 1 : integerIn(info[2], "rescoreMultiplier", 1);
    // The row count is read without the lock: a change before the work starts is refused there.
    const int64_t rows = impl_->store->rows;
    auto allow = allowFlags(info[3], rows, "row");
    return (new SearchWorker(env, impl_->store, std::move(values), k, multiplier, std::move(allow), rows))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value DenseStoreWrap::save(const Napi::CallbackInfo& info) {
  return (new FileWorker(info.Env(), impl_->store, info[0].As<Napi::String>(), true))->start();
}
// load(file, map = false): map, the file's pages are the store's (SafetensorsFile::map) until it changes.
Napi::Value DenseStoreWrap::load(const Napi::CallbackInfo& info) {
  const bool map = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  return (new FileWorker(info.Env(), impl_->store, info[0].As<Napi::String>(), false, map))->start();
}

}  // namespace coltrast
