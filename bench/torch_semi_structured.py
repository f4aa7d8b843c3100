"""PyTorch baselines for the 2:4 GEMM table, run on the GPU machine next to prunus_cuda_bench:
dense F.linear, to_sparse_semi_structured (its default cuSPARSELt path on Hopper), and
torch._cslt_sparse_mm on a weight compressed once. One JSON line per case."""
import json
import sys

import torch
import torch.nn.functional as F
from torch.sparse import to_sparse_semi_structured, SparseSemiStructuredTensor

quick = "--quick" in sys.argv
int8 = "--int8" in sys.argv  # the INT8 peers instead: torch._int_mm and cuSPARSELt int8 through PyTorch
fp8 = "--fp8" in sys.argv  # the FP8 peers instead: torch._scaled_mm and cuSPARSELt e4m3 through PyTorch
ms = [16, 4096] if quick else [1, 16, 64, 256, 1024, 4096, 16384]
SparseSemiStructuredTensor._FORCE_CUTLASS = False


def bench(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    iters = 10
    while True:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        torch.cuda.synchronize()
        ms_ = a.elapsed_time(b)
        if ms_ >= 50 or iters >= 20000:
            return 1000 * ms_ / iters
        iters *= 4


def two_of_four(w):
    n, k = w.shape
    keep = w.float().abs().reshape(n, k // 4, 4).argsort(-1)[..., 2:]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool, device="cuda").scatter_(-1, keep, True).reshape(n, k)
    return w * mask


def semi_structured(w):
    """to_sparse_semi_structured(w), or None and why it refused."""
    try:
        return to_sparse_semi_structured(w), None
    except Exception as e:  # noqa: BLE001
        return None, str(e).splitlines()[0][:300]


def time_semi_structured(row, ws, ws_error, x):
    """torch.mm on a to_sparse_semi_structured weight into row, or why it cannot run."""
    if ws is None:
        row["torch_semi_structured_error"] = ws_error
        return
    try:
        row["torch_semi_structured_us"] = bench(lambda: torch.mm(ws, x.t()))
    except Exception as e:  # noqa: BLE001
        row["torch_semi_structured_error"] = str(e).splitlines()[0][:300]


def int8_peers():
    """Y = X·Wᵀ in int8 with int32 sums: torch._int_mm (cuBLAS int8) against torch._cslt_sparse_mm
    (cuSPARSELt int8 on a weight compressed once) and F.linear on to_sparse_semi_structured; the
    2:4 results are checked against _int_mm exactly."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for k, n in ((4096, 4096), (11008, 4096), (4096, 11008)):
        w = two_of_four(torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda", generator=g))
        wc = torch._cslt_compress(w)
        ws, ws_error = semi_structured(w)
        for m in ms:
            x = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda", generator=g)
            row = {"dtype": "int8", "k": k, "n": n, "m": m}
            ref = None
            try:  # cuBLAS int8 needs m > 16 and multiples of 8
                ref = torch._int_mm(x, w.t())
                row["torch_int_mm_us"] = bench(lambda: torch._int_mm(x, w.t()))
            except Exception as e:  # noqa: BLE001
                row["torch_int_mm_error"] = str(e).splitlines()[0][:120]
            try:
                xt = x.t().contiguous()
                y = torch._cslt_sparse_mm(wc, xt, out_dtype=torch.int32)
                if ref is not None:
                    row["cslt_equals_int_mm"] = bool(torch.equal(y.t(), ref))
                row["torch_cslt_int8_us"] = bench(lambda: torch._cslt_sparse_mm(wc, xt, out_dtype=torch.int32))
            except Exception as e:  # noqa: BLE001
                row["torch_cslt_int8_error"] = str(e).splitlines()[0][:120]
            time_semi_structured(row, ws, ws_error, x)
            print(json.dumps(row), flush=True)


def fp8_peers():
    """Y = X·Wᵀ with E4M3 X and W, bf16 Y: torch._scaled_mm (cuBLASLt FP8, with and without
    fast accumulation) against torch._cslt_sparse_mm on a weight compressed once and
    to_sparse_semi_structured. M is rounded up to 16 (the FP8 kernels' granule), as in
    prunus_cuda_bench --dtype e4m3. Each 2:4 result's difference from _scaled_mm is recorded."""
    g = torch.Generator(device="cuda").manual_seed(0)
    f8 = torch.float8_e4m3fn
    one = torch.ones((), device="cuda")
    for k, n in ((4096, 4096), (11008, 4096), (4096, 11008)):
        w = two_of_four(torch.randn(n, k, device="cuda", generator=g)).to(f8)
        try:
            wc = torch._cslt_compress(w)
        except Exception as e:  # noqa: BLE001
            wc, wc_error = None, str(e).splitlines()[0][:120]
        ws, ws_error = semi_structured(w)
        for m in ms:
            mp = (m + 15) // 16 * 16
            x = torch.randn(mp, k, device="cuda", generator=g).to(f8)
            row = {"dtype": "e4m3>bf16", "k": k, "n": n, "m": m}
            ref = None
            try:
                ref = torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                row["torch_scaled_mm_us"] = bench(
                    lambda: torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
                row["torch_scaled_mm_fast_accum_us"] = bench(
                    lambda: torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                             use_fast_accum=True))
            except Exception as e:  # noqa: BLE001
                row["torch_scaled_mm_error"] = str(e).splitlines()[0][:120]
            if wc is None:
                row["torch_cslt_fp8_error"] = wc_error
            else:
                try:
                    xt = x.t().contiguous()
                    y = torch._cslt_sparse_mm(wc, xt, out_dtype=torch.bfloat16)
                    if ref is not None:
                        row["cslt_diff_vs_scaled_mm"] = float((y.t().float() - ref.float()).abs().max()
                                                              / ref.float().pow(2).mean().sqrt())
                    row["torch_cslt_fp8_us"] = bench(lambda: torch._cslt_sparse_mm(wc, xt, out_dtype=torch.bfloat16))
                except Exception as e:  # noqa: BLE001
                    row["torch_cslt_fp8_error"] = str(e).splitlines()[0][:200]
                try:  # X^T as a view (B with op T): the other B layout PyTorch can describe
                    xv = x.t()
                    torch._cslt_sparse_mm(wc, xv, out_dtype=torch.bfloat16)
                    row["torch_cslt_fp8_view_us"] = bench(lambda: torch._cslt_sparse_mm(wc, xv, out_dtype=torch.bfloat16))
                except Exception as e:  # noqa: BLE001
                    row["torch_cslt_fp8_view_error"] = str(e).splitlines()[0][:200]
            time_semi_structured(row, ws, ws_error, x)
            print(json.dumps(row), flush=True)


print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(),
                  "cusparselt": torch.backends.cusparselt.version()}))
if int8:
    int8_peers()
    sys.exit(0)
if fp8:
    fp8_peers()
    sys.exit(0)
for dtype in (torch.float16, torch.bfloat16):
    for k, n in ((4096, 4096), (11008, 4096), (4096, 11008)):
        w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
        keep = w.abs().reshape(n, k // 4, 4).argsort(-1)[..., 2:]
        mask = torch.zeros(n, k // 4, 4, dtype=torch.bool, device="cuda").scatter_(-1, keep, True).reshape(n, k)
        w = w * mask
        ws = to_sparse_semi_structured(w)
        wc = torch._cslt_compress(w)
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            row = {"dtype": str(dtype).split(".")[-1], "k": k, "n": n, "m": m}
            row["torch_dense_us"] = bench(lambda: F.linear(x, w))
            try:
                row["torch_semi_structured_us"] = bench(lambda: F.linear(x, ws))
            except Exception as e:  # noqa: BLE001
                row["torch_semi_structured_error"] = str(e).splitlines()[0][:120]
            try:
                xt = x.t().contiguous() if m % 16 == 0 else None
                if xt is not None:
                    row["torch_cslt_us"] = bench(lambda: torch._cslt_sparse_mm(wc, xt))
            except Exception as e:  # noqa: BLE001
                row["torch_cslt_error"] = str(e).splitlines()[0][:120]
            print(json.dumps(row), flush=True)
