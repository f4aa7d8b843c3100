"""Markdown tables for docs/benchmarks.md from the H100 runs: the GEMM table (prunus_cuda_bench
--row-only JSON lines, PyTorch's bench/torch_semi_structured.py JSON lines) and the end-to-end
table (prunus-cuda bench JSON lines).
  python3 bench/gpu/tables.py gemm PRUNUS.jsonl TORCH.jsonl
  python3 bench/gpu/tables.py int8 PRUNUS_INT8.jsonl     (prunus_cuda_bench --dtype int8)
  python3 bench/gpu/tables.py e2e E2E.jsonl"""
import json
import sys


def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def int8(path):
    print("| K×N | M | cuBLAS int8 µs | Prunus 2:4 int8 µs | ×cuBLAS | dense / 2:4 TOPS | layout/alg | int32 sums equal |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows(path):
        if "dense_us" not in r:
            continue
        print(f"| {r['k']}×{r['n']} | {r['m']} | {r['dense_us']:.1f} | {r['sparse_us']:.1f} | **{r['speedup']:.2f}** | "
              f"{r['dense_tops']:.0f} / {r['sparse_tops_equiv']:.0f} | {r['layout']}/{r['alg']} | {'yes' if r['exact'] else 'NO'} |")


def gemm(prunus_path, torch_path):
    torch = {}
    for r in rows(torch_path):
        if "k" in r:
            torch[({"float16": "fp16", "bfloat16": "bf16"}[r["dtype"]], r["k"], r["n"], r["m"])] = r
    print("| dtype | K×N | M | cuBLAS µs | Prunus 2:4 µs | ×cuBLAS | dense / 2:4 TFLOP/s | layout/alg | auto runs | auto ×dense "
          "| torch dense µs | torch semi-structured µs | torch semi ÷ its dense | Prunus ÷ torch semi |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst = []
    for r in rows(prunus_path):
        if "dense_us" not in r:
            continue
        key = (r["dtype"], r["k"], r["n"], r["m"])
        t = torch.get(key, {})
        semi = t.get("torch_semi_structured_us")
        tdense = t.get("torch_dense_us")
        vs_semi = semi / r["sparse_us"] if semi else None
        slower = semi is not None and tdense is not None and semi > tdense
        if slower and vs_semi < 2:
            worst.append((key, vs_semi, semi / tdense))
        print(f"| {r['dtype']} | {r['k']}×{r['n']} | {r['m']} | {r['dense_us']:.1f} | {r['sparse_us']:.1f} | "
              f"**{r['speedup']:.2f}** | {r['dense_tflops']:.0f} / {r['sparse_tflops_equiv']:.0f} | {r['layout']}/{r['alg']} | "
              f"{r['auto_path']} | {r['auto_speedup']:.2f} | "
              f"{tdense:.1f} | {semi:.1f} | {semi / tdense:.2f} | {vs_semi:.1f}× |" if semi else "| — | — | — | — |")
    for key, v, ratio in worst:
        print(f"\nBelow 2× PyTorch where PyTorch is slower than its dense path: {key}: {v:.2f}× "
              f"(2× needs a 2:4 GEMM {2 / ratio:.2f}× faster than PyTorch's dense one)", file=sys.stderr)


def e2e(path):
    rs = rows(path)
    dense = {(r["phase"], r["tokens"]): r for r in rs if r["gemm"] == "dense"}
    print("| phase | tokens | mode | tokens/s | × dense | linears on 2:4 | GPU weight bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in rs:
        d = dense[(r["phase"], r["tokens"])]
        wb = f"{r['weight_bytes'] / 2**20:.0f} MiB" if "weight_bytes" in r else "—"
        print(f"| {r['phase']} | {r['tokens']} | {r['gemm']} | {r['tokens_per_s']:,.0f} | "
              f"**{r['tokens_per_s'] / d['tokens_per_s']:.2f}** | {r['sparse_linears']}/{r['linears']} | {wb} |")


if __name__ == "__main__":
    {"gemm": gemm, "e2e": e2e, "int8": int8}[sys.argv[1]](*sys.argv[2:])
