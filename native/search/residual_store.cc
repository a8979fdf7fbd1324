// The JS class `NativeResidualStore`: an Index's token vectors compressed as ColBERTv2 compresses them, and a
// multi-vector index's first stage searched as PLAID searches (Santhanam et al., "ColBERTv2", NAACL 2022, and
// "PLAID", CIKM 2022).
//
// Compression: train() runs k-means (Lloyd's, squared Euclidean distance, seeded) on a sample of token vectors.
// Each stored vector is then its nearest centroid's number (int32) and its residual (the vector minus that
// centroid), every dimension quantized to `nbits` bits (1, 2 or 4): the bucket boundaries are the quantiles
// i / 2^nbits of the sample's residual values, and a bucket decodes to the quantile at its middle,
// (i + 0.5) / 2^nbits, as ColBERTv2's codec does. Bucket numbers are packed most significant first, a row taking
// ceil(dim × nbits / 8) bytes: a 128-wide vector is 32 bytes of residual and 4 of centroid number at 2 bits,
// against 256 bytes of float16. A vector decodes to centroid + bucket values, L2-normalized again when the
// training sample's vectors were unit vectors (ColBERTv2 normalizes every decoded vector; its vectors always are).
//
// Search (the documents' token counts come from the caller, which owns the document list): each centroid's
// documents (an inverted list, rebuilt when the rows or the documents changed) give the candidates, the
// documents of the `nprobe` centroids nearest each query token (probes doubling while the candidates are fewer than
// k; a filter's documents only, all of them when they are at most `fullScores`). Candidates are ranked by centroid interaction,
// MaxSim with every token replaced by its centroid (one lookup per token in the query-by-centroid score
// table), and the best `fullScores` of them are scored exactly, MaxSim over their decoded vectors, for the
// final k. PLAID's pruning of centroids below a score threshold is not done: interaction over all of a
// candidate's tokens costs a lookup each. Work runs on the CPU thread (compute_thread.h); a mutex orders calls
// on one store.
#include "search/residual_store.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>

#include "error.h"
#include "napi_args.h"
#include "promise_worker.h"
#include "safetensors.h"
#include "search/compact_rows.h"

namespace coltrast {

struct ResidualVectors {
  int64_t dim = 0;
  int64_t nbits = 2;
  torch::Tensor centroids;  // [K, dim] float32; undefined until trained
  torch::Tensor cutoffs;    // [2^nbits - 1] float32: bucket boundaries
  torch::Tensor weights;    // [2^nbits] float32: bucket values
  // Each byte's bucket values, 8 / nbits of them per byte value (256 × 8 / nbits floats): decoding reads a byte's
  // values at once instead of shifting out each bucket number (3x faster decoding; setBuckets fills it).
  std::vector<float> byteValues;
  bool normalized = false;
  torch::Tensor codes;      // [capacity] int32
  torch::Tensor residuals;  // [capacity, width] uint8
  int64_t rows = 0;
  // The inverted lists (CSR: centroid c's documents are docs[start[c] .. start[c + 1]), ascending) and the
  // document offsets they were built for; `stale` after any change of the rows.
  std::vector<int64_t> ivfStart;
  std::vector<int32_t> ivfDocs;
  std::vector<int64_t> ivfOffsets;
  bool stale = true;
  std::mutex mutex;
  int64_t width() const { return (dim * nbits + 7) / 8; }
  int64_t count() const { return centroids.defined() ? centroids.size(0) : 0; }
};

// Named (not anonymous): the build is a unity build, where dense_store.cc's helpers share the translation unit.
namespace residual {
using Store = ResidualVectors;

// The nearest centroid of each row of x [n, dim] (squared Euclidean distance: the largest x·c - |c|²/2), in
// chunks whose score block stays near 64 MiB.
torch::Tensor nearestCentroids(const torch::Tensor& x, const torch::Tensor& centroids) {
  const torch::Tensor halfNorms = 0.5 * centroids.pow(2).sum(1);
  const torch::Tensor ct = centroids.t();
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 24) / centroids.size(0));
  std::vector<torch::Tensor> parts;
  for (int64_t r0 = 0; r0 < x.size(0); r0 += chunk) {
    const int64_t n = std::min(chunk, x.size(0) - r0);
    parts.push_back((torch::mm(x.narrow(0, r0, n), ct) - halfNorms).argmax(1));
  }
  return parts.empty() ? torch::empty({0}, torch::kLong) : torch::cat(parts);
}

// Lloyd's k-means: k distinct rows of x drawn with the seed (a partial Fisher-Yates shuffle with the standard
// mt19937_64, so the same on every platform) start it; a centroid that loses all its rows keeps its place.
torch::Tensor kmeans(const torch::Tensor& x, int64_t k, uint64_t seed, int iterations) {
  const int64_t n = x.size(0);
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  for (int64_t i = 0; i < k; ++i) std::swap(order[size_t(i)], order[size_t(i + int64_t(rng() % uint64_t(n - i)))]);
  torch::Tensor c = x.index_select(0, torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + k), torch::kLong)).clone();
  for (int it = 0; it < iterations; ++it) {
    const torch::Tensor assigned = nearestCentroids(x, c);
    const torch::Tensor sums = torch::zeros_like(c).index_add_(0, assigned, x);
    const torch::Tensor counts = torch::bincount(assigned, {}, k).to(torch::kFloat32).unsqueeze(1);
    c = torch::where(counts > 0, sums / counts.clamp_min(1), c);
  }
  return c;
}

// The value at fraction p of sorted values (nearest rank below).
float quantile(const std::vector<float>& sorted, double p) {
  return sorted[size_t(std::floor(p * double(sorted.size() - 1)))];
}

// Sets the bucket boundaries and values, and the byte table decoding reads them through.
void setBuckets(Store& s, torch::Tensor cutoffs, torch::Tensor weights) {
  s.cutoffs = std::move(cutoffs);
  s.weights = std::move(weights);
  const int64_t per = 8 / s.nbits, mask = (1 << s.nbits) - 1;
  const float* w = s.weights.data_ptr<float>();
  s.byteValues.assign(size_t(256 * per), 0);
  for (int64_t b = 0; b < 256; ++b) {
    for (int64_t i = 0; i < per; ++i) s.byteValues[size_t(b * per + i)] = w[(b >> (8 - s.nbits * (i + 1))) & mask];
  }
}

// Codes and packed residual buckets of float rows x [n, dim] (the store must be trained).
std::pair<torch::Tensor, torch::Tensor> encode(const Store& s, const torch::Tensor& x) {
  const torch::Tensor assigned = nearestCentroids(x, s.centroids);
  const torch::Tensor buckets = torch::bucketize(x - s.centroids.index_select(0, assigned), s.cutoffs).to(torch::kUInt8).contiguous();
  const int64_t n = x.size(0), dim = s.dim, width = s.width(), nbits = s.nbits;
  torch::Tensor packed = torch::zeros({n, width}, torch::kUInt8);
  const uint8_t* b = buckets.data_ptr<uint8_t>();
  uint8_t* out = packed.data_ptr<uint8_t>();
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < dim; ++j) {
        const int64_t bit = j * nbits;
        out[r * width + bit / 8] |= uint8_t(b[r * dim + j] << (8 - nbits - bit % 8));
      }
    }
  });
  return {assigned.to(torch::kInt32), packed};
}

// Decodes stored row `row` into out[0 .. dim): its centroid plus its buckets' values, renormalized when the
// store's vectors are unit vectors.
void decodeRow(const Store& s, int64_t row, float* out) {
  const int64_t dim = s.dim, width = s.width(), per = 8 / s.nbits;
  const float* c = s.centroids.data_ptr<float>() + int64_t(s.codes.data_ptr<int32_t>()[row]) * dim;
  const uint8_t* packed = s.residuals.data_ptr<uint8_t>() + row * width;
  const int64_t whole = dim / per;  // bytes whose values are all dimensions (the last may be part padding)
  for (int64_t p = 0; p < whole; ++p) {
    const float* v = s.byteValues.data() + packed[p] * per;
    for (int64_t i = 0; i < per; ++i) out[p * per + i] = c[p * per + i] + v[i];
  }
  if (whole < width) {
    const float* v = s.byteValues.data() + packed[whole] * per;
    for (int64_t j = whole * per; j < dim; ++j) out[j] = c[j] + v[j - whole * per];
  }
  double norm = 0;
  for (int64_t j = 0; j < dim; ++j) norm += double(out[j]) * out[j];
  if (s.normalized && norm > 0) {
    const float scale = float(1 / std::sqrt(norm));
    for (int64_t j = 0; j < dim; ++j) out[j] *= scale;
  }
}

// Rows [start, start + count) decoded: [count, dim] float32.
torch::Tensor decodeRows(const Store& s, int64_t start, int64_t count) {
  torch::Tensor out = torch::empty({count, s.dim}, torch::kFloat32);
  float* data = out.data_ptr<float>();
  at::parallel_for(0, count, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) decodeRow(s, start + r, data + r * s.dim);
  });
  return out;
}

// Rebuilds the inverted lists for documents at `offsets` (D + 1 token offsets) unless they are current.
void invertedLists(Store& s, const std::vector<int64_t>& offsets) {
  if (!s.stale && offsets == s.ivfOffsets) return;
  const int64_t k = s.count(), docs = int64_t(offsets.size()) - 1;
  const int32_t* codes = s.codes.data_ptr<int32_t>();
  std::vector<int64_t> start(size_t(k + 1), 0);
  std::vector<int32_t> lastDoc(size_t(k), -1);
  // Pass 1 counts each centroid's distinct documents (a document's tokens are consecutive), pass 2 fills.
  for (int pass = 0; pass < 2; ++pass) {
    std::fill(lastDoc.begin(), lastDoc.end(), -1);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    if (pass == 1) s.ivfDocs.assign(size_t(start[size_t(k)]), 0);
    for (int64_t d = 0; d < docs; ++d) {
      for (int64_t t = offsets[size_t(d)]; t < offsets[size_t(d + 1)]; ++t) {
        const int32_t c = codes[t];
        if (lastDoc[size_t(c)] == int32_t(d)) continue;
        lastDoc[size_t(c)] = int32_t(d);
        if (pass == 0) ++start[size_t(c + 1)];
        else s.ivfDocs[size_t(fill[size_t(c)]++)] = int32_t(d);
      }
    }
    if (pass == 0) std::partial_sum(start.begin(), start.end(), start.begin());
  }
  s.ivfStart = std::move(start);
  s.ivfOffsets = offsets;
  s.stale = false;
}

class TrainWorker : public PromiseWorker {
 public:
  TrainWorker(Napi::Env env, std::shared_ptr<Store> store, std::vector<float> sample, int64_t k, uint64_t seed)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), sample_(std::move(sample)), k_(k), seed_(seed) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    Store& s = *store_;
    if (s.rows > 0) throw invalidArgument("the store holds rows already: its centroids are trained once, before the first rows");
    torch::NoGradGuard noGrad;
    const int64_t n = int64_t(sample_.size()) / s.dim;
    if (n == 0) throw invalidArgument("no vectors to train the centroids on");
    const torch::Tensor x = torch::from_blob(sample_.data(), {n, s.dim}, torch::kFloat32);
    const torch::Tensor norms = x.norm(2, 1);
    s.normalized = ((norms - 1).abs() < 1e-3).all().item<bool>();
    s.centroids = kmeans(x, std::min(k_, n), seed_, 8);
    // Bucket boundaries and values: quantiles of the sample's residual values (at most 2^24 of them, evenly spaced).
    const torch::Tensor residual = (x - s.centroids.index_select(0, nearestCentroids(x, s.centroids))).flatten();
    const int64_t stride = std::max<int64_t>(1, residual.numel() >> 24);
    const torch::Tensor picked = residual.slice(0, 0, residual.numel(), stride).contiguous();
    std::vector<float> values(picked.data_ptr<float>(), picked.data_ptr<float>() + picked.numel());
    std::sort(values.begin(), values.end());
    const int64_t buckets = int64_t(1) << s.nbits;
    std::vector<float> cutoffs, weights;
    for (int64_t i = 1; i < buckets; ++i) cutoffs.push_back(quantile(values, double(i) / double(buckets)));
    for (int64_t i = 0; i < buckets; ++i) weights.push_back(quantile(values, (double(i) + 0.5) / double(buckets)));
    setBuckets(s, torch::tensor(cutoffs, torch::kFloat32), torch::tensor(weights, torch::kFloat32));
    s.stale = true;
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, double(store_->count())); }

 private:
  std::shared_ptr<Store> store_;
  std::vector<float> sample_;
  int64_t k_;
  uint64_t seed_;
};

class AddWorker : public PromiseWorker {
 public:
  AddWorker(Napi::Env env, std::shared_ptr<Store> store, std::vector<float> rows)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), rows_(std::move(rows)) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    Store& s = *store_;
    const int64_t n = int64_t(rows_.size()) / s.dim;
    if (n == 0) return;
    if (!s.centroids.defined()) throw invalidArgument("the store's centroids are not trained: call train() before adding rows");
    torch::NoGradGuard noGrad;
    auto [codes, packed] = encode(s, torch::from_blob(rows_.data(), {n, s.dim}, torch::kFloat32));
    if (s.rows + n > s.codes.size(0)) {
      const int64_t capacity = std::max<int64_t>({2 * s.codes.size(0), s.rows + n, 1024});
      torch::Tensor c = torch::empty({capacity}, torch::kInt32), r = torch::empty({capacity, s.width()}, torch::kUInt8);
      c.narrow(0, 0, s.rows).copy_(s.codes.narrow(0, 0, s.rows));
      r.narrow(0, 0, s.rows).copy_(s.residuals.narrow(0, 0, s.rows));
      s.codes = c;
      s.residuals = r;
    }
    s.codes.narrow(0, s.rows, n).copy_(codes);
    s.residuals.narrow(0, s.rows, n).copy_(packed);
    s.rows += n;
    s.stale = true;
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, double(store_->rows)); }

 private:
  std::shared_ptr<Store> store_;
  std::vector<float> rows_;
};

// remove()'s work: the codes and the residuals kept in place (compactRows).
void keepRows(Store& s, const std::vector<uint8_t>& keep) {
  if (s.rows == 0) return;
  compactRows(static_cast<uint8_t*>(s.codes.data_ptr()), int64_t(sizeof(int32_t)), keep, s.rows);
  s.rows = compactRows(s.residuals.data_ptr<uint8_t>(), s.width(), keep, s.rows);
  s.stale = true;
}

struct Scored {
  float score;
  int32_t doc;
};
inline bool better(const Scored& a, const Scored& b) { return a.score > b.score || (a.score == b.score && a.doc < b.doc); }

class SearchWorker : public PromiseWorker {
 public:
  SearchWorker(Napi::Env env, std::shared_ptr<Store> store, std::vector<float> queries, std::vector<int32_t> queryLengths,
               std::vector<int64_t> offsets, int64_t k, int64_t nprobe, int64_t fullScores, bool mean,
               std::optional<std::vector<uint8_t>> allow)
      : PromiseWorker(env, torch::Device(torch::kCPU)),
        store_(std::move(store)),
        queries_(std::move(queries)),
        lengths_(std::move(queryLengths)),
        offsets_(std::move(offsets)),
        k_(k),
        nprobe_(nprobe),
        fullScores_(fullScores),
        mean_(mean),
        allow_(std::move(allow)) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    Store& s = *store_;
    if (offsets_.back() != s.rows) {
      throw invalidArgument("the documents' token counts add up to " + std::to_string(offsets_.back()) + ", and the store holds " +
                            std::to_string(s.rows) + " rows");
    }
    torch::NoGradGuard noGrad;
    const int64_t nq = int64_t(lengths_.size());
    scores_.assign(size_t(nq * k_), 0);
    docs_.assign(size_t(nq * k_), -1);
    if (s.rows == 0 || !s.centroids.defined()) return;
    invertedLists(s, offsets_);
    const int64_t dim = s.dim, docs = int64_t(offsets_.size()) - 1;
    // seen: 1 for a document already a candidate of this query, and always for one the filter leaves out.
    std::vector<uint8_t> seen(static_cast<size_t>(docs), 0);
    std::vector<int64_t> allowed;  // the filter's documents
    if (allow_) {
      allowed = allowedRows(*allow_);
      for (int64_t d = 0; d < docs; ++d) seen[size_t(d)] = (*allow_)[size_t(d)] ? 0 : 1;
    }
    const int64_t findable = allow_ ? int64_t(allowed.size()) : docs;
    int64_t q0 = 0;
    for (int64_t i = 0; i < nq; q0 += lengths_[size_t(i)], ++i) {
      const int64_t lq = lengths_[size_t(i)];
      if (lq == 0) continue;
      const torch::Tensor q = torch::from_blob(queries_.data() + q0 * dim, {lq, dim}, torch::kFloat32);
      const torch::Tensor byCentroid = torch::mm(q, s.centroids.t());  // [lq, K]
      std::vector<int32_t> candidates;
      if (allow_ && findable <= fullScores_) {
        // A filter that leaves no more documents than are scored exactly: all of them are candidates (but one with
        // no token vector, which has no score, as no probe finds one either).
        for (int64_t d : allowed) {
          if (offsets_[size_t(d + 1)] > offsets_[size_t(d)]) candidates.push_back(int32_t(d));
        }
      } else {
        // The documents of each query token's nprobe nearest centroids; probes double while those are fewer than
        // k and unprobed centroids are left (a filter, or a small index, can leave few).
        // Each round walks all its probes' lists again (seen skips the documents found), so that centroids tied in
        // score and ordered differently by a wider topk are not missed; the rounds' work adds up to at most twice
        // the last one's.
        const int64_t K = s.count();
        for (int64_t nprobe = std::min(nprobe_, K);; nprobe = std::min(2 * nprobe, K)) {
          const torch::Tensor order = std::get<1>(byCentroid.topk(nprobe, 1)).contiguous();  // [lq, nprobe]
          for (int64_t j = 0; j < lq; ++j) {
            for (int64_t r = 0; r < nprobe; ++r) {
              const int64_t c = order.data_ptr<int64_t>()[j * nprobe + r];
              for (int64_t p = s.ivfStart[size_t(c)]; p < s.ivfStart[size_t(c + 1)]; ++p) {
                const int32_t d = s.ivfDocs[size_t(p)];
                if (!seen[size_t(d)]) {
                  seen[size_t(d)] = 1;
                  candidates.push_back(d);
                }
              }
            }
          }
          if (nprobe == K || int64_t(candidates.size()) >= std::min(k_, findable)) break;
        }
        for (int32_t d : candidates) seen[size_t(d)] = 0;
      }
      // Centroid interaction: MaxSim with each token's centroid in its place (a row of the [K, lq] table).
      const torch::Tensor table = byCentroid.t().contiguous();
      const float* t = table.data_ptr<float>();
      const int32_t* codes = s.codes.data_ptr<int32_t>();
      std::vector<Scored> ranked(candidates.size());
      at::parallel_for(0, int64_t(candidates.size()), 64, [&](int64_t begin, int64_t end) {
        std::vector<float> best(static_cast<size_t>(lq));
        for (int64_t n = begin; n < end; ++n) {
          const int32_t d = candidates[size_t(n)];
          std::fill(best.begin(), best.end(), -std::numeric_limits<float>::infinity());
          for (int64_t r = offsets_[size_t(d)]; r < offsets_[size_t(d + 1)]; ++r) {
            const float* row = t + int64_t(codes[r]) * lq;
            for (int64_t j = 0; j < lq; ++j) best[size_t(j)] = std::max(best[size_t(j)], row[j]);
          }
          ranked[size_t(n)] = {std::accumulate(best.begin(), best.end(), 0.0f), d};
        }
      });
      const size_t keep = size_t(std::min<int64_t>(fullScores_, int64_t(ranked.size())));
      std::nth_element(ranked.begin(), ranked.begin() + ptrdiff_t(keep), ranked.end(), better);
      ranked.resize(keep);
      // Exact MaxSim over the kept documents' decoded vectors.
      std::vector<int64_t> start(keep + 1, 0);
      for (size_t n = 0; n < keep; ++n) start[n + 1] = start[n] + offsets_[size_t(ranked[n].doc) + 1] - offsets_[size_t(ranked[n].doc)];
      torch::Tensor decoded = torch::empty({start[keep], dim}, torch::kFloat32);
      float* out = decoded.data_ptr<float>();
      at::parallel_for(0, int64_t(keep), 16, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const int64_t first = offsets_[size_t(ranked[size_t(n)].doc)];
          for (int64_t r = 0; r < start[size_t(n + 1)] - start[size_t(n)]; ++r) decodeRow(s, first + r, out + (start[size_t(n)] + r) * dim);
        }
      });
      const torch::Tensor sims = torch::mm(q, decoded.t()).contiguous();  // [lq, tokens]
      const float* sim = sims.data_ptr<float>();
      const int64_t total = start[keep];
      at::parallel_for(0, int64_t(keep), 64, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          float sum = 0;
          for (int64_t j = 0; j < lq; ++j) {
            float best = -std::numeric_limits<float>::infinity();
            for (int64_t r = start[size_t(n)]; r < start[size_t(n + 1)]; ++r) best = std::max(best, sim[j * total + r]);
            sum += best;
          }
          ranked[size_t(n)].score = mean_ ? sum / float(lq) : sum;
        }
      });
      const size_t top = size_t(std::min<int64_t>(k_, int64_t(keep)));
      std::partial_sort(ranked.begin(), ranked.begin() + ptrdiff_t(top), ranked.end(), better);
      for (size_t n = 0; n < top; ++n) {
        scores_[size_t(i * k_) + n] = ranked[n].score;
        docs_[size_t(i * k_) + n] = ranked[n].doc;
      }
    }
  }
  Napi::Value result(Napi::Env env) override { return rankedRows(env, scores_.data(), docs_.data(), scores_.size(), k_); }

 private:
  std::shared_ptr<Store> store_;
  std::vector<float> queries_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> offsets_;
  int64_t k_, nprobe_, fullScores_;
  bool mean_;
  std::optional<std::vector<uint8_t>> allow_;  // a flag per document, 1 for one a search may find (a filter); all when absent
  std::vector<float> scores_;
  std::vector<int32_t> docs_;
};

class FileWorker : public PromiseWorker {
 public:
  FileWorker(Napi::Env env, std::shared_ptr<Store> store, std::string path, bool save)
      : PromiseWorker(env, torch::Device(torch::kCPU)), store_(std::move(store)), path_(std::move(path)), save_(save) {}

 protected:
  void compute() override {
    std::lock_guard<std::mutex> lock(store_->mutex);
    Store& s = *store_;
    const std::map<std::string, std::string> metadata{
        {"format", "coltrast-index"}, {"nbits", std::to_string(s.nbits)}, {"normalized", s.normalized ? "true" : "false"}};
    if (save_) {
      std::vector<std::pair<std::string, torch::Tensor>> tensors{{"codes", s.codes.narrow(0, 0, s.rows)},
                                                                 {"residuals", s.residuals.narrow(0, 0, s.rows)}};
      if (s.centroids.defined()) {
        tensors.emplace_back("centroids", s.centroids);
        tensors.emplace_back("cutoffs", s.cutoffs);
        tensors.emplace_back("weights", s.weights);
      }
      writeSafetensors(path_, tensors, metadata);
      return;
    }
    SafetensorsFile file(path_);
    const auto bad = [&](const std::string& message) { return modelFilesError(path_ + ": " + message); };
    const auto shape = [&](const std::string& name, const std::vector<int64_t>& want, torch::ScalarType dtype) {
      if (!file.has(name)) throw bad("no \"" + name + "\" tensor (not a residual token store)");
      const auto& e = file.entries().at(name);
      bool ok = e.dtype == dtype && e.shape.size() == want.size();
      for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || e.shape[i] == want[i];
      if (!ok) throw bad("\"" + name + "\" has the wrong dtype or shape for a " + std::to_string(s.nbits) + "-bit store of width " + std::to_string(s.dim));
    };
    if (!file.has("codes")) throw bad("no \"codes\" tensor (not a residual token store)");
    const auto nbits = file.metadata().find("nbits");
    if (nbits == file.metadata().end() || nbits->second != std::to_string(s.nbits)) {
      throw bad("stored with " + (nbits == file.metadata().end() ? std::string("no nbits") : nbits->second + " bits") + ", and the index says " +
                std::to_string(s.nbits));
    }
    shape("codes", {-1}, torch::kInt32);
    const int64_t rows = file.entries().at("codes").shape[0];
    shape("residuals", {rows, s.width()}, torch::kUInt8);
    torch::Tensor centroids, cutoffs, weights;
    if (file.has("centroids") || rows > 0) {
      shape("centroids", {-1, s.dim}, torch::kFloat32);
      shape("cutoffs", {(int64_t(1) << s.nbits) - 1}, torch::kFloat32);
      shape("weights", {int64_t(1) << s.nbits}, torch::kFloat32);
      centroids = file.read("centroids");
      cutoffs = file.read("cutoffs");
      weights = file.read("weights");
    }
    const torch::Tensor codes = file.read("codes");
    if (rows > 0 && (codes.min().item<int32_t>() < 0 || codes.max().item<int32_t>() >= centroids.size(0))) throw bad("a centroid number is out of range");
    s.centroids = centroids;
    if (centroids.defined()) setBuckets(s, cutoffs, weights);
    const auto normalized = file.metadata().find("normalized");
    s.normalized = normalized != file.metadata().end() && normalized->second == "true";
    s.codes = codes;
    s.residuals = file.read("residuals");
    s.rows = rows;
    s.stale = true;
  }
  Napi::Value result(Napi::Env env) override { return Napi::Number::New(env, double(store_->rows)); }

 private:
  std::shared_ptr<Store> store_;
  std::string path_;
  bool save_;
};

// An Int32Array of counts (none negative).
std::vector<int32_t> countsOf(const Napi::Value& v, const char* what) {
  std::vector<int32_t> out = int32ArrayOf(v, what);
  for (int32_t x : out) {
    if (x < 0) throw invalidArgument(std::string(what) + " must not be negative");
  }
  return out;
}


}  // namespace residual

struct ResidualStoreWrap::Impl {
  std::shared_ptr<ResidualVectors> store = std::make_shared<ResidualVectors>();
};

Napi::Function ResidualStoreWrap::define(Napi::Env env) {
  return DefineClass(env, "NativeResidualStore",
                     {
                         InstanceMethod<&ResidualStoreWrap::train>("train"),
                         InstanceMethod<&ResidualStoreWrap::centroids>("centroids"),
                         InstanceMethod<&ResidualStoreWrap::add>("add"),
                         InstanceMethod<&ResidualStoreWrap::remove>("remove"),
                         InstanceMethod<&ResidualStoreWrap::size>("size"),
                         InstanceMethod<&ResidualStoreWrap::rows>("rows"),
                         InstanceMethod<&ResidualStoreWrap::search>("search"),
                         InstanceMethod<&ResidualStoreWrap::save>("save"),
                         InstanceMethod<&ResidualStoreWrap::load>("load"),
                     });
}

// new NativeResidualStore(dim, nbits: 1 | 2 | 4)
ResidualStoreWrap::ResidualStoreWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ResidualStoreWrap>(info), impl_(std::make_unique<Impl>()) {
  Napi::Env env = info.Env();
  int64_t dim = 0, nbits = 2;
  try {
    dim = integerIn(info[0], "dim", 1);
    if (!info[1].IsUndefined()) nbits = integerIn(info[1], "nbits", 1, 4);
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  if (nbits != 1 && nbits != 2 && nbits != 4) throw jsError(env, {"INVALID_ARGUMENT", "nbits must be 1, 2 or 4"});
  auto& s = *impl_->store;
  s.dim = dim;
  s.nbits = nbits;
  s.codes = torch::empty({0}, torch::kInt32);
  s.residuals = torch::empty({0, s.width()}, torch::kUInt8);
}

ResidualStoreWrap::~ResidualStoreWrap() = default;

// train(sample: Float32Array [n, dim], centroids, seed) -> Promise<number of centroids>: k-means and the residual
// buckets, on an empty store.
Napi::Value ResidualStoreWrap::train(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto sample = floatsOf(info[0], impl_->store->dim, "sample");
    const int64_t k = integerIn(info[1], "centroids", 1);
    const int64_t seed = info[2].IsUndefined() ? 0 : integerIn(info[2], "seed", 0);
    return (new residual::TrainWorker(env, impl_->store, std::move(sample), k, uint64_t(seed)))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value ResidualStoreWrap::centroids(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(impl_->store->count())); }

// add(rows: Float32Array [n, dim]) -> Promise<number of rows>: encodes and appends rows (after train()).
Napi::Value ResidualStoreWrap::add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    return (new residual::AddWorker(env, impl_->store, floatsOf(info[0], impl_->store->dim, "rows")))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

// remove(keep: Uint8Array of size()) -> Promise<rows>: keeps the rows whose flag is nonzero, in order, in place on a
// worker thread (residual::keepRows); the JS thread only copies the flags.
Napi::Value ResidualStoreWrap::remove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    return (new RemoveRowsWorker<ResidualVectors>(env, impl_->store, keepFlagsCopy(info[0], impl_->store->rows), residual::keepRows))->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value ResidualStoreWrap::size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(impl_->store->rows)); }

// rows(start, count) -> Float32Array [count, dim]: those rows decoded.
Napi::Value ResidualStoreWrap::rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& s = *impl_->store;
  int64_t start = 0, count = 0;
  try {
    std::tie(start, count) = rowRange(info[0], info[1], s.rows);
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
  std::lock_guard<std::mutex> lock(s.mutex);
  const torch::Tensor out = residual::decodeRows(s, start, count);
  return float32Array(env, out);
}

// search(queries: Float32Array [Σ lengths, dim], lengths: Int32Array [nq], documents: Int32Array [D] (each document's
// row count, in row order), k, nprobe, fullScores, mean, allow?: Uint8Array [D]) -> Promise<{ scores, indices, k }>,
// row-major [nq, k]; a query with fewer than k candidates ends its row with index -1. mean: MaxSim divided by the
// query's length. allow: 1 for each document the search may find (a filter).
Napi::Value ResidualStoreWrap::search(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto queries = floatsOf(info[0], impl_->store->dim, "queries");
    auto lengths = residual::countsOf(info[1], "lengths");
    const auto counts = residual::countsOf(info[2], "documents");
    int64_t total = 0;
    for (int32_t l : lengths) total += l;
    if (total * impl_->store->dim != int64_t(queries.size())) throw invalidArgument("the query lengths do not add up to the query rows");
    std::vector<int64_t> offsets(counts.size() + 1, 0);
    for (size_t d = 0; d < counts.size(); ++d) offsets[d + 1] = offsets[d] + counts[d];
    const int64_t k = integerIn(info[3], "k", 1), nprobe = integerIn(info[4], "nprobe", 1), fullScores = integerIn(info[5], "fullScores", 1);
    const bool mean = info[6].IsBoolean() && info[6].As<Napi::Boolean>().Value();
    auto allow = allowFlags(info[7], int64_t(counts.size()), "document");
    return (new residual::SearchWorker(env, impl_->store, std::move(queries), std::move(lengths), std::move(offsets), k, nprobe, fullScores, mean,
                                       std::move(allow)))
        ->start();
  } catch (const Error& e) {
    throw jsError(env, {e.code(), e.what()});
  }
}

Napi::Value ResidualStoreWrap::save(const Napi::CallbackInfo& info) {
  return (new residual::FileWorker(info.Env(), impl_->store, info[0].As<Napi::String>(), true))->start();
}
Napi::Value ResidualStoreWrap::load(const Napi::CallbackInfo& info) {
  return (new residual::FileWorker(info.Env(), impl_->store, info[0].As<Napi::String>(), false))->start();
}

}  // namespace coltrast
