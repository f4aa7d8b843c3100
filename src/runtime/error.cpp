#include "prunus/io.h"

#include <string>

namespace prunus {

const char* version() { return PRUNUS_VERSION; }

void fail(std::string_view subject, std::string_view problem) {
  std::string msg(subject);
  msg += ": ";
  msg += problem;
  throw InputError(msg);
}

}  // namespace prunus
