// Costs of the pruning machinery on LeNet-300-100 sized tensors: how much a mask update
// adds to a training step, and how fast model files are written and read.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "prunus/models.h"
#include "prunus/safetensors.h"
#include "prunus/sparsify.h"

using namespace prunus;

namespace {

std::unique_ptr<Sparsifier> lenet_sparsifier(Net& net, const std::string& scope) {
  std::vector<PrunedParam> params;
  for (auto& [name, w] : prunable_weights(net)) params.push_back({name, w});
  return std::make_unique<Sparsifier>(params, make_criterion("magnitude"), make_pattern("unstructured"),
                                      make_scope(scope), make_oneshot_schedule(0.9, 0));
}

// A full mask recomputation (exact-k sort over all 266k weights).
void BM_MaskUpdate(benchmark::State& state, std::string scope) {
  torch::manual_seed(0);
  auto net = make_model("lenet300");
  auto sp = lenet_sparsifier(*net, scope);
  for (auto _ : state) sp->prune_to(0.9);
  state.SetItemsProcessed(state.iterations() * 266200);
}
BENCHMARK_CAPTURE(BM_MaskUpdate, global, std::string("global"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MaskUpdate, layer, std::string("layer"))->Unit(benchmark::kMillisecond);

// What holding masks costs per training step, next to the step itself (batch 128).
void BM_TrainStep(benchmark::State& state) {
  const bool masked = state.range(0) != 0;
  torch::manual_seed(0);
  auto net = make_model("lenet300");
  auto sp = lenet_sparsifier(*net, "global");
  sp->prune_to(0.9);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto x = torch::randn({128, 1, 28, 28});
  auto y = torch::randint(0, 10, {128}, torch::kInt64);
  for (auto _ : state) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    if (masked) sp->mask_gradients();
    opt.step();
    if (masked) sp->apply_masks();
  }
  state.SetLabel(masked ? "masks held" : "dense step");
}
BENCHMARK(BM_TrainStep)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_SaveLoadModel(benchmark::State& state) {
  auto net = make_model("lenet300");
  const auto path = (std::filesystem::temp_directory_path() / "prunus_bench_model.safetensors").string();
  for (auto _ : state) {
    save_model(path, *net);
    benchmark::DoNotOptimize(load_model(path));
  }
  state.SetBytesProcessed(state.iterations() * std::filesystem::file_size(path));
  std::filesystem::remove(path);
}
BENCHMARK(BM_SaveLoadModel)->Unit(benchmark::kMillisecond);

}  // namespace
