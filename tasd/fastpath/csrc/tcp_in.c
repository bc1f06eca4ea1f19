/*
 * A worker's established flows: installing and removing them, receiving
 * segments (RFC 9293 3.10.7.4 in the order it gives, with RFC 5961, RFC
 * 7323 PAWS, RFC 2018 SACK, RFC 3168 ECN), the timers, the messages of
 * applications, and the per-iteration work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tcp.h"
#include "wire.h"

#define QUICKACKS 16

static uint32_t rd32s(const uint8_t *p) { return rd32(p); }

/* ---- setup ---------------------------------------------------------------- */

int fp_tcp_init(struct fp_worker *w, char *err, size_t errlen)
{
    struct tas_worker_shm *shm = w->shm;
    struct fp_tcp *t = calloc(1, sizeof *t);
    if (t == NULL)
        goto oom;
    t->max_flows = shm->max_flows;
    if (t->max_flows) {
        if (shm->flows_off + (uint64_t)t->max_flows * sizeof(struct tas_flow) > shm->size ||
            shm->flow_ctl_off + (uint64_t)t->max_flows * sizeof(struct tas_flow_ctl) > shm->size ||
            t->max_flows > TAS_FLOW_INDEX_MASK + 1) {
            snprintf(err, errlen, "worker region: flow table out of bounds");
            free(t);
            return -1;
        }
        t->flows = (struct tas_flow *)((uint8_t *)shm + shm->flows_off);
        t->ctl = (struct tas_flow_ctl *)((uint8_t *)shm + shm->flow_ctl_off);
    }
    t->nbuckets = 1;
    while (t->nbuckets < 2 * t->max_flows)
        t->nbuckets <<= 1;
    t->priv = calloc(t->max_flows ? t->max_flows : 1, sizeof *t->priv);
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (t->priv == NULL || t->buckets == NULL)
        goto oom;
    t->challenge_limit = 1000;
    w->tcp = t;
    return 0;
oom:
    if (t) {
        free(t->priv);
        free(t->buckets);
        free(t);
    }
    snprintf(err, errlen, "out of memory for the flow table");
    return -1;
}

void fp_tcp_free(struct fp_worker *w)
{
    if (w->tcp) {
        free(w->tcp->priv);
        free(w->tcp->buckets);
        free(w->tcp);
        w->tcp = NULL;
    }
}

void fp_tcp_event(struct fp_worker *w, uint32_t index, uint32_t kind)
{
    struct tas_flow *f = &w->tcp->flows[index];
    struct tas_flow_event ev = {
        .index = index, .gen = f->gen, .kind = kind, .fl = f->fl, .snd_una = f->snd_una, .snd_nxt = f->snd_nxt,
        .rcv_nxt = f->rcv_nxt, .ts_recent = f->ts_recent, .srtt_us = f->srtt_us, .rttvar_us = f->rttvar_us,
        .last_rx_ns = f->last_rx_ns};
    fp_flow_event(w, &ev);
}

static struct tas_flow *flow_by_cmd(struct fp_worker *w, uint32_t index, uint32_t gen)
{
    struct fp_tcp *t = w->tcp;
    if (index >= t->max_flows || t->flows[index].state == TAS_FLOW_FREE || t->flows[index].gen != gen)
        return NULL;
    return &t->flows[index];
}

static int pow2(uint32_t x) { return x && !(x & (x - 1)); }

/* The loss-recovery and ECN marks of a flow whose snd_una was just set
 * (install, the handshake's ACK): near snd_una, see process_ack(). */
static void marks_at_snd_una(struct fp_tcp *t, uint32_t index)
{
    struct tas_flow *f = &t->flows[index];
    f->recover = f->rexmit_mark = f->rack_hi = f->snd_una;
    t->priv[index].ecn_recover = f->snd_una;
}

int fp_tcp_flow_add(struct fp_worker *w, const struct tas_flow_params *p)
{
    struct fp_tcp *t = w->tcp;
    struct fp_app *a = fp_app_get(w, p->app_id);
    uint32_t dummy;
    if (p->index >= t->max_flows || t->flows[p->index].state != TAS_FLOW_FREE || a == NULL ||
        p->ctx >= a->nctx || a->ctx[p->ctx] == NULL || !pow2(p->rx_size) || !pow2(p->tx_size) ||
        p->rx_off + p->rx_size > a->size || p->tx_off + p->tx_size > a->size || p->mss < 64 ||
        p->snd_wscale > 14 || p->rcv_wscale > 14 ||
        fp_flow_lookup(t, p->remote_ip, p->local_ip, p->remote_port, p->local_port, &dummy))
        return -1;
    struct tas_flow *f = &t->flows[p->index];
    struct fp_flow_priv *pv = &t->priv[p->index];
    /* A slot's earlier flow may still be linked into the TX list or a
     * context's notify list (they drop free flows when they meet them):
     * keep those links, or the lists would break behind it. */
    struct fp_flow_priv keep = *pv;
    memset(f, 0, sizeof *f);
    memset(pv, 0, sizeof *pv);
    pv->on_tx = keep.on_tx;
    pv->txnext = keep.txnext;
    pv->on_notify = keep.on_notify;
    pv->nnext = keep.nnext;
    memset(&t->ctl[p->index], 0, sizeof t->ctl[p->index]);
    f->gen = p->gen;
    f->app_id = p->app_id;
    f->ctx = p->ctx;
    f->local_ip = p->local_ip;
    f->remote_ip = p->remote_ip;
    f->local_port = p->local_port;
    f->remote_port = p->remote_port;
    memcpy(f->remote_mac, p->remote_mac, 6);
    f->mss = p->mss;
    f->opts = p->opts;
    f->snd_wscale = p->snd_wscale;
    f->rcv_wscale = p->rcv_wscale;
    f->ts_offset = p->ts_offset;
    f->rx_off = p->rx_off;
    f->tx_off = p->tx_off;
    f->rx_size = p->rx_size;
    f->tx_size = p->tx_size;
    f->rcv_nxt = f->last_ack_sent = p->rcv_nxt;
    f->rx_avail = p->rx_size;
    /* what the handshake advertised was at most this: accept up to it */
    f->rcv_adv = p->rcv_nxt + (p->rx_size < (65535u << p->rcv_wscale) ? p->rx_size : (65535u << p->rcv_wscale));
    f->ts_recent = p->ts_recent;
    f->quickacks = QUICKACKS;
    f->snd_una = p->snd_una;
    f->snd_nxt = f->snd_max = p->snd_nxt;
    f->snd_wnd = f->max_snd_wnd = p->snd_wnd;
    f->snd_wl1 = p->rcv_nxt - 1;
    f->snd_wl2 = p->snd_una;
    f->srtt_us = p->srtt_us;
    f->rttvar_us = p->srtt_us / 2;
    f->rto_us = p->rto_us ? p->rto_us : 1000000;
    f->last_rx_ns = f->last_tx_ns = w->now;
    if (p->flags & TAS_FLOW_PARAM_SYN_RCVD) { /* the handshake is timed from the SYN-ACK */
        uint32_t age_us = (uint32_t)(w->now / 1000) - p->synack_us;
        if (age_us < 60000000u)
            f->last_tx_ns = w->now - (uint64_t)age_us * 1000;
    }
    pv->app = a;
    pv->ctx = a->ctx[p->ctx];
    marks_at_snd_una(t, p->index);
    fp_cc_newreno.init(f);
    /* SYN_RCVD: the SYN-ACK leaves the slowpath now; its round trip is timed
     * from here (last_tx_ns) when the ACK comes */
    __atomic_store_n(&f->state, (p->flags & TAS_FLOW_PARAM_SYN_RCVD) ? TAS_FLOW_SYN_RCVD : TAS_FLOW_ACTIVE,
                     __ATOMIC_RELEASE);
    fp_flow_hash_insert(t, p->index);
    return 0;
}

int fp_tcp_flow_remove(struct fp_worker *w, const struct tas_flow_cmd *c)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = flow_by_cmd(w, c->index, c->gen);
    if (f == NULL)
        return -1;
    if ((c->flags & TAS_FLOW_CMD_RST) && f->state == TAS_FLOW_ACTIVE) {
        /* RST with our exact sequence number (RFC 9293 3.10.4, ABORT) */
        f->state = TAS_FLOW_DEAD;
        f->opts &= ~(uint32_t)TAS_OPT_SACK; /* no SACK blocks on a RST */
        f->ooo_n = 0;
        fp_tcp_output(w, c->index, f->snd_nxt, 0, TCP_RST, 0);
    }
    fp_tcp_event(w, c->index, TAS_FEV_REMOVED);
    fp_flow_timer_cancel(t, c->index);
    fp_flow_hash_remove(t, c->index);
    /* the lists drop it when they meet a free flow */
    __atomic_store_n(&f->state, TAS_FLOW_FREE, __ATOMIC_RELEASE);
    return 0;
}

int fp_tcp_flow_retransmit(struct fp_worker *w, const struct tas_flow_cmd *c)
{
    struct tas_flow *f = flow_by_cmd(w, c->index, c->gen);
    if (f == NULL || f->state != TAS_FLOW_ACTIVE)
        return -1;
    /* RFC 6298 5.4-5.6 as the slowpath decided: back off, go back to
     * snd_una, one segment of window (RFC 5681 3.1) */
    f->rtos++;
    f->rto_us = c->timeout_us;
    f->fl &= ~(uint32_t)(TAS_FL_RTO_WAIT | TAS_FL_TLP_SENT); /* decided: the next expiry is reported again */
    f->fl |= TAS_FL_BACKOFF;
    f->tlp_at = 0;
    fp_cc_newreno.on_rto(f);
    f->fl &= ~(uint32_t)(TAS_FL_RECOVERY | TAS_FL_TIMING);
    f->dupacks = 0;
    f->recover = f->snd_max; /* RFC 6582 3.2: no fast retransmit for this window's dupacks */
    f->snd_nxt = f->snd_una;
    f->rexmit_n = 0;
    f->rack_at = f->rack_pend_ns = 0;
    f->rack_hi = f->snd_una;
    f->rto_at = w->now + (uint64_t)f->rto_us * 1000;
    fp_flow_timer_update(w->tcp, c->index);
    fp_flow_tx_schedule(w->tcp, c->index);
    return 0;
}

/* Another context of the same app takes the flow (a process forked from the
 * one that listened accepts it): it hears from now on, and first of all of
 * every byte not yet read and of a FIN, as it has seen none of the updates
 * that went to the old context. */
int fp_tcp_flow_move(struct fp_worker *w, const struct tas_flow_cmd *c)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = flow_by_cmd(w, c->index, c->gen);
    if (f == NULL)
        return 0; /* gone meanwhile: the slowpath hears of it */
    struct fp_flow_priv *p = &t->priv[c->index];
    if (c->flags == TAS_CTX_NONE) { /* nobody to tell: news accumulate until a context takes it */
        p->ctx = NULL;
        return 0;
    }
    struct fp_app *a = fp_app_get(w, f->app_id);
    if (a == NULL || c->flags >= a->nctx || a->ctx[c->flags] == NULL)
        return -1;
    f->ctx = c->flags;
    p->ctx = a->ctx[c->flags];
    if (c->timeout_us == TAS_MOVE_STATE) {
        p->state_pending = 1; /* the whole state, from the notify loop (it waits for room there) */
    } else { /* a new connection for the app: all that came is news */
        f->rx_notify = f->rx_size - f->rx_avail;
        f->tx_notify = 0;
        p->fin_reported = 0;
    }
    fp_flow_notify_schedule(t, c->index); /* on the old list, the notify loop moves it */
    return 0;
}

/* The last process holding a shared connection closed it: FIN after its
 * data, which may still wait in its context's ring (read it first). */
int fp_tcp_flow_shut(struct fp_worker *w, const struct tas_flow_cmd *c)
{
    struct tas_flow *f = flow_by_cmd(w, c->index, c->gen);
    if (f == NULL || f->state != TAS_FLOW_ACTIVE)
        return 0;
    struct fp_appctx *ctx = w->tcp->priv[c->index].ctx;
    if (ctx != NULL)
        fp_app_drain(w, ctx);
    f->fl |= TAS_FL_FIN_QUEUED;
    fp_flow_tx_schedule(w->tcp, c->index);
    return 0;
}

/* A context took the flow (TAS_MOVE_STATE): where its buffers stand. */
static void flow_state_entry(struct fp_worker *w, uint32_t i, struct tas_qe *e)
{
    struct tas_flow *f = &w->tcp->flows[i];
    uint32_t unread = f->rx_size - f->rx_avail;
    memset(e, 0, sizeof *e);
    e->type = TAS_QE_FLOW_STATE;
    e->flow = tas_flow_id(w->shm->worker_id, i);
    e->gen = f->gen;
    e->flags = f->fl & TAS_FL_FIN_RCVD ? TAS_QF_FIN : 0;
    e->u.state.rx_pos = (f->rx_head - unread) & (f->rx_size - 1);
    e->u.state.rx_ready = unread;
    e->u.state.tx_pos = (f->tx_pos + f->tx_data) & (f->tx_size - 1);
    e->u.state.tx_used = f->tx_data;
}

int fp_tcp_flow_probe(struct fp_worker *w, const struct tas_flow_cmd *c)
{
    struct tas_flow *f = flow_by_cmd(w, c->index, c->gen);
    if (f == NULL || f->state != TAS_FLOW_ACTIVE)
        return -1;
    fp_tcp_send_probe(w, c->index);
    if (c->flags == TAS_PROBE_ZERO_WINDOW && f->snd_wnd == 0) {
        f->persist_at = w->now + (uint64_t)c->timeout_us * 1000;
        fp_flow_timer_update(w->tcp, c->index);
    }
    return 0;
}

/* ---- RTT (RFC 6298 2.2-2.3; the bounds of 2.4 from the slowpath) -------- */

void fp_tcp_rtt_sample(struct fp_worker *w, struct tas_flow *f, uint64_t rtt_ns)
{
    uint32_t r = rtt_ns / 1000 ? (uint32_t)(rtt_ns / 1000) : 1;
    if (f->srtt_us == 0) {
        f->srtt_us = r;
        f->rttvar_us = r / 2;
    } else {
        uint32_t d = f->srtt_us > r ? f->srtt_us - r : r - f->srtt_us;
        f->rttvar_us = (3 * f->rttvar_us + d) / 4;
        f->srtt_us = (7 * f->srtt_us + r) / 8;
    }
    uint64_t rto = (uint64_t)f->srtt_us + (4 * f->rttvar_us > 1000 ? 4 * f->rttvar_us : 1000);
    if (rto < w->shm->rto_min_us)
        rto = w->shm->rto_min_us;
    if (rto > w->shm->rto_max_us)
        rto = w->shm->rto_max_us;
    f->rto_us = (uint32_t)rto;
}

/* ---- receiving -------------------------------------------------------------- */

struct seg {
    uint32_t seq, ack, wnd;
    uint8_t flags, ecn;
    int has_ts;
    uint32_t tsval, tsecr;
    uint32_t nsack;
    uint32_t sack_l[4], sack_r[4];
    const uint8_t *payload;
    uint32_t len;
};

static void parse_options(struct seg *s, const uint8_t *o, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        uint8_t kind = o[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= n || o[i + 1] < 2 || i + o[i + 1] > n)
            break; /* malformed: ignore the rest */
        uint8_t len = o[i + 1];
        if (kind == 8 && len == 10) {
            s->has_ts = 1;
            s->tsval = rd32s(o + i + 2);
            s->tsecr = rd32s(o + i + 6);
        } else if (kind == 5 && len >= 10 && (len - 2) % 8 == 0) {
            for (uint32_t k = 0; k < (uint32_t)(len - 2) / 8 && k < 4; k++) {
                s->sack_l[k] = rd32s(o + i + 2 + 8 * k);
                s->sack_r[k] = rd32s(o + i + 6 + 8 * k);
            }
            s->nsack = (len - 2) / 8 < 4 ? (uint32_t)(len - 2) / 8 : 4;
        }
        i += len;
    }
}

static int challenge_ack(struct fp_worker *w, uint32_t index)
{
    struct fp_tcp *t = w->tcp;
    uint64_t sec = w->now / 1000000000u;
    if (sec != t->challenge_window) {
        t->challenge_window = sec;
        t->challenge_count = 0;
    }
    if (t->challenge_count >= t->challenge_limit)
        return 0;
    t->challenge_count++;
    w->st->challenge_acks++;
    fp_tcp_send_ack(w, index);
    return 1;
}

static void copy_to_ring(uint8_t *ring, uint32_t size, uint32_t pos, const uint8_t *src, uint32_t len)
{
    pos &= size - 1;
    uint32_t first = size - pos < len ? size - pos : len;
    memcpy(ring + pos, src, first);
    if (len > first)
        memcpy(ring, src + first, len - first);
}

/* Record [l, r) as received out of order: merged with what it touches, the
 * newest block first (RFC 2018 4: the first SACK block is the newest).
 * Returns -1, recording nothing, if it would need a new interval and all
 * are in use: an interval once reported in a SACK block is never forgotten
 * (that would be reneging, and a peer that trusts the SACK would never
 * resend the data). */
static int ooo_add(struct tas_flow *f, uint32_t l, uint32_t r)
{
    uint32_t n = 0, touching = 0;
    uint32_t ns[TAS_OOO_MAX], ne[TAS_OOO_MAX];
    for (uint32_t i = 0; i < f->ooo_n; i++) {
        if (seq_le(f->ooo_start[i], r) && seq_ge(f->ooo_end[i], l)) {
            l = seq_min(l, f->ooo_start[i]);
            r = seq_max(r, f->ooo_end[i]);
            touching++;
        } else {
            ns[n] = f->ooo_start[i];
            ne[n] = f->ooo_end[i];
            n++;
        }
    }
    if (!touching && f->ooo_n == TAS_OOO_MAX)
        return -1;
    f->ooo_start[0] = l;
    f->ooo_end[0] = r;
    for (uint32_t i = 0; i < n; i++) {
        f->ooo_start[i + 1] = ns[i];
        f->ooo_end[i + 1] = ne[i];
    }
    f->ooo_n = n + 1;
    return 0;
}

/* In-order data reached rcv_nxt: absorb out-of-order intervals it meets. */
static uint32_t ooo_absorb(struct tas_flow *f)
{
    uint32_t gained = 0;
    int again = 1;
    while (again) {
        again = 0;
        for (uint32_t i = 0; i < f->ooo_n; i++) {
            if (seq_le(f->ooo_start[i], f->rcv_nxt)) {
                if (seq_gt(f->ooo_end[i], f->rcv_nxt)) {
                    uint32_t n = f->ooo_end[i] - f->rcv_nxt;
                    f->rcv_nxt += n;
                    gained += n;
                }
                f->ooo_start[i] = f->ooo_start[f->ooo_n - 1];
                f->ooo_end[i] = f->ooo_end[f->ooo_n - 1];
                f->ooo_n--;
                again = 1;
                break;
            }
        }
    }
    return gained;
}

/* The peer's SACK blocks: keep the scoreboard above snd_una, at most
 * TAS_SACK_MAX merged blocks (the newest win). */
static void sack_update(struct tas_flow *f, const struct seg *s)
{
    for (uint32_t k = 0; k < s->nsack; k++) {
        uint32_t l = s->sack_l[k], r = s->sack_r[k];
        if (!seq_lt(l, r) || seq_le(r, f->snd_una) || seq_gt(r, f->snd_max))
            continue; /* RFC 2018: ignore blocks that make no sense (and D-SACKs) */
        l = seq_max(l, f->snd_una);
        uint32_t n = 0, ns[TAS_SACK_MAX + 1], ne[TAS_SACK_MAX + 1];
        for (uint32_t i = 0; i < f->sack_n; i++) {
            if (seq_le(f->sack_start[i], r) && seq_ge(f->sack_end[i], l)) {
                l = seq_min(l, f->sack_start[i]);
                r = seq_max(r, f->sack_end[i]);
            } else {
                ns[n] = f->sack_start[i];
                ne[n] = f->sack_end[i];
                n++;
            }
        }
        f->sack_start[0] = l;
        f->sack_end[0] = r;
        uint32_t keep = n < TAS_SACK_MAX - 1 ? n : TAS_SACK_MAX - 1;
        for (uint32_t i = 0; i < keep; i++) {
            f->sack_start[i + 1] = ns[i];
            f->sack_end[i + 1] = ne[i];
        }
        f->sack_n = keep + 1;
    }
}

static void sack_prune(struct tas_flow *f)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->sack_n; i++) {
        if (seq_le(f->sack_end[i], f->snd_una))
            continue;
        f->sack_start[n] = seq_max(f->sack_start[i], f->snd_una);
        f->sack_end[n] = f->sack_end[i];
        n++;
    }
    f->sack_n = n;
}

/* Segments the peer has SACKed above snd_una, counting whole MSS (RFC 6675
 * IsLost with DupThresh = 3). */
static int sack_says_lost(const struct tas_flow *f)
{
    return tcp_sacked_bytes(f) >= DUPACK_THRESHOLD * (uint32_t)tcp_eff_mss(f);
}

static void fast_retransmit(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    int sack = (f->opts & TAS_OPT_SACK) != 0;
    f->tlp_at = 0;
    fp_cc_newreno.on_loss(f);
    if (!sack)
        f->cwnd += DUPACK_THRESHOLD * tcp_eff_mss(f); /* NewReno: the segments the dupacks stand for */
    f->fl |= TAS_FL_RECOVERY;
    f->fl &= ~(uint32_t)TAS_FL_TIMING; /* Karn */
    f->recover = f->snd_max;
    f->fast_retx++;
    f->rexmit_n = 0;
    f->rack_at = 0;
    /* resend the first segment now (RFC 6675 5 (4.3)): with SACK, the
     * recovery loop in tcp_out.c does it and whatever else is lost */
    if (sack) {
        fp_tcp_resend_head(w, index);
        fp_flow_tx_schedule(w->tcp, index);
        return;
    }
    uint32_t len = f->tx_data < tcp_seg_mss(f) ? f->tx_data : tcp_seg_mss(f);
    uint32_t flight = tcp_data_in_flight(f);
    if (len > flight)
        len = flight;
    if (len || ((f->fl & TAS_FL_FIN_SENT) && f->snd_una == f->fin_seq)) {
        uint8_t fl = (f->fl & TAS_FL_FIN_SENT) && f->snd_una + len == f->fin_seq ? TCP_FIN : 0;
        fp_tcp_output(w, index, f->snd_una, len, fl, 1);
    }
}

/* Outside recovery: is the segment at snd_una lost, though it was resent
 * (after a timeout) or a probe went after it?  rexmit_mark is a sequence
 * number such that everything from it on left after the head's last
 * transmission (the probe's, after a tail loss probe).  The peer SACKing
 * DupThresh segments of that -- or anything after a probe, which went two
 * round trips later -- means the head is not coming: the idea of RACK
 * (RFC 8985), counted in sequence space instead of time. */
static int head_lost(const struct tas_flow *f)
{
    if (!f->sack_n || !seq_ge(f->rexmit_mark, f->snd_una))
        return 0;
    uint32_t need = (f->fl & TAS_FL_TLP_SENT) ? 1 : DUPACK_THRESHOLD * tcp_eff_mss(f);
    return tcp_sacked_in(f, f->rexmit_mark, f->snd_max) >= need;
}

/* RACK's reordering window (RFC 8985 6.2): a quarter round trip, but at
 * least a millisecond, the timer wheel's tick. */
static uint64_t reo_wnd_ns(const struct tas_flow *f)
{
    uint32_t q = f->srtt_us / 4;
    return (uint64_t)(q > 1000 ? q : 1000) * 1000;
}

/* In SACK recovery: forget resent ranges the peer now has (SACKed or below
 * snd_una), and those lost again, so that tcp_out.c resends them.  A
 * resent range is lost once data sent after it has been SACKed and either
 * that is DupThresh segments or a round trip and a reordering window have
 * passed since it went.  *due gets the time the next one is.  Returns the
 * number lost. */
static uint32_t rexmits_update(struct fp_worker *w, uint32_t index, uint64_t *due)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint32_t lost = 0, need = DUPACK_THRESHOLD * tcp_eff_mss(f);
    uint32_t now_us = (uint32_t)(w->now / 1000);
    uint32_t wait = (f->srtt_us ? f->srtt_us : 1000) + (uint32_t)(reo_wnd_ns(f) / 1000);
    for (uint32_t i = 0; i < f->rexmit_n;) {
        uint32_t l = seq_max(f->rexmit_start[i], f->snd_una), r = f->rexmit_end[i];
        int gone = !seq_lt(l, r) || tcp_sacked_in(f, l, r) == r - l;
        uint32_t later = gone ? 0 : tcp_sacked_in(f, f->rexmit_at[i], f->snd_max);
        int32_t left = (int32_t)(f->rexmit_us[i] + wait - now_us);
        int again = later >= need || (later > 0 && left <= 0);
        if (gone || again) {
            lost += again;
            tcp_rexmit_drop(f, i);
            continue;
        }
        if (later > 0) {
            uint64_t at = w->now + (uint64_t)left * 1000;
            if (*due == 0 || at < *due)
                *due = at;
        }
        f->rexmit_start[i] = l;
        i++;
    }
    return lost;
}

/* Loss detection with SACK, after each ACK and when rack_at comes: RACK
 * (RFC 8985) with sequence numbers standing in for send times.  Data is
 * sent in sequence order, so a hole below bytes SACKed a reordering window
 * ago is lost (rack_hi); resent ranges have their own marks.  Starts
 * recovery when the head is found lost. */
static void rack_detect(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint64_t reo = reo_wnd_ns(f), due = 0;
    if (seq_lt(f->rack_hi, f->snd_una))
        f->rack_hi = f->snd_una;
    if (f->rack_pend_ns && w->now >= f->rack_pend_ns + reo) {
        if (seq_gt(f->rack_pend, f->rack_hi) && seq_le(f->rack_pend, f->snd_max))
            f->rack_hi = f->rack_pend;
        f->rack_pend_ns = 0;
    }
    uint32_t high = tcp_sack_high(f);
    if (!f->rack_pend_ns && seq_gt(high, f->rack_hi)) {
        f->rack_pend = high;
        f->rack_pend_ns = w->now;
    }
    if (f->rack_pend_ns)
        due = f->rack_pend_ns + reo;
    if (f->fl & TAS_FL_RECOVERY) {
        f->lost_rexmits += rexmits_update(w, index, &due);
        fp_flow_tx_schedule(w->tcp, index);
    } else if (seq_gt(f->rack_hi, f->snd_una) && !(f->fl & TAS_FL_RTO_WAIT)) {
        fast_retransmit(w, index);
    }
    f->rack_at = due;
    fp_flow_timer_update(w->tcp, index);
}

/* ACK processing (RFC 9293 3.10.7.4 fifth, RFC 5681/6582, RFC 6675). */
static void process_ack(struct fp_worker *w, uint32_t index, const struct seg *s, uint32_t seglen)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = &t->flows[index];
    struct fp_flow_priv *p = &t->priv[index];
    uint32_t ack = s->ack;

    uint32_t sacked_before = tcp_sacked_bytes(f);
    if ((f->opts & TAS_OPT_SACK) && s->nsack)
        sack_update(f, s);
    int new_sack = tcp_sacked_bytes(f) > sacked_before;

    if (seq_gt(ack, f->snd_una)) {
        uint32_t acked = ack - f->snd_una;
        uint32_t data = acked;
        if ((f->fl & TAS_FL_FIN_SENT) && seq_gt(ack, f->fin_seq))
            data--; /* the FIN is not data */
        if (data > f->tx_data)
            data = f->tx_data;
        f->tx_pos = (f->tx_pos + data) & (f->tx_size - 1);
        f->tx_data -= data;
        f->tx_notify += data;
        f->tx_bytes += data;
        f->snd_una = ack;
        if (seq_lt(f->snd_nxt, f->snd_una))
            f->snd_nxt = f->snd_una;
        if ((f->fl & TAS_FL_TIMING) && seq_gt(ack, f->rtt_seq)) {
            fp_tcp_rtt_sample(w, f, w->now - f->rtt_start_ns);
            f->fl &= ~(uint32_t)TAS_FL_TIMING;
        }
        sack_prune(f);
        if (f->fl & TAS_FL_RECOVERY) {
            if (seq_ge(ack, f->recover)) {
                f->fl &= ~(uint32_t)TAS_FL_RECOVERY;
                f->rexmit_n = 0;
                f->rack_at = 0;
                fp_cc_newreno.on_recovery_exit(f);
            } else if (f->opts & TAS_OPT_SACK) {
                /* SACK recovery, partial ACK: rack_detect() below and
                 * tcp_out.c resend what is lost */
            } else {
                /* NewReno partial ACK (RFC 6582 3.2): resend the next hole */
                uint32_t len = tcp_data_in_flight(f) < tcp_seg_mss(f) ? tcp_data_in_flight(f) : tcp_seg_mss(f);
                if (len)
                    fp_tcp_output(w, index, f->snd_una, len, 0, 1);
                f->cwnd = f->cwnd > data ? f->cwnd - data + tcp_eff_mss(f) : tcp_eff_mss(f);
            }
        } else {
            fp_cc_newreno.on_ack(f, data);
            /* keep the recovery marks near snd_una: compared modulo 2^32,
             * a mark left 2 GB behind would look ahead */
            if (seq_gt(f->snd_una, f->recover))
                f->recover = f->snd_una;
            if (seq_gt(f->snd_una, p->ecn_recover))
                p->ecn_recover = f->snd_una;
        }
        if (seq_gt(f->snd_una, f->rexmit_mark))
            f->rexmit_mark = f->snd_una;
        if (seq_gt(f->snd_una, f->rack_hi))
            f->rack_hi = f->snd_una;
        f->dupacks = 0;
        f->fl &= ~(uint32_t)TAS_FL_TLP_SENT;
        f->tlp_at = 0;
        if (f->snd_una == f->snd_max)
            f->rto_at = 0;
        else if (!(f->fl & TAS_FL_RTO_WAIT))
            f->rto_at = w->now + (uint64_t)f->rto_us * 1000;
        if (f->fl & (TAS_FL_RTO_WAIT | TAS_FL_BACKOFF)) {
            f->fl &= ~(uint32_t)(TAS_FL_RTO_WAIT | TAS_FL_BACKOFF);
            f->rto_at = f->snd_una == f->snd_max ? 0 : w->now + (uint64_t)f->rto_us * 1000;
            fp_tcp_event(w, index, TAS_FEV_ACK_PROGRESS);
        }
        fp_tcp_arm_tlp(w, index);
        if ((f->fl & TAS_FL_FIN_SENT) && !(f->fl & TAS_FL_FIN_ACKED) && seq_gt(ack, f->fin_seq)) {
            f->fl |= TAS_FL_FIN_ACKED;
            fp_tcp_event(w, index, TAS_FEV_FIN_ACKED);
        }
        fp_flow_timer_update(t, index);
        if (data)
            fp_flow_notify_schedule(t, index);
        fp_flow_tx_schedule(t, index);
    } else if (ack == f->snd_una && seglen == 0 && f->snd_una != f->snd_max &&
               ((s->wnd << f->snd_wscale) == f->snd_wnd || new_sack)) {
        /* A duplicate ACK (RFC 5681 2) -- or, with SACK, any ACK that reports
         * newly received data (RFC 6675 2: the window field may move, as a
         * Linux receiver's does while it grows its buffer). */
        f->dupacks++;
        int sack = (f->opts & TAS_OPT_SACK) != 0;
        if (!(f->fl & TAS_FL_RECOVERY) &&
            (f->dupacks >= DUPACK_THRESHOLD || (sack && (sack_says_lost(f) || head_lost(f)))) &&
            (sack || seq_ge(f->snd_una, f->recover)) /* RFC 6582 3.2 step 1, without SACK */) {
            fast_retransmit(w, index);
        } else if (sack && (f->fl & TAS_FL_RECOVERY)) {
            /* SACK recovery: the pipe estimate (tcp_pipe) says what may go */
            fp_flow_tx_schedule(t, index);
        } else if (f->fl & TAS_FL_RECOVERY) {
            f->cwnd += tcp_eff_mss(f); /* NewReno inflation: a segment left the network */
            fp_flow_tx_schedule(t, index);
        } else if (f->dupacks < DUPACK_THRESHOLD) {
            fp_flow_tx_schedule(t, index); /* limited transmit (tcp_out.c) */
        }
    }

    /* the send window (RFC 9293 3.10.7.4: SND.WL1/WL2) */
    if (seq_lt(f->snd_wl1, s->seq) || (f->snd_wl1 == s->seq && seq_le(f->snd_wl2, ack))) {
        uint32_t old = f->snd_wnd;
        f->snd_wnd = s->wnd << f->snd_wscale;
        f->snd_wl1 = s->seq;
        f->snd_wl2 = ack;
        if (f->snd_wnd > f->max_snd_wnd)
            f->max_snd_wnd = f->snd_wnd;
        if (f->snd_wnd > old) {
            if (f->persist_at && f->snd_wnd) {
                f->persist_at = 0;
                fp_flow_timer_update(t, index);
            }
            fp_flow_tx_schedule(t, index);
        }
    }

    /* ECN echo (RFC 3168 6.1.2): react once per window of data */
    if ((f->opts & TAS_OPT_ECN) && (s->flags & TCP_ECE)) {
        f->ece_acks++;
        if (seq_ge(f->snd_una, p->ecn_recover) && !(f->fl & TAS_FL_RECOVERY)) {
            fp_cc_newreno.on_ecn(f);
            f->fl |= TAS_FL_CWR_PENDING;
            p->ecn_recover = f->snd_max;
        }
    }

    if (f->opts & TAS_OPT_SACK) {
        if (f->snd_una == f->snd_max) {
            f->rack_pend_ns = 0;
            f->rack_at = 0;
        } else if (f->sack_n || f->rexmit_n || f->rack_pend_ns) {
            rack_detect(w, index);
        }
    }
    if (f->fl & TAS_FL_RECOVERY)
        fp_tcp_arm_tlp(w, index); /* in case the ACKs stop: see fp_tcp_send_tlp() */
}

/* Deliver acceptable payload to the RX buffer. Returns 1 if it should be
 * acknowledged at once. */
static int deliver(struct fp_worker *w, uint32_t index, struct seg *s)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = &t->flows[index];
    struct fp_flow_priv *p = &t->priv[index];
    uint32_t seq = s->seq;
    const uint8_t *data = s->payload;
    uint32_t len = s->len;
    if (f->fl & TAS_FL_FIN_RCVD)
        return len > 0; /* nothing after the FIN */
    if (seq_lt(seq, f->rcv_nxt)) { /* trim what we already have */
        uint32_t skip = f->rcv_nxt - seq;
        if (skip >= len) {
            f->dup_segs++;
            return 1;
        }
        seq += skip;
        data += skip;
        len -= skip;
    }
    uint32_t off = seq - f->rcv_nxt;
    if (off >= f->rx_avail)
        return 1; /* no room at all */
    if (len > f->rx_avail - off)
        len = f->rx_avail - off; /* keep what fits */
    uint8_t *ring = p->app->base + f->rx_off;
    if (off && ooo_add(f, seq, seq + len) != 0) {
        f->ooo_drops++; /* the peer sends it again */
        return 1;
    }
    copy_to_ring(ring, f->rx_size, f->rx_head + off, data, len);
    int ack_now = 0;
    if (off == 0) {
        uint32_t had_holes = f->ooo_n;
        f->rcv_nxt += len;
        uint32_t n = len + ooo_absorb(f);
        f->rx_head = (f->rx_head + n) & (f->rx_size - 1);
        f->rx_avail -= n;
        f->rx_notify += n;
        f->rx_bytes += n;
        f->rx_unacked += n;
        fp_flow_notify_schedule(t, index);
        if (had_holes)
            ack_now = 1; /* a hole filled (RFC 5681 4.2) */
        else if (f->quickacks) {
            f->quickacks--;
            ack_now = 1;
        } else if (f->rx_unacked >= 2u * tcp_eff_mss(f))
            ack_now = 1; /* every second full-sized segment */
    } else {
        f->ooo_segs++;
        ack_now = 1; /* a duplicate ACK, with SACK blocks */
    }
    return ack_now;
}

/* A FIN at fin_seq: consume it once all data before it is in. */
static void try_fin(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    if (!(f->fl & TAS_FL_OOO_FIN) || f->rcv_nxt != f->ooo_fin || (f->fl & TAS_FL_FIN_RCVD))
        return;
    f->rcv_nxt++;
    f->fl |= TAS_FL_FIN_RCVD;
    f->fl &= ~(uint32_t)TAS_FL_OOO_FIN;
    w->tcp->priv[index].need_ack = 1;
    fp_flow_notify_schedule(w->tcp, index);
    fp_flow_tx_schedule(w->tcp, index);
    fp_tcp_event(w, index, TAS_FEV_FIN_RECEIVED);
}

/* A flow installed with its SYN-ACK (TAS_FLOW_SYN_RCVD): the segment that
 * completes the handshake, ACK of our SYN and nothing else the slowpath
 * must see (RFC 9293 3.10.7.4 in SYN-RECEIVED: acceptable, no RST or SYN,
 * SEG.ACK = SND.NXT; PAWS), makes it ACTIVE here, and the caller goes on
 * with the segment as with any other (data, FIN).  0: the slowpath's case. */
static int handshake_done(struct fp_worker *w, uint32_t index, const struct seg *s, int in_window)
{
    struct tas_flow *f = &w->tcp->flows[index];
    if ((s->flags & (TCP_ACK | TCP_SYN | TCP_RST)) != TCP_ACK || s->ack != f->snd_nxt ||
        !(in_window || s->seq == f->rcv_nxt))
        return 0;
    if ((f->opts & TAS_OPT_TIMESTAMPS) && s->has_ts) {
        if ((int32_t)(s->tsval - f->ts_recent) < 0)
            return 0;
        if (s->seq == f->rcv_nxt)
            f->ts_recent = s->tsval;
    }
    f->snd_una = s->ack;
    marks_at_snd_una(w->tcp, index);
    f->snd_wnd = f->max_snd_wnd = s->wnd << f->snd_wscale;
    f->snd_wl1 = s->seq;
    f->snd_wl2 = s->ack;
    fp_tcp_rtt_sample(w, f, w->now - f->last_tx_ns);
    __atomic_store_n(&f->state, TAS_FLOW_ACTIVE, __ATOMIC_RELEASE);
    fp_tcp_event(w, index, TAS_FEV_ESTABLISHED);
    return 1;
}

int fp_tcp_rx(struct fp_worker *w, const uint8_t *ip, uint32_t ip_hlen, uint32_t ip_len)
{
    struct fp_tcp *t = w->tcp;
    if (t == NULL || t->max_flows == 0)
        return 0;
    const uint8_t *th = ip + ip_hlen;
    uint32_t index;
    struct tas_flow *f = fp_flow_lookup(t, rd_addr(ip + 12), rd_addr(ip + 16), rd16(th), rd16(th + 2), &index);
    if (f == NULL)
        return 0;
    w->st->tcp_rx_segs++;
    if (f->state != TAS_FLOW_ACTIVE && f->state != TAS_FLOW_SYN_RCVD)
        return 1; /* dead: waits for removal; the slowpath answers later segments */
    struct fp_flow_priv *p = &t->priv[index];
    uint32_t doff = (uint32_t)(th[12] >> 4) * 4;
    struct seg s;
    memset(&s, 0, sizeof s);
    s.seq = rd32s(th + 4);
    s.ack = rd32s(th + 8);
    s.flags = th[13];
    s.wnd = rd16(th + 14);
    s.ecn = ip[1] & 3;
    s.payload = th + doff;
    s.len = ip_len - ip_hlen - doff;
    parse_options(&s, th + 20, doff - 20);
    uint32_t seglen = s.len + ((s.flags & TCP_FIN) ? 1 : 0);
    f->rx_segs++;
    f->last_rx_ns = w->now;

    uint32_t rcv_wnd = seq_gt(f->rcv_adv, f->rcv_nxt) ? f->rcv_adv - f->rcv_nxt : 0;
    int in_window = seq_ge(s.seq, f->rcv_nxt) && seq_lt(s.seq, f->rcv_nxt + (rcv_wnd ? rcv_wnd : 1));
    if (f->state == TAS_FLOW_SYN_RCVD && !handshake_done(w, index, &s, in_window))
        return 0; /* the slowpath runs the rest of the handshake */

    /* RST (RFC 5961 3): exact match only; in window gets a challenge ACK */
    if (s.flags & TCP_RST) {
        if (s.seq == f->rcv_nxt) {
            f->state = TAS_FLOW_DEAD;
            fp_tcp_event(w, index, TAS_FEV_RESET);
        } else if (in_window) {
            challenge_ack(w, index);
        }
        return 1;
    }
    /* SYN on a synchronized connection (RFC 5961 4) */
    if (s.flags & TCP_SYN) {
        challenge_ack(w, index);
        return 1;
    }
    /* PAWS (RFC 7323 5) */
    if ((f->opts & TAS_OPT_TIMESTAMPS) && s.has_ts && (int32_t)(s.tsval - f->ts_recent) < 0) {
        w->st->tcp_rx_unacceptable++;
        fp_tcp_send_ack(w, index);
        return 1;
    }
    /* acceptability (RFC 9293 3.10.7.4 first) */
    int ok;
    if (seglen == 0)
        ok = rcv_wnd == 0 ? s.seq == f->rcv_nxt : in_window || s.seq == f->rcv_nxt;
    else
        ok = rcv_wnd > 0 &&
             (in_window || (seq_ge(s.seq + seglen - 1, f->rcv_nxt) && seq_lt(s.seq + seglen - 1, f->rcv_nxt + rcv_wnd)) ||
              (seq_lt(s.seq, f->rcv_nxt) && seq_ge(s.seq + seglen - 1, f->rcv_nxt + rcv_wnd)));
    if (!ok) {
        /* old duplicates are normal (a lost ACK): answer so the peer learns */
        if (seq_lt(s.seq, f->rcv_nxt))
            f->dup_segs++;
        w->st->tcp_rx_unacceptable++;
        fp_tcp_send_ack(w, index);
        return 1;
    }
    if (!(s.flags & TCP_ACK))
        return 1;
    /* ACK acceptability (RFC 5961 5.2) */
    if (seq_gt(s.ack, f->snd_max)) {
        w->st->tcp_rx_unacceptable++;
        fp_tcp_send_ack(w, index);
        return 1;
    }
    if (seq_lt(s.ack, f->snd_una - f->max_snd_wnd)) {
        w->st->tcp_rx_unacceptable++;
        challenge_ack(w, index);
        return 1;
    }
    /* timestamps: remember the newest in-sequence TSval (RFC 7323 4.3) */
    if ((f->opts & TAS_OPT_TIMESTAMPS) && s.has_ts && seq_le(s.seq, f->last_ack_sent) &&
        (int32_t)(s.tsval - f->ts_recent) >= 0)
        f->ts_recent = s.tsval;

    process_ack(w, index, &s, seglen);
    if (f->state != TAS_FLOW_ACTIVE)
        return 1;

    int ack_now = 0;
    if (s.len) {
        ack_now = deliver(w, index, &s);
        if (s.ecn == 3 && (f->opts & TAS_OPT_ECN)) { /* CE */
            f->ce_bytes += s.len;
            if (!(f->fl & TAS_FL_ECE_PENDING))
                ack_now = 1; /* tell the sender soon */
            f->fl |= TAS_FL_ECE_PENDING;
        }
    }
    if ((s.flags & TCP_CWR) && (f->opts & TAS_OPT_ECN))
        f->fl &= ~(uint32_t)TAS_FL_ECE_PENDING;
    if (s.flags & TCP_FIN) {
        uint32_t fin_at = s.seq + s.len;
        if (!(f->fl & TAS_FL_FIN_RCVD) && seq_ge(fin_at, f->rcv_nxt) && seq_le(fin_at, f->rcv_nxt + rcv_wnd)) {
            f->fl |= TAS_FL_OOO_FIN;
            f->ooo_fin = fin_at;
        }
        ack_now = 1;
    }
    try_fin(w, index);
    if (ack_now) {
        p->need_ack = 1;
        fp_flow_tx_schedule(t, index);
    } else if (f->rx_unacked && !f->delack_at) {
        f->delack_at = w->now + (uint64_t)w->shm->delack_us * 1000;
        fp_flow_timer_update(t, index);
    }
    return 1;
}

/* ---- applications ------------------------------------------------------------- */

void fp_tcp_app_msg(struct fp_worker *w, struct fp_app *a, const struct tas_qe *e)
{
    struct fp_tcp *t = w->tcp;
    uint32_t index = e->flow & TAS_FLOW_INDEX_MASK;
    struct tas_flow *f = NULL;
    if (t && (e->flow >> TAS_FLOW_INDEX_BITS) == w->shm->worker_id && index < t->max_flows)
        f = &t->flows[index];
    /* The app heard of the flow from the slowpath after the slowpath queued
     * it for us: if it is not here yet, its FLOW_ADD waits in our ring. */
    while (f != NULL && (f->state == TAS_FLOW_FREE || f->gen != e->gen) && fp_worker_poll_sp(w, 1))
        ;
    if (f != NULL && f->state == TAS_FLOW_FREE) {
        w->st->app_stale_msgs++;
        return;
    }
    if (f == NULL || f->gen != e->gen || f->app_id != a->id) {
        w->st->app_bad_msgs++;
        return;
    }
    if (f->state != TAS_FLOW_ACTIVE)
        return; /* dead flow: the app hears from the slowpath */
    switch (e->type) {
    case TAS_QE_TX:
        if (e->u.bump.len > f->tx_size - f->tx_data || (f->fl & TAS_FL_FIN_QUEUED)) {
            w->st->app_bad_msgs++;
            return;
        }
        f->tx_data += e->u.bump.len;
        fp_flow_tx_schedule(t, index);
        break;
    case TAS_QE_RX_FREED: {
        if (e->u.bump.len > f->rx_size - f->rx_avail) {
            w->st->app_bad_msgs++;
            return;
        }
        f->rx_avail += e->u.bump.len;
        /* A window update once the window we advertised has shrunk to less
         * than half the buffer (or below a segment) and can now grow by at
         * least two segments: the peer would stall otherwise, and is not
         * told about every byte read. */
        uint32_t adv = seq_gt(f->rcv_adv, f->rcv_nxt) ? f->rcv_adv - f->rcv_nxt : 0;
        uint32_t now_wnd = fp_tcp_window(f);
        if ((adv < f->rx_size / 2 || adv < f->mss) && now_wnd >= adv + 2u * tcp_eff_mss(f)) {
            t->priv[index].need_ack = 1;
            fp_flow_tx_schedule(t, index);
        }
        break;
    }
    case TAS_QE_SHUT_WR:
        f->fl |= TAS_FL_FIN_QUEUED;
        fp_flow_tx_schedule(t, index);
        break;
    default:
        w->st->app_bad_msgs++;
    }
}

/* ---- per iteration -------------------------------------------------------------- */

static void on_timers(struct fp_worker *w, uint32_t index)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = &t->flows[index];
    if (f->state != TAS_FLOW_ACTIVE)
        return;
    uint64_t now = w->now;
    if (f->delack_at && f->delack_at <= now) {
        f->delack_at = 0;
        t->priv[index].need_ack = 1;
        fp_flow_tx_schedule(t, index);
    }
    if (f->rto_at && f->rto_at <= now) {
        f->rto_at = 0;
        if (f->snd_una != f->snd_max && !(f->fl & TAS_FL_RTO_WAIT)) {
            f->fl |= TAS_FL_RTO_WAIT; /* the slowpath decides: FLOW_RETRANSMIT or removal */
            fp_tcp_event(w, index, TAS_FEV_RTO);
        }
    }
    if (f->tlp_at && f->tlp_at <= now) {
        f->tlp_at = 0;
        if (f->snd_una != f->snd_max && !(f->fl & (TAS_FL_TLP_SENT | TAS_FL_RTO_WAIT)))
            fp_tcp_send_tlp(w, index);
    }
    if (f->rack_at && f->rack_at <= now) {
        f->rack_at = 0;
        if (f->snd_una != f->snd_max && (f->opts & TAS_OPT_SACK))
            rack_detect(w, index);
    }
    if (f->persist_at && f->persist_at <= now) {
        f->persist_at = 0;
        if (f->snd_wnd == 0 && tcp_unsent(f))
            fp_tcp_event(w, index, TAS_FEV_PERSIST);
    }
    fp_flow_timer_update(t, index);
}

void fp_tcp_clock(struct fp_worker *w)
{
    struct fp_tcp *t = w->tcp;
    if (t && !t->wheel_started) { /* the wheel starts at the loop's first time */
        t->wheel_tick = w->now >> FP_WHEEL_SHIFT;
        t->wheel_started = 1;
    }
}

void fp_tcp_poll(struct fp_worker *w)
{
    struct fp_tcp *t = w->tcp;
    if (t == NULL || t->max_flows == 0)
        return;
    uint32_t i;
    while ((i = fp_flow_timer_expired(t, w->now)) != 0)
        on_timers(w, i - 1);
    /* each flow once: a flow that re-schedules itself waits for the next
     * iteration */
    uint32_t n = 0, stop = t->tx_tail;
    while (stop && (i = fp_flow_tx_pop(t)) != 0) {
        if (t->flows[i - 1].state != TAS_FLOW_FREE)
            fp_tcp_tx_flow(w, i - 1);
        if (i == stop || ++n > t->max_flows)
            break;
    }
    /* updates for apps, per context; a full ring waits for the next iteration */
    for (struct fp_appctx *c = w->active_ctx; c; c = c->next_active) {
        while ((i = c->notify_head) != 0) {
            struct tas_flow *f = &t->flows[i - 1];
            struct fp_flow_priv *p = &t->priv[i - 1];
            if (p->ctx != c) { /* a reused slot, queued by its earlier flow: move it */
                fp_flow_notify_pop(t, c);
                if (f->state != TAS_FLOW_FREE)
                    fp_flow_notify_schedule(t, i - 1);
                continue;
            }
            int fin = (f->fl & TAS_FL_FIN_RCVD) && !p->fin_reported;
            if (f->state != TAS_FLOW_FREE && p->state_pending) {
                struct tas_qe e;
                flow_state_entry(w, i - 1, &e);
                if (fp_app_notify(w, c, &e) != 0) {
                    w->st->app_ring_full++;
                    break;
                }
                f->rx_notify = f->tx_notify = 0; /* all in the state */
                p->fin_reported = (f->fl & TAS_FL_FIN_RCVD) != 0;
                p->state_pending = 0;
            } else if (f->state != TAS_FLOW_FREE && (f->rx_notify || f->tx_notify || fin)) {
                struct tas_qe e;
                memset(&e, 0, sizeof e);
                e.type = TAS_QE_FLOW_UPDATE;
                e.flow = tas_flow_id(w->shm->worker_id, i - 1);
                e.gen = f->gen;
                e.u.update.rx_bytes = f->rx_notify;
                e.u.update.tx_acked = f->tx_notify;
                e.flags = fin ? TAS_QF_FIN : 0;
                if (fp_app_notify(w, c, &e) != 0) {
                    w->st->app_ring_full++;
                    break;
                }
                f->rx_notify = f->tx_notify = 0;
                p->fin_reported |= fin;
            }
            fp_flow_notify_pop(t, c);
        }
    }
}
