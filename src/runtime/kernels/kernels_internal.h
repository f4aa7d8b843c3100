// Internal: the per-ISA kernel families. Each computes output rows [r0, r1) (for BSR: block
// rows) of Y = X·Wᵀ. For batch 1 they read x; for batch > 1 they read xt, X transposed to
// [cols × batch], so that one weight multiplies a contiguous run of the batch. SELL is the
// exception: slices [s0, s1) of 16 rows, one row of X (never xt) at a time.
#pragma once

#include <cstdint>

#include "prunus/kernels.h"

namespace prunus::kernels {

struct Args {
  const float* x;   // [batch × cols] (null for a FeatureMajor call at batch > 1: SIMD only)
  const float* xt;  // [cols × batch] (batch > 1 only)
  std::int64_t batch;
  float* y;         // [batch × rows], or [rows × batch] when y_feature_major (batch > 1, SIMD only)
  bool y_feature_major = false;
};

#define PRUNUS_KERNEL_FAMILY(ns)                                                   \
  namespace ns {                                                                   \
  void csr(const Csr& w, const Args& a, std::int64_t r0, std::int64_t r1);         \
  void bitmask(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1); \
  void bsr(const Bsr& w, const Args& a, std::int64_t R0, std::int64_t R1);         \
  void nm(const NM& w, const Args& a, std::int64_t r0, std::int64_t r1);           \
  void sell(const Sell& w, const Args& a, std::int64_t s0, std::int64_t s1);       \
  }

PRUNUS_KERNEL_FAMILY(scalar)
PRUNUS_KERNEL_FAMILY(avx2)
PRUNUS_KERNEL_FAMILY(avx512)
#undef PRUNUS_KERNEL_FAMILY

namespace detail {
// Bytes of X^T one column panel of a batch > 1 product may hold (simd_batch.h); 0 turns the
// panels off. PRUNUS_PANEL_BYTES overrides the default (512 KiB, half a Zen 4 L2); tests
// shrink it so small shapes cross panel boundaries.
extern std::int64_t g_panel_bytes;
// Whether batch > 1 products walk rows that share their columns four at a time
// (simd_batch.h); PRUNUS_ROW_GROUPS=0 turns it off, for comparison.
extern bool g_row_groups;
// How far ahead the batch-1 N:M and bitmask kernels prefetch their weights into L2
// (PRUNUS_PREFETCH_L2 bytes, default 16 KiB; 0 turns it off). Measured on Zen 4: see avx512.cpp.
std::int64_t prefetch_l2_bytes();
}  // namespace detail

namespace avx512 {
// Whether the AVX-512 family may use VBMI2 (byte compress); set from CPUID, and tests turn
// it off to check the plain AVX-512 path too.
extern bool g_use_vbmi2;
// Batch-1 bitmask rows denser than this take the expand kernel even with VBMI2 (tests set 1).
extern double g_vbmi2_max_density;
// The batch-1 expand kernel takes rows in pairs (sharing x loads) above this many columns,
// where x no longer fits L1; tests set 0 to check the pair path on small shapes. With x in L1
// pairs were slower (4096 columns at 50%: 4096² 2.37 -> 2.71 ms, 11008×4096 5.80 -> 7.04 ms).
extern std::int64_t g_bitmask_pair_cols;
void bitmask_gemv_vbmi2(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1);
// Batch-1 CSR (16-bit columns) reads x with scalar loads (default; faster than vgatherdps on
// Zen 4) or with gathers (PRUNUS_CSR_GATHER=1); tests run both.
extern bool g_csr_scalar_loads;
}  // namespace avx512

// INT8: activations already quantized to unsigned bytes (x_q + 128), one scale per row.
struct Int8Args {
  const std::uint8_t* xq;  // [batch × padded_cols], padding = 128 (zero)
  std::int64_t x_stride;   // padded_cols: a multiple of 128
  const float* x_scale;    // [batch]
  std::int64_t batch;
  float* y;                // [batch × rows]
};
// One expression for every variant, so that equal integer sums give equal floats.
inline float int8_dequant(std::int32_t acc, float x_scale, float w_scale) {
  return static_cast<float>(acc) * (x_scale * w_scale);
}
#define PRUNUS_INT8_FAMILY(ns)                                                              \
  namespace ns {                                                                            \
  void int8_bitmask(const Int8Bitmask& w, const Int8Args& a, std::int64_t r0, std::int64_t r1); \
  void int8_nm(const Int8NM& w, const Int8Args& a, std::int64_t r0, std::int64_t r1);           \
  }
PRUNUS_INT8_FAMILY(scalar)
PRUNUS_INT8_FAMILY(avx2)
PRUNUS_INT8_FAMILY(avx512)
#undef PRUNUS_INT8_FAMILY

// Direct convolution: output rows [r0, r1) of the batch, a row being (sample, oy).
namespace scalar { void conv_direct(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1); }
namespace avx2 { void conv_direct(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1); }
namespace avx512 { void conv_direct(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1); }

}  // namespace prunus::kernels
