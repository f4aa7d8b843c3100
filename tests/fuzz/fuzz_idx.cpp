// libFuzzer target: the IDX validator on arbitrary (decompressed) bytes.
#include <cstdint>
#include <vector>

#include "prunus/idx.h"
#include "prunus/io.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    prunus::idx::parse(std::vector<std::uint8_t>(data, data + size), "fuzz");
  } catch (const prunus::InputError&) {
  }
  return 0;
}
