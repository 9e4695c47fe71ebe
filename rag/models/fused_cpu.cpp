// Fused CPU kernels for the element-wise parts of a Qwen3 decoder layer (rag/models/fused_layers.py), and for the
// attention of packed segments (segment_attention, below).
//
// transformers runs RMSNorm, the per-head q/k norm + rotary embedding and SwiGLU as chains of separate torch ops:
// each one allocates a fresh activation (page faults) and streams it through memory again, and the rotary part
// runs on a transposed, strided view. Here each is one pass over its rows, parallel over rows with torch's own
// thread pool (at::parallel_for). float32 or bfloat16 tensors (all of one call in the same dtype, but for the
// norms' float32 residual stream under bfloat16 weights), contiguous; the arithmetic is float32 either way,
// rounded once on the way out. The Python side falls back to transformers
// for anything else. Built and loaded by rag/models/native.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

// weight * a / rms(a) for one row of d values, written in the weight's type (Qwen3RMSNorm).
template <typename X, typename W>
inline void normalise_row(const X* a, const W* w, W* o, int64_t d, float eps) {
  const float r = inverse_rms(a, d, eps);
  for (int64_t j = 0; j < d; ++j) {
    store(o + j, load(w + j) * (load(a + j) * r));
  }
}

// Calls body(X{}, W{}) with X the C++ type of the input's dtype and W the weight's (float or at::BFloat16).
template <typename Body>
void for_input_and_weight(at::ScalarType x, at::ScalarType weight, Body body) {
  for_dtype(x, [&](auto x_tag) { for_dtype(weight, [&](auto w_tag) { body(x_tag, w_tag); }); });
}

// The normalised rows' tensor for input x and weight (checked): x's shape, the weight's dtype.
at::Tensor normalised_like(const at::Tensor& x, const at::Tensor& weight) {
  check_input(x, x, "x");
  check_input(weight, weight, "weight");
  TORCH_CHECK(weight.numel() == x.size(-1), "weight must have the last dimension's size");
  return at::empty(x.sizes(), x.options().dtype(weight.scalar_type()));
}

// weight * x / rms(x) over the last dimension (Qwen3RMSNorm), in the weight's dtype. x has the weight's dtype, or
// is float32 under bfloat16 weights: a bfloat16 model whose residual stream stays in float32
// (rag/models/fused_layers.py) normalises it straight into the next bfloat16 product's input.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() || x.scalar_type() == at::kFloat,
              "weight must have the dtype of the input (or bfloat16 under a float32 input)");
  auto out = normalised_like(x, weight);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  for_input_and_weight(x.scalar_type(), weight.scalar_type(), [&](auto x_tag, auto w_tag) {
    using X = decltype(x_tag);
    using W = decltype(w_tag);
    const X* xp = x.data_ptr<X>();
    const W* w = weight.data_ptr<W>();
    W* op = out.data_ptr<W>();
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        normalise_row(xp + i * d, w, op + i * d, d, static_cast<float>(eps));
      }
    });
  });
  return out;
}

// residual + x, and that sum normalised as rms_norm does, in one pass: a bfloat16 model's residual add and the
// norm after it (rag/models/fused_layers.py), where the sum stays float32. residual is float32; x and weight are
// float32 or bfloat16; the normalised rows come out in the weight's dtype.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& residual, const at::Tensor& x,
                                                const at::Tensor& weight, double eps) {
  auto out = normalised_like(x, weight);
  check_input(residual, residual, "residual");
  TORCH_CHECK(residual.scalar_type() == at::kFloat, "residual must be float32");
  TORCH_CHECK(x.sizes() == residual.sizes(), "x must have the residual's shape");
  const int64_t d = x.size(-1), rows = x.numel() / d;
  auto sum = at::empty_like(residual);
  for_input_and_weight(x.scalar_type(), weight.scalar_type(), [&](auto x_tag, auto w_tag) {
    using X = decltype(x_tag);
    using W = decltype(w_tag);
    const float* rp = residual.data_ptr<float>();
    const X* xp = x.data_ptr<X>();
    const W* w = weight.data_ptr<W>();
    float* sp = sum.data_ptr<float>();
    W* op = out.data_ptr<W>();
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        float* s = sp + i * d;
        for (int64_t j = 0; j < d; ++j) {
          s[j] = rp[i * d + j] + load(xp + i * d + j);
        }
        normalise_row(static_cast<const float*>(s), w, op + i * d, d, static_cast<float>(eps));
      }
    });
  });
  return {sum, out};
}

// residual += x, in place, where residual is float32 and x float32 or bfloat16: a bfloat16 model's MLP output
// joining its float32 residual stream (rag/models/fused_layers.py). torch's add of the two dtypes first widens x
// into a float32 copy and then adds: 2.1 ms a layer at 2,348 rows on an AMX CPU, ~4% of an embedding pass.
at::Tensor add_(at::Tensor& residual, const at::Tensor& x) {
  check_input(residual, residual, "residual");
  check_input(x, x, "x");
  TORCH_CHECK(residual.scalar_type() == at::kFloat, "residual must be float32");
  TORCH_CHECK(x.sizes() == residual.sizes(), "x must have the residual's shape");
  float* rp = residual.data_ptr<float>();
  for_dtype(x.scalar_type(), [&](auto tag) {
    using X = decltype(tag);
    const X* xp = x.data_ptr<X>();
    at::parallel_for(0, residual.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        rp[i] += load(xp + i);
      }
    });
  });
  return residual;
}

// Per-head RMSNorm, then the rotary embedding (rotate_half convention), then the attention layout:
// x [batch, rows, heads, d] -> [batch, heads, rows, d]; cos/sin [batch, rows, d]. x's rows may be further apart
// than heads * d (the keys' columns of one merged key/value product, rag/models/fused_layers.py); each row's
// heads are contiguous.
at::Tensor norm_rope(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& cos, const at::Tensor& sin,
                     double eps) {
  TORCH_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "x must be [batch, rows, heads, even head_dim]");
  TORCH_CHECK(x.device().is_cpu() && x.stride(3) == 1 && x.stride(2) == x.size(3) &&
                  x.stride(1) >= x.size(2) * x.size(3) && (x.size(0) == 1 || x.stride(0) >= x.size(1) * x.stride(1)) &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "x must be a float32 or bfloat16 CPU tensor whose rows each hold their heads contiguously");
  check_input(weight, x, "weight");
  check_input(cos, x, "cos");
  check_input(sin, x, "sin");
  const int64_t batch = x.size(0), rows = x.size(1), heads = x.size(2), d = x.size(3), half = d / 2;
  const int64_t batch_stride = x.stride(0), row_stride = x.stride(1);
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
        const T* a = xp + b * batch_stride + i * row_stride + h * d;
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

// The end of a row's online-softmax step: its running maximum becomes `most` (the tile's, if it saw any key),
// the outputs and sum so far rescaled to it, plus the tile's `added` weights. Both attention kernels.
inline void advance_row(float most, float added, int64_t seen, float& top, float& sum, float* acc, int64_t n) {
  if (seen > 0 && most > top) {
    if (sum > 0.f) {  // a new maximum after earlier key tiles: rescale what they added
      const float correction = std::exp(top - most);
      sum *= correction;
      for (int64_t c = 0; c < n; ++c) acc[c] *= correction;
    }
    top = most;
  }
  sum += added;
}

// One query row's step of the online softmax over a key tile: of its `width` scores (times `scale`), the first
// `seen` become exp(score - the running maximum) and the rest 0; the running maximum `top` and sum, and the
// row's `n` outputs so far (`acc`, rescaled when the maximum grows), are updated. Both attention kernels.
inline void online_softmax_row(float* row, int64_t seen, int64_t width, float scale, float& top, float& sum,
                               float* acc, int64_t n) {
  float most = top;
  for (int64_t j = 0; j < seen; ++j) most = std::max(most, row[j] * scale);
  float added = 0.f;
  for (int64_t j = 0; j < seen; ++j) {
    row[j] = std::exp(row[j] * scale - most);
    added += row[j];
  }
  std::fill(row + seen, row + width, 0.f);
  advance_row(most, added, seen, top, sum, acc, n);
}

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
    online_softmax_row(row, seen, width, 1.f, w.top[r], w.sum[r], w.acc.data() + r * wide, d);
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

// Attention of bfloat16 packed segments on AMX tiles (Intel Sapphire Rapids on), built where the CPU has them
// (rag/models/native.py adds -mamx-tile -mamx-bf16). There the matmuls of a pass run at ~3 TFLOP/s on 2 cores,
// and the vector kernel above (float32 FMAs: this CPU's vdpbf16ps issues at a quarter of the FMA rate) made
// attention 15-20% of a pass for ~2% of its FLOPs. Same walk as above (per kv head and segment, key tiles of 256
// with an online softmax), but both products are tile dot products (TDPBF16PS: C[16 x 16 float32] +=
// A[16 x 32 bf16] . B[32 x 16 bf16]):
// - scores S = Q K^T: A = 16 query positions of one head (head_dim chunks of 32), B = the segment's keys laid
//   out once per (kv head, segment) as pairs of head_dim columns [key panel][chunk][16 pairs][16 keys][2];
// - outputs O += P V: A = the softmax weights of a key tile, B = values as pairs of keys [column panel][key
//   chunk][16 pairs][16 columns][2]. The weights P (float32) go in as two bfloat16 parts, P = hi + lo, so the
//   product keeps ~16 bits of P (with hi alone the outputs moved up to two bfloat16 steps from the vector
//   kernel's, 1.6e-2 at 0.6B shapes; the lo products are ~1% of a rerank pass by its profile).
// Queries, keys and values are the bfloat16 inputs exactly; the scale and softmax are float32, the output is
// rounded once, as in the vector kernel.
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#define RAG_AMX 1
namespace amx {

constexpr int64_t kTile = 16;      // rows of every tile; float32 columns of a C tile; keys or columns per panel
constexpr int64_t kChunk = 32;     // bfloat16 per A-tile row (64 bytes): the dot products' reduction step
constexpr int64_t kKeys = 256;     // keys per step of the online softmax (a multiple of 4 panels)
constexpr int64_t kGroup = 4 * kTile;  // keys per scores pass, columns per outputs pass: 4 C tiles (tmm0-3)

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows x 64 bytes: tmm0-3 accumulators, tmm4-5 A operands, tmm6-7 B operands.
inline void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes[t] = 64;
    config.rows[t] = kTile;
  }
  // not _tile_loadconfig: GCC 12's version tells the compiler it reads 8 bytes, so the stores of the sizes were
  // dropped as dead and the tiles stayed unconfigured (SIGILL at the first tile instruction)
  asm volatile("ldtilecfg %0" : : "m"(config));
}

struct Scratch {
  std::vector<uint16_t> keys, values;  // the segment's keys and values in B-tile layouts (bfloat16 bits)
  std::vector<uint16_t> query;         // one tile of query rows [16][chunks * 32], zero-padded
  std::vector<float> scores;           // [16][kKeys]
  std::vector<uint16_t> hi, lo;        // the softmax weights as two bfloat16 parts [16][kKeys]
  std::vector<float> acc;              // running outputs [16][cols]
  float top[kTile], sum[kTile];
  int64_t visible[kTile];
};

// keys: [padded / 16][chunks][16 pairs of head_dim columns][16 keys][2]; values: [cols / 16][padded / 32]
// [16 pairs of keys][16 columns][2]; zero past the segment's `count` keys and past head_dim. A pair of keys'
// columns is one 32-bit word, so a key panel's rows are 16-lane gathers (one word of each of 16 keys); the
// values' pairs of keys are two rows interleaved by one permute per 16 columns.
void gather(const at::BFloat16* k, const at::BFloat16* v, const AttentionShape& s, int64_t kv, int64_t prefix,
            int64_t first, int64_t count, int64_t padded, int64_t chunks, int64_t cols, Scratch& w) {
  const auto position = [&](int64_t j) { return j < prefix ? j : first + (j - prefix); };
  const int64_t words = chunks * kTile;  // pairs of columns per key, head_dim padded to whole chunks
  const at::BFloat16* kb = k + kv * s.k_head;
  for (int64_t j0 = 0; j0 < padded; j0 += kTile) {
    alignas(64) int32_t offsets[kTile];
    __mmask16 valid = 0;
    for (int64_t j = 0; j < kTile; ++j) {
      offsets[j] = j0 + j < count ? static_cast<int32_t>(position(j0 + j) * s.k_row) : 0;
      valid |= static_cast<__mmask16>(j0 + j < count) << j;
    }
    const __m512i index = _mm512_load_si512(offsets);
    uint32_t* panel = reinterpret_cast<uint32_t*>(w.keys.data()) + (j0 / kTile) * words * kTile;
    for (int64_t pair = 0; pair < words; ++pair) {
      const __m512i row = 2 * pair < s.d
          ? _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, index, kb + 2 * pair, 2)
          : _mm512_setzero_si512();
      _mm512_storeu_si512(panel + pair * kTile, row);
    }
  }
  alignas(64) int16_t low[2 * kTile], high[2 * kTile];  // lanes of (row a, row b) pairs: columns 0-15, 16-31
  for (int64_t i = 0; i < kTile; ++i) {
    low[2 * i] = i, low[2 * i + 1] = 2 * kTile + i;
    high[2 * i] = kTile + i, high[2 * i + 1] = 3 * kTile + i;
  }
  const __m512i take_low = _mm512_load_si512(low), take_high = _mm512_load_si512(high);
  const int64_t column_panel = (padded / kChunk) * kTile * 2 * kTile;  // bfloat16 per panel of 16 columns
  for (int64_t j = 0; j < padded; j += 2) {
    const at::BFloat16* a = j < count ? v + kv * s.v_head + position(j) * s.v_row : nullptr;
    const at::BFloat16* b = j + 1 < count ? v + kv * s.v_head + position(j + 1) * s.v_row : nullptr;
    uint16_t* out = w.values.data() + ((j / kChunk) * kTile + (j % kChunk) / 2) * 2 * kTile;
    for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
      const int64_t n = std::clamp<int64_t>(s.d - c0, 0, kChunk);
      const __mmask32 inside = n == kChunk ? ~__mmask32{0} : (__mmask32{1} << n) - 1;
      const __m512i x = a ? _mm512_maskz_loadu_epi16(inside, a + c0) : _mm512_setzero_si512();
      const __m512i y = b ? _mm512_maskz_loadu_epi16(inside, b + c0) : _mm512_setzero_si512();
      _mm512_storeu_si512(out + (c0 / kTile) * column_panel, _mm512_permutex2var_epi16(x, take_low, y));
      _mm512_storeu_si512(out + (c0 / kTile + 1) * column_panel, _mm512_permutex2var_epi16(x, take_high, y));
    }
  }
}

// Scores of 16 query rows (bfloat16 rows `q_stride` bytes apart) against keys [j0, j0 + width), unscaled:
// `panels` (4 or 2) C tiles of 16 keys at a time.
template <int panels>
inline void score_panels(Scratch& w, const void* query, int64_t q_stride, int64_t chunks, int64_t j, float* out) {
  const int64_t panel = chunks * kTile * kTile;  // 32-bit words per key panel
  const uint32_t* b = reinterpret_cast<const uint32_t*>(w.keys.data()) + (j / kTile) * panel;
  _tile_zero(0);
  _tile_zero(1);
  if (panels == 4) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t c = 0; c < chunks; ++c) {
    _tile_loadd(4, static_cast<const uint16_t*>(query) + c * kChunk, q_stride);
    const uint32_t* bc = b + c * kTile * kTile;
    _tile_loadd(6, bc, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, bc + panel, 64);
    _tile_dpbf16ps(1, 4, 7);
    if (panels == 4) {
      _tile_loadd(6, bc + 2 * panel, 64);
      _tile_dpbf16ps(2, 4, 6);
      _tile_loadd(7, bc + 3 * panel, 64);
      _tile_dpbf16ps(3, 4, 7);
    }
  }
  _tile_stored(0, out, kKeys * 4);
  _tile_stored(1, out + kTile, kKeys * 4);
  if (panels == 4) {
    _tile_stored(2, out + 2 * kTile, kKeys * 4);
    _tile_stored(3, out + 3 * kTile, kKeys * 4);
  }
}

// Width a multiple of kChunk (the keys are padded to whole chunks).
void score_tile(Scratch& w, const void* query, int64_t q_stride, int64_t chunks, int64_t j0, int64_t width) {
  int64_t g = 0;
  for (; g + kGroup <= width; g += kGroup) score_panels<4>(w, query, q_stride, chunks, j0 + g, w.scores.data() + g);
  if (g < width) score_panels<2>(w, query, q_stride, chunks, j0 + g, w.scores.data() + g);
}

// acc += P . V over keys [j0, j0 + width), P given as hi + lo; acc = P . V for the first key tile (j0 = 0: no
// fill of acc beforehand).
void accumulate_tile(Scratch& w, int64_t padded, int64_t cols, int64_t j0, int64_t width) {
  const int64_t key_chunks = padded / kChunk, column_panel = key_chunks * kTile * 2 * kTile;  // bfloat16
  for (int64_t g = 0; g < cols; g += kGroup) {
    float* out = w.acc.data() + g;
    if (j0 == 0) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
    } else {
      _tile_loadd(0, out, cols * 4);
      _tile_loadd(1, out + kTile, cols * 4);
      _tile_loadd(2, out + 2 * kTile, cols * 4);
      _tile_loadd(3, out + 3 * kTile, cols * 4);
    }
    for (int64_t c = 0; c < width; c += kChunk) {
      _tile_loadd(4, w.hi.data() + c, kKeys * 2);
      _tile_loadd(5, w.lo.data() + c, kKeys * 2);
      const uint16_t* b = w.values.data() + (g / kTile) * column_panel + ((j0 + c) / kChunk) * kTile * 2 * kTile;
      _tile_loadd(6, b, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(0, 5, 6);
      _tile_loadd(7, b + column_panel, 64);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(1, 5, 7);
      _tile_loadd(6, b + 2 * column_panel, 64);
      _tile_dpbf16ps(2, 4, 6);
      _tile_dpbf16ps(2, 5, 6);
      _tile_loadd(7, b + 3 * column_panel, 64);
      _tile_dpbf16ps(3, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, cols * 4);
    _tile_stored(1, out + kTile, cols * 4);
    _tile_stored(2, out + 2 * kTile, cols * 4);
    _tile_stored(3, out + 3 * kTile, cols * 4);
  }
}

// exp(x) for x <= 0 (scores minus their running maximum): 2^t with t = x log2(e) split into an integer n and
// f in [-0.5, 0.5], 2^f by a degree-5 polynomial (relative error 8e-8, float32's own rounding), 2^n by scalef.
// Below -88 the result is flushed to ~0 (e^-88 ~ 6e-39, under a float's normal range).
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-88.f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.326698e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675469e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550743e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402212e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001f));
  return _mm512_scalef_ps(p, n);
}

// float32 -> bfloat16 bits, to nearest even (the softmax weights: finite, no NaN to keep), and back
inline __m256i to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
}
inline __m512 from_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

// The lanes of 16 scores from j on that a row sees (it sees `seen` of the tile's keys)
inline __mmask16 seen_lanes(int64_t seen, int64_t j) {
  const int64_t n = seen - j;
  return n >= kTile ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// The online softmax over one key tile's scores, online_softmax_row's steps 16 scores a vector (the scalar loops,
// glibc's expf and the rounding loop were about a third of the kernel's samples on 84-row segments), writing
// P = hi + lo straight from the weights.
void softmax_tile(Scratch& w, int64_t cols, float scale, int64_t j0, int64_t width) {
  const __m512 scaled = _mm512_set1_ps(scale);
  for (int64_t r = 0; r < kTile; ++r) {
    const float* row = w.scores.data() + r * kKeys;
    const int64_t seen = std::clamp<int64_t>(w.visible[r] - j0, 0, width);
    __m512 most = _mm512_set1_ps(w.top[r]);
    for (int64_t j = 0; j < seen; j += kTile) {
      const __mmask16 lanes = seen_lanes(seen, j);
      most = _mm512_mask_max_ps(most, lanes, most, _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, row + j), scaled));
    }
    const float top = _mm512_reduce_max_ps(most);
    const __m512 shift = _mm512_set1_ps(top);
    __m512 added = _mm512_setzero_ps();
    uint16_t* hi = w.hi.data() + r * kKeys;
    uint16_t* lo = w.lo.data() + r * kKeys;
    for (int64_t j = 0; j < width; j += kTile) {
      const __m512 p = _mm512_maskz_mov_ps(seen_lanes(seen, j),
                                           exp_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(row + j), scaled, shift)));
      added = _mm512_add_ps(added, p);
      const __m256i high = to_bf16(p);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + j), high);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + j), to_bf16(_mm512_sub_ps(p, from_bf16(high))));
    }
    advance_row(top, _mm512_reduce_add_ps(added), seen, w.top[r], w.sum[r], w.acc.data() + r * cols, cols);
  }
}

// One output row: acc * inverse rounded to bfloat16, 32 values per instruction (vcvtne2ps2bf16: to nearest even,
// as store() rounds; it flushes results under float32's normal range to zero). The scalar-typed loop the compiler
// made of store() took ~12% of the kernel's samples on 84-row segments.
inline void store_row(at::BFloat16* target, const float* acc, float inverse, int64_t d) {
  int64_t c = 0;
  const __m512 by = _mm512_set1_ps(inverse);
  for (; c + kChunk <= d; c += kChunk) {
    const __m512 low = _mm512_mul_ps(_mm512_loadu_ps(acc + c), by);
    const __m512 high = _mm512_mul_ps(_mm512_loadu_ps(acc + c + kTile), by);
    _mm512_storeu_si512(target + c, (__m512i)_mm512_cvtne2ps_pbh(high, low));
  }
  for (; c < d; ++c) store(target + c, acc[c] * inverse);
}

void segment_attention(const at::BFloat16* qp, const at::BFloat16* kp, const at::BFloat16* vp, at::BFloat16* op,
                       const AttentionShape& s, const int64_t* sp, int64_t n, float scale) {
  const int64_t past = s.keys - s.rows, group = s.heads / s.kv_heads;
  const int64_t chunks = round_up(s.d, kChunk) / kChunk, cols = round_up(s.d, kGroup);
  at::parallel_for(0, s.kv_heads * n, 1, [&](int64_t begin, int64_t end_unit) {
    configure_tiles();  // per thread: the tile registers are thread state
    Scratch w;
    w.query.assign(kTile * chunks * kChunk, 0);
    w.scores.resize(kTile * kKeys);
    w.hi.resize(kTile * kKeys);
    w.lo.resize(kTile * kKeys);
    w.acc.resize(kTile * cols);
    for (int64_t unit = begin; unit < end_unit; ++unit) {
      const int64_t kv = unit / n, i = unit % n;
      const int64_t start = sp[3 * i], end = sp[3 * i + 1], prefix = sp[3 * i + 2];
      const int64_t count = prefix + end - start, padded = round_up(count, kChunk);
      if (w.keys.size() < static_cast<size_t>(padded * chunks * kChunk)) {
        w.keys.resize(padded * chunks * kChunk);
        w.values.resize(padded * cols);
      }
      gather(kp, vp, s, kv, prefix, past + start, count, padded, chunks, cols, w);
      for (int64_t p0 = start; p0 < end; p0 += kTile) {  // 16 positions of one head per tile
        const int64_t used = std::min(kTile, end - p0);
        for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
          // the A tiles read 16 whole rows of 64-byte chunks: straight from q where they are, else a padded copy
          const at::BFloat16* rows = qp + h * s.q_head + p0 * s.q_row;
          const void* query = rows;
          int64_t q_stride = s.q_row * 2;
          if (used < kTile || s.d % kChunk != 0) {
            for (int64_t r = 0; r < used; ++r)
              std::memcpy(w.query.data() + r * chunks * kChunk, rows + r * s.q_row, s.d * 2);
            std::fill(w.query.begin() + used * chunks * kChunk, w.query.end(), 0);
            query = w.query.data();
            q_stride = chunks * kChunk * 2;
          }
          for (int64_t r = 0; r < kTile; ++r) w.visible[r] = r < used ? prefix + (p0 + r - start) + 1 : 0;
          std::fill(w.top, w.top + kTile, std::numeric_limits<float>::lowest());  // no infinities (-ffast-math)
          std::fill(w.sum, w.sum + kTile, 0.f);
          const int64_t seen = w.visible[used - 1];
          for (int64_t j0 = 0; j0 < seen; j0 += kKeys) {
            const int64_t width = round_up(std::min(kKeys, seen - j0), kChunk);
            score_tile(w, query, q_stride, chunks, j0, width);
            softmax_tile(w, cols, scale, j0, width);
            accumulate_tile(w, padded, cols, j0, width);
          }
          for (int64_t r = 0; r < used; ++r) {
            store_row(op + ((p0 + r) * s.heads + h) * s.d, w.acc.data() + r * cols, 1.f / w.sum[r], s.d);
          }
        }
      }
    }
    _tile_release();
  });
}

}  // namespace amx
#endif

std::atomic<bool> amx_wanted{true};

// Whether bfloat16 attention runs on the AMX tiles: built with them, and Linux granted this process the tile
// state (asked once; oneDNN asks for the same for torch's bfloat16 matmuls).
bool amx_usable() {
#ifdef RAG_AMX
  static const bool granted = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return granted && amx_wanted.load();
#else
  return false;
#endif
}

// Switch the AMX attention on or off (benchmarks and tests compare both); returns whether it is used now.
bool amx_attention(bool enable) {
  amx_wanted = enable;
  return amx_usable();
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
#ifdef RAG_AMX
  // key offsets are 32-bit gather indices; key pairs of columns are 32-bit words (an even head_dim)
  if (q.scalar_type() == at::kBFloat16 && s.d % 2 == 0 && s.keys * s.k_row < (int64_t{1} << 31) && amx_usable()) {
    amx::segment_attention(q.data_ptr<at::BFloat16>(), k.data_ptr<at::BFloat16>(), v.data_ptr<at::BFloat16>(),
                           out.data_ptr<at::BFloat16>(), s, sp, n, sc);
    return out;
  }
#endif
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
  m.def("add_rms_norm(Tensor residual, Tensor x, Tensor weight, float eps) -> (Tensor, Tensor)", add_rms_norm);
  m.def("add_(Tensor(a!) residual, Tensor x) -> Tensor(a!)", add_);
  m.def("norm_rope(Tensor x, Tensor weight, Tensor cos, Tensor sin, float eps) -> Tensor", norm_rope);
  m.def("silu_mul_(Tensor(a!) gate, Tensor up) -> Tensor(a!)", silu_mul_);
  m.def("segment_attention(Tensor q, Tensor k, Tensor v, Tensor segments, float scale) -> Tensor", segment_attention);
  m.def("amx_attention(bool enable) -> bool", amx_attention);
}
