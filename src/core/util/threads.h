// Compute threads for the libtorch side.
#pragma once

#include <ATen/Parallel.h>

extern "C" void openblas_set_num_threads(int num_threads);

namespace prunus {

// `n` threads for libtorch and for the OpenBLAS under it (n ≤ 0: leave both alone).
// libtorch's set_num_threads does not reach a pthreads OpenBLAS (Debian's), whose own pool
// keeps the machine's core count: a `threads: 1` run then multiplied on two threads that spin
// between calls (a one-epoch LeNet-300-100 fine-tune beside two other jobs: 4.80 s, 3.32 s with
// OpenBLAS on one thread), and its sums depended on the machine's core count.
inline void set_compute_threads(int n) {
  if (n <= 0) return;
  at::set_num_threads(n);
  openblas_set_num_threads(n);
}

}  // namespace prunus
