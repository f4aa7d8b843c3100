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
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "int-quantized", qc
    assert qc["quantization_status"] == "compressed" and qc["ignore"] == ["lm_head"]
    g = qc["config_groups"]["group_0"]
    w, a = g["weights"], g["input_activations"]
    assert g["targets"] == ["Linear"]
    assert (w["num_bits"], w["type"], w["symmetric"], w["strategy"], w["dynamic"]) == (8, "int", True, "channel", False)
    assert (a["num_bits"], a["type"], a["symmetric"], a["strategy"], a["dynamic"]) == (8, "int", True, "token", True)
    sc = qc.get("sparsity_config") or {}
    bitmask_layout = sc.get("format") == "sparse-bitmask"
    if bitmask_layout:
        assert sc["targets"] == ["Linear"] and sc["ignore"] == ["lm_head"], sc
    else:
        assert sc == {}, sc

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
        if bitmask_layout:  # under the module's name: shape, compressed, bitmask, row_offsets
            assert name not in ct, f"{name}: stored densely in the bitmask layout"
            assert list(ct[module + ".shape"]) == [rows, cols], name
            bitmask, values, offsets = ct[module + ".bitmask"], ct[module + ".compressed"], ct[module + ".row_offsets"]
            assert bitmask.shape == (rows, (cols + 7) // 8) and bitmask.dtype == np.uint8, name
            mask = np.unpackbits(bitmask, axis=-1, count=cols, bitorder="little").astype(bool)
            counts = mask.sum(1)
            assert np.array_equal(offsets, np.cumsum(counts) - counts), f"{name}: row_offsets"
            assert values.dtype == np.int8 and values.size == mask.sum() and np.all(values != 0), name
            q = np.zeros((rows, cols), np.int8)
            q[mask] = values
        else:
            q = ct[name]
            assert q.dtype == np.int8 and q.shape == (rows, cols), name
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
    if bitmask_layout:
        assert abs(sc["global_sparsity"] - zeros / total) < 1e-6, (sc["global_sparsity"], zeros / total)
    layout = f"int8 + sparse-bitmask ({sc['sparsity_structure']})" if bitmask_layout else "dense int8"
    print(f"spec check, {layout}: {len(codes)} decoder linears, codes within half a step of the fp32 weights, "
          f"{100 * zeros / total:.2f}% zero codes, other tensors unchanged")

    try:
        import torch
        import compressed_tensors
        from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig
    except ImportError as e:
        print(f"compressed_tensors package not importable here ({e}): spec check only")
        return 0
    plain = {k: v for k, v in qc.items() if k not in ("sparsity_config", "version")}
    QuantizationConfig.model_validate(plain)
    print(f"compressed-tensors {compressed_tensors.__version__}: QuantizationConfig validates the config")
    if not bitmask_layout:
        return 0
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
