// libFuzzer target: YAML recipes (parse, validate) with a --set override taken from the input.
#include <cstdint>
#include <string>

#include "prunus/io.h"
#include "prunus/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 8192) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  // A line starting with "#set " becomes a --set override, the rest is the recipe.
  std::vector<std::string> sets;
  if (text.rfind("#set ", 0) == 0) sets.push_back(text.substr(5, text.find('\n') - 5));
  try {
    (void)prunus::parse_recipe(text, "fuzz.yaml", sets);
  } catch (const prunus::InputError&) {
  }
  return 0;
}
