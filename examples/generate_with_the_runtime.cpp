// Using the runtime alone (prunus_runtime, no libtorch): load a llama2.c checkpoint — dense
// or pruned by `prunus oneshot` — and decode greedily. Each linear layer runs in the sparse
// format that measured fastest here, or stays dense.
//
//   build/examples/generate_with_the_runtime model.bin tokenizer.bin [steps]
#include <cstdio>
#include <cstdlib>

#include "prunus/io.h"
#include "prunus/runtime.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.bin TOKENIZER.bin [STEPS]\n", argv[0]);
    return 2;
  }
  try {
    auto model = prunus::runtime::Llama::load(argv[1]);
    auto tok = prunus::llama2c::Tokenizer::read(argv[2], static_cast<std::int32_t>(model.config().vocab_size));
    std::int32_t prev = prunus::llama2c::Tokenizer::kBos;
    model.generate_greedy(argc > 3 ? std::atoll(argv[3]) : 64, [&](std::int32_t t) {
      std::fputs(tok.decode_token(prev, t).c_str(), stdout);
      prev = t;
    });
    std::puts("");
  } catch (const prunus::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
