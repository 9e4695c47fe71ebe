// Fused CPU kernels for the element-wise parts of a Qwen3 decoder layer (rag/models/fused_layers.py), and for the
// attention of packed segments (segment_attention, below).
//
// transformers runs RMSNorm, the per-head q/k norm + rotary embedding and SwiGLU as chains of separate torch ops:
// each one allocates a fresh activation (page faults) and streams it through memory again, and the rotary part
// runs on a transposed, strided view. Here each is one pass over its rows, parallel over rows with torch's own
// thread pool (at::parallel_for). float32 or bfloat16 tensors (all of one call in the same dtype), contiguous;
// the arithmetic is float32 either way, rounded once on the way out. The Python side falls back to transformers
// for anything else. Built and loaded by rag/models/native.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Loads and stores that widen bfloat16 to float32 and round back (to nearest even, NaN stays NaN): the same
// numbers as c10::BFloat16's conversions, written as plain integer arithmetic so that the compiler vectorises
// the loops around them (through c10's conversions the bfloat16 norm + rotary pass measured 1.6x slower than
// the float32 one on an AVX2 CPU, despite reading half the bytes).
inline float load(const float* p) { return *p; }
inline float load(const at::BFloat16* p) {
  const uint32_t bits = static_cast<uint32_t>(p->x) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
inline void store(float* p, float value) { *p = value; }
inline void store(at::BFloat16* p, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  p->x = static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
}

void check_input(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() &&
                  (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16),
              name, " must be a contiguous float32 or bfloat16 CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have the dtype of the input");
}

template <typename T>
inline float inverse_rms(const T* x, int64_t d, float eps) {
  float sum = 0.f;
  for (int64_t j = 0; j < d; ++j) {
    const float v = load(x + j);
    sum += v * v;
  }
  return 1.f / std::sqrt(sum / static_cast<float>(d) + eps);
}

// Calls body(T{}) with T the C++ type of `dtype` (float or at::BFloat16); the body reads T from its argument.
template <typename Body>
void for_dtype(at::ScalarType dtype, Body body) {
  if (dtype == at::kBFloat16) {
    body(at::BFloat16{});
  } else {
    body(float{});
  }
}

// weight * x / rms(x) over the last dimension (Qwen3RMSNorm).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_input(x, x, "x");
  check_input(weight, x, "weight");
  const int64_t d = x.size(-1), rows = x.numel() / d;
  TORCH_CHECK(weight.numel() == d, "weight must have the last dimension's size");
  auto out = at::empty_like(x);
  const float e = static_cast<float>(eps);
  for_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data_ptr<T>();
    const T* w = weight.data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const T* a = xp + i * d;
        T* o = op + i * d;
        const float r = inverse_rms(a, d, e);
        for (int64_t j = 0; j < d; ++j) {
          store(o + j, load(w + j) * (load(a + j) * r));
        }
      }
    });
  });
  return out;
}

// Per-head RMSNorm, then the rotary embedding (rotate_half convention), then the attention layout:
// x [batch, rows, heads, d] -> [batch, heads, rows, d]; cos/sin [batch, rows, d].
at::Tensor norm_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos, const at::Tensor& sin,
                     double eps) {
  check_input(x, x, "x");
  check_input(weight, x, "weight");
  check_input(cos, x, "cos");
  check_input(sin, x, "sin");
  TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "x must be [batch, rows, heads, even head_dim]");
  const int64_t batch = x.size(0), rows = x.size(1), heads = x.size(2), d = x.size(3), half = d / 2;
  TORCH_CHECK(weight.numel() == d, "weight must have head_dim elements");
  TORCH_CHECK(cos.dim() == 3 && cos.size(0) == batch && cos.size(1) == rows && cos.size(2) == d &&
                  sin.sizes() == cos.sizes(), "cos and sin must be [batch, rows, head_dim]");
  auto out = at::empty({batch, heads, rows, d}, x.options());
  const float e = static_cast<float>(eps);
  for_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data_ptr<T>();
    const T* w = weight.data_ptr<T>();
    const T* cp = cos.data_ptr<T>();
    const T* sp = sin.data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, batch * rows * heads, 16, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t h = k % heads, row = k / heads;  // row runs over batch * rows
        const int64_t b = row / rows, i = row % rows;
        const T* a = xp + k * d;
        const T* c = cp + row * d;
        const T* s = sp + row * d;
        T* o = op + ((b * heads + h) * rows + i) * d;
        const float r = inverse_rms(a, d, e);
        // the output never overlaps the inputs (a fresh tensor): without saying so the compiler leaves this loop
        // scalar, its aliasing checks for 4 inputs and 2 output ranges being too many to version
#pragma GCC ivdep
        for (int64_t j = 0; j < half; ++j) {
          const float lo = load(w + j) * (load(a + j) * r);
          const float hi = load(w + j + half) * (load(a + j + half) * r);
          store(o + j, lo * load(c + j) - hi * load(s + j));
          store(o + j + half, hi * load(c + j + half) + lo * load(s + j + half));
        }
      }
    });
  });
  return out;
}

// gate = silu(gate) * up, in place (SwiGLU).
at::Tensor silu_mul_(at::Tensor& gate, const at::Tensor& up) {
  check_input(gate, gate, "gate");
  check_input(up, gate, "up");
  TORCH_CHECK(gate.sizes() == up.sizes(), "gate and up must have the same shape");
  for_dtype(gate.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    T* g = gate.data_ptr<T>();
    const T* u = up.data_ptr<T>();
    at::parallel_for(0, gate.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float v = load(g + i);
        store(g + i, v / (1.f + std::exp(-v)) * load(u + i));
      }
    });
  });
  return gate;
}

// Attention of packed segments (rag/models/packed.py): each segment's rows attend to the first `prefix` key
// positions whole, then causally to the segment's own keys. torch's SDPA, called once per segment, ran these
// short segments (30-300 rows) at a sixth of the GEMM rate on an AVX2 CPU and a tenth on an AMX one, plus a copy
// of the prefix keys per segment: ~6% of an embedding pass for ~1% of its FLOPs. Here one call does every
// segment, flash-attention style: per (kv head, segment) the keys are laid out once, in panels and widened to
// float32; then a tile of 24 query rows (the kv head's query heads at consecutive positions: 12 positions x 2
// heads at 0.6B) walks the keys a tile of 256 at a time with an online softmax, so each key tile is read from
// the L2 cache by 24 rows whatever the segment's length (the earlier kernel read every key once per 4 rows and
// lost to SDPA from ~1,000 keys on). Inside a tile, blocks of 6 rows x 2 vectors stay in registers over the
// whole head_dim (the scores), then over the keys the block sees (the weighted values). Softmax in float32, one
// rounding on the way out.
#if defined(RAG_FUSED_LANES)  // tests: the AVX-512 width as GCC vectors on any CPU (rag/models/native.py)
constexpr int64_t kLanes = RAG_FUSED_LANES;
#elif defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));
constexpr int64_t kRows = 6;                 // query rows per register block: 12 accumulators + 3 (AVX2 has 16)
constexpr int64_t kVecs = 2;                 // vectors of keys (scores) or of head_dim (values) per block
constexpr int64_t kPanel = kVecs * kLanes;   // keys or head_dim columns per block
constexpr int64_t kTileRows = 4 * kRows;     // query rows sharing one walk over the keys
constexpr int64_t kTileKeys = 8 * 32;        // keys per tile: transposed keys + values 256 KB at head_dim 128

// n rounded up to whole blocks of `block` (panels of keys or columns, blocks of rows)
constexpr int64_t round_up(int64_t n, int64_t block) { return (n + block - 1) / block * block; }

inline vfloat vload(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }
// Accumulators zeroed one by one: `= {}` on the array compiled to a `rep stos` into memory (9% of the kernel)
inline void zero(vfloat (&acc)[kRows][kVecs]) {
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t u = 0; u < kVecs; ++u) acc[r][u] = vfloat{};
}

struct AttentionShape {
  int64_t heads, kv_heads, rows, keys, d;  // keys: cached positions first, then this call's rows
  int64_t q_head, q_row, k_head, k_row, v_head, v_row;  // strides (the last dimension is contiguous)
};

// One segment's keys for one kv head, widened to float32 in panels, the layout the register blocks read
// contiguously: keys [padded / kPanel][d][kPanel] (each panel of keys transposed), values [wide / kPanel]
// [padded][kPanel] (each panel of head_dim columns), zero beyond the segment's `count` keys and beyond head_dim.
// A plain transposed [d, padded] layout put a panel's rows a power of two apart from 1,024 keys on: they shared
// a few cache sets and the kernel fell to SDPA's speed. Only the padding is zeroed: a fill of the whole buffers
// measured a third of the kernel's time on 84-row segments.
template <typename T>
void gather_keys(const T* k, const T* v, const AttentionShape& s, int64_t kv, int64_t prefix, int64_t first,
                 int64_t count, int64_t padded, int64_t wide, float* keys, float* values) {
  constexpr int64_t kBlock = 8;  // keys per pass (kPanel is a multiple): 8 rows read, 8 floats written per column
  for (int64_t j0 = 0; j0 < count; j0 += kBlock) {
    const int64_t n = std::min(kBlock, count - j0);
    const T* kr[kBlock];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t position = j0 + j < prefix ? j0 + j : first + (j0 + j - prefix);
      kr[j] = k + kv * s.k_head + position * s.k_row;
      const T* vr = v + kv * s.v_head + position * s.v_row;
      for (int64_t c0 = 0; c0 < s.d; c0 += kPanel) {
        float* row = values + c0 * padded + (j0 + j) * kPanel;
        for (int64_t c = 0; c < std::min(kPanel, s.d - c0); ++c) row[c] = load(vr + c0 + c);
      }
    }
    float* panel = keys + (j0 / kPanel) * s.d * kPanel + j0 % kPanel;
    for (int64_t c = 0; c < s.d; ++c)
      for (int64_t j = 0; j < n; ++j) panel[c * kPanel + j] = load(kr[j] + c);
  }
  if (count < padded) {
    float* last = keys + (count / kPanel) * s.d * kPanel;
    for (int64_t c = 0; c < s.d; ++c) std::fill(last + c * kPanel + count % kPanel, last + (c + 1) * kPanel, 0.f);
  }
  for (int64_t c0 = 0; c0 < wide; c0 += kPanel) {
    float* panel = values + c0 * padded;
    std::fill(panel + count * kPanel, panel + padded * kPanel, 0.f);
    if (c0 + kPanel > s.d)  // head_dim not a multiple of the panel (small test models): zero columns
      for (int64_t j = 0; j < count; ++j) std::fill(panel + j * kPanel + s.d - c0, panel + (j + 1) * kPanel, 0.f);
  }
}

// acc[r][u] += sum over i < n of a[r * a_row + i] * b[i * b_row + u * kLanes ...]: kRows rows of `a` times a
// panel of kVecs vectors of `b`, the register block of both attention products (scores: q times transposed keys;
// outputs: weights times values). Inlined, so the accumulators stay in registers.
inline __attribute__((always_inline)) void panel_product(const float* a, int64_t a_row, const float* b,
                                                         int64_t b_row, int64_t n, vfloat (&acc)[kRows][kVecs]) {
  for (int64_t i = 0; i < n; ++i) {
    vfloat bv[kVecs];
    for (int64_t u = 0; u < kVecs; ++u) bv[u] = vload(b + i * b_row + u * kLanes);
    for (int64_t r = 0; r < kRows; ++r) {
      const float x = a[r * a_row + i];
      for (int64_t u = 0; u < kVecs; ++u) acc[r][u] += x * bv[u];
    }
  }
}

// Per-thread buffers of one (kv head, segment) unit, grown to the longest segment and reused.
struct AttentionScratch {
  std::vector<float> keys, values;      // the segment's keys and values in panels (gather_keys)
  std::vector<float> query, scores;     // the tile's scaled query rows [kTileRows, d]; a key tile's scores
  std::vector<float> acc, top, sum;     // the tile's running output [kTileRows, wide], row maxima and sums
  std::vector<int64_t> visible;         // keys each tile row sees
};

// One tile of query rows against keys [j0, j0 + width) (width a multiple of kPanel, the last keys zero-padded):
// scores, the online-softmax update of the running maxima, sums and outputs, then outputs += weights x values.
void attend_key_tile(AttentionScratch& w, int64_t d, int64_t padded, int64_t wide, int64_t tile_rows, int64_t j0,
                     int64_t width) {
  float* scores = w.scores.data();
  // keys of this tile that a block of rows sees (rows see more keys further down, padding rows none): the
  // products skip the rest of the causal triangle
  int64_t block_seen[kTileRows / kRows];
  for (int64_t r0 = 0; r0 < tile_rows; r0 += kRows) {
    int64_t most = 0;
    for (int64_t r = r0; r < r0 + kRows; ++r) most = std::max(most, w.visible[r] - j0);
    block_seen[r0 / kRows] = std::min(most, width);
  }
  for (int64_t p0 = 0; p0 < width; p0 += kPanel)  // each panel of keys stays in L1 for the tile's row blocks
    for (int64_t r0 = 0; r0 < tile_rows; r0 += kRows) {
      if (p0 >= block_seen[r0 / kRows]) continue;
      vfloat acc[kRows][kVecs];
      zero(acc);
      panel_product(w.query.data() + r0 * d, d, w.keys.data() + (j0 + p0) * d, kPanel, d, acc);
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t u = 0; u < kVecs; ++u) vstore(scores + (r0 + r) * kTileKeys + p0 + u * kLanes, acc[r][u]);
    }
  for (int64_t r = 0; r < tile_rows; ++r) {
    float* row = scores + r * kTileKeys;
    const int64_t seen = std::clamp<int64_t>(w.visible[r] - j0, 0, width);
    float top = w.top[r];
    for (int64_t j = 0; j < seen; ++j) top = std::max(top, row[j]);
    float sum = 0.f;
    for (int64_t j = 0; j < seen; ++j) {
      row[j] = std::exp(row[j] - top);
      sum += row[j];
    }
    std::fill(row + seen, row + width, 0.f);
    if (seen > 0 && top > w.top[r]) {
      if (w.sum[r] > 0.f) {  // a new maximum after earlier key tiles: rescale what they added
        const float correction = std::exp(w.top[r] - top);
        w.sum[r] *= correction;
        for (int64_t c = 0; c < d; ++c) w.acc[r * wide + c] *= correction;
      }
      w.top[r] = top;
    }
    w.sum[r] += sum;
  }
  for (int64_t c0 = 0; c0 < wide; c0 += kPanel)
    for (int64_t r0 = 0; r0 < tile_rows; r0 += kRows) {
      float* out = w.acc.data() + r0 * wide + c0;
      vfloat acc[kRows][kVecs];
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t u = 0; u < kVecs; ++u) acc[r][u] = vload(out + r * wide + u * kLanes);
      panel_product(scores + r0 * kTileKeys, kTileKeys, w.values.data() + (c0 * padded + j0 * kPanel), kPanel,
                    block_seen[r0 / kRows], acc);
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t u = 0; u < kVecs; ++u) vstore(out + r * wide + u * kLanes, acc[r][u]);
    }
}

// q [1, heads, rows, d]; k, v [1, kv_heads, keys, d] (keys = cached + rows); segments [n, 3] int64 of
// (start, end, prefix) over the rows. Returns [1, rows, heads, d], as transformers' attention functions do.
at::Tensor segment_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& segments, double scale) {
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->dim() == 4 && t->size(0) == 1 && t->stride(3) == 1 &&
                    t->scalar_type() == q.scalar_type() &&
                    (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16),
                "q, k and v must be float32 or bfloat16 CPU tensors [1, heads, rows, head_dim] of one dtype, "
                "head_dim contiguous");
  }
  const AttentionShape s{q.size(1), k.size(1), q.size(2), k.size(2), q.size(3),
                         q.stride(1), q.stride(2), k.stride(1), k.stride(2), v.stride(1), v.stride(2)};
  TORCH_CHECK(v.sizes() == k.sizes() && k.size(3) == s.d && s.heads % s.kv_heads == 0 && s.keys >= s.rows,
              "k and v must be [1, kv_heads, keys >= rows, head_dim], heads a multiple of kv_heads");
  TORCH_CHECK(segments.device().is_cpu() && segments.scalar_type() == at::kLong && segments.dim() == 2 &&
                  segments.size(1) == 3,
              "segments must be an int64 CPU tensor [n, 3] of (start, end, prefix)");
  const auto seg = segments.contiguous();
  const int64_t* sp = seg.data_ptr<int64_t>();
  const int64_t n = seg.size(0), past = s.keys - s.rows, group = s.heads / s.kv_heads;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t start = sp[3 * i], end = sp[3 * i + 1], prefix = sp[3 * i + 2];
    TORCH_CHECK(0 <= start && start < end && end <= s.rows && 0 <= prefix && prefix <= past + start &&
                    (i == 0 || sp[3 * i - 2] <= start),
                "segment ", i, " must lie within the rows, after the previous one, its prefix before its own keys");
  }
  int64_t covered = 0;
  for (int64_t i = 0; i < n; ++i) covered += sp[3 * i + 1] - sp[3 * i];
  // rows outside every segment come back zero
  auto out = covered == s.rows ? at::empty({1, s.rows, s.heads, s.d}, q.options())
                               : at::zeros({1, s.rows, s.heads, s.d}, q.options());
  const float sc = static_cast<float>(scale);
  for_dtype(q.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* qp = q.data_ptr<T>();
    const T* kp = k.data_ptr<T>();
    const T* vp = v.data_ptr<T>();
    T* op = out.data_ptr<T>();
    // units ordered kv head first: the two threads of a 2-core machine get half the heads of every segment each,
    // whatever the segments' lengths
    at::parallel_for(0, s.kv_heads * n, 1, [&](int64_t begin, int64_t end_unit) {
      AttentionScratch w;
      w.query.resize(kTileRows * s.d);
      w.scores.resize(kTileRows * kTileKeys);
      const int64_t wide = round_up(s.d, kPanel);  // head_dim in whole panels
      w.acc.resize(kTileRows * wide);
      w.top.resize(kTileRows);
      w.sum.resize(kTileRows);
      w.visible.resize(kTileRows);
      for (int64_t unit = begin; unit < end_unit; ++unit) {
        const int64_t kv = unit / n, i = unit % n;
        const int64_t start = sp[3 * i], end = sp[3 * i + 1], prefix = sp[3 * i + 2];
        const int64_t count = prefix + end - start, padded = round_up(count, kPanel);
        if (w.keys.size() < static_cast<size_t>(s.d * padded)) {  // grown, never shrunk: no refill per segment
          w.keys.resize(s.d * padded);
          w.values.resize(padded * wide);
        }
        gather_keys(kp, vp, s, kv, prefix, past + start, count, padded, wide, w.keys.data(), w.values.data());
        // tile rows are (position, head) pairs, position-major: both heads of the kv head share the key tiles
        const int64_t pairs = (end - start) * group;
        for (int64_t t0 = 0; t0 < pairs; t0 += kTileRows) {
          const int64_t used = std::min(kTileRows, pairs - t0);
          const int64_t tile_rows = round_up(used, kRows);
          T* targets[kTileRows];
          for (int64_t r = 0; r < tile_rows; ++r) {
            float* qr = w.query.data() + r * s.d;
            if (r >= used) {  // a block's padding rows: zero queries, results dropped
              std::fill(qr, qr + s.d, 0.f);
              w.visible[r] = 0;
              continue;
            }
            const int64_t row = start + (t0 + r) / group, h = kv * group + (t0 + r) % group;
            const T* src = qp + h * s.q_head + row * s.q_row;
            for (int64_t c = 0; c < s.d; ++c) qr[c] = load(src + c) * sc;
            targets[r] = op + (row * s.heads + h) * s.d;
            w.visible[r] = prefix + (row - start) + 1;
          }
          std::fill(w.acc.begin(), w.acc.begin() + tile_rows * wide, 0.f);
          // no infinities: the library is built with -ffast-math (a row's first maximum replaces this one)
          std::fill(w.top.begin(), w.top.end(), std::numeric_limits<float>::lowest());
          std::fill(w.sum.begin(), w.sum.end(), 0.f);
          const int64_t seen = w.visible[used - 1];  // the tile's last row sees the most keys
          for (int64_t j0 = 0; j0 < seen; j0 += kTileKeys) {
            const int64_t width = round_up(std::min(kTileKeys, seen - j0), kPanel);
            attend_key_tile(w, s.d, padded, wide, tile_rows, j0, width);
          }
          for (int64_t r = 0; r < used; ++r) {
            const float inverse = 1.f / w.sum[r];
            for (int64_t c = 0; c < s.d; ++c) store(targets[r] + c, w.acc[r * wide + c] * inverse);
          }
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(rag_fused, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor", rms_norm);
  m.def("norm_rope(Tensor x, Tensor weight, Tensor cos, Tensor sin, float eps) -> Tensor", norm_rope);
  m.def("silu_mul_(Tensor(a!) gate, Tensor up) -> Tensor(a!)", silu_mul_);
  m.def("segment_attention(Tensor q, Tensor k, Tensor v, Tensor segments, float scale) -> Tensor", segment_attention);
}
