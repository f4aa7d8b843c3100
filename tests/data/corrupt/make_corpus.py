#!/usr/bin/env python3
"""Writes the corrupt-file corpus next to this script (deterministic; stdlib only).

    python3 tests/data/corrupt/make_corpus.py

Each file is one way a model, dataset or recipe file can be broken. tests/corrupt_corpus_test.sh
feeds every file to the prunus verb that reads that kind of file and expects exit code 2, one
line on stderr naming the file, and nothing written.
"""
import json
import math
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st(header, data=b"", raw_header=None, length=None):
    """A safetensors file from a header dict (or raw header bytes) and a data section."""
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def f32(*vals):
    return struct.pack(f"<{len(vals)}f", *vals)


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def safetensors_cases():
    ok_hdr = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    ok = st(ok_hdr, f32(1, 2, 3, 4))
    write("st_empty.safetensors", b"")
    write("st_short_length.safetensors", b"\x10\x00\x00")
    write("st_header_past_eof.safetensors", st(ok_hdr, f32(1, 2, 3, 4), length=4096))
    write("st_header_over_100mb.safetensors", struct.pack("<Q", 200_000_000) + b"{}")
    write("st_header_not_json.safetensors", st(None, b"", raw_header=b"{not json at all}"))
    write("st_header_not_object.safetensors", st(None, b"", raw_header=b"[1, 2, 3]"))
    write("st_truncated_data.safetensors", ok[:-5])
    write("st_truncated_header.safetensors", ok[:20])
    write("st_offsets_out_of_range.safetensors",
          st({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 64]}}, f32(1, 2, 3, 4)))
    write("st_offsets_overlap.safetensors",
          st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32(1, 2, 3)))
    write("st_offsets_gap.safetensors",
          st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, f32(1, 2, 3)))
    write("st_offsets_reversed.safetensors",
          st({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, f32(1)))
    write("st_shape_overflow.safetensors",
          st({"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}}, f32(1, 2, 3, 4)))
    write("st_shape_negative.safetensors",
          st({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}, f32(1, 2, 3, 4)))
    write("st_shape_size_mismatch.safetensors",
          st({"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}}, f32(1, 2, 3, 4)))
    write("st_unknown_dtype.safetensors",
          st({"w": {"dtype": "F31", "shape": [2, 2], "data_offsets": [0, 16]}}, f32(1, 2, 3, 4)))
    dup = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    write("st_duplicate_names.safetensors", st(None, f32(1, 2), raw_header=dup))
    bad_utf8 = b'{"w\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    write("st_non_utf8_name.safetensors", st(None, f32(1), raw_header=bad_utf8))
    write("st_metadata_not_strings.safetensors",
          st({"__metadata__": {"prunus.arch": 5}, **ok_hdr}, f32(1, 2, 3, 4)))
    write("st_missing_offsets.safetensors", st({"w": {"dtype": "F32", "shape": [2, 2]}}, f32(1, 2, 3, 4)))
    # Model files: a valid container whose contents are wrong for a Prunus model.
    meta = {"prunus.arch": "lenet300", "prunus.format": "1"}
    write("model_unknown_arch.safetensors", st({"__metadata__": {"prunus.arch": "vgg19"}, **ok_hdr}, f32(1, 2, 3, 4)))
    write("model_missing_tensors.safetensors", st({"__metadata__": meta, **ok_hdr}, f32(1, 2, 3, 4)))
    nan = struct.pack("<f", math.nan)
    write("model_nan_weights.safetensors",
          st({"__metadata__": meta, "fc1.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, nan + f32(1)))
    graph_hdr = {"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": "{not json"}, **ok_hdr}
    write("graph_not_json.safetensors", st(graph_hdr, f32(1, 2, 3, 4)))
    g2 = {"input": [4], "ops": [{"op": "linear", "weight": "missing.weight"}]}
    write("graph_missing_tensor.safetensors",
          st({"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": json.dumps(g2)}, **ok_hdr}, f32(1, 2, 3, 4)))
    g3 = {"input": [5], "ops": [{"op": "linear", "weight": "w"}]}
    write("graph_wrong_width.safetensors",
          st({"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": json.dumps(g3)}, **ok_hdr}, f32(1, 2, 3, 4)))
    g4 = {"input": [2], "ops": [{"op": "add", "inputs": ["input", "nowhere"]}]}
    write("graph_unknown_value.safetensors",
          st({"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": json.dumps(g4)}, **ok_hdr}, f32(1, 2, 3, 4)))
    g5 = {"input": [2], "ops": [{"op": "teleport"}]}
    write("graph_unknown_op.safetensors",
          st({"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": json.dumps(g5)}, **ok_hdr}, f32(1, 2, 3, 4)))
    g6 = {"input": [1, 2, 2], "ops": [{"op": "conv2d", "weight": "w"}]}
    write("graph_conv_bad_weight.safetensors",
          st({"__metadata__": {"prunus.arch": "lenet5", "prunus.graph": json.dumps(g6)}, **ok_hdr}, f32(1, 2, 3, 4)))
    # INT8 weights (prunus quantize): w.q8.shape / bitmask / values / scale, each broken once.
    gq = json.dumps({"input": [4], "ops": [{"op": "linear", "weight": "w"}]})

    def q8(shape=(2, 4), bits=(0b0011, 0b0101), values=(1, 2, 3, 4), scale=(0.1, 0.2), values_dtype="I8"):
        parts = [("w.q8.shape", "I64", [len(shape)], struct.pack(f"<{len(shape)}q", *shape)),
                 ("w.q8.bitmask", "U8", [2, 1], bytes(bits)),
                 ("w.q8.values", values_dtype, [len(values)], struct.pack(f"<{len(values)}b", *values)),
                 ("w.q8.scale", "F32", [len(scale)], f32(*scale))]
        hdr, data = {"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": gq}}, b""
        for name, dtype, shp, raw in parts:
            hdr[name] = {"dtype": dtype, "shape": shp, "data_offsets": [len(data), len(data) + len(raw)]}
            data += raw
        return st(hdr, data)
    write("graph_q8_values_count.safetensors", q8(values=(1, 2, 3)))
    write("graph_q8_bits_past_end.safetensors", q8(bits=(0b10000001, 0b0101), values=(1, 2, 3, 4)))
    write("graph_q8_nan_scale.safetensors", q8(scale=(math.nan, 0.2)))
    write("graph_q8_zero_dim.safetensors", q8(shape=(2, 0)))
    write("graph_q8_values_dtype.safetensors", q8(values_dtype="U8"))
    # Static activation scales (QAT, quantize --calibrate) on a valid graph: each broken once.
    ga = json.dumps({"input": [2], "ops": [{"op": "linear", "weight": "w"}]})
    for name, scales in [("not_object", "[0.1]"), ("negative", json.dumps({"w": -0.5})),
                         ("not_number", json.dumps({"w": "big"})), ("not_json", "{w: 1")]:
        write(f"actscales_{name}.safetensors",
              st({"__metadata__": {"prunus.arch": "lenet300", "prunus.graph": ga, "prunus.act_scales": scales},
                  **ok_hdr}, f32(1, 2, 3, 4)))


def llama2c_cases():
    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 2, 10, 4
    def header(*h):
        return struct.pack("<7i", *h)
    hs = dim // heads
    n = (vocab * dim + layers * dim + layers * dim * dim * 2 + layers * dim * (dim // heads * kv) * 2 +
         layers * dim + layers * dim * hidden * 3 + dim + seq * hs)  # shared classifier
    body = f32(*([0.01] * n))
    good = header(dim, hidden, layers, heads, kv, vocab, seq) + body
    write("llama_short_header.bin", good[:20])
    write("llama_zero_dim.bin", header(0, hidden, layers, heads, kv, vocab, seq) + body)
    write("llama_negative_layers.bin", header(dim, hidden, -3, heads, kv, vocab, seq) + body)
    write("llama_heads_not_dividing.bin", header(dim, hidden, layers, 3, 3, vocab, seq) + body)
    write("llama_kv_not_dividing.bin", header(dim, hidden, layers, heads, 3, vocab, seq) + body)
    write("llama_huge_sizes.bin", header(1 << 30, 1 << 30, 1 << 20, 1, 1, 1 << 30, 1 << 20) + body)
    write("llama_truncated.bin", good[:-12])
    write("llama_trailing_bytes.bin", good + b"\0" * 12)
    nan_body = bytearray(body)
    nan_body[40:44] = struct.pack("<f", math.nan)
    write("llama_nan_weight.bin", header(dim, hidden, layers, heads, kv, vocab, seq) + bytes(nan_body))
    inf_body = bytearray(body)
    mid = (n // 2) * 4  # a weight, not the ignored RoPE tables at the end
    inf_body[mid:mid + 4] = struct.pack("<f", math.inf)
    write("llama_inf_weight.bin", header(dim, hidden, layers, heads, kv, vocab, seq) + bytes(inf_body))


def idx_cases():
    # Fashion-MNIST directories whose training images are broken (labels and test files valid).
    def images(n, magic=0x00000803, rows=28, cols=28, payload=None):
        data = bytes((i * 7) % 256 for i in range(n * rows * cols)) if payload is None else payload
        return struct.pack(">iiii", magic, n, rows, cols) + data
    labels = lambda n: struct.pack(">ii", 0x00000801, n) + bytes(i % 10 for i in range(n))
    cases = {
        "idx_bad_magic": images(4, magic=0x00000903),
        "idx_truncated": images(4)[:-100],
        "idx_zero_dim": images(4, rows=0),
        "idx_wrong_image_size": images(4, rows=20, cols=20),
        "idx_count_mismatch": images(5),
    }
    for name, train_images in cases.items():
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        for fname, data in [("train-images-idx3-ubyte", train_images), ("train-labels-idx1-ubyte", labels(4)),
                            ("t10k-images-idx3-ubyte", images(4)), ("t10k-labels-idx1-ubyte", labels(4))]:
            with open(os.path.join(d, fname), "wb") as f:
                f.write(data)


def recipe_cases():
    cases = {
        "recipe_unknown_key.yaml": "model: lenet300\ntrian: {epochs: 3}\n",
        "recipe_sparsity_one.yaml": "prune: {sparsity: 1.0}\n",
        "recipe_nm_impossible.yaml": "prune: {pattern: \"3:2\"}\n",
        "recipe_wrong_type.yaml": "train: {epochs: three}\n",
        "recipe_invalid_yaml.yaml": "train: [1, 2\n",
        "recipe_gradual_past_end.yaml": "prune: {schedule: {kind: gradual, end_epoch: 99}}\n",
        "recipe_not_a_mapping.yaml": "- just\n- a list\n",
        "recipe_out_absolute.yaml": "out: /tmp/prunus-recipe-escape\n",
        "recipe_out_dotdot.yaml": "out: runs/../../escape\n",
        "recipe_bad_rewind.yaml": "prune: {schedule: {kind: iterative, rewind: \"epoch:999\"}}\n",
        # found by fuzz_recipe: a tagged flow key used to escape as an uncaught YAML exception
        "recipe_nonscalar_key.yaml": "finetune: {epochs: 2,!distill: {alpha: 0.5}}\n",
    }
    for name, text in cases.items():
        with open(os.path.join(HERE, name), "w") as f:
            f.write(text)


def hf_cases():
    """Hugging Face LLaMA folders: config.json + model.safetensors (or a sharded index), one
    broken piece each. The weights are valid for the good config."""
    dim, hidden, layers, heads, vocab = 8, 16, 1, 2, 10
    cfg = {"hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": vocab,
           "max_position_embeddings": 4, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
    shapes = {"model.embed_tokens.weight": [vocab, dim], "model.norm.weight": [dim],
              "model.layers.0.input_layernorm.weight": [dim], "model.layers.0.post_attention_layernorm.weight": [dim]}
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
        shapes[f"model.layers.0.self_attn.{n}.weight"] = [dim, dim]
    shapes["model.layers.0.mlp.gate_proj.weight"] = [hidden, dim]
    shapes["model.layers.0.mlp.up_proj.weight"] = [hidden, dim]
    shapes["model.layers.0.mlp.down_proj.weight"] = [dim, hidden]
    def weights(shape_of=shapes):
        hdr, data = {}, b""
        for name, shape in sorted(shape_of.items()):
            k = math.prod(shape)
            hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + 4 * k]}
            data += f32(*([0.01] * k))
        return st(hdr, data)
    index = {"metadata": {}, "weight_map": {n: "model-00001-of-00001.safetensors" for n in shapes}}
    def folder(name, config=None, files=None):
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        files = dict(files or {})
        files.setdefault("config.json", json.dumps(cfg if config is None else config).encode()
                         if not isinstance(config, bytes) else config)
        if "model.safetensors.index.json" not in files:
            files.setdefault("model.safetensors", weights())
        for fname, data in files.items():
            with open(os.path.join(d, fname), "wb") as f:
                f.write(data if isinstance(data, bytes) else json.dumps(data).encode())
    folder("hf_config_not_json", config=b"{hidden_size: 8")
    folder("hf_config_not_object", config=b"[8, 16]")
    folder("hf_config_missing_field", config={k: v for k, v in cfg.items() if k != "vocab_size"})
    folder("hf_config_huge_number", config={**cfg, "hidden_size": 1e69})
    folder("hf_config_string_size", config={**cfg, "num_hidden_layers": "1"})
    folder("hf_config_negative_layers", config={**cfg, "num_hidden_layers": -1})
    folder("hf_config_heads_not_dividing", config={**cfg, "num_attention_heads": 3, "num_key_value_heads": 3})
    folder("hf_config_too_large", config={**cfg, "vocab_size": 2**40, "hidden_size": 2**20})
    folder("hf_config_nan_eps", config=json.dumps(cfg).replace("1e-05", "NaN").encode())
    folder("hf_shape_mismatch", config={**cfg, "intermediate_size": 32})
    folder("hf_nan_weight", files={"model.safetensors": weights().replace(f32(0.01), struct.pack("<f", math.nan), 1)})
    folder("hf_missing_model_file", files={"config.json": json.dumps(cfg).encode(), "model.safetensors.index.json":
                                           {"weight_map": {n: "model.safetensors" for n in shapes}}})
    shard = "model-00001-of-00001.safetensors"
    folder("hf_index_outside_folder", files={"model.safetensors.index.json":
                                             {"weight_map": {**index["weight_map"], "model.norm.weight": "../model.safetensors"}},
                                             shard: weights()})
    folder("hf_index_absolute_path", files={"model.safetensors.index.json":
                                            {"weight_map": {**index["weight_map"], "model.norm.weight": "/etc/passwd"}},
                                            shard: weights()})
    folder("hf_index_missing_shard", files={"model.safetensors.index.json":
                                            {"weight_map": {**index["weight_map"],
                                                            "model.norm.weight": "model-00002-of-00002.safetensors"}},
                                            shard: weights()})
    folder("hf_index_no_weight_map", files={"model.safetensors.index.json": {"metadata": {}}, shard: weights()})
    folder("hf_index_not_json", files={"model.safetensors.index.json": b"{\"weight_map\": ", shard: weights()})
    folder("hf_index_tensor_unlisted", files={"model.safetensors.index.json":
                                              {"weight_map": {k: v for k, v in index["weight_map"].items()
                                                              if k != "model.norm.weight"}}, shard: weights()})
    # compressed-tensors sparse layouts: down_proj [8, 16] stored compressed, one piece broken.
    def compressed(layout="sparse-bitmask", shape=(8, 16), bits_per_row=None, values=None, offsets=None,
                   older_names=False):
        rows, cols = 8, 16
        bits = bits_per_row or [0b0011001100110011] * rows  # two of every four columns
        nvals = sum(bin(b).count("1") for b in bits)
        vals = values if values is not None else [0.5] * nvals
        counts = [bin(b).count("1") for b in bits]
        offs = offsets if offsets is not None else [sum(counts[:r]) for r in range(rows)]
        prefix = "model.layers.0.mlp.down_proj" + (".weight" if older_names else "")
        parts = {f"{prefix}.shape": ("I64", [2], struct.pack("<2q", *shape)),
                 f"{prefix}.compressed": ("F32", [len(vals)], f32(*vals)),
                 f"{prefix}.bitmask": ("U8", [rows, 2], b"".join(struct.pack("<H", b) for b in bits))}
        if layout == "sparse-bitmask":
            parts[f"{prefix}.row_offsets"] = ("I64", [rows], struct.pack(f"<{rows}q", *offs))
        hdr, data = {}, b""
        for name, shp in sorted(shapes.items()):
            if name == "model.layers.0.mlp.down_proj.weight":
                continue
            k = math.prod(shp)
            hdr[name] = {"dtype": "F32", "shape": shp, "data_offsets": [len(data), len(data) + 4 * k]}
            data += f32(*([0.01] * k))
        for name, (dt, shp, raw) in parts.items():
            hdr[name] = {"dtype": dt, "shape": shp, "data_offsets": [len(data), len(data) + len(raw)]}
            data += raw
        qc = {"quant_method": "compressed-tensors", "sparsity_config": {"format": layout, "targets": ["Linear"]}}
        return {"config.json": json.dumps({**cfg, "quantization_config": qc}).encode(), "model.safetensors": st(hdr, data)}
    folder("hf_ct_unknown_format", files=compressed(layout="sparse-nibble"))
    folder("hf_ct_values_count", files=compressed(values=[0.5] * 63))
    folder("hf_ct_row_offsets", files=compressed(offsets=[0, 4, 8, 12, 16, 20, 24, 27]))
    folder("hf_ct_shape_mismatch", files=compressed(shape=(8, 8)))
    folder("hf_ct_nan_value", files=compressed(values=[0.5] * 63 + [math.nan]))
    folder("hf_ct_24_three_of_four", files=compressed(layout="sparse-24-bitmask",
                                                      bits_per_row=[0b0111001100110010] + [0b0011001100110011] * 7))
    folder("hf_ct_older_names_missing_part", files={**compressed(older_names=True, layout="sparse-24-bitmask"),
                                                    "model.safetensors": compressed(older_names=True)["model.safetensors"]
                                                    .replace(b"weight.shape", b"weight.shapx")})
    quantized = json.dumps({**cfg, "quantization_config": {"quant_method": "compressed-tensors",
                                                          "config_groups": {"group_0": {"targets": ["Linear"]}}}})
    folder("hf_ct_quantized", files={"config.json": quantized.encode()})


if __name__ == "__main__":
    for entry in os.listdir(HERE):
        p = os.path.join(HERE, entry)
        if (entry.startswith("idx_") or entry.startswith("hf_")) and os.path.isdir(p):
            shutil.rmtree(p)
        elif entry != "make_corpus.py" and os.path.isfile(p):
            os.remove(p)
    safetensors_cases()
    llama2c_cases()
    idx_cases()
    recipe_cases()
    hf_cases()
    print(len(os.listdir(HERE)) - 1, "corpus entries in", HERE)
