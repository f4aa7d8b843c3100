// Internal: the direct NHWC convolution, three layouts, written once for AVX2 and AVX-512
// (conv_avx2.cpp and conv_avx512.cpp instantiate them; the runtime times each at load).
//
// Planar (conv_planar, stride 1): a vector holds 8 positions of one output channel along an
// output row — see planar_group.
//
// Flat (conv_flat, stride 1): a vector holds 8 or 16 positions of the whole padded plane,
// rows joined — see flat_group.
//
// Channel-vector (conv_rows, any stride), over a vector type (8-lane ymm, 16-lane zmm):
// each output position's channels are one vector (a chunk of 8 or 16 output channels); each
// input value of its window is broadcast and multiplied by that tap's row of the tap-major
// weights. P positions along the output row share each weight load and keep P independent
// accumulators in flight. A padded layer reads a zero-padded copy of its sample, so every
// window is one contiguous run a kernel row (in NHWC the taps kx and their channels are
// adjacent) and no position needs an edge case; a row's last P positions are one block that
// overlaps the previous one rather than P single, latency-bound positions.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels_internal.h"

// Everything here has internal linkage (the unnamed namespace): each ISA's file gets its own
// copies compiled with its own flags. With ordinary inline templates the AVX2 and AVX-512
// instantiations (conv_rows<Ymm, 8>, planar_rows<R>) would share names, and the linker could
// hand an AVX2-only CPU the AVX-512 build.
namespace prunus::kernels::conv_simd {
namespace {

// Sample n of the input, zero-padded, made once per sample: NHWC ([h + 2·pad][w + 2·pad][cin];
// without padding the input itself) for the channel-vector kernel, or planar
// ([cin][h + 2·pad][w + 2·pad]: along a row of one channel the inputs of consecutive output
// positions are adjacent) for the planar one.
class Sample {
 public:
  Sample(const DirectConv& c, bool planar) : c_(c), planar_(planar) {}
  const float* get(const float* x, std::int64_t n) {
    const std::int64_t hp = c_.h + 2 * c_.pad, wp = c_.w + 2 * c_.pad, cin = c_.cin;
    const float* xn = x + n * c_.h * c_.w * cin;
    if (!planar_ && c_.pad == 0) return xn;
    if (n == n_) return buf_.data();
    // Planar: zeros past the last plane for the flat kernel's last vector (its lanes past the
    // output are computed, never stored).
    buf_.assign(static_cast<std::size_t>(cin * hp * wp + (planar_ ? 32 : 0)), 0.0f);
    for (std::int64_t iy = 0; iy < c_.h; ++iy) {
      const float* src = xn + iy * c_.w * cin;
      if (!planar_) {
        std::memcpy(&buf_[((iy + c_.pad) * wp + c_.pad) * cin], src, static_cast<std::size_t>(c_.w * cin) * sizeof(float));
        continue;
      }
      for (std::int64_t ci = 0; ci < cin; ++ci) {
        float* dst = &buf_[(ci * hp + iy + c_.pad) * wp + c_.pad];
        for (std::int64_t ix = 0; ix < c_.w; ++ix) dst[ix] = src[ix * cin + ci];
      }
    }
    n_ = n;
    return buf_.data();
  }

 private:
  const DirectConv& c_;
  const bool planar_;
  std::vector<float> buf_;
  std::int64_t n_ = -1;
};

// In AVX2/AVX-512 code: the 8×8 transpose of v (rows become columns).
inline void transpose8(__m256 v[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Output channels [g0, g0 + R) of B·8 positions from ox, stride 1, vectors along the output
// row: each weight is broadcast once for B·8 positions, so the work is exactly R·taps a
// position — it shrinks with the channel count, unlike a vector of 8 or 16 channels that
// costs the same for 9 channels as for 16. B·R independent accumulators keep both FMA pipes
// busy. An 8×8 transpose turns the result back into NHWC, stored straight into the output
// row: a partial group's 8-lane store spills into the next position's first channels, which
// its group 0 (stored later: groups go last to first) overwrites; a store that would reach
// past the row is masked.
template <int R, int B>
inline __attribute__((always_inline)) void planar_group(const DirectConv& c, const float* xp, std::int64_t oy, std::int64_t ky0, std::int64_t ky1,
                  std::int64_t ox, std::int64_t g0, float* yrow) {
  const std::int64_t rp = c.rows_padded, k = c.k, cin = c.cin, hp = c.h + 2 * c.pad, wp = c.w + 2 * c.pad;
  __m256 acc[B][R];
  _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b)
    _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) acc[b][r] = _mm256_broadcast_ss(&c.bias[g0 + r]);
  for (std::int64_t ci = 0; ci < cin; ++ci)
    for (std::int64_t ky = ky0; ky < ky1; ++ky) {
      const float* src = xp + (ci * hp + oy + ky) * wp + ox;
      const float* wt = c.wt.data() + (ky * k * cin + ci) * rp + g0;
      for (std::int64_t kx = 0; kx < k; ++kx) {
        __m256 xv[B];
        _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b) xv[b] = _mm256_loadu_ps(src + 8 * b + kx);
        const float* w = wt + kx * cin * rp;
        _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
          const __m256 wv = _mm256_broadcast_ss(w + r);
          _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b) acc[b][r] = _mm256_fmadd_ps(wv, xv[b], acc[b][r]);
        }
      }
    }
  _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b) {
    __m256 t[8];
    _Pragma("GCC unroll 16") for (int r = 0; r < 8; ++r) t[r] = r < R ? acc[b][r] : _mm256_setzero_ps();
    transpose8(t);
    _Pragma("GCC unroll 16") for (int p = 0; p < 8; ++p) {
      const std::int64_t at = (ox + 8 * b + p) * c.rows + g0, room = c.ow * c.rows - at;
      if (room >= 8) {
        _mm256_storeu_ps(yrow + at, t[p]);
      } else {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_maskstore_ps(yrow + at, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(room)), idx), t[p]);
      }
    }
  }
}

template <int R>
inline __attribute__((always_inline)) void planar_group_any_b(const DirectConv& c, const float* xp, std::int64_t oy, std::int64_t ky0, std::int64_t ky1,
                        std::int64_t ox, int blocks, std::int64_t g0, float* yrow) {
  // Two blocks at once where the accumulators fit in 16 registers (AVX2 has no more).
  if (blocks == 2 && R <= 6) return planar_group<R, 2>(c, xp, oy, ky0, ky1, ox, g0, yrow);
  for (int b = 0; b < blocks; ++b) planar_group<R, 1>(c, xp, oy, ky0, ky1, ox + 8 * b, g0, yrow);
}

// The planar row loop for a layer whose last channel group has RL channels (the others 8),
// every group call known at compile time.
template <int RL>
void planar_rows(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  Sample sample(c, true);
  const std::int64_t g_last = (c.rows - 1) / 8 * 8;
  for (std::int64_t row = r0; row < r1; ++row) {
    const std::int64_t n = row / c.oh, oy = row % c.oh;
    const float* xp = sample.get(x, n);
    // Kernel rows that fall on padding only add zeros: skip them.
    const std::int64_t ky0 = std::max<std::int64_t>(0, c.pad - oy), ky1 = std::min(c.k, c.h + c.pad - oy);
    float* yrow = y + row * c.ow * c.rows;
    auto run = [&](std::int64_t ox, int blocks) {
      planar_group_any_b<RL>(c, xp, oy, ky0, ky1, ox, blocks, g_last, yrow);  // last group first
      for (std::int64_t g0 = g_last - 8; g0 >= 0; g0 -= 8) planar_group_any_b<8>(c, xp, oy, ky0, ky1, ox, blocks, g0, yrow);
    };
    // Two-block steps; the row's end is one more that overlaps the previous (a lone block of
    // four channels would run at half speed, its four accumulators latency-bound).
    std::int64_t ox = 0;
    const int width = c.ow >= 16 ? 16 : 8;
    for (; ox + width <= c.ow; ox += width) run(ox, width / 8);
    if (ox < c.ow) run(c.ow - width, width / 8);
  }
}

// The planar path where asked for and possible.
inline bool conv_planar(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  if (c.layout != DirectConv::Layout::Planar || !c.planar_applies()) return false;
  switch ((c.rows - 1) % 8 + 1) {
    case 1: planar_rows<1>(c, x, y, r0, r1); break;
    case 2: planar_rows<2>(c, x, y, r0, r1); break;
    case 3: planar_rows<3>(c, x, y, r0, r1); break;
    case 4: planar_rows<4>(c, x, y, r0, r1); break;
    case 5: planar_rows<5>(c, x, y, r0, r1); break;
    case 6: planar_rows<6>(c, x, y, r0, r1); break;
    case 7: planar_rows<7>(c, x, y, r0, r1); break;
    default: planar_rows<8>(c, x, y, r0, r1); break;
  }
  return true;
}

// Flat planar (the Flat layout, stride 1): output position q = oy·wp + ox of the padded
// plane (wp its width) reads tap (ky, kx) at q + ky·wp + kx, so the rows of a sample join
// into one run of vectors — a 10-wide row does not leave lanes idle at its end — and each
// input vector loaded serves the R channels of a group (B·R accumulators in flight). The
// work is R·taps per position, so it shrinks with the channel count: 9 channels cost 9/16
// of 16, where a 16-channel vector costs the same for 9 as for 16. Positions with ox ≥ ow
// (the row's padding) are computed and not stored. Results go back to NHWC through 8×8
// transposes, 8 channels at a time, in masked stores of the group's channels only, so no
// store spills into another group's channels.
template <class L, int R, int B>
inline __attribute__((always_inline)) void flat_group(const DirectConv& c, const float* xp, std::int64_t q,
                                                      std::int64_t q_end, std::int64_t g0, float* yn) {
  using V = typename L::V;
  constexpr int N = L::N;
  const std::int64_t rp = c.rows_padded, k = c.k, cin = c.cin, hp = c.h + 2 * c.pad, wp = c.w + 2 * c.pad;
  V acc[B][R];
  _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b)
    _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) acc[b][r] = L::bcast(&c.bias[g0 + r]);
  for (std::int64_t ci = 0; ci < cin; ++ci)
    for (std::int64_t ky = 0; ky < k; ++ky) {
      const float* src = xp + (ci * hp + ky) * wp + q;
      const float* wt = c.wt.data() + (ky * k * cin + ci) * rp + g0;
      for (std::int64_t kx = 0; kx < k; ++kx) {
        V xv[B];
        _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b) xv[b] = L::load(src + N * b + kx);
        const float* w = wt + kx * cin * rp;
        _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) {
          const V wv = L::bcast(w + r);
          _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b) acc[b][r] = L::fma(wv, xv[b], acc[b][r]);
        }
      }
    }
  _Pragma("GCC unroll 16") for (int b = 0; b < B; ++b) {
    const std::int64_t qb = q + N * b;
    if (qb >= q_end) return;
    const std::int64_t oy = qb / wp, ox0 = qb - oy * wp;
    if constexpr (L::kInterleaves(R)) {
      // The layer's only group and a block within one row: its positions' channels are one
      // contiguous run of the output, written by interleaving the channel vectors.
      if (g0 == 0 && R == c.rows && ox0 + N <= wp) {
        const std::int64_t valid = std::min<std::int64_t>({N, c.ow - ox0, q_end - qb});
        if (valid > 0) L::template store_interleaved<R>(yn + (oy * c.ow + ox0) * R, acc[b], valid);
        continue;
      }
    }
    // Where the block's first stored position goes: qb itself, or the next row's first.
    float* const first = yn + (ox0 < c.ow ? oy * c.ow + ox0 : (oy + 1) * c.ow) * c.rows + g0;
    _Pragma("GCC unroll 4") for (int j = 0; j < (R + 7) / 8; ++j) {  // channels g0 + 8j … of the group
      constexpr int kLanes[2] = {R < 8 ? R : 8, R - 8 < 8 ? R - 8 : 8};
      const int lanes = kLanes[j];
      float* dst = first + 8 * j;
      std::int64_t ox = ox0, at = qb;
      _Pragma("GCC unroll 2") for (int h = 0; h < N / 8; ++h) {
        __m256 t[8];
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; ++r) t[r] = 8 * j + r < R ? L::half(acc[b][8 * j + r], h) : _mm256_setzero_ps();
        transpose8(t);
        for (int p = 0; p < 8 && at < q_end; ++p, ++at) {
          if (ox < c.ow) {
            L::store8(dst, t[p], lanes);
            dst += c.rows;
          }
          if (++ox == wp) ox = 0;
        }
      }
    }
  }
}

// The last chunk of a run, shorter than B blocks: as many blocks as it needs.
template <class L, int R, int B>
void flat_tail(const DirectConv& c, const float* xp, std::int64_t q, std::int64_t q_end, std::int64_t g0, float* yn) {
  if constexpr (B > 1)
    if ((q_end - q + L::N - 1) / L::N < B) return flat_tail<L, R, B - 1>(c, xp, q, q_end, g0, yn);
  flat_group<L, R, B>(c, xp, q, q_end, g0, yn);
}

// Channels [g0, g0 + R) of output rows [r0, r1) (batch × oh of them) by the flat kernel.
template <class L, int R>
void flat_rows(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1, std::int64_t g0) {
  constexpr int B = std::clamp(L::kAccumulators / R, 1, 6);
  Sample sample(c, true);
  const std::int64_t wp = c.w + 2 * c.pad;
  for (std::int64_t n = r0 / c.oh; n * c.oh < r1; ++n) {
    const std::int64_t oy0 = std::max<std::int64_t>(r0 - n * c.oh, 0), oy1 = std::min(r1 - n * c.oh, c.oh);
    const float* xp = sample.get(x, n);
    float* yn = y + n * c.oh * c.ow * c.rows;
    const std::int64_t q_end = (oy1 - 1) * wp + c.ow;
    std::int64_t q = oy0 * wp;
    for (; q + L::N * B <= q_end; q += L::N * B) flat_group<L, R, B>(c, xp, q, q_end, g0, yn);
    if (q < q_end) flat_tail<L, R, B>(c, xp, q, q_end, g0, yn);
  }
}

template <class L, int P>
void conv_rows(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  using V = typename L::V;
  const std::int64_t rp = c.rows_padded, cin = c.cin, k = c.k, s = c.stride;
  const std::int64_t wp = c.w + 2 * c.pad, run = k * cin, step = s * cin;
  const bool one_chunk = c.rows <= L::N;
  Sample sample(c, false);
  for (std::int64_t row = r0; row < r1; ++row) {
    const std::int64_t n = row / c.oh, oy = row % c.oh;
    const float* xn = sample.get(x, n);  // [rows of wp × cin] in padded coordinates
    // Kernel rows that fall on padding only add zeros: skip them.
    const std::int64_t ky0 = std::max<std::int64_t>(0, c.pad - oy * s), ky1 = std::min(k, c.h + c.pad - oy * s);
    float* yrow = y + row * c.ow * c.rows;
    for (std::int64_t c0 = 0; c0 < c.rows; c0 += L::N) {
      const int lanes = static_cast<int>(std::min<std::int64_t>(L::N, c.rows - c0));
      const V b = L::load(c.bias.data() + c0);
      // A full-width store spills into the following positions' channels, which are stored
      // after it (one chunk only: with several, the spill would hit a chunk already written);
      // a store that would reach past the row is masked.
      auto store = [&](std::int64_t ox, V v) {
        float* dst = yrow + ox * c.rows + c0;
        if (lanes == L::N || (one_chunk && ox * c.rows + L::N <= c.ow * c.rows)) L::store_full(dst, v);
        else L::store(dst, v, lanes);
      };
      auto block = [&](std::int64_t ox) {
        V acc[P];
        for (int p = 0; p < P; ++p) acc[p] = b;
        for (std::int64_t ky = ky0; ky < ky1; ++ky) {
          const float* src = xn + ((oy * s + ky) * wp + ox * s) * cin;
          const float* wt = c.wt.data() + ky * run * rp + c0;
          for (std::int64_t t = 0; t < run; ++t) {
            const V wv = L::load(wt + t * rp);
            for (int p = 0; p < P; ++p) acc[p] = L::fma(L::bcast(src + p * step + t), wv, acc[p]);
          }
        }
        for (int p = 0; p < P; ++p) store(ox + p, acc[p]);
      };
      std::int64_t ox = 0;
      for (; ox + P <= c.ow; ox += P) block(ox);
      if (ox < c.ow && c.ow >= P) {
        block(c.ow - P);
      } else {
        for (; ox < c.ow; ++ox) {  // rows narrower than one block
          V acc = b;
          for (std::int64_t ky = ky0; ky < ky1; ++ky) {
            const float* src = xn + ((oy * s + ky) * wp + ox * s) * cin;
            const float* wt = c.wt.data() + ky * run * rp + c0;
            for (std::int64_t t = 0; t < run; ++t) acc = L::fma(L::bcast(src + t), L::load(wt + t * rp), acc);
          }
          store(ox, acc);
        }
      }
    }
  }
}

struct Ymm {
  using V = __m256;
  static constexpr int N = 8;
#ifdef __AVX512F__
  static constexpr int kAccumulators = 16, kMaxGroup = 8;  // of 32 registers
  static void store8(float* p, __m256 v, int lanes) { _mm256_mask_storeu_ps(p, static_cast<__mmask8>((1u << lanes) - 1), v); }
#else
  static constexpr int kAccumulators = 12, kMaxGroup = 8;  // of 16 registers
  static void store8(float* p, __m256 v, int lanes) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), idx), v);
  }
#endif
  static __m256 half(__m256 v, int) { return v; }
  static constexpr bool kInterleaves(int) { return false; }
  template <int R>
  static void store_interleaved(float*, const V*, std::int64_t) {}
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static void store_full(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, V v, int lanes) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), idx), v);
  }
};

#ifdef __AVX512F__
struct Zmm {
  using V = __m512;
  static constexpr int N = 16;
  static constexpr int kAccumulators = 24, kMaxGroup = 12;  // of 32 registers
  // AVX-512VL's mask register store: VMASKMOVPS stores are slow on AMD cores.
  static void store8(float* p, __m256 v, int lanes) { _mm256_mask_storeu_ps(p, static_cast<__mmask8>((1u << lanes) - 1), v); }
  static __m256 half(__m512 v, int h) { return h ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v); }
  // R channel vectors of 16 positions → positions × R channels, the first `valid` positions.
  static constexpr bool kInterleaves(int r) { return r == 1 || r == 2 || r == 4; }
  template <int R>
  static void store_interleaved(float* p, const V* a, std::int64_t valid) {
    V o[R];
    if constexpr (R == 1) {
      o[0] = a[0];
    } else if constexpr (R == 2) {
      // Per 128-bit lane l: lo = positions 4l, 4l+1; hi = 4l+2, 4l+3 (each a0, a1).
      const V lo = _mm512_unpacklo_ps(a[0], a[1]), hi = _mm512_unpackhi_ps(a[0], a[1]);
      const V v0 = _mm512_shuffle_f32x4(lo, hi, 0x44), v1 = _mm512_shuffle_f32x4(lo, hi, 0xEE);  // lo0 lo1 hi0 hi1
      o[0] = _mm512_shuffle_f32x4(v0, v0, 0xD8), o[1] = _mm512_shuffle_f32x4(v1, v1, 0xD8);   // lo0 hi0 lo1 hi1
    } else {
      // u_i lane l = position 4l + i (channels 0..3); then a 4×4 transpose of 128-bit lanes.
      const V t0 = _mm512_unpacklo_ps(a[0], a[1]), t1 = _mm512_unpackhi_ps(a[0], a[1]);
      const V t2 = _mm512_unpacklo_ps(a[2], a[3]), t3 = _mm512_unpackhi_ps(a[2], a[3]);
      const V u0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
      const V u1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
      const V u2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
      const V u3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
      const V v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u2, u3, 0x44);
      const V v2 = _mm512_shuffle_f32x4(u0, u1, 0xEE), v3 = _mm512_shuffle_f32x4(u2, u3, 0xEE);
      o[0] = _mm512_shuffle_f32x4(v0, v1, 0x88), o[1] = _mm512_shuffle_f32x4(v0, v1, 0xDD);
      o[2] = _mm512_shuffle_f32x4(v2, v3, 0x88), o[3] = _mm512_shuffle_f32x4(v2, v3, 0xDD);
    }
    const std::int64_t n = valid * R;
    for (int m = 0; m < R; ++m) {
      const std::int64_t cnt = std::clamp<std::int64_t>(n - 16 * m, 0, 16);
      if (cnt == 16) _mm512_storeu_ps(p + 16 * m, o[m]);
      else if (cnt > 0) _mm512_mask_storeu_ps(p + 16 * m, static_cast<__mmask16>((1u << cnt) - 1), o[m]);
    }
  }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store_full(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, V v, int lanes) { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << lanes) - 1), v); }
};
#endif

// The Flat layout where asked for and possible: the channels in near-equal groups of at most
// L::kMaxGroup, each group by the flat planar kernel.
template <class L>
bool conv_flat(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  if (c.layout != DirectConv::Layout::Flat || !c.flat_applies()) return false;
  using Fn = void (*)(const DirectConv&, const float*, float*, std::int64_t, std::int64_t, std::int64_t);
  static constexpr Fn kByChannels[] = {nullptr,           flat_rows<L, 1>,  flat_rows<L, 2>,  flat_rows<L, 3>,
                                       flat_rows<L, 4>,   flat_rows<L, 5>,  flat_rows<L, 6>,  flat_rows<L, 7>,
                                       flat_rows<L, 8>,   flat_rows<L, 9>,  flat_rows<L, 10>, flat_rows<L, 11>,
                                       flat_rows<L, 12>};
  static_assert(L::kMaxGroup <= 12);
  const std::int64_t groups = (c.rows + L::kMaxGroup - 1) / L::kMaxGroup;
  for (std::int64_t g = 0, g0 = 0; g < groups; ++g) {
    const std::int64_t size = c.rows / groups + (g < c.rows % groups ? 1 : 0);
    kByChannels[size](c, x, y, r0, r1, g0);
    g0 += size;
  }
  return true;
}

}  // namespace
}  // namespace prunus::kernels::conv_simd
