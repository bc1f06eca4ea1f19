/* What the fastpath does with one received frame (fp_rx_*). */
#ifndef FP_RX_H
#define FP_RX_H

#include <stdint.h>

#include "dev.h"

/* The interface identity the RX path checks frames against. */
struct fp_iface {
    uint8_t mac[6];
    uint32_t ip;        /* network byte order */
    uint32_t max_frame; /* Ethernet header included */
};

enum fp_verdict {
    FP_DROP = 0,      /* reason: enum tas_drop */
    FP_REPLY = 1,     /* the buffer was rewritten into a reply: send it */
    FP_EXCEPTION = 2, /* hand to the slowpath; reason: enum tas_exc */
};

/* Classify (and, for replies, rewrite) one frame; *reason is set for drops
 * and exceptions. Never reads outside b->data[0..b->len). */
enum fp_verdict fp_rx_frame(const struct fp_iface *ifc, struct fp_buf *b, uint32_t *reason);

#endif /* FP_RX_H */
