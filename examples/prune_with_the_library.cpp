// Using Prunus as a library: load a model file, prune it one-shot to 80% with global
// magnitude pruning, fine-tune for one epoch with the masks held, and save it.
//
//   build/examples/prune_with_the_library dense.safetensors sparse.safetensors
#include <cstdio>

#include "prunus/data.h"
#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/sparsify.h"
#include "prunus/train.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s IN.safetensors OUT.safetensors\n", argv[0]);
    return 2;
  }
  try {
    auto net = prunus::load_model(argv[1]);
    std::vector<prunus::PrunedParam> params;
    for (auto& [name, w] : prunus::prunable_weights(*net)) params.push_back({name, w});
    prunus::Sparsifier sparsifier(params, prunus::make_criterion("magnitude"), prunus::make_pattern("unstructured"),
                                  prunus::make_scope("global"), prunus::make_oneshot_schedule(0.8, 0));
    sparsifier.prune_to(0.8);

    prunus::DataConfig data;  // Debian's Fashion-MNIST
    auto train = prunus::data::load_split(data, "train");
    auto test = prunus::data::load_split(data, "test");
    prunus::TrainConfig cfg;
    cfg.epochs = 1;
    cfg.lr = 0.01;
    prunus::Trainer trainer(*net, cfg, /*seed=*/0, &sparsifier);
    trainer.fit(train, &test, {}, /*progress=*/true);
    sparsifier.squash();
    for (const auto& s : sparsifier.stats())
      std::printf("%-12s %6.2f%% sparse\n", s.name.c_str(), 100.0 * s.sparsity());
    prunus::save_model(argv[2], *net);
    std::printf("test accuracy %.2f%%\n", 100.0 * prunus::evaluate(*net, test).accuracy);
  } catch (const prunus::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
