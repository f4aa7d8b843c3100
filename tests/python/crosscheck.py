"""Cross-checks Prunus against the reference `safetensors` package and a numpy model of
global magnitude pruning. Run by ctest (python_crosscheck) with the .venv Python."""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

PRUNUS = sys.argv[1]
failures = 0


def check(cond, what):
    global failures
    print(("ok   - " if cond else "FAIL - ") + what)
    if not cond:
        failures += 1


def prunus(*args):
    return subprocess.run([PRUNUS, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as tmp:
    rng = np.random.default_rng(0)

    # 1. Prunus reads what the reference writer wrote, every dtype it uses.
    ref = {
        "f32": rng.standard_normal((17, 9)).astype(np.float32),
        "f16": rng.standard_normal((4, 4)).astype(np.float16),
        "f64": rng.standard_normal(5),
        "i64": np.array([0, 3, 0, -7], dtype=np.int64),
        "u8": np.array([[0, 1], [2, 0]], dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    ref["f32"][ref["f32"] < 0.3] = 0
    path = os.path.join(tmp, "ref.safetensors")
    save_file(ref, path, metadata={"source": "safetensors.numpy"})
    r = prunus("inspect", path)
    check(r.returncode == 0, f"prunus inspect reads a file written by safetensors ({r.stderr.strip()})")
    for name, arr in ref.items():
        m = re.search(rf"^{name}\s+\[([^\]]*)\]\s+(\w+)\s+(\d+)", r.stdout, re.M)
        check(m is not None and int(m.group(3)) == int(np.count_nonzero(arr)),
              f"inspect {name}: nnz {m.group(3) if m else None} == numpy {np.count_nonzero(arr)}")
    check("metadata source = safetensors.numpy" in r.stdout, "inspect shows the reference writer's metadata")

    # 2. The reference reads what Prunus wrote, and Prunus's global magnitude pruning matches numpy's.
    shapes = {"fc1.weight": (300, 784), "fc1.bias": (300,), "fc2.weight": (100, 300), "fc2.bias": (100,),
              "fc3.weight": (10, 100), "fc3.bias": (10,)}
    dense = {k: (rng.standard_normal(s) * (0.05 if k == "fc1.weight" else 0.2)).astype(np.float32)
             for k, s in shapes.items()}
    dense["fc2.weight"][0, :10] = 0.001  # ties: broken by position, earlier layer first
    dense_path = os.path.join(tmp, "dense.safetensors")
    save_file(dense, dense_path, metadata={"prunus.arch": "lenet300"})
    for scope, sparsity in [("global", 0.9), ("layer", 0.6)]:
        out = os.path.join(tmp, f"sparse_{scope}.safetensors")
        r = prunus("prune", dense_path, "--sparsity", str(sparsity), "--scope", scope, "-o", out)
        check(r.returncode == 0, f"prunus prune --scope {scope} ({r.stderr.strip()})")
        got = load_file(out)
        with safe_open(out, "np") as f:
            meta = f.metadata()
        check(meta.get("prunus.arch") == "lenet300" and meta.get("prunus.scope") == scope,
              f"safetensors reads Prunus's metadata ({scope})")
        check(set(got) == set(dense), f"same tensor names ({scope})")
        weights = ["fc1.weight", "fc2.weight", "fc3.weight"]
        # numpy reference: stable ascending sort of |w|, concatenated in layer order for global.
        expect = {}
        if scope == "global":
            allw = np.concatenate([np.abs(dense[w]).ravel() for w in weights]).astype(np.float64)
            k = int(round(sparsity * allw.size))
            drop = np.zeros(allw.size, bool)
            drop[np.argsort(allw, kind="stable")[:k]] = True
            start = 0
            for w in weights:
                n = dense[w].size
                expect[w] = np.where(drop[start:start + n].reshape(dense[w].shape), 0, dense[w])
                start += n
        else:
            for w in weights:
                flat = np.abs(dense[w]).ravel().astype(np.float64)
                k = int(round(sparsity * flat.size))
                drop = np.zeros(flat.size, bool)
                drop[np.argsort(flat, kind="stable")[:k]] = True
                expect[w] = np.where(drop.reshape(dense[w].shape), 0, dense[w])
        for w in weights:
            check(np.array_equal(got[w], expect[w]), f"{scope}: {w} equals the numpy reference bit for bit")
        for b in ["fc1.bias", "fc2.bias", "fc3.bias"]:
            check(np.array_equal(got[b], dense[b]), f"{scope}: {b} untouched")
        total = sum(dense[w].size for w in weights)
        zeros = sum(int((got[w] == 0).sum()) for w in weights)
        if scope == "global":
            check(zeros == round(sparsity * total), f"global: exactly round(s*n) = {round(sparsity * total)} zeros (got {zeros})")
        else:
            for w in weights:
                z, n = int((got[w] == 0).sum()), dense[w].size
                check(z == round(sparsity * n), f"layer: {w} has exactly round(s*n) = {round(sparsity * n)} zeros (got {z})")

    # 3. prunus quantize: numpy decodes the INT8 file (bitmask little-endian per row byte,
    #    values in row-major order, one scale per row) back to the pruned weights.
    pruned_path = os.path.join(tmp, "sparse_global.safetensors")
    q8_path = os.path.join(tmp, "q8.safetensors")
    r = prunus("quantize", pruned_path, "-o", q8_path)
    check(r.returncode == 0, f"prunus quantize ({r.stderr.strip()})")
    pruned, q8 = load_file(pruned_path), load_file(q8_path)
    for w in ["fc1.weight", "fc2.weight", "fc3.weight"]:
        shape = tuple(int(d) for d in q8[w + ".q8.shape"])
        rows, cols = shape[0], int(np.prod(shape[1:]))
        bits = np.unpackbits(q8[w + ".q8.bitmask"], axis=1, bitorder="little")[:, :cols].astype(bool)
        deq = np.zeros((rows, cols), np.float32)
        deq[bits] = q8[w + ".q8.values"].astype(np.float32)
        scale = q8[w + ".q8.scale"]
        deq *= scale[:, None]
        ref = pruned[w].reshape(rows, cols)
        check(shape == pruned[w].shape, f"q8 {w}: shape {shape}")
        check(np.array_equal(bits, ref != 0), f"q8 {w}: the bitmask is exactly the non-zeros")
        check(np.allclose(scale, np.abs(ref).max(axis=1) / 127, rtol=1e-6), f"q8 {w}: scale = max|w|/127 per row")
        check(bool(np.all(np.abs(deq - ref) <= scale[:, None] * 0.5001)), f"q8 {w}: within half a step of the weights")
        check(q8[w + ".q8.values"].dtype == np.int8 and int(np.abs(q8[w + ".q8.values"]).max()) <= 127, f"q8 {w}: int8 codes")

print(f"{failures} failure(s)")
sys.exit(1 if failures else 0)
