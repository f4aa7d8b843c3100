"""Checks a `prunus convert --compressed-tensors int8|int8-bitmask` folder against the fp32
folder it came from.

Always: the config is the compressed-tensors W8A8 int8 layout ("int-quantized", plus a
"sparse-bitmask" sparsity_config for int8-bitmask), and every decoder linear decodes (numpy,
written from compressed-tensors' int-quantized scheme and bitmask_compress) to codes q with
q·scale within half a step of the fp32 weight, zeros kept.
With the compressed_tensors package importable (the GPU machine, where PyTorch is), also: its
QuantizationConfig validates the config; for the bitmask layout (compressed-tensors <= 0.14, the
last with sparse compressors) its ModelCompressor loads the stacked compressors, its
BitmaskCompressor decompresses the folder to the same codes, its int-quantized decompression
gives the same weights, and compressing the fp32 weights with the package (at the stored scales)
gives the stored tensors bit for bit. (Loading the dense layout through transformers is
bench/gpu/compressed_tensors_load.py.)

usage: compressed_tensors_check.py CT_FOLDER FP32_FOLDER
"""
import copy
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "I8": np.int8, "U8": np.uint8, "I64": np.int64}


def read_safetensors(path):
    """Our own reader (no safetensors package needed): header JSON, then raw little-endian data."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def main(ct_dir, fp_dir):
    cfg = json.load(open(f"{ct_dir}/config.json"))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors", qc
    quantized = "config_groups" in qc
    if quantized:
        assert qc["format"] == "int-quantized" and qc["quantization_status"] == "compressed" and qc["ignore"] == ["lm_head"]
        g = qc["config_groups"]["group_0"]
        w, a = g["weights"], g["input_activations"]
        assert g["targets"] == ["Linear"]
        assert (w["num_bits"], w["type"], w["symmetric"], w["strategy"], w["dynamic"]) == (8, "int", True, "channel", False)
        assert (a["num_bits"], a["type"], a["symmetric"], a["strategy"], a["dynamic"]) == (8, "int", True, "token", True)
    sc = qc.get("sparsity_config") or {}
    fmt = sc.get("format", "dense")
    bitmask_layout, layout24 = fmt == "sparse-bitmask", fmt == "sparse-24-bitmask"
    assert fmt in ("dense", "sparse-bitmask", "sparse-24-bitmask") and (quantized or fmt != "dense"), sc
    if sc:
        assert sc["targets"] == ["Linear"] and sc["ignore"] == ["lm_head"], sc

    ct = read_safetensors(f"{ct_dir}/model.safetensors")
    fp = read_safetensors(f"{fp_dir}/model.safetensors")
    codes, scales = {}, {}
    zeros = total = 0
    for name, wf in fp.items():
        if not (name.startswith("model.layers.") and name.endswith("_proj.weight")):
            assert np.array_equal(ct[name], wf), f"{name}: not stored unchanged"
            continue
        rows, cols = wf.shape
        module = name[:-len(".weight")]
        vdtype = np.int8 if quantized else np.float32
        if bitmask_layout or layout24:  # under the module's name: shape, compressed, bitmask[, row_offsets]
            assert name not in ct, f"{name}: stored densely in a sparse layout"
            assert list(ct[module + ".shape"].reshape(-1)) == [rows, cols], name
            bitmask, values = ct[module + ".bitmask"], ct[module + ".compressed"]
            assert bitmask.shape == (rows, (cols + 7) // 8) and bitmask.dtype == np.uint8, name
            mask = np.unpackbits(bitmask, axis=-1, count=cols, bitorder="little").astype(bool)
            assert values.dtype == vdtype and values.size == mask.sum(), name
            if layout24:  # two of every four, values [rows, cols / 2]
                assert ct[module + ".shape"].shape == (2, 1) and values.shape == (rows, cols // 2), name
                assert np.all(mask.reshape(rows, -1, 4).sum(2) == 2), f"{name}: not two of four"
            else:
                counts = mask.sum(1)
                assert np.array_equal(ct[module + ".row_offsets"], np.cumsum(counts) - counts), f"{name}: row_offsets"
                assert np.all(values != 0), name
            q = np.zeros((rows, cols), vdtype)
            q[mask] = values.reshape(-1)
        else:
            q = ct[name]
            assert q.dtype == vdtype and q.shape == (rows, cols), name
        if not quantized:  # fp32 values: exactly the weights
            assert np.array_equal(q, wf), f"{name}: decompressed values differ from the fp32 weights"
            codes[name] = q
            zeros += (q == 0).sum()
            total += q.size
            continue
        scale = ct[name[:-len("weight")] + "weight_scale"]
        assert scale.shape == (rows, 1) and scale.dtype == np.float32, name
        amax = np.abs(wf).max(1, keepdims=True)
        assert np.allclose(scale, np.where(amax > 0, amax / 127, 1), rtol=1e-6), f"{name}: scale is not max|w|/127"
        err = np.abs(q.astype(np.float32) * scale - wf)
        assert np.all(err <= scale * (0.5 + 1e-5)), f"{name}: dequantized weight off by {(err / scale).max():.3f} steps"
        assert np.all(q[wf == 0] == 0), f"{name}: a pruned weight got a non-zero code"
        codes[name], scales[name] = q, scale
        zeros += (q == 0).sum()
        total += q.size
    if sc:
        assert abs(sc["global_sparsity"] - zeros / total) < 1e-6, (sc["global_sparsity"], zeros / total)
    layout = ("int8" if quantized else "fp32") + (f" + {fmt} ({sc['sparsity_structure']})" if sc else "")
    what = "codes within half a step of" if quantized else "values equal to"
    print(f"spec check, {layout}: {len(codes)} decoder linears, {what} the fp32 weights, "
          f"{100 * zeros / total:.2f}% zeros, other tensors unchanged")

    try:
        import torch
        import compressed_tensors
        from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig
    except ImportError as e:
        print(f"compressed_tensors package not importable here ({e}): spec check only")
        return 0
    if quantized:
        plain = {k: v for k, v in qc.items() if k not in ("sparsity_config", "version")}
        QuantizationConfig.model_validate(plain)
        print(f"compressed-tensors {compressed_tensors.__version__}: QuantizationConfig validates the config")
    if not (bitmask_layout or layout24):
        return 0
    if not quantized:
        return package_sparse_check(ct_dir, qc, fp, codes, ct, layout24)
    from compressed_tensors.compressors import BitmaskCompressor, ModelCompressor
    from compressed_tensors.compressors.quantized_compressors.naive_quantized import IntQuantizationCompressor
    from compressed_tensors.quantization.lifecycle.forward import quantize
    mc = ModelCompressor.from_compression_config(copy.deepcopy(qc))
    assert isinstance(mc.sparsity_compressor, BitmaskCompressor), type(mc.sparsity_compressor)
    args = QuantizationArgs(**w)
    int_comp = IntQuantizationCompressor(config=mc.quantization_config)
    dense = dict(mc.sparsity_compressor.decompress(ct_dir, params_to_skip_load=("weight_scale",)))
    for name, q in codes.items():
        got = dense[name]
        assert got.dtype == torch.int8 and np.array_equal(got.numpy(), q), f"{name}: package decompression differs"
        deq = int_comp.decompress_weight({"weight": got, "weight_scale": torch.from_numpy(scales[name])}, args)
        assert np.allclose(deq.float().numpy(), q.astype(np.float32) * scales[name], rtol=0, atol=0), name
        # Compressing our fp32 weight with the package, at our scale, gives our tensors.
        qp = quantize(x=torch.from_numpy(fp[name].copy()), scale=torch.from_numpy(scales[name]),
                      zero_point=torch.zeros_like(torch.from_numpy(scales[name]), dtype=torch.int8), args=args,
                      dtype=torch.int8)
        module = name[:-len(".weight")]
        packed = mc.sparsity_compressor.compress({name: qp}, compression_targets={module})
        for key in ("shape", "compressed", "bitmask", "row_offsets"):
            mine = ct[f"{module}.{key}"]
            theirs = packed[f"{module}.{key}"].numpy()
            assert np.array_equal(mine, theirs.astype(mine.dtype)) and mine.shape == theirs.shape, f"{name}.{key}"
    print(f"compressed-tensors {compressed_tensors.__version__}: config parsed by ModelCompressor; BitmaskCompressor "
          f"decompression and int-quantized dequantization equal ours on {len(codes)} layers; the package's own "
          f"compression of the fp32 weights gives our bytes")
    return 0


def package_sparse_check(ct_dir, qc, fp, codes, ct, layout24):
    """fp32 sparse layouts through the package: decompression gives the fp32 weights exactly,
    and the package's compression of those weights gives our tensors."""
    import copy
    import torch
    import compressed_tensors
    from compressed_tensors.compressors import ModelCompressor
    mc = ModelCompressor.from_compression_config(copy.deepcopy(qc))
    assert mc.quantization_compressor is None or not mc.quantization_compressor, "unexpected quantization"
    dense = dict(mc.sparsity_compressor.decompress(ct_dir))
    degenerate = 0
    for name, w in codes.items():
        got = dense[name].numpy()
        assert got.dtype == np.float32 and np.array_equal(got, fp[name]), f"{name}: package decompression differs"
        module = name[:-len(".weight")]
        packed = mc.sparsity_compressor.compress({name: torch.from_numpy(fp[name].copy())}, compression_targets={module})
        for key in ("shape", "compressed", "bitmask") + (() if layout24 else ("row_offsets",)):
            mine, theirs = ct[f"{module}.{key}"], packed[f"{module}.{key}"].numpy()
            if np.array_equal(mine, theirs.astype(mine.dtype)) and mine.shape == theirs.shape:
                continue
            # 2:4 groups with fewer than two non-zeros store zeros whose positions are the
            # compressor's choice (torch.topk among equal |0|); everything else must match.
            assert layout24 and key in ("bitmask", "compressed"), f"{name}.{key} differs"
            degenerate += 1
    note = f"; {degenerate} tensors differ only in which zeros a sparse 2:4 group stores" if degenerate else ""
    print(f"compressed-tensors {compressed_tensors.__version__}: {type(mc.sparsity_compressor).__name__} decompresses our "
          f"folder to the fp32 weights exactly on {len(codes)} layers; its compression of those weights gives our "
          f"tensors{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
