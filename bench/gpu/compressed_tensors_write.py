"""On a machine with PyTorch + compressed-tensors <= 0.14: compress an fp32 Hugging Face folder
with the package's own sparse compressor (sparse-bitmask or sparse-24-bitmask) and write the
folder the way llm-compressor does (config.json with quantization_config.sparsity_config), so
Prunus can be checked reading a folder it did not write.
usage: compressed_tensors_write.py FP32_FOLDER FORMAT OUT_FOLDER"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.config import SparsityCompressionConfig

src, fmt, out = sys.argv[1:]
state = load_file(os.path.join(src, "model.safetensors"))
cfg = json.load(open(os.path.join(src, "config.json")))
linears = {k[:-len(".weight")] for k in state if k.startswith("model.layers.") and k.endswith("_proj.weight")}
zeros = sum(int((state[m + ".weight"] == 0).sum()) for m in linears)
total = sum(state[m + ".weight"].numel() for m in linears)
sconfig = SparsityCompressionConfig.load_from_registry(
    fmt, targets=["Linear"], ignore=["lm_head"], global_sparsity=zeros / total,
    sparsity_structure="2:4" if fmt == "sparse-24-bitmask" else "unstructured")
mc = ModelCompressor(sparsity_config=sconfig)
compressed = mc.sparsity_compressor.compress(state, compression_targets=linears)
os.makedirs(out, exist_ok=True)
save_file({k: v.contiguous() for k, v in compressed.items()}, os.path.join(out, "model.safetensors"),
          metadata={"format": "pt"})
import compressed_tensors
cfg["quantization_config"] = {"quant_method": "compressed-tensors", "version": compressed_tensors.__version__,
                              "sparsity_config": sconfig.model_dump()}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
print(f"compressed-tensors {compressed_tensors.__version__} wrote {out} ({fmt}, {len(linears)} linears, "
      f"{100 * zeros / total:.2f}% zeros)")
