// prunus/idx.h — IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed.
// Part of prunus_runtime: no libtorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace prunus::idx {

// An IDX array of unsigned bytes (type code 0x08), the only type (Fashion-)MNIST uses.
struct Array {
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> data;  // row-major, product(dims) bytes
};

// Reads `path` (gzip is detected by its magic, so both .gz and raw files work).
// Validates the magic (two zero bytes, type 0x08, rank 1..4), that every dimension is
// non-zero and that the payload is exactly product(dims) bytes; InputError otherwise.
Array read(const std::string& path);

// Same validation on bytes already in memory (decompressed).
Array parse(const std::vector<std::uint8_t>& bytes, const std::string& name);

}  // namespace prunus::idx
