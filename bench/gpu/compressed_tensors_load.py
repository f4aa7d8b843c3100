"""On a machine with PyTorch + transformers + compressed-tensors (the GPU machine): load a
`prunus convert --compressed-tensors` folder through transformers' compressed-tensors
integration (decompressed: run_compressed=False) and compare its logits with the fp32 folder of
the same model. usage: compressed_tensors_load.py CT_FOLDER FP32_FOLDER"""
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

ct_dir, fp_dir = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
ids = torch.randint(3, 512, (4, 128))
fp = AutoModelForCausalLM.from_pretrained(fp_dir, dtype=torch.float32).eval()
try:
    from transformers import CompressedTensorsConfig
    ct = AutoModelForCausalLM.from_pretrained(ct_dir, dtype=torch.float32,
                                              quantization_config=CompressedTensorsConfig(run_compressed=False)).eval()
except Exception as e:  # report, don't hide: which layer of the stack refused
    print(f"transformers {transformers.__version__}: loading {ct_dir} failed: {e!r}"[:1500])
    sys.exit(1)
with torch.no_grad():
    a, b = fp(ids).logits, ct(ids).logits
    # Next-token perplexity of each on the same random tokens, and how close the logits are.
    nll = lambda lg: torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, lg.size(-1)), ids[:, 1:].reshape(-1))
    rel = ((a - b).abs().max() / a.abs().max()).item()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
print(f"transformers {transformers.__version__}: {ct_dir} loaded through compressed-tensors; logits vs fp32 folder: "
      f"max |diff| / max |logit| = {rel:.4f}, argmax agreement {100 * agree:.2f}%, "
      f"mean NLL {nll(a).item():.4f} (fp32) vs {nll(b).item():.4f} (int8)")
sys.exit(0 if agree > 0.9 else 1)
