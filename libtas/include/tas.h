/*
 * libtas low-level API: what an application (or the sockets emulation
 * layered on it) calls to talk to tasd.  Grows with the TCP issue; for now
 * it identifies the library and the shared-memory ABI it was built for.
 */
#ifndef LIBTAS_TAS_H
#define LIBTAS_TAS_H

#include <stdint.h>

#define TAS_EXPORT __attribute__((visibility("default")))

/* Version of libtas, "MAJOR.MINOR.PATCH". */
TAS_EXPORT const char *tas_version(void);
/* TAS_ABI_VERSION of include/tasd/abi.h this library was built against;
 * tasd refuses an application whose ABI version differs from its own. */
TAS_EXPORT uint32_t tas_abi_version(void);

#endif /* LIBTAS_TAS_H */
