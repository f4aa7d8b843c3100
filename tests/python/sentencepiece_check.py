"""A sentencepiece tokenizer.model for a llama2.c tokenizer, checked against the sentencepiece
package from PyPI.

llama2.c's tok<N>.bin files are exported from sentencepiece BPE models (pieces with "▁" as a
space, scores, <unk>/<s>/</s> and byte-fallback <0xXX> pieces, identity normalisation with a
dummy prefix). This rebuilds that ModelProto, then:
1. `prunus tokenize` with the tokenizer.model encodes every document of the text exactly as the
   Python sentencepiece package does (BOS + sp.encode), and as with the .bin tokenizer;
2. `prunus perplexity` of the model as a Hugging Face folder holding only tokenizer.model (found
   on its own) gives the .bin's token count and perplexity;
3. a file that is not a sentencepiece model and a vocabulary-size mismatch are refused with one
   line naming the file and exit code 2.
usage: sentencepiece_check.py PRUNUS MODEL.bin TOK.bin TEXT WORKDIR"""
import os
import re
import shutil
import struct
import subprocess
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

prunus, model, tok_path, text_path, work = sys.argv[1:]
os.makedirs(work, exist_ok=True)
raw = open(tok_path, "rb").read()
vocab_size = abs(struct.unpack("<i", open(model, "rb").read(24)[20:24])[0])
proto = pb.ModelProto()
pos = 4
for i in range(vocab_size):
    score, n = struct.unpack("<fi", raw[pos:pos + 8])
    text = raw[pos + 8:pos + 8 + n].decode("utf-8")
    pos += 8 + n
    p = proto.pieces.add()
    p.score = score
    if i == 0:
        p.piece, p.type = "<unk>", pb.ModelProto.SentencePiece.UNKNOWN
    elif i in (1, 2):
        p.piece, p.type = ("<s>", "</s>")[i - 1], pb.ModelProto.SentencePiece.CONTROL
    elif re.fullmatch(r"<0x[0-9A-F]{2}>", text):
        p.piece, p.type = text, pb.ModelProto.SentencePiece.BYTE
    else:
        p.piece, p.type = text.replace(" ", "\u2581"), pb.ModelProto.SentencePiece.NORMAL
t = proto.trainer_spec
t.model_type = pb.TrainerSpec.BPE
t.vocab_size = vocab_size
t.byte_fallback = True
t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
n = proto.normalizer_spec
n.name = "identity"
n.add_dummy_prefix = True
n.remove_extra_whitespaces = False
n.escape_whitespaces = True
sp_path = os.path.join(work, "tokenizer.model")
open(sp_path, "wb").write(proto.SerializeToString())

sp = spm.SentencePieceProcessor(model_file=sp_path)
lines = [l.strip() for l in open(text_path, encoding="utf-8") if l.strip()]


def prunus_ids(tokenizer):
    r = subprocess.run([prunus, "tokenize", text_path, "--tokenizer", tokenizer, "--vocab-size", str(vocab_size)],
                       capture_output=True, text=True, check=True)
    return [[int(x) for x in l.split()] for l in r.stdout.splitlines()]


ids_model, ids_bin = prunus_ids(sp_path), prunus_ids(tok_path)
ids_py = [[1] + ids for ids in sp.encode(lines)]
same_py = sum(a == b for a, b in zip(ids_model, ids_py))
same_bin = sum(a == b for a, b in zip(ids_model, ids_bin))
print(f"sentencepiece {spm.__version__}: prunus tokenize with tokenizer.model = the Python package on "
      f"{same_py}/{len(lines)} documents, = the .bin tokenizer on {same_bin}/{len(lines)} "
      f"({sum(map(len, ids_model))} tokens)")
ok = len(ids_model) == len(lines) and same_py == len(lines) and same_bin == len(lines)

folder = os.path.join(work, "hf")
shutil.rmtree(folder, ignore_errors=True)
subprocess.run([prunus, "convert", model, folder], check=True, capture_output=True)
for name in ("tokenizer.json",):  # only tokenizer.model in the folder
    if os.path.exists(os.path.join(folder, name)):
        os.remove(os.path.join(folder, name))
shutil.copy(sp_path, folder)


def ppl(*args):
    r = subprocess.run([prunus, "perplexity", *args, text_path, "--max-windows", "8"], capture_output=True, text=True)
    m = re.search(r"([0-9]+) tokens.*perplexity ([0-9.]+)", r.stdout.replace("\n", " "))
    return (m.group(1), m.group(2)) if m else (r.stdout + r.stderr).strip()


with_bin, with_model = ppl(model, "--tokenizer", tok_path), ppl(folder)
print(f"prunus perplexity: .bin + tok.bin {with_bin}, folder + tokenizer.model {with_model}")
ok = ok and isinstance(with_bin, tuple) and with_bin == with_model

# Refusals: one line naming the file, exit 2.
garbage = os.path.join(work, "garbage.model")
open(garbage, "wb").write(b"\x0a\xff\xff\xff\xff\x0fnot a model")
for args, want in (([garbage, "512"], garbage), ([sp_path, "500"], sp_path)):
    r = subprocess.run([prunus, "tokenize", text_path, "--tokenizer", args[0], "--vocab-size", args[1]],
                       capture_output=True, text=True)
    lines_err = [l for l in r.stderr.splitlines() if l.strip()]
    good = r.returncode == 2 and len(lines_err) == 1 and want in lines_err[0]
    print(f"refused {os.path.basename(args[0])} (vocab {args[1]}): exit {r.returncode}: {lines_err[:2]}")
    ok = ok and good
sys.exit(0 if ok else 1)
