// INT8 formats (quantize, dequantize) and the scalar reference kernels: the plain integer
// sums every SIMD variant must reproduce bit for bit.
#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels_internal.h"

namespace prunus::kernels {
namespace {

// Symmetric per-row scale; a row of zeros gets scale 1 (its codes are all 0 anyway).
float row_scale(const float* w, std::int64_t cols) {
  float amax = 0;
  for (std::int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(w[c]));
  return amax > 0 ? amax / 127.0f : 1.0f;
}

std::int8_t code(float w, float s) {
  return static_cast<std::int8_t>(std::clamp(std::nearbyint(w / s), -127.0f, 127.0f));
}

void check_cols(std::int64_t cols) {
  // Σ |q·x_u8| ≤ 127·255·cols must fit in int32.
  if (cols > 65536) throw std::invalid_argument("INT8 kernels take at most 65536 columns, got " + std::to_string(cols));
}

}  // namespace

bool int8_vnni_supported() {
  return isa_supported(Isa::Avx512) && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512vbmi2");
}

std::uint64_t Int8Bitmask::bytes() const {
  return bits.size() * 8 + row_ptr.size() * 4 + static_cast<std::uint64_t>(nnz()) + scale.size() * 4 + row_sum.size() * 4;
}

std::uint64_t Int8NM::bytes() const { return values.size() + pos.size() + scale.size() * 4 + row_sum.size() * 4; }

Int8Bitmask quantize_bitmask(const float* w, std::int64_t rows, std::int64_t cols) {
  check_cols(cols);
  Int8Bitmask a;
  a.rows = rows;
  a.cols = cols;
  a.words_per_row = (cols + 63) / 64;
  a.bits.assign(static_cast<std::size_t>(rows * a.words_per_row), 0);
  a.row_ptr.assign(static_cast<std::size_t>(rows + 1), 0);
  a.scale.resize(static_cast<std::size_t>(rows));
  a.row_sum.assign(static_cast<std::size_t>(rows), 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    const float s = row_scale(wr, cols);
    a.scale[r] = s;
    for (std::int64_t c = 0; c < cols; ++c) {
      if (wr[c] == 0.0f) continue;  // -0.0 too
      a.bits[r * a.words_per_row + c / 64] |= std::uint64_t(1) << (c % 64);
      const auto q = code(wr[c], s);
      a.values.push_back(q);
      a.row_sum[r] += q;
    }
    a.row_ptr[r + 1] = static_cast<std::uint32_t>(a.values.size());
  }
  a.values.resize(a.values.size() + 128, 0);
  return a;
}

Int8NM quantize_nm(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t n, std::int64_t m) {
  check_cols(cols);
  if (!(n > 0 && n < m && m <= 16) || cols % m != 0)
    throw std::invalid_argument("N:M INT8 needs 0 < n < m <= 16 and cols % m == 0");
  Int8NM a;
  a.rows = rows;
  a.cols = cols;
  a.n = n;
  a.m = m;
  a.window = 2 * n <= m ? 128 : 64;  // window·n/m slots must fit in 64
  a.windows_per_row = (cols + a.window - 1) / a.window;
  const std::size_t per_row = static_cast<std::size_t>(a.windows_per_row * 64);
  a.values.assign(static_cast<std::size_t>(rows) * per_row, 0);
  a.pos.assign(static_cast<std::size_t>(rows) * per_row, 0);
  a.scale.resize(static_cast<std::size_t>(rows));
  a.row_sum.assign(static_cast<std::size_t>(rows), 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    const float s = row_scale(wr, cols);
    a.scale[r] = s;
    for (std::int64_t g = 0; g < cols / m; ++g) {
      std::int64_t kept = 0;
      const std::int64_t win = g * m / a.window, first_slot = (g * m % a.window) / m * n;
      for (std::int64_t j = 0; j < m; ++j) {
        const std::int64_t c = g * m + j;
        if (wr[c] == 0.0f) continue;
        if (kept == n) throw std::invalid_argument("a group of " + std::to_string(m) + " has more than " +
                                                   std::to_string(n) + " non-zeros (row " + std::to_string(r) + ")");
        const std::size_t at = static_cast<std::size_t>(r) * per_row + static_cast<std::size_t>(win * 64 + first_slot + kept);
        a.values[at] = code(wr[c], s);
        a.pos[at] = static_cast<std::uint8_t>(c % a.window);
        a.row_sum[r] += a.values[at];
        ++kept;
      }
      // Unused slots keep value 0; point them at their group so the layout stays readable.
      for (; kept < n; ++kept)
        a.pos[static_cast<std::size_t>(r) * per_row + static_cast<std::size_t>(win * 64 + first_slot + kept)] =
            static_cast<std::uint8_t>(g * m % a.window);
    }
  }
  return a;
}

void to_dense(const Int8Bitmask& a, float* out) {
  std::fill(out, out + a.rows * a.cols, 0.0f);
  for (std::int64_t r = 0; r < a.rows; ++r) {
    std::uint32_t k = a.row_ptr[r];
    for (std::int64_t c = 0; c < a.cols; ++c)
      if (a.bits[r * a.words_per_row + c / 64] >> (c % 64) & 1) out[r * a.cols + c] = float(a.values[k++]) * a.scale[r];
  }
}

void to_dense(const Int8NM& a, float* out) {
  std::fill(out, out + a.rows * a.cols, 0.0f);
  const std::int64_t per_row = a.windows_per_row * 64;
  for (std::int64_t r = 0; r < a.rows; ++r)
    for (std::int64_t i = 0; i < per_row; ++i) {
      const auto q = a.values[r * per_row + i];
      if (q) out[r * a.cols + (i / 64) * a.window + a.pos[r * per_row + i]] = float(q) * a.scale[r];
    }
}

namespace scalar {

// Σ q·x_q with x_q = x_u8 − 128, directly (no offset trick): the reference.
void int8_bitmask(const Int8Bitmask& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const std::uint8_t* x = a.xq + b * a.x_stride;
    for (std::int64_t r = r0; r < r1; ++r) {
      std::int32_t acc = 0;
      std::uint32_t k = w.row_ptr[r];
      for (std::int64_t word = 0; word < w.words_per_row; ++word)
        for (std::uint64_t bits = w.bits[r * w.words_per_row + word]; bits; bits &= bits - 1) {
          const std::int64_t c = word * 64 + std::countr_zero(bits);
          acc += std::int32_t(w.values[k++]) * (std::int32_t(x[c]) - 128);
        }
      a.y[b * w.rows + r] = int8_dequant(acc, a.x_scale[b], w.scale[r]);
    }
  }
}

void int8_nm(const Int8NM& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t per_row = w.windows_per_row * 64;
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const std::uint8_t* x = a.xq + b * a.x_stride;
    for (std::int64_t r = r0; r < r1; ++r) {
      std::int32_t acc = 0;
      for (std::int64_t i = 0; i < per_row; ++i) {
        const std::int64_t c = (i / 64) * w.window + w.pos[r * per_row + i];
        acc += std::int32_t(w.values[r * per_row + i]) * (std::int32_t(x[c]) - 128);
      }
      a.y[b * w.rows + r] = int8_dequant(acc, a.x_scale[b], w.scale[r]);
    }
  }
}

}  // namespace scalar
}  // namespace prunus::kernels
