"""A straightforward PyTorch implementation of sequential Wanda / SparseGPT (as the reference
repositories do it: forward hooks collect each linear's input statistics over the calibration
windows, the block's linears are pruned, the block is rerun to feed the next one), timed on a
Hugging Face LLaMA folder, for comparison with `prunus oneshot` on the same machine.

usage: oneshot_torch_reference.py FOLDER TOKENS.txt --method wanda|sparsegpt [--nsamples 16]
       [--seqlen 256] [--sparsity 0.5] [--threads 2]
TOKENS.txt: `prunus tokenize TEXT --tokenizer TOK --vocab-size V` output (one document a line);
the windows are cut from their concatenation with a seeded generator, as prunus does.
Prints one JSON line: seconds per block (calibration forward, solve), total, peak RSS."""
import argparse
import json
import math
import resource
import struct
import time

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("folder")
p.add_argument("tokens")
p.add_argument("--method", required=True, choices=["wanda", "sparsegpt"])
p.add_argument("--nsamples", type=int, default=16)
p.add_argument("--seqlen", type=int, default=256)
p.add_argument("--sparsity", type=float, default=0.5)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.set_grad_enabled(False)
t_start = time.time()

cfg = json.load(open(f"{a.folder}/config.json"))
raw = open(f"{a.folder}/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
dtypes = {"F16": np.float16, "F32": np.float32, "BF16": None}


def tensor(name):
    h = header[name]
    b, e = h["data_offsets"]
    return torch.from_numpy(np.frombuffer(raw, dtype=dtypes[h["dtype"]], count=(e - b) // np.dtype(dtypes[h["dtype"]]).itemsize,
                                          offset=8 + n + b).astype(np.float32).reshape(h["shape"]))


D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd, eps, theta = D // H, cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
L = cfg["num_hidden_layers"]
stream = [int(x) for line in open(a.tokens) for x in line.split()]
g = torch.Generator().manual_seed(0)
starts = torch.randint(0, len(stream) - a.seqlen, (a.nsamples,), generator=g)
windows = torch.tensor([stream[s:s + a.seqlen] for s in starts.tolist()])
x = tensor("model.embed_tokens.weight")[windows]  # [N, T, D]
# (The file stays in memory, as the reference scripts hold the whole model.)

inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
ang = torch.outer(torch.arange(a.seqlen).float(), inv)
cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)


def rot(t):  # rotate_half, as transformers' LLaMA
    h1, h2 = t[..., :hd // 2], t[..., hd // 2:]
    return torch.cat([-h2, h1], -1)


def rms(t, w):
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w


def block(x, W, hooks):
    N, T, _ = x.shape
    h = rms(x, W["input_layernorm"])
    for k in ("q_proj", "k_proj", "v_proj"):
        hooks(k, h)
    q = (h @ W["q_proj"].T).view(N, T, H, hd).transpose(1, 2)
    k = (h @ W["k_proj"].T).view(N, T, KV, hd).transpose(1, 2)
    v = (h @ W["v_proj"].T).view(N, T, KV, hd).transpose(1, 2)
    q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
    k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    o = (s.softmax(-1) @ v).transpose(1, 2).reshape(N, T, D)
    hooks("o_proj", o)
    x = x + o @ W["o_proj"].T
    h = rms(x, W["post_attention_layernorm"])
    hooks("gate_proj", h)
    hooks("up_proj", h)
    m = torch.nn.functional.silu(h @ W["gate_proj"].T) * (h @ W["up_proj"].T)
    hooks("down_proj", m)
    return x + m @ W["down_proj"].T


def wanda(W, sq_norm):  # |W| · ‖X_j‖, lowest per output row
    metric = W.abs() * sq_norm.sqrt().unsqueeze(0)
    idx = torch.sort(metric, dim=-1, stable=True)[1][:, :int(W.shape[1] * a.sparsity)]
    W.scatter_(1, idx, 0)


def sparsegpt(W, Hs, blocksize=128, percdamp=0.01):  # the reference fasterprune, unstructured
    Hs = Hs.clone()
    dead = torch.diag(Hs) == 0
    Hs[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(Hs))
    Hs += damp * torch.eye(Hs.shape[0])
    Hs = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hs)), upper=True)
    cols = W.shape[1]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Q1, Err1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), torch.zeros_like(W[:, i1:i2])
        Hinv1 = Hs[i1:i2, i1:i2]
        tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * a.sparsity)]
        mask1 = tmp <= thresh
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hs[i1:i2, i2:])


blocks = []
for l in range(L):
    t0 = time.time()
    pre = f"model.layers.{l}."
    W = {k: tensor(pre + ("self_attn." if k in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp.") + k + ".weight")
         for k in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
    W["input_layernorm"] = tensor(pre + "input_layernorm.weight")
    W["post_attention_layernorm"] = tensor(pre + "post_attention_layernorm.weight")
    stats, rows = {}, {}

    def hook(name, inp):
        flat = inp.reshape(-1, inp.shape[-1])
        if a.method == "wanda":
            stats[name] = stats.get(name, 0) + flat.pow(2).sum(0)
        else:
            stats[name] = stats.get(name, 0) + flat.T @ flat
        rows[name] = rows.get(name, 0) + flat.shape[0]

    for i in range(a.nsamples):  # one window at a time, as the reference scripts run their hooks
        block(x[i:i + 1], W, hook)
    t1 = time.time()
    for k in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        if a.method == "wanda":
            wanda(W[k], stats[k] / rows[k])
        else:
            sparsegpt(W[k], stats[k] * (2.0 / rows[k]))
    t2 = time.time()
    x = torch.cat([block(x[i:i + 1], W, lambda *_: None) for i in range(a.nsamples)])
    t3 = time.time()
    blocks.append({"block": l, "calib_s": round(t1 - t0, 2), "solve_s": round(t2 - t1, 2), "forward_s": round(t3 - t2, 2),
                   "seconds": round(t3 - t0, 2)})
print(json.dumps({"impl": f"pytorch {torch.__version__}", "method": a.method, "nsamples": a.nsamples, "seqlen": a.seqlen,
                  "threads": a.threads, "blocks": blocks, "total_s": round(time.time() - t_start, 2),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
