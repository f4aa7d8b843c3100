"""A Hugging Face LLaMA folder with random weights (config.json + model.safetensors), for
timing and memory runs of the one-shot jobs on shapes larger than the shared models.
usage: make_synthetic_llama.py OUT_DIR [--dim 2048] [--hidden 5632] [--layers 8] [--heads 16]
       [--kv-heads 16] [--vocab 32000] [--seq 512] [--dtype F16|F32] [--seed 0]"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--dim", type=int, default=2048)
p.add_argument("--hidden", type=int, default=5632)
p.add_argument("--layers", type=int, default=8)
p.add_argument("--heads", type=int, default=16)
p.add_argument("--kv-heads", type=int, default=16)
p.add_argument("--vocab", type=int, default=32000)
p.add_argument("--seq", type=int, default=512)
p.add_argument("--dtype", default="F16", choices=["F16", "F32"])
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
rng = np.random.default_rng(a.seed)
dt = np.float16 if a.dtype == "F16" else np.float32
kv = a.dim // a.heads * a.kv_heads


def w(rows, cols):
    return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(dt)


t = {"model.embed_tokens.weight": w(a.vocab, a.dim), "model.norm.weight": np.ones(a.dim, dt)}
for l in range(a.layers):
    p_ = f"model.layers.{l}."
    t[p_ + "self_attn.q_proj.weight"] = w(a.dim, a.dim)
    t[p_ + "self_attn.k_proj.weight"] = w(kv, a.dim)
    t[p_ + "self_attn.v_proj.weight"] = w(kv, a.dim)
    t[p_ + "self_attn.o_proj.weight"] = w(a.dim, a.dim)
    t[p_ + "mlp.gate_proj.weight"] = w(a.hidden, a.dim)
    t[p_ + "mlp.up_proj.weight"] = w(a.hidden, a.dim)
    t[p_ + "mlp.down_proj.weight"] = w(a.dim, a.hidden)
    t[p_ + "input_layernorm.weight"] = np.ones(a.dim, dt)
    t[p_ + "post_attention_layernorm.weight"] = np.ones(a.dim, dt)
os.makedirs(a.out, exist_ok=True)
save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.dim,
           "intermediate_size": a.hidden, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
           "num_key_value_heads": a.kv_heads, "vocab_size": a.vocab, "max_position_embeddings": a.seq,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16" if dt == np.float16 else "float32"},
          open(os.path.join(a.out, "config.json"), "w"), indent=2)
print(f"{a.out}: {sum(x.size for x in t.values()) / 1e6:.0f}M parameters, "
      f"{os.path.getsize(os.path.join(a.out, 'model.safetensors')) / 2**20:.0f} MiB")
