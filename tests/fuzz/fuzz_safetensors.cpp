// libFuzzer target: the safetensors validator on arbitrary bytes.
#include <cstdint>

#include "prunus/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto f = prunus::safetensors::File::parse(data, size, "fuzz");
    for (const auto& t : f.tensors())
      if (t.dtype == prunus::safetensors::DType::F32 || t.dtype == prunus::safetensors::DType::F16 ||
          t.dtype == prunus::safetensors::DType::BF16)
        (void)t.to_f32();  // touches every byte the header promised
  } catch (const prunus::InputError&) {
  }
  return 0;
}
