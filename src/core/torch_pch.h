// Precompiled header of prunus_core and the tests: libtorch costs ~30 s per translation
// unit on two cores without it.
#pragma once
#include <torch/torch.h>
