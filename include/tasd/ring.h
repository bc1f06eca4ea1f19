/*
 * Operations on the rings of abi.h, shared by the fastpath, libtas and
 * (through cffi) the slowpath.  A ring is a header and nslots fixed-size
 * slots; each slot starts with its owner word.  See abi.h for the protocol.
 *
 * A cursor is one side's private view: it copies the geometry when it is
 * made, so a peer that later scribbles on the ring header cannot make the
 * cursor's owner read or write outside the ring.
 */
#ifndef TASD_RING_H
#define TASD_RING_H

#include <string.h>
#include "tasd/abi.h"

/* Bytes needed for a ring of nslots slots (nslots a power of two). */
static inline uint64_t tas_ring_bytes(uint32_t nslots, uint32_t slot_size)
{
    return (uint64_t)sizeof(struct tas_ring) + (uint64_t)nslots * slot_size;
}

/* Initialise a ring in zeroed memory.  Returns 0, or -1 if nslots is not a
 * nonzero power of two or slot_size cannot hold the owner word. */
static inline int tas_ring_init(struct tas_ring *r, uint32_t nslots, uint32_t slot_size)
{
    if (nslots == 0 || (nslots & (nslots - 1)) != 0 || slot_size < 8 || slot_size % 8 != 0)
        return -1;
    r->nslots = nslots;
    r->slot_size = slot_size;
    r->consumer_armed = 0;
    __atomic_store_n(&r->magic, TAS_ABI_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

/* Attach a private cursor to an initialised ring whose slots must be
 * slot_size bytes and which must fit in avail bytes.  Returns 0, or -1 if
 * the ring header is not what it must be. */
static inline int tas_ring_cursor_init(struct tas_ring_cursor *c, struct tas_ring *r, uint32_t slot_size,
                                       uint64_t avail)
{
    if (__atomic_load_n(&r->magic, __ATOMIC_ACQUIRE) != TAS_ABI_MAGIC)
        return -1;
    uint32_t n = r->nslots; /* read after the magic that publishes it */
    if (n == 0 || (n & (n - 1)) != 0 || r->slot_size != slot_size || tas_ring_bytes(n, slot_size) > avail)
        return -1;
    c->ring = r;
    c->slots = (uint8_t *)(r + 1);
    c->mask = n - 1;
    c->pos = 0;
    c->slot_size = slot_size;
    return 0;
}

static inline uint32_t *tas_ring_owner_(struct tas_ring_cursor *c)
{
    return (uint32_t *)(c->slots + (uint64_t)(c->pos & c->mask) * c->slot_size);
}

/* Producer: the next slot to fill, or NULL when the ring is full. */
static inline void *tas_ring_prod_slot(struct tas_ring_cursor *c)
{
    uint32_t *owner = tas_ring_owner_(c);
    if (__atomic_load_n(owner, __ATOMIC_ACQUIRE) != TAS_SLOT_FREE)
        return NULL;
    return owner;
}

/* Producer: hand the slot returned by tas_ring_prod_slot to the consumer. */
static inline void tas_ring_prod_publish(struct tas_ring_cursor *c, void *slot)
{
    __atomic_store_n((uint32_t *)slot, TAS_SLOT_FULL, __ATOMIC_RELEASE);
    c->pos++;
}

/* Producer, after publishing a batch: nonzero if the consumer was asleep (or
 * about to be) and must be signalled on the ring's eventfd. */
static inline int tas_ring_prod_wake_needed(struct tas_ring_cursor *c)
{
    /* order the owner stores of the batch before reading the flag (the
     * consumer does the mirror image in tas_ring_cons_arm) */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&c->ring->consumer_armed, __ATOMIC_SEQ_CST) == 0)
        return 0;
    return __atomic_exchange_n(&c->ring->consumer_armed, 0, __ATOMIC_SEQ_CST) != 0;
}

/* Consumer: the next full slot, or NULL when the ring is empty. */
static inline void *tas_ring_cons_slot(struct tas_ring_cursor *c)
{
    uint32_t *owner = tas_ring_owner_(c);
    if (__atomic_load_n(owner, __ATOMIC_ACQUIRE) != TAS_SLOT_FULL)
        return NULL;
    return owner;
}

/* Consumer: give the slot back to the producer. */
static inline void tas_ring_cons_release(struct tas_ring_cursor *c, void *slot)
{
    __atomic_store_n((uint32_t *)slot, TAS_SLOT_FREE, __ATOMIC_RELEASE);
    c->pos++;
}

/* Consumer, before sleeping: publish that we sleep, then re-check.  Returns
 * nonzero if a message is already waiting (do not sleep; the armed flag is
 * cleared again). */
static inline int tas_ring_cons_arm(struct tas_ring_cursor *c)
{
    __atomic_store_n(&c->ring->consumer_armed, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(tas_ring_owner_(c), __ATOMIC_SEQ_CST) == TAS_SLOT_FULL) {
        __atomic_store_n(&c->ring->consumer_armed, 0, __ATOMIC_SEQ_CST);
        return 1;
    }
    return 0;
}

/* Consumer, after waking: no signal wanted while awake. */
static inline void tas_ring_cons_disarm(struct tas_ring_cursor *c)
{
    __atomic_store_n(&c->ring->consumer_armed, 0, __ATOMIC_RELAXED);
}

/* Message rings (2 KiB slots): copy one message in; returns 0, or -1 if the
 * ring is full or the data too long. */
static inline int tas_msg_push(struct tas_ring_cursor *c, uint16_t type, uint32_t arg, uint32_t worker,
                               uint64_t ts_ns, const void *data, uint32_t len)
{
    struct tas_msg *m;
    if (len > TAS_RING_DATA_MAX || (m = (struct tas_msg *)tas_ring_prod_slot(c)) == NULL)
        return -1;
    m->type = type;
    m->len = (uint16_t)len;
    m->arg = arg;
    m->worker = worker;
    m->ts_ns = ts_ns;
    if (len)
        memcpy(m->data, data, len);
    tas_ring_prod_publish(c, m);
    return 0;
}

#endif /* TASD_RING_H */
