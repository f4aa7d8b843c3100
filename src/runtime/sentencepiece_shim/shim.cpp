// libprunus_sentencepiece.so: a C interface to the sentencepiece library, loaded by the runtime
// with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) the first time a tokenizer.model is read.
//
// Why not link libsentencepiece into the programs: Debian's libsentencepiece.so.0 carries its
// own copy of protobuf-lite 3.14 and exports its symbols. In a process that also has
// libprotobuf.so.32 (ONNX export), whichever comes first in the link order takes the other's
// calls: prunus crashed at start-up in libprotobuf's static initialisers, and with the order
// reversed sentencepiece's model code stopped on protobuf's version check. Loaded locally with
// deep binding, sentencepiece keeps to its own copy and nothing else sees it.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
void copy_error(const std::string& msg, char* err, std::size_t len) {
  if (!err || !len) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = 0;
}
}  // namespace

extern "C" {

void* prunus_spm_load(const char* path, char* err, std::size_t errlen) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto st = sp->Load(path);
  if (!st.ok()) {
    copy_error(st.ToString(), err, errlen);
    delete sp;
    return nullptr;
  }
  return sp;
}

void prunus_spm_free(void* h) { delete static_cast<sentencepiece::SentencePieceProcessor*>(h); }

int prunus_spm_size(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize(); }
int prunus_spm_bos(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->bos_id(); }
int prunus_spm_eos(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->eos_id(); }
float prunus_spm_score(void* h, int id) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetScore(id); }

// The piece's bytes into buf (NUL-terminated, truncated to len - 1); returns its full length.
int prunus_spm_piece(void* h, int id, char* buf, std::size_t len) {
  const std::string p = static_cast<sentencepiece::SentencePieceProcessor*>(h)->IdToPiece(id);
  copy_error(p, buf, len);
  return static_cast<int>(p.size());
}

// Encodes text[0..n) into *ids (malloc'd; free with prunus_spm_free_ids). 0 on success.
int prunus_spm_encode(void* h, const char* text, std::size_t n, int** ids, std::size_t* count, char* err,
                      std::size_t errlen) {
  std::vector<int> v;
  const auto st = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string(text, n), &v);
  if (!st.ok()) {
    copy_error(st.ToString(), err, errlen);
    return 1;
  }
  *ids = static_cast<int*>(std::malloc(v.size() * sizeof(int) + 1));
  std::memcpy(*ids, v.data(), v.size() * sizeof(int));
  *count = v.size();
  return 0;
}

void prunus_spm_free_ids(int* ids) { std::free(ids); }
}
