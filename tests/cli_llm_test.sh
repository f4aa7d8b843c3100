#!/usr/bin/env bash
# prunus perplexity / generate / oneshot on the shared llama2.c models: outputs and bad input.
set -uo pipefail
PRUNUS=${1:?prunus}; SHARED=${2:?shared dir}
if [[ ! -f "$SHARED/models/stories260K.bin" ]]; then echo "SKIPPED: $SHARED/models not present"; exit 77; fi
M=$SHARED/models/stories260K.bin; TOK=$SHARED/models/tok512.bin; TXT=$SHARED/data/tinystories_valid.txt
source "$(dirname "$0")/cli_lib.sh"

"$PRUNUS" generate "$M" --steps 30 | grep -q '^Once upon a time, there was a little girl named Lily' \
  && ok "generate reproduces the llama2.c sample" || bad "generate"
# The native runtime loads the file itself (no libtorch copy) and must print the same story.
"$PRUNUS" generate "$M" --steps 60 >"$T/torch.txt" && "$PRUNUS" generate "$M" --steps 60 --runtime native --stats \
  >"$T/native.txt" 2>"$T/native.err" && cmp -s "$T/torch.txt" "$T/native.txt" && grep -q '^native runtime: auto-format' "$T/native.err" \
  && ok "generate --runtime native prints the libtorch story" || bad "native generate: $(diff "$T/torch.txt" "$T/native.txt" | head -3) $(tail -1 "$T/native.err")"
"$PRUNUS" perplexity "$M" "$TXT" --max-windows 2 | grep -q '384909 tokens, 2 windows of 512, 1022 predicted' \
  && ok "perplexity protocol counts" || bad "perplexity counts: $("$PRUNUS" perplexity "$M" "$TXT" --max-windows 2 2>&1)"

"$PRUNUS" oneshot "$M" -o "$T/w.bin" --method wanda --nm 2:4 --calib "$TXT" --nsamples 8 --seqlen 128 \
  --report "$T/w.json" >"$T/out" 2>&1 && ok "oneshot wanda 2:4" || bad "oneshot: $(tail -2 "$T/out")"
grep -q '113280 of 226560 decoder-linear weights zero' "$T/out" && ok "exactly half of the decoder linears zero" \
  || bad "oneshot counts: $(tail -1 "$T/out")"
"$PRUNUS" inspect "$T/w.bin" >"$T/inspect" 2>&1
grep -E '^model.layers.0.mlp.gate_proj.weight .* 2:4' "$T/inspect" >/dev/null && ok "inspect sees 2:4 in a llama2.c file" \
  || bad "inspect: $(grep gate_proj "$T/inspect" | head -1)"
python3 -c "import json,sys; r=json.load(open('$T/w.json')); assert r['peak_rss_bytes']>0 and len(r['layers'])==35" \
  && ok "oneshot report" || bad "oneshot report"
[[ $(grep -o 'class="plot" data-points="[1-9]' "$T/w.html" | wc -l) -ge 1 ]] && ok "oneshot report.html beside the JSON, with plots" \
  || bad "oneshot html: $(ls "$T")"
# Determinism: SparseGPT on 2 threads (libtorch and OpenBLAS) repeats byte for byte.
for t in 1 2; do
  "$PRUNUS" oneshot "$M" -o "$T/sg$t.bin" --method sparsegpt --sparsity 0.5 --calib "$TXT" --nsamples 8 --seqlen 128 \
    --threads 2 --no-progress >/dev/null 2>&1
done
[[ -s "$T/sg1.bin" ]] && cmp -s "$T/sg1.bin" "$T/sg2.bin" && ok "sparsegpt: two 2-thread runs give the same bytes" \
  || bad "two 2-thread sparsegpt runs differ"

# Structured: whole MLP neurons out (hidden 172 -> 129); the smaller file scores as the masked one.
"$PRUNUS" shrink "$M" -o "$T/sh.bin" --masked "$T/shm.bin" --sparsity 0.25 --criterion activation --calib "$TXT" \
  --nsamples 8 --seqlen 128 >"$T/out" 2>&1 && grep -q 'MLP neurons per block 172 -> 129' "$T/out" \
  && ok "shrink a language model's MLPs" || bad "shrink llm: $(tail -2 "$T/out")"
p_sh=$("$PRUNUS" perplexity "$T/sh.bin" "$TXT" --tokenizer "$TOK" --max-windows 4 2>&1 | grep -o 'perplexity [0-9.]*')
p_m=$("$PRUNUS" perplexity "$T/shm.bin" "$TXT" --tokenizer "$TOK" --max-windows 4 2>&1 | grep -o 'perplexity [0-9.]*')
[[ -n "$p_sh" && "$p_sh" == "$p_m" ]] && [[ $(stat -c %s "$T/sh.bin") -lt $(stat -c %s "$M") ]] \
  && ok "shrunk = masked ($p_sh) and the file is smaller" || bad "shrunk '$p_sh' vs masked '$p_m'"
# Heads: one of the 4 KV groups (8 -> 6 query heads); n_heads · head_dim < dim needs a folder.
"$PRUNUS" shrink "$M" -o "$T/shh" --masked "$T/shhm" --sparsity 0 --heads 0.25 --criterion activation --calib "$TXT" \
  --nsamples 8 --seqlen 128 >"$T/out" 2>&1 && grep -q 'attention heads 8 -> 6 (KV heads 4 -> 3)' "$T/out" \
  && grep -q '"head_dim": 8' "$T/shh/config.json" && ok "shrink heads into a Hugging Face folder with head_dim" \
  || bad "shrink heads: $(tail -2 "$T/out")"
p_sh=$("$PRUNUS" perplexity "$T/shh" "$TXT" --tokenizer "$TOK" --max-windows 4 2>&1 | grep -o 'perplexity [0-9.]*')
p_m=$("$PRUNUS" perplexity "$T/shhm" "$TXT" --tokenizer "$TOK" --max-windows 4 2>&1 | grep -o 'perplexity [0-9.]*')
[[ -n "$p_sh" && "$p_sh" == "$p_m" ]] && ok "heads: shrunk = masked ($p_sh)" || bad "heads: shrunk '$p_sh' vs masked '$p_m'"
expect_error "shrink heads into a .bin" "$T/shh.bin: removing heads makes n_heads · head_dim < dim" \
  "$PRUNUS" shrink "$M" -o "$T/shh.bin" --heads 0.25 --criterion l2
# Output reconstruction: the refit lowers every block's error on the calibration windows.
"$PRUNUS" shrink "$M" -o "$T/shr.bin" --sparsity 0.25 --criterion activation --reconstruct --calib "$TXT" \
  --nsamples 8 --seqlen 128 >"$T/out" 2>&1 && python3 - "$T/out" <<'PY' && ok "shrink --reconstruct lowers every block's error" || bad "reconstruct: $(tail -2 "$T/out")"
import re, sys
pairs = re.findall(r"([0-9.]+) -> ([0-9.]+)", open(sys.argv[1]).read().split("reconstruction:")[1].split("\n")[0])
assert len(pairs) == 5 and all(float(b) < float(a) for a, b in pairs), pairs
PY
expect_error "shrink llm: activation without text" "--calib: --criterion activation needs calibration text" \
  "$PRUNUS" shrink "$M" -o "$T/sh2.bin" --criterion activation
[[ ! -e "$T/sh2.bin" ]] && ok "nothing written" || bad "shrink wrote despite the error"

# Bad input: one line naming the file, exit 2, nothing written.
head -c 1000 "$M" >"$T/trunc.bin"
expect_error "truncated checkpoint" "$T/trunc.bin: file is 1000 bytes but its header" "$PRUNUS" perplexity "$T/trunc.bin" "$TXT" --tokenizer "$TOK"
printf 'GGUFxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >"$T/wrong.bin"
expect_error "wrong header" "$T/wrong.bin: " "$PRUNUS" generate "$T/wrong.bin" --tokenizer "$TOK"
# A tokenizer with a 513th token does not belong to a 512-token model.
{ cat "$TOK"; printf '\x00\x00\x00\x00\x01\x00\x00\x00x'; } >"$T/tok513.bin"
expect_error "vocab mismatch" "$T/tok513.bin: tokenizer has 9 bytes after the 512 tokens" \
  "$PRUNUS" perplexity "$M" "$TXT" --tokenizer "$T/tok513.bin"
head -c 3000 "$TOK" >"$T/tokcut.bin"
expect_error "truncated tokenizer" "$T/tokcut.bin: tokenizer truncated" "$PRUNUS" generate "$M" --tokenizer "$T/tokcut.bin"
cp "$M" "$T/m.bin"
expect_error "no tokenizer beside the model" "no tokenizer given" "$PRUNUS" perplexity "$T/m.bin" "$TXT"
expect_error "bad N:M" "--nm 4:2" "$PRUNUS" oneshot "$M" -o "$T/x.bin" --nm 4:2 --calib "$TXT"
expect_error "sparsity out of range" "outside [0, 1)" "$PRUNUS" oneshot "$M" -o "$T/x.bin" --method magnitude --sparsity 1.5
expect_error "wanda without calibration" "--calib" "$PRUNUS" oneshot "$M" -o "$T/x.bin" --method wanda
[[ ! -e "$T/x.bin" ]] && ok "failed oneshot wrote nothing" || bad "failed oneshot left $T/x.bin"
# compressed-tensors export: a folder vLLM reads; Prunus refuses to read it back as fp32, and a
# .bin output for it is an error.
"$PRUNUS" convert "$M" "$T/ct" --compressed-tensors int8 >"$T/ct.out" 2>&1 && grep -q "35 decoder linears" "$T/ct.out" \
  && ok "convert --compressed-tensors: $(cat "$T/ct.out" | cut -d: -f2-)" || bad "convert --compressed-tensors: $(cat "$T/ct.out")"
expect_error "a quantized compressed-tensors folder is not read back" "$T/ct/config.json: has a quantized quantization_config" \
  "$PRUNUS" perplexity "$T/ct" "$TXT" --tokenizer "$TOK"
expect_error "compressed-tensors to .bin" "writes a Hugging Face folder" "$PRUNUS" convert "$M" "$T/ct.bin" --compressed-tensors int8
expect_error "unknown compressed-tensors layout" "unknown layout (known: int8, int8-bitmask, sparse-bitmask, sparse-24-bitmask)" \
  "$PRUNUS" convert "$M" "$T/ct2" --compressed-tensors fp4
# Sparse layouts read back: llama2.c -> sparse-bitmask / sparse-24-bitmask folder -> llama2.c,
# byte-identical; a model that is not 2:4 is refused as sparse-24-bitmask (nothing written).
"$PRUNUS" oneshot "$M" --method magnitude --nm 2:4 -o "$T/nm.bin" --no-progress >/dev/null 2>&1
for layout in sparse-bitmask sparse-24-bitmask; do
  rm -rf "$T/sp" "$T/back.bin"
  "$PRUNUS" convert "$T/nm.bin" "$T/sp" --compressed-tensors $layout >/dev/null 2>&1 && "$PRUNUS" convert "$T/sp" "$T/back.bin" >/dev/null 2>&1 \
    && cmp -s "$T/nm.bin" "$T/back.bin" && ok "$layout: written and read back byte-identical" || bad "$layout round trip"
done
"$PRUNUS" inspect "$T/sp" >"$T/insp" 2>&1 && [[ $(grep -c 'F32 (sparse-24-bitmask) .* 50.00% *2:4' "$T/insp") -eq 35 ]] \
  && ok "inspect FOLDER: 35 decompressed linears at 50.00%, pattern 2:4" || bad "inspect folder: $(head -5 "$T/insp")"
# The older tensor names (module.weight.bitmask, ...) read the same.
python3 - "$T/sp/model.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
new = {}
for k, v in hdr.items():
    for part in ("shape", "compressed", "bitmask"):
        if k.endswith("_proj." + part):
            k = k[:-len(part)] + "weight." + part
    new[k] = v
h = json.dumps(new).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
PY
rm -f "$T/back.bin"; "$PRUNUS" convert "$T/sp" "$T/back.bin" >/dev/null 2>&1 && cmp -s "$T/nm.bin" "$T/back.bin" \
  && ok "older compressed-tensors names (….weight.bitmask) read back byte-identical" || bad "older names"
# tokenizer.json: the kinds Prunus does not read, and a broken one, are refused with one line.
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
base = {"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "added_tokens": [{"id": 0, "content": "<unk>"}, {"id": 1, "content": "<s>"}, {"id": 2, "content": "</s>"}],
        "model": {"type": "BPE", "byte_fallback": True, "vocab": {"a": 3}, "merges": []}}
def write(name, **model):
    json.dump({**base, "model": {**base["model"], **model}}, open(f"{t}/{name}.json", "w"))
write("bytelevel", byte_fallback=False)
write("wordpiece", type="WordPiece")
write("badmerge", merges=["a zz"])
write("ok")
PY
expect_error "tokenizer.json without byte fallback" "model.byte_fallback is not true" "$PRUNUS" tokenize "$TXT" --tokenizer "$T/bytelevel.json" --vocab-size 4
expect_error "tokenizer.json of another kind" "model.type is not BPE" "$PRUNUS" tokenize "$TXT" --tokenizer "$T/wordpiece.json" --vocab-size 4
expect_error "tokenizer.json merge of an unknown token" "names a token the vocabulary lacks" "$PRUNUS" tokenize "$TXT" --tokenizer "$T/badmerge.json" --vocab-size 4
expect_error "tokenizer.json of another vocabulary size" "outside the model's vocabulary of 3" "$PRUNUS" tokenize "$TXT" --tokenizer "$T/ok.json" --vocab-size 3
expect_error "sparse-24-bitmask refuses a model that is not 2:4" "is not 2:4 sparse" \
  "$PRUNUS" convert "$M" "$T/not24" --compressed-tensors sparse-24-bitmask
[[ ! -e "$T/not24" ]] && ok "refused 2:4 export wrote nothing" || bad "refused 2:4 export left $T/not24"

# --stream: HF folder → HF folder with one block in memory; same bytes as the in-memory run
# (model.safetensors and config.json), for SparseGPT 2:4, OWL (its first pass also streams) and
# magnitude; Ctrl-C (a SIGINT during the run) leaves no output; refusals.
"$PRUNUS" convert "$M" "$T/hfin" >/dev/null 2>&1
for args in "--method sparsegpt --nm 2:4" "--method owl --sparsity 0.6" "--method magnitude --sparsity 0.5"; do
  rm -rf "$T/mem" "$T/str"
  "$PRUNUS" oneshot "$T/hfin" -o "$T/mem" $args --calib "$TXT" --tokenizer "$TOK" --nsamples 8 --seqlen 128 --no-progress >/dev/null 2>&1
  "$PRUNUS" oneshot "$T/hfin" -o "$T/str" $args --calib "$TXT" --tokenizer "$TOK" --nsamples 8 --seqlen 128 --no-progress --stream >"$T/out" 2>&1
  cmp -s "$T/mem/model.safetensors" "$T/str/model.safetensors" && cmp -s "$T/mem/config.json" "$T/str/config.json" \
    && ok "oneshot --stream ($args) writes the in-memory run's bytes" || bad "--stream $args: $(tail -2 "$T/out")"
done
ls -a "$T/str" | grep -q '\.tmp\.' && bad "--stream left a temp file in $T/str" || ok "--stream leaves no temp file"
# Ctrl-C during a streamed run keeps the blocks written so far (OUT.ckpt.partial) and the
# activations entering the next block (OUT.ckpt); --resume finishes with the bytes of an
# uninterrupted run. Nothing appears at OUT until then.
rm -rf "$T/int" "$T/int.ckpt" "$T/int.ckpt.partial" "$T/ref"
"$PRUNUS" oneshot "$T/hfin" -o "$T/ref" --method sparsegpt --sparsity 0.5 --calib "$TXT" --tokenizer "$TOK" --nsamples 8 --seqlen 128 \
  --no-progress >/dev/null 2>&1
"$PRUNUS" oneshot "$T/hfin" -o "$T/int" --method sparsegpt --sparsity 0.5 --calib "$TXT" --tokenizer "$TOK" --nsamples 8 --seqlen 128 \
  --stream --stop-after-block 1 >"$T/out" 2>&1; rc=$?
[[ $rc -eq 130 && ! -e "$T/int/model.safetensors" && ! -e "$T/int/config.json" && -s "$T/int.ckpt" && -s "$T/int.ckpt.partial" ]] \
  && ok "an interrupted --stream run keeps its progress and writes no model" || bad "interrupted --stream: rc $rc, $(ls -a "$T/int" "$T" 2>&1 | tr '\n' ' ')"
expect_error "--stream --resume with other options" "checkpoint is from a different model" \
  "$PRUNUS" oneshot "$T/hfin" -o "$T/int" --method sparsegpt --sparsity 0.6 --calib "$TXT" --tokenizer "$TOK" --nsamples 8 --seqlen 128 --stream --resume --no-progress
[[ -s "$T/int.ckpt.partial" ]] && ok "a refused resume keeps the partial output" || bad "a refused resume removed $T/int.ckpt.partial"
"$PRUNUS" oneshot "$T/hfin" -o "$T/int" --method sparsegpt --sparsity 0.5 --calib "$TXT" --tokenizer "$TOK" --nsamples 8 --seqlen 128 \
  --stream --resume >"$T/out" 2>&1; rc=$?
[[ $rc -eq 0 ]] && cmp -s "$T/ref/model.safetensors" "$T/int/model.safetensors" && cmp -s "$T/ref/config.json" "$T/int/config.json" \
  && [[ ! -e "$T/int.ckpt" && ! -e "$T/int.ckpt.partial" ]] \
  && ok "--stream --resume finishes with the uninterrupted run's bytes" || bad "--stream --resume: rc $rc, $(tail -2 "$T/out")"
"$PRUNUS" oneshot "$T/hfin" -o "$T/int2" --method magnitude --sparsity 0.5 --stream --stop-after-block 0 >/dev/null 2>&1
rm -f "$T/int2.ckpt.partial"
expect_error "--stream --resume without its partial output" "int2.ckpt.partial: missing" \
  "$PRUNUS" oneshot "$T/hfin" -o "$T/int2" --method magnitude --sparsity 0.5 --stream --resume --no-progress
expect_error "--stream needs a folder" "--stream reads a Hugging Face folder" "$PRUNUS" oneshot "$M" -o "$T/x" --method magnitude --stream

echo "$fails failure(s)"
[[ $fails -eq 0 ]]
