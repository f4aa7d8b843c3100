// libFuzzer target: a Hugging Face folder's JSON files. The first byte picks config.json
// (even: sizes and the compressed-tensors sparsity layout), model.safetensors.index.json (odd)
// or, when it is 2 mod 4, a tokenizer.json (16 tokens) and an encode through it; the rest is the
// file's text.
#include <cstdint>
#include <string>

#include "prunus/hf.h"
#include "prunus/io.h"
#include "prunus/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] % 4 == 2) {  // a tokenizer.json, then an encode through it
      const auto tok = prunus::llama2c::Tokenizer::parse_hf_json(text, "fuzz", 16);
      for (auto id : tok.encode("ab c\xe2\x98\x83 d", true, true))
        if (id < 0 || id >= 16) __builtin_trap();
    } else if (data[0] & 1) {
      for (const auto& [name, file] : prunus::hf::parse_index(text, "fuzz"))
        if (file.empty() || file.find('/') != std::string::npos || file == "..") __builtin_trap();
    } else {
      try {  // compressed-tensors: the sparsity layout of the same config.json
        const auto layout = prunus::hf::parse_sparse_layout(text, "fuzz");
        if (std::string(prunus::hf::sparse_layout_name(layout)) == "?") __builtin_trap();
      } catch (const prunus::InputError&) {
      }
      const auto c = prunus::hf::parse_config(text, "fuzz");
      if (c.dim <= 0 || c.n_heads <= 0 || c.dim % c.n_heads || c.n_heads % c.n_kv_heads) __builtin_trap();
    }
  } catch (const prunus::InputError&) {
  }
  return 0;
}
