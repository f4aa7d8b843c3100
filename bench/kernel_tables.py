#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md from prunus_kernel_bench's JSON output.

    python3 bench/kernel_tables.py docs/data/cpu_kernels_4096.json
    python3 bench/kernel_tables.py --summary docs/data/cpu_kernels_full.json

The summary gives, per shape, the best Prunus format's ratio to the best dense time in every
(batch, threads) cell, then each format's lowest ratio to libtorch's sparse CSR and to Eigen.

Each cell: time per call and, in brackets, the ratio to the best dense time (OpenBLAS or
libtorch, whichever was faster) for the same shape, batch and threads in the same run.
"""
import json
import re
import sys
from collections import defaultdict

PATTERNS = ["50%", "70%", "80%", "90%", "95%", "2:4", "4:8", "4x4 80%", "4x4 90%"]
COLS = [("prunus_csr", "Prunus CSR"), ("prunus_bitmask", "Prunus bitmask"),
        ("prunus_structured", "Prunus N:M / BSR 4×4"), ("prunus_sell", "Prunus SELL"), ("eigen_sparse", "Eigen sparse"),
        ("libtorch_sparse_csr", "libtorch sparse CSR")]


HOT = False  # a run with --hot / --lenet: weights stay in cache


def load(path):
    runs = json.load(open(path))["benchmarks"]
    groups = defaultdict(dict)  # (shape, batch, threads) -> {(kernel, pattern): seconds}
    bandwidth = None
    global HOT
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
        HOT = HOT or name.endswith("/hot")
        pattern = parts[1] if not kernel.startswith("dense") else None
        if kernel in ("prunus_nm", "prunus_bsr4x4"):
            kernel = "prunus_structured"
        if kernel in ("prunus_nm_fm", "prunus_bsr4x4_fm"):
            kernel = "prunus_structured_fm"
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[r["time_unit"]]
        seconds = r["real_time"] * unit
        groups[(shape, batch, threads)][(kernel, pattern)] = seconds
        # Google Benchmark's rate counters divide by the main thread's CPU time; per call from
        # the wall time instead (two threads would otherwise read up to 2x high).
        if "FLOP/s" in r and "MB" in r:
            RATES[(shape, batch, threads, kernel, pattern)] = (
                r["FLOP/s"] * r["cpu_time"] * unit / seconds, r["MB"] * 1e6 / seconds)
    return groups, bandwidth


RATES = {}  # (shape, batch, threads, kernel, pattern) -> (FLOP/s, weight bytes/s), from wall time


def best_prunus(g, p):
    ts = [g[(k, p)] for k, _ in COLS if k.startswith("prunus") and (k, p) in g]
    return min(ts) if ts else None


def best_dense(g):
    return min(t for t in (g.get(("dense_openblas", None)), g.get(("dense_libtorch", None))) if t)


def summary(path):
    groups, bandwidth = load(path)
    if bandwidth:
        print(f"Memory read bandwidth (one core, streaming): {bandwidth / 1e9:.1f} GB/s\n")
    shapes = sorted({k[0] for k in groups}, key=lambda s: [-int(v) for v in s.split("x")])
    for shape in shapes:
        cells = sorted((b, t) for (s, b, t) in groups if s == shape)
        cells.sort(key=lambda bt: (bt[1], bt[0]))
        print(f"**{shape}** — best Prunus format ÷ best dense (OpenBLAS or libtorch), {'hot' if HOT else 'cold'} cache\n")
        print("| pattern | " + " | ".join(f"b{b} t{t}" for b, t in cells) + " |")
        print("|---" * (len(cells) + 1) + "|")
        dense_row = []
        for b, t in cells:
            g = groups[(shape, b, t)]
            dense_row.append(f"{best_dense(g) * 1e3:.3g} ms")
        print("| dense time | " + " | ".join(dense_row) + " |")
        for p in PATTERNS:
            row = []
            for b, t in cells:
                g = groups[(shape, b, t)]
                bp = best_prunus(g, p)
                row.append("—" if bp is None else f"{best_dense(g) / bp:.2f}×")
            if any(c != "—" for c in row):
                print(f"| {p} | " + " | ".join(row) + " |")
        print()
    lowest(groups)


def lowest(groups):
    # The "every format ≥ 2× libtorch sparse CSR": each Prunus fp32 format against
    # libtorch's sparse CSR product (and Eigen's) in every cell that has both. The peers get
    # Xᵀ made before the timing and return Yᵀ; "_fm" is Prunus in that same layout
    # (prunus_*_fm rows; at batch 1 the two layouts are the same call).
    has_fm = any(k[0].endswith("_fm") for g in groups.values() for k in g)
    for peer in ("libtorch_sparse_csr", "eigen_sparse"):
        worst = {}
        for (shape, batch, threads), g in groups.items():
            for p in PATTERNS:
                ref = g.get((peer, p))
                if ref is None:
                    continue
                for key in ("prunus_csr", "prunus_bitmask", "prunus_structured", "prunus_sell"):
                    fm = g.get((key + "_fm", p)) if batch > 1 else g.get((key, p))
                    pairs = [(key, g.get((key, p)))] + ([(key + " (same layout)", fm)] if has_fm else [])
                    for label, t in pairs:
                        if t is not None and (label not in worst or ref / t < worst[label][0]):
                            worst[label] = (ref / t, f"{shape} batch {batch}, {threads} thread(s), {p}")
        name = "libtorch sparse CSR" if peer.startswith("libtorch") else "Eigen sparse"
        for key, (ratio, where) in sorted(worst.items()):
            print(f"{key} vs {name}: at least {ratio:.2f}× (lowest: {where})")


def main(path):
    groups, bandwidth = load(path)
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
        print("Each cell: time per call (÷ best dense), GFLOP/s of useful work (2 per stored non-zero and "
              "sample), GB/s of the format's weight bytes and their share of the streaming bandwidth above.\n")
        print("| pattern | " + " | ".join(c[1] for c in COLS) + " | best Prunus ×dense |")
        print("|---" * (len(COLS) + 2) + "|")
        for p in PATTERNS:
            cells, prunus_best = [], None
            for key, _ in COLS:
                t = g.get((key, p))
                if t is None:
                    cells.append("—")
                    continue
                cell = f"{t * 1e3:.3f} ms ({best / t:.2f}×)"
                rate = RATES.get((shape, batch, threads, key, p))
                if rate:
                    flops, bps = rate
                    pct = f", {100 * bps / bandwidth:.0f}%" if bandwidth else ""
                    cell += f" {flops / 1e9:.1f} GF/s {bps / 1e9:.1f} GB/s{pct}"
                cells.append(cell)
                if key.startswith("prunus"):
                    prunus_best = t if prunus_best is None else min(prunus_best, t)
            if prunus_best is None:
                continue
            print(f"| {p} | " + " | ".join(cells) + f" | **{best / prunus_best:.2f}×** |")
        print()
    lowest(groups)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--summary":
        summary(sys.argv[2])
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "docs/data/cpu_kernels_4096.json")
