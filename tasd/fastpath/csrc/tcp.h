/*
 * The fastpath's TCP: established flows of one worker (fp_tcp_*).  See
 * docs/tcp.md for what the worker does and what it leaves to the slowpath.
 */
#ifndef FP_TCP_H
#define FP_TCP_H

#include <stdint.h>

#include "tasd/abi.h"
#include "worker.h"

/* Everything about a flow the worker needs but nobody else reads. */
struct fp_flow_priv {
    uint32_t hnext;         /* hash chain: index + 1, 0 ends it */
    uint32_t tnext, tprev;  /* timer wheel list: index + 1 */
    uint32_t tslot;         /* wheel slot + 1, 0 when not on the wheel */
    uint64_t tdeadline;     /* the deadline the wheel holds for it */
    uint32_t txnext;        /* TX-ready list: index + 1 */
    uint32_t nnext;         /* notify list: index + 1 */
    uint8_t on_tx, on_notify, need_ack, fin_reported;
    uint32_t ecn_recover;   /* no second ECN reaction before snd_una passes this */
    uint16_t ip_id;
    uint8_t state_pending;  /* the context is owed a FLOW_STATE (it took the flow) */
    uint8_t _pad;
    struct fp_app *app;
    struct fp_appctx *ctx;
};

#define FP_WHEEL_SLOTS 1024
#define FP_WHEEL_SHIFT 20   /* one slot: 2^20 ns, about 1 ms */

struct fp_tcp {
    struct tas_flow *flows;
    struct tas_flow_ctl *ctl;
    struct fp_flow_priv *priv;
    uint32_t max_flows;
    uint32_t *buckets;      /* index + 1 */
    uint32_t nbuckets;      /* power of two */
    uint32_t wheel[FP_WHEEL_SLOTS]; /* index + 1 of the first flow in each slot */
    uint64_t wheel_tick;    /* last tick processed */
    int wheel_started;
    uint32_t tx_head, tx_tail;      /* TX-ready list */
    uint64_t challenge_window;      /* RFC 5961 rate limit: second of the count */
    uint32_t challenge_count;
    uint32_t challenge_limit;       /* per second */
};

/* Congestion control, one file per algorithm. */
struct fp_cc_ops {
    const char *name;
    void (*init)(struct tas_flow *f);
    void (*on_ack)(struct tas_flow *f, uint32_t acked);    /* new data acknowledged, outside recovery */
    void (*on_loss)(struct tas_flow *f);                   /* fast retransmit: entering recovery */
    void (*on_recovery_exit)(struct tas_flow *f);
    void (*on_ecn)(struct tas_flow *f);                    /* ECE: once per window */
    void (*on_rto)(struct tas_flow *f);
};
extern const struct fp_cc_ops fp_cc_newreno;

int fp_tcp_init(struct fp_worker *w, char *err, size_t errlen);
void fp_tcp_free(struct fp_worker *w);

/* Commands from the slowpath. */
int fp_tcp_flow_add(struct fp_worker *w, const struct tas_flow_params *p);
int fp_tcp_flow_remove(struct fp_worker *w, const struct tas_flow_cmd *c);
int fp_tcp_flow_retransmit(struct fp_worker *w, const struct tas_flow_cmd *c);
int fp_tcp_flow_probe(struct fp_worker *w, const struct tas_flow_cmd *c);
int fp_tcp_flow_move(struct fp_worker *w, const struct tas_flow_cmd *c);
int fp_tcp_flow_shut(struct fp_worker *w, const struct tas_flow_cmd *c);

/* A received TCP segment for our address (headers and checksum already
 * checked by rx.c).  Returns 1 if a flow took it, 0 if no flow owns it (an
 * exception for the slowpath). */
int fp_tcp_rx(struct fp_worker *w, const uint8_t *ip, uint32_t ip_hlen, uint32_t ip_len);

/* Messages from applications (already checked to come from app a). */
void fp_tcp_app_msg(struct fp_worker *w, struct fp_app *a, const struct tas_qe *e);

/* Once per iteration: timers, then the flows with something to send, then
 * the updates for applications. */
void fp_tcp_poll(struct fp_worker *w);
/* The first iteration's time starts the timer wheel. */
void fp_tcp_clock(struct fp_worker *w);
/* Earliest timer deadline (ns), or 0 if none. */
uint64_t fp_tcp_next_deadline(struct fp_worker *w);

/* flow.c */
struct tas_flow *fp_flow_lookup(struct fp_tcp *t, uint32_t remote_ip, uint32_t local_ip, uint16_t remote_port,
                                uint16_t local_port, uint32_t *index);
void fp_flow_hash_insert(struct fp_tcp *t, uint32_t index);
void fp_flow_hash_remove(struct fp_tcp *t, uint32_t index);
void fp_flow_timer_update(struct fp_tcp *t, uint32_t index);
void fp_flow_timer_cancel(struct fp_tcp *t, uint32_t index);
void fp_flow_tx_schedule(struct fp_tcp *t, uint32_t index);
uint32_t fp_flow_tx_pop(struct fp_tcp *t);   /* index + 1, 0 if empty */
void fp_flow_notify_schedule(struct fp_tcp *t, uint32_t index);
uint32_t fp_flow_notify_pop(struct fp_tcp *t, struct fp_appctx *c);
/* Flows whose earliest deadline passed at tick now, one at a time. */
uint32_t fp_flow_timer_expired(struct fp_tcp *t, uint64_t now); /* index + 1, 0 if none */

/* tcp_out.c */
/* Send a segment of flow f: seq, len payload bytes from the TX buffer,
 * flags (ACK is always added).  Returns 0, or -1 if no buffer. */
int fp_tcp_output(struct fp_worker *w, uint32_t index, uint32_t seq, uint32_t len, uint8_t flags, int retx);
void fp_tcp_send_ack(struct fp_worker *w, uint32_t index);
void fp_tcp_send_probe(struct fp_worker *w, uint32_t index);
void fp_tcp_tx_flow(struct fp_worker *w, uint32_t index);
void fp_tcp_arm_tlp(struct fp_worker *w, uint32_t index);
void fp_tcp_send_tlp(struct fp_worker *w, uint32_t index);
void fp_tcp_resend_head(struct fp_worker *w, uint32_t index);
uint32_t fp_tcp_window(struct tas_flow *f);

/* tcp_in.c helpers used elsewhere */
void fp_tcp_rtt_sample(struct fp_worker *w, struct tas_flow *f, uint64_t rtt_ns);
void fp_tcp_event(struct fp_worker *w, uint32_t index, uint32_t kind);

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80

/* sequence number comparisons (RFC 9293, modulo 2^32) */
static inline int seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline int seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }
static inline int seq_gt(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }
static inline int seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }
static inline uint32_t seq_max(uint32_t a, uint32_t b) { return seq_gt(a, b) ? a : b; }
static inline uint32_t seq_min(uint32_t a, uint32_t b) { return seq_lt(a, b) ? a : b; }

/* Payload bytes between snd_una and snd_nxt (a FIN in that range is not data). */
static inline uint32_t tcp_data_in_flight(const struct tas_flow *f)
{
    uint32_t n = f->snd_nxt - f->snd_una;
    if ((f->fl & TAS_FL_FIN_SENT) && seq_gt(f->snd_nxt, f->fin_seq) && n > 0)
        n--;
    return n;
}

/* Bytes the peer's SACK blocks say it has above snd_una. */
static inline uint32_t tcp_sacked_bytes(const struct tas_flow *f)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->sack_n; i++)
        n += f->sack_end[i] - f->sack_start[i];
    return n;
}

/* Payload bytes a segment carries with the options every segment has (the
 * unit of congestion control and ACK counting). */
static inline uint32_t tcp_eff_mss(const struct tas_flow *f)
{
    return f->mss - ((f->opts & TAS_OPT_TIMESTAMPS) ? 12 : 0);
}

#define DUPACK_THRESHOLD 3

/* The highest byte the peer has SACKed, plus one; snd_una if none. */
static inline uint32_t tcp_sack_high(const struct tas_flow *f)
{
    uint32_t h = f->snd_una;
    for (uint32_t i = 0; i < f->sack_n; i++)
        h = seq_max(h, f->sack_end[i]);
    return h;
}

/* SACKed bytes in [a, b). */
static inline uint32_t tcp_sacked_in(const struct tas_flow *f, uint32_t a, uint32_t b)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->sack_n; i++) {
        uint32_t l = seq_max(f->sack_start[i], a), r = seq_min(f->sack_end[i], b);
        if (seq_lt(l, r))
            n += r - l;
    }
    return n;
}

/* The RFC 6675 IsLost boundary: every unSACKed byte below it has
 * DupThresh segments' worth of SACKed data above it.  snd_una if none. */
static inline uint32_t tcp_dupthresh_edge(const struct tas_flow *f)
{
    uint32_t need = DUPACK_THRESHOLD * tcp_eff_mss(f), sum = 0, done = 0;
    for (uint32_t k = 0; k < f->sack_n; k++) { /* blocks from the highest down */
        uint32_t best = TAS_SACK_MAX;
        for (uint32_t i = 0; i < f->sack_n; i++)
            if (!(done & (1u << i)) && (best == TAS_SACK_MAX || seq_gt(f->sack_end[i], f->sack_end[best])))
                best = i;
        done |= 1u << best;
        uint32_t len = f->sack_end[best] - f->sack_start[best];
        if (sum + len >= need)
            return f->sack_end[best] - (need - sum);
        sum += len;
    }
    return f->snd_una;
}

/* The RFC 6675 IsLost boundary, and RACK's (rack_hi, tcp_in.c): every
 * unSACKed byte below it is deemed lost. */
static inline uint32_t tcp_lost_edge(const struct tas_flow *f)
{
    uint32_t e = tcp_dupthresh_edge(f);
    return seq_gt(f->rack_hi, e) && seq_le(f->rack_hi, f->snd_max) ? f->rack_hi : e;
}

/* Bytes in the network during SACK recovery (RFC 6675 SetPipe): unSACKed
 * bytes not deemed lost, plus lost ones resent and not deemed lost again
 * (the rexmit ranges). */
static inline uint32_t tcp_pipe(const struct tas_flow *f)
{
    uint32_t edge = tcp_lost_edge(f);
    uint32_t pipe = (f->snd_max - edge) - tcp_sacked_in(f, edge, f->snd_max);
    for (uint32_t i = 0; i < f->rexmit_n; i++) {
        uint32_t l = seq_max(f->rexmit_start[i], f->snd_una), r = seq_min(f->rexmit_end[i], edge);
        if (seq_lt(l, r))
            pipe += (r - l) - tcp_sacked_in(f, l, r);
    }
    return pipe;
}

/* The end of the rexmit range covering seq, or seq if none does. */
static inline uint32_t tcp_rexmit_until(const struct tas_flow *f, uint32_t seq)
{
    for (uint32_t i = 0; i < f->rexmit_n; i++)
        if (seq_ge(seq, f->rexmit_start[i]) && seq_lt(seq, f->rexmit_end[i]))
            return f->rexmit_end[i];
    return seq;
}

static inline void tcp_rexmit_drop(struct tas_flow *f, uint32_t i)
{
    f->rexmit_n--;
    f->rexmit_start[i] = f->rexmit_start[f->rexmit_n];
    f->rexmit_end[i] = f->rexmit_end[f->rexmit_n];
    f->rexmit_at[i] = f->rexmit_at[f->rexmit_n];
    f->rexmit_us[i] = f->rexmit_us[f->rexmit_n];
}

/* App bytes not yet sent. */
static inline uint32_t tcp_unsent(const struct tas_flow *f)
{
    uint32_t inflight = tcp_data_in_flight(f);
    return f->tx_data > inflight ? f->tx_data - inflight : 0;
}

/* SACK blocks the next segment carries: as many out-of-order intervals as
 * the 40 option bytes leave room for. */
static inline uint32_t tcp_sack_blocks(const struct tas_flow *f)
{
    if (!(f->opts & TAS_OPT_SACK) || f->ooo_n == 0)
        return 0;
    uint32_t room = (40 - ((f->opts & TAS_OPT_TIMESTAMPS) ? 12 : 0) - 4) / 8;
    return f->ooo_n < room ? f->ooo_n : room;
}

/* Payload bytes the next segment can carry: less while SACK blocks ride along
 * (as Linux's current MSS), so that the frame stays within the MTU. */
static inline uint32_t tcp_seg_mss(const struct tas_flow *f)
{
    uint32_t sack = tcp_sack_blocks(f);
    return tcp_eff_mss(f) - (sack ? 4 + 8 * sack : 0);
}

#endif /* FP_TCP_H */
