// prunus/kernels.h — sparse weight formats and the kernels that multiply by them.
// Part of prunus_runtime: no libtorch.
//
// Every kernel computes Y = X · Wᵀ, the nn.Linear convention: W is [rows × cols] (out × in),
// X is [batch × cols] row-major, Y is [batch × rows] row-major, fp32 with fp32 accumulation.
// Each format has a plain scalar reference and SIMD variants (AVX2+FMA, AVX-512) chosen at
// run time by CPUID; tests compare every variant with the reference. Multithreaded work is
// split by non-zeros, not by rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

namespace prunus::kernels {

// ------------------------------------------------------------------ ISA dispatch
enum class Isa { Scalar, Avx2, Avx512 };
const char* isa_name(Isa isa);
bool isa_supported(Isa isa);       // compiled in and reported by CPUID
Isa best_isa();                    // PRUNUS_ISA=scalar|avx2|avx512 caps it (for testing)
std::vector<Isa> supported_isas(); // always includes Scalar
std::string cpu_features();        // e.g. "avx2 fma avx512f avx512bw avx512vl avx512dq"

// ------------------------------------------------------------------ formats
// Storage for weights and activations. Every array starts on a 64-byte line: formats with
// fixed-size rows or blocks (N:M, BSR) then load whole vectors without splitting a cache line
// (a split 64-byte load costs two; std::vector's default lands 16 bytes past a line). Arrays of
// 2 MiB and more start on a 2 MiB boundary and are advised into transparent huge pages: a
// batch-1 product streams its weights once, and with 4 KiB pages it walks the page table every
// 4 KiB (Zen 4, 4096² cold, both on huge pages or both not, in one process: OpenBLAS sgemv
// -9%, bitmask GEMV -11..-30%; LLaMA-shape decode -3..-10%). PRUNUS_HUGE_PAGES=0 turns it off.
namespace detail {
void* allocate_aligned(std::size_t bytes);
void free_aligned(void* p, std::size_t bytes) noexcept;
}  // namespace detail
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(detail::allocate_aligned(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { detail::free_aligned(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept { return true; }
};
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

// All converters take a dense row-major matrix and keep exactly its non-zeros (-0.0 counts
// as zero); to_dense gives back the same bytes (zeros as +0.0).

// Compressed sparse rows. Column indices are 16-bit when cols ≤ 65536, else 32-bit.
struct Csr {
  std::int64_t rows = 0, cols = 0;
  std::vector<std::uint32_t> row_ptr;  // rows + 1
  AlignedVector<std::uint16_t> col16;  // used when cols <= 65536
  AlignedVector<std::uint32_t> col32;  // used otherwise
  AlignedVector<float> values;
  bool narrow() const { return cols <= 65536; }
  std::int64_t nnz() const { return static_cast<std::int64_t>(values.size()); }
  std::uint64_t bytes() const;
};

// One bit per weight (row-major, each row padded to 64 bits) plus the non-zeros in order.
struct Bitmask {
  std::int64_t rows = 0, cols = 0;
  std::int64_t words_per_row = 0;       // ceil(cols / 64)
  AlignedVector<std::uint64_t> bits;    // rows × words_per_row
  std::vector<std::uint32_t> row_ptr;   // offset of each row's first value (rows + 1)
  AlignedVector<float> values;          // padded with 16 zeros so SIMD loads may run past the end
  std::int64_t nnz() const { return row_ptr.empty() ? 0 : row_ptr.back(); }
  std::uint64_t bytes() const;
};

// Block sparse rows: br × bc dense blocks (ragged edges zero-padded inside the block).
struct Bsr {
  std::int64_t rows = 0, cols = 0, br = 1, bc = 1;
  std::int64_t block_rows = 0, block_cols = 0;
  std::vector<std::uint32_t> block_ptr;  // block_rows + 1
  std::vector<std::uint32_t> block_col;  // block-column index of each stored block
  AlignedVector<float> values;           // stored blocks, each br × bc row-major
  std::int64_t blocks() const { return static_cast<std::int64_t>(block_col.size()); }
  std::uint64_t bytes() const;
};

// N:M along each row: every group of m consecutive weights keeps n slots (values that are
// zero fill unused slots). Slot j of a group stores the weight's position in its group in
// 4 bits (m ≤ 16), 16 slots per 64-bit word. cols must be a multiple of m.
struct NM {
  std::int64_t rows = 0, cols = 0, n = 2, m = 4;
  std::int64_t slots_per_row = 0;        // cols / m * n
  AlignedVector<float> values;           // rows × slots_per_row
  std::vector<std::uint64_t> index;      // rows × ceil(slots_per_row / 16)
  std::int64_t words_per_row() const { return (slots_per_row + 15) / 16; }
  std::uint64_t bytes() const;
};

// Sliced ELLPACK with column windows, for small layers whose weights stay in cache (SELL-16-σ,
// Kreutzer et al., with the columns cut into windows of 32). Rows are sorted by their number of
// non-zeros and cut into slices of 16, one vector lane per row. For each slice and each window
// where a row of the slice has a non-zero, `steps` steps of 16 values and 16 byte positions
// within the window; a row with fewer non-zeros there pads its lane with zeros. One step is one
// permute of the window's 32 x values (two vectors) and one FMA: no gathers, no per-row sums
// and no per-row tails, which is what a batch-1 CSR product of short rows spends its time on.
// The padding costs bytes (LeNet-300-100's first layer at 92% zeros: 40% of the lanes hold a
// weight, 2× CSR's bytes), so the format pays only where the weights are read from cache.
struct Sell {
  static constexpr std::int64_t kLanes = 16, kWindow = 32;
  struct Window {
    std::uint16_t index;  // columns [32·index, 32·index + 32)
    std::uint16_t steps;  // ≤ 32
  };
  std::int64_t rows = 0, cols = 0, nnz = 0;
  std::vector<std::uint32_t> row_of_lane;   // lane l of slice s computes row row_of_lane[16·s + l]
  std::vector<std::uint32_t> slice_window;  // slices + 1: each slice's first window
  std::vector<std::uint32_t> slice_step;    // slices + 1: each slice's first step (its work)
  std::vector<Window> windows;
  AlignedVector<float> values;              // steps × 16
  AlignedVector<std::uint8_t> pos;          // steps × 16: column within the window
  std::int64_t slices() const { return (rows + kLanes - 1) / kLanes; }
  std::uint64_t bytes() const;
};

Csr to_csr(const float* w, std::int64_t rows, std::int64_t cols);
Bitmask to_bitmask(const float* w, std::int64_t rows, std::int64_t cols);
Bsr to_bsr(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t br, std::int64_t bc);
// Throws std::invalid_argument if a group has more than n non-zeros or cols % m != 0.
NM to_nm(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t n, std::int64_t m);
// Throws std::invalid_argument if cols > 65536 · 32.
Sell to_sell(const float* w, std::int64_t rows, std::int64_t cols);

void to_dense(const Csr& a, float* out);
void to_dense(const Bitmask& a, float* out);
void to_dense(const Bsr& a, float* out);
void to_dense(const NM& a, float* out);
void to_dense(const Sell& a, float* out);

// ------------------------------------------------------------------ kernels
// How a batch of activations lies in memory. BatchMajor: X[batch × cols] in, Y[batch × rows]
// out, one sample after another (a model's activations). FeatureMajor: Xᵀ[cols × batch] in,
// Yᵀ[rows × batch] out, the form of torch::mm(W, Xᵀ), for a pipeline that keeps activations
// feature by feature. The batch > 1 SIMD kernels walk Xᵀ, so FeatureMajor skips the transposes
// of X and of Y (768×3072 at 95%, batch 256: 1.74 -> 1.36 ms). At batch 1
// the two are the same bytes.
enum class ActivationLayout { BatchMajor, FeatureMajor };

struct Options {
  Isa isa = best_isa();
  int threads = 1;
  // A thread is used only for at least this many multiply-adds (waking one costs microseconds);
  // tests set 0 to split even tiny products.
  double min_macs_per_thread = 256 * 1024;
  ActivationLayout layout = ActivationLayout::BatchMajor;  // last, so {isa, threads, min_macs} still initialises the rest
};

// Y[batch × rows] = X[batch × cols] · Wᵀ (Yᵀ = W · Xᵀ with ActivationLayout::FeatureMajor).
void matmul(const Csr& w, const float* x, std::int64_t batch, float* y, const Options& opt = {});
void matmul(const Bitmask& w, const float* x, std::int64_t batch, float* y, const Options& opt = {});
void matmul(const Bsr& w, const float* x, std::int64_t batch, float* y, const Options& opt = {});
void matmul(const NM& w, const float* x, std::int64_t batch, float* y, const Options& opt = {});
// Batch > 1 takes up to four rows of X per pass over the weights (the format is for small batches).
void matmul(const Sell& w, const float* x, std::int64_t batch, float* y, const Options& opt = {});
// ------------------------------------------------------------------ INT8
// Weights quantized symmetrically per output row: s_r = max|w_r| / 127, q = round(w / s_r)
// (a zero stays exactly zero). Activations are quantized per input row at each call (dynamic,
// per token): a_b = max|x_b| / 127, x_q = round(x / a_b), or with a fixed per-tensor scale
// (static, calibrated) when one is given. y = a_b · s_r · Σ q·x_q with int32 accumulation:
// exact in integers, so every ISA variant gives the same bits as the scalar reference.
// The AVX-512 variants need VNNI (vpdpbusd) and VBMI/VBMI2 (byte permutes and compress);
// without them the AVX2 variant runs (16-bit madd).
struct Int8Bitmask {
  std::int64_t rows = 0, cols = 0;
  std::int64_t words_per_row = 0;       // ceil(cols / 64)
  std::vector<std::uint64_t> bits;      // rows × words_per_row
  std::vector<std::uint32_t> row_ptr;   // rows + 1
  std::vector<std::int8_t> values;      // non-zeros in order, padded with 128 zeros
  std::vector<float> scale;             // per row
  std::vector<std::int32_t> row_sum;    // Σ q per row (for the unsigned-activation offset)
  std::int64_t nnz() const { return row_ptr.empty() ? 0 : row_ptr.back(); }
  std::uint64_t bytes() const;
};

// N:M with int8 values: each window of `window` columns (128, or 64 when n/m > 1/2) keeps
// window·n/m slots, padded to 64 per window; `pos` gives each slot's column within its window.
struct Int8NM {
  std::int64_t rows = 0, cols = 0, n = 2, m = 4;
  std::int64_t window = 128, windows_per_row = 0;
  std::vector<std::int8_t> values;      // rows × windows_per_row × 64
  std::vector<std::uint8_t> pos;        // same layout
  std::vector<float> scale;
  std::vector<std::int32_t> row_sum;
  std::uint64_t bytes() const;          // values + 2-bit-per-slot index as stored on disk, + scales
};

Int8Bitmask quantize_bitmask(const float* w, std::int64_t rows, std::int64_t cols);
// Throws std::invalid_argument if a group of m has more than n non-zeros or cols % m != 0.
Int8NM quantize_nm(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t n, std::int64_t m);
void to_dense(const Int8Bitmask& a, float* out);  // dequantized: q · s_r
void to_dense(const Int8NM& a, float* out);
bool int8_vnni_supported();  // avx512 f/bw/vl + vnni + vbmi + vbmi2

// Y[batch × rows] = X[batch × cols] · Wᵀ (FeatureMajor: through a transpose each way). act_scale > 0: static per-tensor activation scale
// (values beyond ±127·scale saturate); 0: dynamic per-row scales.
void matmul(const Int8Bitmask& w, const float* x, std::int64_t batch, float* y, const Options& opt = {},
            float act_scale = 0);
void matmul(const Int8NM& w, const float* x, std::int64_t batch, float* y, const Options& opt = {}, float act_scale = 0);

// The runtime's own dense path (row-major W), same convention (either layout: OpenBLAS reads
// both).
void matmul_dense(const float* w, std::int64_t rows, std::int64_t cols, const float* x, std::int64_t batch,
                  float* y, const Options& opt = {});

// ------------------------------------------------------------------ direct convolution
// Y = conv2d(X) + bias on NHWC values without an im2col buffer. For layers with few output
// channels the im2col copy costs more than the products (LeNet-5's one-channel first conv:
// 25 floats copied per 6 multiply-adds), and its cost does not shrink when channels are
// pruned away. The weights are kept tap-major, [k·k·cin × rows_padded] with rows rounded up
// to 16, so one vector holds one tap's weights for 8 or 16 output channels.
struct DirectConv {
  std::int64_t h = 0, w = 0, cin = 0;      // input
  std::int64_t rows = 0, k = 1, stride = 1, pad = 0;
  std::int64_t oh = 0, ow = 0;             // output
  std::int64_t rows_padded = 0;
  std::vector<float> wt;                   // [k·k·cin × rows_padded]
  std::vector<float> bias;                 // [rows_padded]
  // How the SIMD variants lay out the work; the runtime times each layout that applies.
  //  Channels: a vector holds 8 or 16 output channels of one position (any stride).
  //  Planar: a vector holds 8 positions of one channel along an output row (stride 1, rows of
  //    8 or more): the work shrinks with the channel count, but narrow rows waste lanes.
  //  Flat: planar vectors over the whole padded plane (rows joined, so row ends lose few
  //    lanes; 16 positions a vector on AVX-512), channels in groups of up to 12 sharing each
  //    input load (stride 1): 9 channels cost 9/16 of 16, not all 16 lanes.
  enum class Layout { Channels, Planar, Flat };
  Layout layout = Layout::Channels;
  bool planar_applies() const { return stride == 1 && ow >= 8; }
  bool flat_applies() const { return stride == 1; }
  double macs_per_sample() const { return double(oh * ow) * double(rows) * double(k * k * cin); }
};
// w: [rows × k·k·cin], each row in (ky, kx, ci) order (the runtime's im2col order); bias may be
// null. Throws std::invalid_argument when the kernel does not fit the padded input.
DirectConv pack_direct_conv(const float* w, const float* bias, std::int64_t rows, std::int64_t cin, std::int64_t k,
                            std::int64_t stride, std::int64_t pad, std::int64_t h, std::int64_t w_in);
// x: [batch × h × w × cin], y: [batch × oh × ow × rows].
void conv_direct(const DirectConv& c, const float* x, std::int64_t batch, float* y, const Options& opt = {});

}  // namespace prunus::kernels

namespace prunus::kernels {

// A weight matrix in whichever format runs fastest here: the applicable formats (dense
// always; CSR and bitmask; BSR 4×4 when the zeros come in blocks; N:M when the rows obey
// 2:4 or 4:8) are each timed on a few calls at the expected batch size, and the fastest
// kept. Dense competes, so a sparse format is chosen only when it measured faster.
class SparseLinear {
 public:
  enum class Format { Dense, Csr, Bitmask, Bsr, NM, Int8Bitmask, Int8NM, Sell };
  static const char* format_name(Format f);

  static SparseLinear build(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t batch_hint,
                            const Options& opt = {});
  // INT8 weights (per-row scales; zeros stay zero) with per-token INT8 activations: the
  // bitmask form, or N:M when the rows obey 2:4 or 4:8 and it measures faster. The dense
  // fp32 time is measured too, for speedup().
  static SparseLinear build_int8(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t batch_hint,
                                 const Options& opt = {});
  // Always dense (OpenBLAS): the baseline the sparse formats are measured against.
  static SparseLinear dense(const float* w, std::int64_t rows, std::int64_t cols, const Options& opt = {});
  // Y[batch × rows] = X[batch × cols] · Wᵀ.
  void forward(const float* x, std::int64_t batch, float* y) const;

  Format format() const { return format_; }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  std::int64_t nnz() const { return nnz_; }
  std::uint64_t bytes() const;                        // of the chosen format
  std::uint64_t dense_bytes() const { return std::uint64_t(rows_ * cols_) * 4; }
  double measured_seconds() const { return seconds_; }        // chosen format, per call
  double measured_dense_seconds() const { return dense_seconds_; }
  double speedup() const { return seconds_ > 0 ? dense_seconds_ / seconds_ : 1.0; }
  // INT8 formats: one static per-tensor activation scale (0: per token at each call).
  void set_act_scale(float s) { act_scale_ = s; }
  float act_scale() const { return act_scale_; }
  bool is_int8() const { return format_ == Format::Int8Bitmask || format_ == Format::Int8NM; }
  // The dense weights when the format is Dense (e.g. a classifier shared with the embedding).
  const float* dense_data() const { return format_ == Format::Dense ? dense_.data() : nullptr; }

 private:
  // Shape, options and non-zero count, no format yet.
  static SparseLinear shell(const float* w, std::int64_t rows, std::int64_t cols, const Options& opt);
  Format format_ = Format::Dense;
  std::int64_t rows_ = 0, cols_ = 0, nnz_ = 0;
  Options opt_;
  AlignedVector<float> dense_;
  Csr csr_;
  Bitmask bitmask_;
  Bsr bsr_;
  NM nm_;
  Sell sell_;
  Int8Bitmask int8_bitmask_;
  Int8NM int8_nm_;
  double seconds_ = 0, dense_seconds_ = 0;
  float act_scale_ = 0;
};

}  // namespace prunus::kernels
