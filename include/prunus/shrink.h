// prunus/shrink.h — structured pruning that physically shrinks a model (no libtorch).
//
// Works on any model file the runtime executes (safetensors + the prunus.graph JSON). The
// dependency graph is traced from that graph, not hand-listed: every conv/linear output starts
// a channel space; relu, max-pool, global average pooling and flatten carry it; an add merges
// the spaces it adds (all members of a residual group are pruned together); a concatenation
// makes a value of segments — its inputs' spaces one after another, each still pruned by its
// own group, so a reader's input channels are cut segment by segment at their offsets;
// BatchNorm folded into a conv follows its conv; consumers are the convs (input channels) and
// linears (input columns; after a flatten each channel owns H×W consecutive columns) that read
// a value. The graph's input and the final output are never pruned, nor are the spaces of an
// add whose operands are concatenated differently (a segment would have to split a space).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace prunus::shrink {

struct Options {
  double sparsity = 0.5;          // fraction of each prunable group's channels removed
  // l1 | l2: group norm over every producer's row (BN scale applied);
  // bn: network slimming, |γ| of the producers' BatchNorm (groups without BatchNorm: l2);
  // activation: mean |output| per channel over calibration samples (bias and BN applied);
  // thinet: output reconstruction (Luo et al. 2017) — channels leave greedily in the order
  // that least changes what the consumers compute from them (Σ over sampled consumer outputs
  // of the removed channels' summed contribution, squared) on calibration samples, then the
  // consumers' weights on each kept channel are rescaled by least squares (Group::scale);
  // random (seeded).
  std::string criterion = "l2";
  std::int64_t round_to = 1;      // kept channels rounded up to a multiple of this (8, 16: hardware-friendly)
  std::uint64_t seed = 0;         // random criterion
  std::vector<float> calib;       // activation, thinet: raw inputs in [0, 1], calib_count samples
  std::int64_t calib_count = 0;
};

struct Group {
  std::vector<std::string> producers;  // weights whose output channels form the group
  std::vector<std::string> consumers;  // weights that read it
  std::int64_t channels = 0;
  std::vector<std::int64_t> kept;      // ascending channel indices
  // Per kept channel, a factor on the consumers' weights that read it (empty: none). thinet
  // sets it by least squares so the kept channels also stand in for the removed ones.
  std::vector<float> scale;
};

struct Plan {
  std::vector<Group> groups;                       // prunable groups only
  std::int64_t macs_before = 0, macs_after = 0;    // multiply-adds per sample (conv + linear)
  std::int64_t params_before = 0, params_after = 0;
};

// Traces the graph of `path` and chooses the channels to keep. InputError naming the file for
// a model without a graph, unknown ops, or inconsistent shapes.
Plan plan(const std::string& path, const Options& opt);

// Writes the model with the pruned channels removed (new shapes, same graph) atomically.
void write_shrunk(const std::string& path, const Plan& plan, const std::string& out);
// Writes the same-shape model with the pruned channels zeroed (weights, bias, BN scale and
// shift): its outputs equal the shrunk model's, which is how tests check the rewrite.
void write_masked(const std::string& path, const Plan& plan, const std::string& out);

}  // namespace prunus::shrink
