"""An independent llama2.c forward + tokenizer in numpy (written from llama2.c's run.c, not
from Prunus's code), used to check `prunus perplexity` within 0.5%. Given a Hugging Face
folder instead of a .bin, it reads config.json + model.safetensors and applies RoPE the way
transformers' LlamaModel does (rotate_half over the two halves of each head), which checks
that Prunus's HF export/import permutes q/k correctly.

usage: llama_reference.py PRUNUS MODEL.bin|HF_DIR TOKENIZER.bin TEXT WINDOWS"""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

prunus, model_path, tok_path, text_path, windows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

hf = os.path.isdir(model_path)
if hf:
    from safetensors.numpy import load_file
    cfg = json.load(open(os.path.join(model_path, "config.json")))
    t = load_file(os.path.join(model_path, "model.safetensors"))
    dim, hidden, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    n_heads, n_kv, vocab, seq_len = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"], cfg["max_position_embeddings"]
    L = lambda n: np.stack([t[f"model.layers.{i}.{n}.weight"] for i in range(n_layers)])
    emb = t["model.embed_tokens.weight"]
    rms_att, rms_ffn = L("input_layernorm"), L("post_attention_layernorm")
    wq, wk, wv, wo = L("self_attn.q_proj"), L("self_attn.k_proj"), L("self_attn.v_proj"), L("self_attn.o_proj")
    w1, w2, w3 = L("mlp.gate_proj"), L("mlp.down_proj"), L("mlp.up_proj")
    rms_final = t["model.norm.weight"]
    wcls = emb if cfg.get("tie_word_embeddings") else t["lm_head.weight"]
    hs = dim // n_heads
    kv_dim = hs * n_kv
    raw = None
else:
    raw = open(model_path, "rb").read()
if raw is not None:
    # --- checkpoint (run.c: memory_map_weights)
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    kv_dim = hs * n_kv
    f = np.frombuffer(raw[28:], dtype=np.float32)
    off = 0


    def take(*shape):
        global off
        n = int(np.prod(shape))
        out = f[off:off + n].reshape(shape)
        off += n
        return out


    emb = take(vocab, dim)
    rms_att = take(n_layers, dim)
    wq = take(n_layers, dim, dim)
    wk = take(n_layers, kv_dim, dim)
    wv = take(n_layers, kv_dim, dim)
    wo = take(n_layers, dim, dim)
    rms_ffn = take(n_layers, dim)
    w1 = take(n_layers, hidden, dim)
    w2 = take(n_layers, dim, hidden)
    w3 = take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hs // 2)
    take(seq_len, hs // 2)
    wcls = emb if shared else take(vocab, dim)

# --- tokenizer (run.c: build_tokenizer / encode)
tb = open(tok_path, "rb").read()
pos = 4
vocab_str, scores = [], []
for _ in range(vocab):
    score, ln = struct.unpack("<fi", tb[pos:pos + 8])
    pos += 8
    vocab_str.append(tb[pos:pos + ln])
    scores.append(score)
    pos += ln
lookup = {s: i for i, s in enumerate(vocab_str)}


def encode(text):
    toks = [1]
    if text:
        toks.append(lookup[b" "])
    for ch in text:
        b = ch.encode("utf-8")
        if b in lookup:
            toks.append(lookup[b])
        else:
            toks.extend(x + 3 for x in b)
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(len(toks) - 1):
            j = lookup.get(vocab_str[toks[i]] + vocab_str[toks[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i, best_id = scores[j], i, j
        if best_i < 0:
            return toks
        toks[best_i:best_i + 2] = [best_id]


stream = []
for line in open(text_path, encoding="utf-8"):
    line = line.strip()
    if line:
        stream.extend(encode(line))
    if len(stream) >= windows * seq_len:
        break


# --- forward (run.c: forward), a whole window at a time
def rmsnorm(x, w):
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5).astype(np.float32) * w


def forward(tokens):
    T = len(tokens)
    x = emb[tokens].astype(np.float32)
    p = np.arange(T)[:, None]
    freq = 1.0 / np.power(10000.0, np.arange(0, hs, 2) / hs)
    ang = p * freq[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(v, heads):
        if hf:  # transformers: x*cos + rotate_half(x)*sin, frequencies repeated over both halves
            v = v.reshape(T, heads, hs)
            c = np.concatenate([cos, cos], -1)[:, None, :]
            s = np.concatenate([sin, sin], -1)[:, None, :]
            rot = np.concatenate([-v[..., hs // 2:], v[..., :hs // 2]], -1)
            return v * c + rot * s
        v = v.reshape(T, heads, hs // 2, 2)
        a, b = v[..., 0], v[..., 1]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.stack([a * c - b * s, a * s + b * c], -1).reshape(T, heads, hs)

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(n_layers):
        h = rmsnorm(x, rms_att[l])
        q = rope(h @ wq[l].T, n_heads)
        k = rope(h @ wk[l].T, n_kv)
        v = (h @ wv[l].T).reshape(T, n_kv, hs)
        out = np.empty((T, n_heads, hs), np.float32)
        for hd in range(n_heads):
            kv = hd // (n_heads // n_kv)
            att = q[:, hd] @ k[:, kv].T / np.sqrt(hs) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            out[:, hd] = att @ v[:, kv]
        x = x + out.reshape(T, dim) @ wo[l].T
        h = rmsnorm(x, rms_ffn[l])
        a = h @ w1[l].T
        x = x + ((a / (1 + np.exp(-a))) * (h @ w3[l].T)) @ w2[l].T
    return rmsnorm(x, rms_final) @ wcls.T


nll, count = 0.0, 0
for wdw in range(windows):
    t = stream[wdw * seq_len:(wdw + 1) * seq_len]
    logits = forward(np.array(t)).astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll -= logp[np.arange(seq_len - 1), t[1:]].sum()
    count += seq_len - 1
ref = float(np.exp(nll / count))

r = subprocess.run([prunus, "perplexity", model_path, text_path, "--tokenizer", tok_path, "--max-windows", str(windows)],
                   capture_output=True, text=True)
m = re.search(r"perplexity ([0-9.]+)", r.stdout)
got = float(m.group(1)) if m else float("nan")
rel = abs(got - ref) / ref
print(f"{model_path}: numpy reference perplexity {ref:.4f}, prunus {got:.4f}, relative difference {rel:.2e}")
sys.exit(0 if rel < 0.005 else 1)
