// libFuzzer target: llama2.c checkpoints, then the tokenizer (first byte picks which).
#include <cstdint>

#include "prunus/io.h"
#include "prunus/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  try {
    if (data[0] & 1) {
      prunus::llama2c::parse_checkpoint(data + 1, size - 1, "fuzz");
    } else {
      const std::int32_t vocab = 1 + (data[0] >> 1);  // 1..128 tokens
      auto tok = prunus::llama2c::Tokenizer::parse(data + 1, size - 1, "fuzz", vocab);
      // Encode and decode a fixed text with whatever vocabulary came in.
      const auto ids = tok.encode("Once upon a time, \xe2\x98\x83 <0x41> \xff!", true, true);
      for (std::size_t i = 1; i < ids.size(); ++i) (void)tok.decode_token(ids[i - 1], ids[i]);
    }
  } catch (const prunus::InputError&) {
  }
  return 0;
}
