/*
 * The worker's flow bookkeeping: the lookup hash, the timer wheel, and the
 * lists of flows with something to send or to tell their app.  All links
 * are flow indices plus one (0 ends a list), in the private per-flow array.
 */
#include <stdlib.h>
#include <string.h>

#include "fastpath.h"
#include "tcp.h"

static uint32_t bucket_of(const struct fp_tcp *t, uint32_t rip, uint32_t lip, uint16_t rport, uint16_t lport)
{
    return tas_flow_hash(rip, lip, rport, lport) & (t->nbuckets - 1);
}

struct tas_flow *fp_flow_lookup(struct fp_tcp *t, uint32_t remote_ip, uint32_t local_ip, uint16_t remote_port,
                                uint16_t local_port, uint32_t *index)
{
    for (uint32_t i = t->buckets[bucket_of(t, remote_ip, local_ip, remote_port, local_port)]; i;
         i = t->priv[i - 1].hnext) {
        struct tas_flow *f = &t->flows[i - 1];
        if (f->remote_ip == remote_ip && f->remote_port == remote_port && f->local_port == local_port &&
            f->local_ip == local_ip) {
            *index = i - 1;
            return f;
        }
    }
    return NULL;
}

void fp_flow_hash_insert(struct fp_tcp *t, uint32_t index)
{
    struct tas_flow *f = &t->flows[index];
    uint32_t b = bucket_of(t, f->remote_ip, f->local_ip, f->remote_port, f->local_port);
    t->priv[index].hnext = t->buckets[b];
    t->buckets[b] = index + 1;
}

void fp_flow_hash_remove(struct fp_tcp *t, uint32_t index)
{
    struct tas_flow *f = &t->flows[index];
    uint32_t *link = &t->buckets[bucket_of(t, f->remote_ip, f->local_ip, f->remote_port, f->local_port)];
    while (*link) {
        if (*link == index + 1) {
            *link = t->priv[index].hnext;
            t->priv[index].hnext = 0;
            return;
        }
        link = &t->priv[*link - 1].hnext;
    }
}

/* ---- timer wheel -------------------------------------------------------
 * One entry per flow, at its earliest deadline.  A slot covers 2^20 ns; a
 * deadline more than one turn away sits in its slot and is skipped until
 * its turn comes. */

static uint64_t flow_deadline(const struct tas_flow *f)
{
    uint64_t d = 0;
    const uint64_t cand[] = {f->rto_at, f->delack_at, f->persist_at, f->tlp_at, f->rack_at};
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
        if (cand[i] && (d == 0 || cand[i] < d))
            d = cand[i];
    return d;
}

void fp_flow_timer_cancel(struct fp_tcp *t, uint32_t index)
{
    struct fp_flow_priv *p = &t->priv[index];
    if (!p->tslot)
        return;
    if (p->tprev)
        t->priv[p->tprev - 1].tnext = p->tnext;
    else
        t->wheel[p->tslot - 1] = p->tnext;
    if (p->tnext)
        t->priv[p->tnext - 1].tprev = p->tprev;
    p->tslot = p->tnext = p->tprev = 0;
    p->tdeadline = 0;
}

void fp_flow_timer_update(struct fp_tcp *t, uint32_t index)
{
    struct fp_flow_priv *p = &t->priv[index];
    uint64_t d = flow_deadline(&t->flows[index]);
    if (d == p->tdeadline && p->tslot)
        return;
    fp_flow_timer_cancel(t, index);
    if (d == 0)
        return;
    /* never into a slot already passed: it would wait a whole turn */
    uint64_t tick = d >> FP_WHEEL_SHIFT;
    if (tick <= t->wheel_tick)
        tick = t->wheel_tick + 1;
    uint32_t slot = (uint32_t)(tick & (FP_WHEEL_SLOTS - 1));
    p->tslot = slot + 1;
    p->tdeadline = d;
    p->tprev = 0;
    p->tnext = t->wheel[slot];
    if (p->tnext)
        t->priv[p->tnext - 1].tprev = index + 1;
    t->wheel[slot] = index + 1;
}

uint32_t fp_flow_timer_expired(struct fp_tcp *t, uint64_t now)
{
    /* A slot is processed once its tick is over, so a timer fires at most
     * one slot late.  After a long sleep, one turn visits every slot. */
    uint64_t now_tick = now >> FP_WHEEL_SHIFT;
    if (now_tick > t->wheel_tick + FP_WHEEL_SLOTS + 1)
        t->wheel_tick = now_tick - FP_WHEEL_SLOTS - 1;
    while (t->wheel_tick + 1 < now_tick) {
        uint32_t slot = (uint32_t)((t->wheel_tick + 1) & (FP_WHEEL_SLOTS - 1));
        for (uint32_t i = t->wheel[slot]; i; i = t->priv[i - 1].tnext)
            if (t->priv[i - 1].tdeadline <= now) {
                fp_flow_timer_cancel(t, i - 1);
                return i;
            }
        t->wheel_tick++;
    }
    return 0;
}

uint64_t fp_worker_next_deadline(struct fp_worker *w) { return fp_tcp_next_deadline(w); }

uint64_t fp_tcp_next_deadline(struct fp_worker *w)
{
    struct fp_tcp *t = w->tcp;
    uint64_t best = 0;
    for (uint64_t k = 1; k <= FP_WHEEL_SLOTS; k++) {
        uint32_t slot = (uint32_t)((t->wheel_tick + k) & (FP_WHEEL_SLOTS - 1));
        for (uint32_t i = t->wheel[slot]; i; i = t->priv[i - 1].tnext) {
            uint64_t d = t->priv[i - 1].tdeadline;
            if (best == 0 || d < best)
                best = d;
        }
        /* the first non-empty slot holds the earliest tick, unless its
         * entries are a turn or more away */
        if (best && (best >> FP_WHEEL_SHIFT) <= t->wheel_tick + k)
            return best;
    }
    return best;
}

/* ---- work lists ---------------------------------------------------------- */

void fp_flow_tx_schedule(struct fp_tcp *t, uint32_t index)
{
    struct fp_flow_priv *p = &t->priv[index];
    if (p->on_tx)
        return;
    p->on_tx = 1;
    p->txnext = 0;
    if (t->tx_tail)
        t->priv[t->tx_tail - 1].txnext = index + 1;
    else
        t->tx_head = index + 1;
    t->tx_tail = index + 1;
}

uint32_t fp_flow_tx_pop(struct fp_tcp *t)
{
    uint32_t i = t->tx_head;
    if (i) {
        t->tx_head = t->priv[i - 1].txnext;
        if (!t->tx_head)
            t->tx_tail = 0;
        t->priv[i - 1].on_tx = 0;
    }
    return i;
}

/* Flows with news for their app wait in their context's list: a context
 * whose ring is full costs one check per iteration, not one per flow. */
void fp_flow_notify_schedule(struct fp_tcp *t, uint32_t index)
{
    struct fp_flow_priv *p = &t->priv[index];
    struct fp_appctx *c = p->ctx;
    if (p->on_notify || c == NULL)
        return;
    p->on_notify = 1;
    p->nnext = 0;
    if (c->notify_tail)
        t->priv[c->notify_tail - 1].nnext = index + 1;
    else
        c->notify_head = index + 1;
    c->notify_tail = index + 1;
}

uint32_t fp_flow_notify_pop(struct fp_tcp *t, struct fp_appctx *c)
{
    uint32_t i = c->notify_head;
    if (i) {
        c->notify_head = t->priv[i - 1].nnext;
        if (!c->notify_head)
            c->notify_tail = 0;
        t->priv[i - 1].on_notify = 0;
    }
    return i;
}
