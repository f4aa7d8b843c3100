// Internal: Ctrl-C handling. The first SIGINT/SIGTERM sets a flag that long loops poll to
// write a checkpoint and stop; a second one ends the process at once.
#pragma once

namespace prunus {
void install_interrupt_handler();
bool interrupt_requested();
void clear_interrupt();
}  // namespace prunus
