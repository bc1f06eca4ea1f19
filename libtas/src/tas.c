#include "tas.h"
#include "tasd/abi.h"

const char *tas_version(void) { return "0.1.0"; }

uint32_t tas_abi_version(void) { return TAS_ABI_VERSION; }
