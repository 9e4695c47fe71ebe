// Fused CPU kernels for the element-wise parts of a Qwen3 decoder layer (rag/models/fused_layers.py).
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

#include <cmath>
#include <cstdint>
#include <cstring>

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

}  // namespace

TORCH_LIBRARY(rag_fused, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor", rms_norm);
  m.def("norm_rope(Tensor x, Tensor weight, Tensor cos, Tensor sin, float eps) -> Tensor", norm_rope);
  m.def("silu_mul_(Tensor(a!) gate, Tensor up) -> Tensor(a!)", silu_mul_);
}
