"""A Hugging Face tokenizer.json for a llama2.c tokenizer, checked both ways.

Builds the LLaMA-style tokenizer.json (BPE, byte_fallback, "▁" spaces; merges = every split of
every piece into two pieces, ranked by the merged piece's score, as transformers' sentencepiece
converter does) from a llama2.c tok<N>.bin, then:
1. the Hugging Face `tokenizers` library (PyPI) encodes the text's lines exactly as run.c's
   encode does (the reference here, written from run.c);
2. `prunus perplexity` of the model as a Hugging Face folder with that tokenizer.json gives the
   same token count and perplexity as the .bin with the .bin tokenizer.
usage: tokenizer_json_check.py PRUNUS MODEL.bin TOK.bin TEXT WORKDIR"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys

from tokenizers import Tokenizer

prunus, model, tok_path, text_path, work = sys.argv[1:]
raw = open(tok_path, "rb").read()
vocab_size = struct.unpack("<i", open(model, "rb").read(24)[20:24])[0]
vocab_size = abs(vocab_size)
pieces, scores, pos = [], [], 4
for _ in range(vocab_size):
    score, n = struct.unpack("<fi", raw[pos:pos + 8])
    pieces.append(raw[pos + 8:pos + 8 + n])
    scores.append(score)
    pos += 8 + n
lookup = {p: i for i, p in enumerate(pieces)}


def encode_runc(text):  # run.c's encode (dummy prefix, code points, byte fallback, best-score merges)
    toks = [1, lookup[b" "]] if text else [1]
    for ch in text:
        b = ch.encode("utf-8")
        toks.extend([lookup[b]] if b in lookup else [x + 3 for x in b])
    while True:
        best, at, best_id = -1e10, -1, -1
        for i in range(len(toks) - 1):
            j = lookup.get(pieces[toks[i]] + pieces[toks[i + 1]])
            if j is not None and scores[j] > best:
                best, at, best_id = scores[j], i, j
        if at < 0:
            return toks
        toks[at:at + 2] = [best_id]


META = "\u2581"
special = {0: "<unk>", 1: "<s>", 2: "</s>"}
names = {}
for i, p in enumerate(pieces):
    names[i] = special.get(i) or p.decode("utf-8").replace(" ", META)
vocab = {names[i]: i for i in range(vocab_size)}
merges = []
for i, p in enumerate(pieces):
    if i in special or re.fullmatch(rb"<0x[0-9A-F]{2}>", p):
        continue
    chars = names[i]
    for k in range(1, len(chars)):
        a, b = chars[:k], chars[k:]
        if a in vocab and b in vocab and vocab[a] not in special and vocab[b] not in special:
            merges.append((-scores[i], i, k, a, b))
merges.sort()
tj = {
    "version": "1.0",
    "truncation": None, "padding": None,
    "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for i, c in special.items()],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": META},
                                                         {"type": "Replace", "pattern": {"String": " "}, "content": META}]},
    "pre_tokenizer": None, "post_processor": None,
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": META}, "content": " "},
                                                 {"type": "ByteFallback"}, {"type": "Fuse"},
                                                 {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "vocab": vocab, "merges": [[a, b] for _, _, _, a, b in merges]},
}
os.makedirs(work, exist_ok=True)
tj_path = os.path.join(work, "tokenizer.json")
json.dump(tj, open(tj_path, "w", encoding="utf-8"), ensure_ascii=False)

hf = Tokenizer.from_file(tj_path)
lines = [l.strip() for l in open(text_path, encoding="utf-8") if l.strip()]
checked = lines[:300]
bad = [l for l in checked if [1] + hf.encode(l, add_special_tokens=False).ids != encode_runc(l)]
print(f"tokenizers {__import__('tokenizers').__version__}: {len(checked) - len(bad)}/{len(checked)} lines encode as run.c "
      f"({len(merges)} merges)")

# prunus tokenize, document by document over the whole text: tokenizer.json == tokenizers ==
# the .bin tokenizer.
def prunus_ids(tokenizer):
    r = subprocess.run([prunus, "tokenize", text_path, "--tokenizer", tokenizer, "--vocab-size", str(vocab_size)],
                       capture_output=True, text=True, check=True)
    return [[int(x) for x in l.split()] for l in r.stdout.splitlines()]
ids_json, ids_bin = prunus_ids(tj_path), prunus_ids(tok_path)
ids_hf = [[1] + e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]
same_hf = sum(a == b for a, b in zip(ids_json, ids_hf))
same_bin = sum(a == b for a, b in zip(ids_json, ids_bin))
print(f"prunus tokenize with tokenizer.json: {same_hf}/{len(lines)} documents as tokenizers, {same_bin}/{len(lines)} as "
      f"with the .bin ({sum(map(len, ids_json))} tokens)")
bad += [0] * (len(lines) - same_hf) + [0] * (len(lines) - same_bin) + [0] * (len(ids_json) != len(lines))

folder = os.path.join(work, "hf")
shutil.rmtree(folder, ignore_errors=True)
subprocess.run([prunus, "convert", model, folder], check=True, capture_output=True)
shutil.copy(tj_path, folder)
def ppl(*args):
    r = subprocess.run([prunus, "perplexity", *args, text_path, "--max-windows", "8"], capture_output=True, text=True)
    m = re.search(r"([0-9]+) tokens.*perplexity ([0-9.]+)", r.stdout.replace("\n", " "))
    return (m.group(1), m.group(2)) if m else (r.stdout + r.stderr).strip()
with_bin, with_json = ppl(model, "--tokenizer", tok_path), ppl(folder)
print(f"prunus perplexity: .bin + tok.bin {with_bin}, folder + tokenizer.json {with_json}")
sys.exit(0 if not bad and with_bin == with_json and isinstance(with_bin, tuple) else 1)
