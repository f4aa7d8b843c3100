#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from prunus_kernel_bench's JSON output.

    python3 bench/kernel_tables.py docs/data/cpu_kernels_4096.json

Each cell: time per call and, in brackets, the ratio to the best dense time (OpenBLAS or
libtorch, whichever was faster) for the same shape, batch and threads in the same run.
"""
import json
import re
import sys
from collections import defaultdict

PATTERNS = ["50%", "70%", "80%", "90%", "95%", "2:4", "4:8", "4x4 80%", "4x4 90%"]
COLS = [("prunus_csr", "Prunus CSR"), ("prunus_bitmask", "Prunus bitmask"),
        ("prunus_structured", "Prunus N:M / BSR 4×4"), ("eigen_sparse", "Eigen sparse"),
        ("libtorch_sparse_csr", "libtorch sparse CSR")]


def main(path):
    runs = json.load(open(path))["benchmarks"]
    groups = defaultdict(dict)  # (shape, batch, threads) -> {(kernel, pattern): seconds}
    bandwidth = None
    for r in runs:
        if r.get("run_type") != "iteration":
            continue
        name = r["name"]
        if name.startswith("memory_read_bandwidth"):
            bandwidth = r.get("GB/s")
            continue
        parts = name.split("/")
        kernel = parts[0]
        m = re.search(r"(\d+x\d+)/batch:(\d+)/threads:(\d+)", name)
        if not m:
            continue
        shape, batch, threads = m.group(1), int(m.group(2)), int(m.group(3))
        pattern = parts[1] if not kernel.startswith("dense") else None
        if kernel in ("prunus_nm", "prunus_bsr4x4"):
            kernel = "prunus_structured"
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[r["time_unit"]]
        groups[(shape, batch, threads)][(kernel, pattern)] = r["real_time"] * unit
    if bandwidth:
        print(f"Memory read bandwidth (one core, streaming): {bandwidth / 1e9:.1f} GB/s\n")
    for (shape, batch, threads), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        blas = g.get(("dense_openblas", None))
        torch = g.get(("dense_libtorch", None))
        best = min(t for t in (blas, torch) if t)
        rows, cols = map(int, shape.split("x"))
        gbs = rows * cols * 4 / blas / 1e9 if blas else 0
        what = "sgemv" if batch == 1 else "sgemm"
        print(f"**{shape}, batch {batch}, {threads} thread{'s' if threads > 1 else ''}** — dense: OpenBLAS {what} "
              f"{blas * 1e3:.3f} ms ({gbs:.1f} GB/s of weights), libtorch {torch * 1e3:.3f} ms\n")
        print("| pattern | " + " | ".join(c[1] for c in COLS) + " | best Prunus ×dense |")
        print("|---" * (len(COLS) + 2) + "|")
        for p in PATTERNS:
            cells, prunus_best = [], None
            for key, _ in COLS:
                t = g.get((key, p))
                if t is None:
                    cells.append("—")
                    continue
                cells.append(f"{t * 1e3:.3f} ms ({best / t:.2f}×)")
                if key.startswith("prunus"):
                    prunus_best = t if prunus_best is None else min(prunus_best, t)
            if prunus_best is None:
                continue
            print(f"| {p} | " + " | ".join(cells) + f" | **{best / prunus_best:.2f}×** |")
        print()
    # The "every format ≥ 2× libtorch sparse CSR": each Prunus fp32 format against
    # libtorch's sparse CSR product in every cell that has both.
    worst = {}
    for (shape, batch, threads), g in groups.items():
        for p in PATTERNS:
            ref = g.get(("libtorch_sparse_csr", p))
            if ref is None:
                continue
            for key in ("prunus_csr", "prunus_bitmask", "prunus_structured"):
                t = g.get((key, p))
                if t is not None and (key not in worst or ref / t < worst[key][0]):
                    worst[key] = (ref / t, f"{shape} batch {batch}, {threads} thread(s), {p}")
    for key, (ratio, where) in sorted(worst.items()):
        print(f"{key} vs libtorch sparse CSR: at least {ratio:.2f}× (lowest: {where})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/data/cpu_kernels_4096.json")
