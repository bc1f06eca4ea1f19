/*
 * Building and sending a flow's segments: data from the app's TX buffer at
 * the MSS under min(peer window, congestion window, the slowpath's cap),
 * retransmissions, FIN, ACKs with SACK blocks, window updates and probes.
 */
#include <string.h>

#include "tcp.h"
#include "wire.h"

#define TCPOPT_NOP 1
#define TCPOPT_TS 8
#define TCPOPT_SACK 5

/* The window to advertise (RFC 9293 3.8.6.2.2: receiver-side silly window
 * avoidance; the right edge never moves left). */
uint32_t fp_tcp_window(struct tas_flow *f)
{
    uint32_t wnd = f->rx_avail;
    uint32_t max = 65535u << f->rcv_wscale;
    if (wnd > max)
        wnd = max;
    wnd &= ~((1u << f->rcv_wscale) - 1); /* what the scaled field can say */
    uint32_t edge = f->rcv_nxt + wnd;
    uint32_t thresh = f->rx_size / 2 < f->mss ? f->rx_size / 2 : f->mss;
    if (seq_lt(edge, f->rcv_adv) || (seq_gt(edge, f->rcv_adv) && edge - f->rcv_adv < thresh))
        edge = seq_max(f->rcv_adv, f->rcv_nxt); /* hold the old edge */
    return edge - f->rcv_nxt;
}

static uint32_t ts_now(const struct fp_worker *w, const struct tas_flow *f)
{
    return (uint32_t)(w->now / 1000000u) + f->ts_offset;
}

static void copy_from_ring(uint8_t *dst, const uint8_t *ring, uint32_t size, uint32_t pos, uint32_t len)
{
    pos &= size - 1;
    uint32_t first = size - pos < len ? size - pos : len;
    memcpy(dst, ring + pos, first);
    if (len > first)
        memcpy(dst + first, ring, len - first);
}

int fp_tcp_output(struct fp_worker *w, uint32_t index, uint32_t seq, uint32_t len, uint8_t flags, int retx)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = &t->flows[index];
    struct fp_flow_priv *p = &t->priv[index];
    struct fp_buf *b = fp_tx_alloc(w);
    if (b == NULL)
        return -1;

    /* options: timestamps, and SACK blocks while we hold out-of-order data */
    uint8_t opt[40];
    uint32_t olen = 0;
    if (f->opts & TAS_OPT_TIMESTAMPS) {
        opt[0] = TCPOPT_NOP;
        opt[1] = TCPOPT_NOP;
        opt[2] = TCPOPT_TS;
        opt[3] = 10;
        uint32_t tsval = ts_now(w, f), tsecr = f->ts_recent;
        for (int i = 0; i < 4; i++) {
            opt[4 + i] = (uint8_t)(tsval >> (24 - 8 * i));
            opt[8 + i] = (uint8_t)(tsecr >> (24 - 8 * i));
        }
        olen = 12;
    }
    uint32_t nblk = tcp_sack_blocks(f);
    if (nblk) {
        opt[olen] = TCPOPT_NOP;
        opt[olen + 1] = TCPOPT_NOP;
        opt[olen + 2] = TCPOPT_SACK;
        opt[olen + 3] = (uint8_t)(2 + 8 * nblk);
        olen += 4;
        for (uint32_t k = 0; k < nblk; k++) { /* ooo[0] is the most recent (RFC 2018) */
            uint32_t v[2] = {f->ooo_start[k], f->ooo_end[k]};
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < 4; i++)
                    opt[olen + 4 * h + i] = (uint8_t)(v[h] >> (24 - 8 * i));
            olen += 8;
        }
    }
    uint32_t thlen = 20 + olen, tot = 20 + thlen + len;
    if (ETH_HLEN_ + tot > b->cap || ETH_HLEN_ + tot > w->ifc.max_frame) { /* a caller's bug: tcp_seg_mss */
        b->len = 0;
        fp_dev_release(w->dev, b, 1);
        w->st->tx_errors++;
        return -1;
    }

    uint8_t *eth = b->data, *ip = eth + ETH_HLEN_, *tcp = ip + 20;
    memcpy(eth, f->remote_mac, 6);
    memcpy(eth + 6, w->ifc.mac, 6);
    wr16(eth + 12, ETHERTYPE_IPV4);

    flags |= TCP_ACK;
    if (f->fl & TAS_FL_ECE_PENDING)
        flags |= TCP_ECE;
    int ect = 0;
    if ((f->opts & TAS_OPT_ECN) && len > 0 && !retx) {
        ect = 1; /* RFC 3168 6.1.5: not on retransmissions nor pure ACKs */
        if (f->fl & TAS_FL_CWR_PENDING) {
            flags |= TCP_CWR;
            f->fl &= ~TAS_FL_CWR_PENDING;
        }
    }
    ip[0] = 0x45;
    ip[1] = ect ? 0x02 : 0x00; /* ECT(0) */
    wr16(ip + 2, (uint16_t)tot);
    wr16(ip + 4, p->ip_id++);
    wr16(ip + 6, 0x4000); /* DF */
    ip[8] = 64;
    ip[9] = IPPROTO_TCP_;
    wr16(ip + 10, 0);
    wr_addr(ip + 12, f->local_ip);
    wr_addr(ip + 16, f->remote_ip);
    wr16(ip + 10, fp_csum_fold(fp_csum_partial(ip, 20, 0)));

    uint32_t wnd = fp_tcp_window(f);
    wr16(tcp, f->local_port);
    wr16(tcp + 2, f->remote_port);
    uint32_t hdr_seq = seq, hdr_ack = f->rcv_nxt;
    for (int i = 0; i < 4; i++) {
        tcp[4 + i] = (uint8_t)(hdr_seq >> (24 - 8 * i));
        tcp[8 + i] = (uint8_t)(hdr_ack >> (24 - 8 * i));
    }
    tcp[12] = (uint8_t)((thlen / 4) << 4);
    tcp[13] = flags;
    wr16(tcp + 14, (uint16_t)(wnd >> f->rcv_wscale));
    wr16(tcp + 16, 0);
    wr16(tcp + 18, 0);
    memcpy(tcp + 20, opt, olen);
    if (len) {
        struct fp_app *a = p->app;
        uint32_t off = f->tx_pos + (seq - f->snd_una);
        copy_from_ring(tcp + thlen, a->base + f->tx_off, f->tx_size, off, len);
    }
    uint32_t sum = fp_csum_pseudo(f->local_ip, f->remote_ip, IPPROTO_TCP_, thlen + len);
    wr16(tcp + 16, fp_csum_fold(fp_csum_partial(tcp, thlen + len, sum)));
    b->len = ETH_HLEN_ + tot;
    fp_tx_commit(w, b);

    /* everything sent carries the ACK: delayed-ACK state is settled */
    f->last_ack_sent = f->rcv_nxt;
    f->rcv_adv = f->rcv_nxt + wnd;
    f->rx_unacked = 0;
    p->need_ack = 0;
    if (f->delack_at) {
        f->delack_at = 0;
        fp_flow_timer_update(t, index);
    }
    f->tx_segs++;
    f->last_tx_ns = w->now;
    w->st->tcp_tx_segs++;
    if (retx) {
        f->retx_segs++;
        w->st->tcp_retx_segs++;
    }
    return 0;
}

void fp_tcp_send_ack(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    fp_tcp_output(w, index, f->snd_nxt, 0, 0, 0);
}

/* A segment the peer must answer with an ACK carrying its window: one with
 * an old sequence number (zero-window and keepalive probes, as Linux does). */
void fp_tcp_send_probe(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    fp_tcp_output(w, index, f->snd_una - 1, 0, 0, 0);
}

static void arm_rto(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    if (!f->rto_at && !(f->fl & TAS_FL_RTO_WAIT)) {
        f->rto_at = w->now + (uint64_t)f->rto_us * 1000;
        fp_flow_timer_update(w->tcp, index);
    }
}

#define PTO_DELACK_US 40000

/* The tail loss probe timer (RFC 8985 7.2): two round trips after the last
 * new data, while nothing else will tell us about a loss at the tail. */
void fp_tcp_arm_tlp(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    if (!f->srtt_us || (f->fl & (TAS_FL_TLP_SENT | TAS_FL_RTO_WAIT | TAS_FL_BACKOFF)) ||
        f->snd_una == f->snd_max)
        return;
    /* two round trips; one segment alone may wait out the peer's delayed
     * ACK first (Linux's: 40 ms at most); never under two timer ticks */
    uint64_t pto_us = 2ull * f->srtt_us;
    if (f->snd_max - f->snd_una <= tcp_eff_mss(f))
        pto_us += PTO_DELACK_US;
    if (pto_us < 2000)
        pto_us = 2000;
    if (pto_us >= f->rto_us)
        return; /* the RTO comes first anyway */
    f->tlp_at = w->now + pto_us * 1000;
    fp_flow_timer_update(w->tcp, index);
}

/* Remember a range resent during SACK recovery (see rexmits_update() in
 * tcp_in.c); when all are taken, the oldest is forgotten, which at worst
 * resends it once more. */
static void rexmit_add(struct tas_flow *f, uint32_t start, uint32_t end, uint64_t now)
{
    for (uint32_t i = 0; i < f->rexmit_n;) {
        if (seq_lt(f->rexmit_start[i], end) && seq_gt(f->rexmit_end[i], start))
            tcp_rexmit_drop(f, i);
        else
            i++;
    }
    if (f->rexmit_n == TAS_REXMIT_MAX) {
        uint32_t old = 0;
        for (uint32_t i = 1; i < f->rexmit_n; i++)
            if (seq_lt(f->rexmit_at[i], f->rexmit_at[old]))
                old = i;
        tcp_rexmit_drop(f, old);
    }
    uint32_t n = f->rexmit_n++;
    f->rexmit_start[n] = start;
    f->rexmit_end[n] = end;
    f->rexmit_at[n] = f->snd_max;
    f->rexmit_us[n] = (uint32_t)(now / 1000);
}

/* Send [seq, seq+len) of the TX buffer (and the FIN if it ends there). */
static int send_range(struct fp_worker *w, uint32_t index, uint32_t seq, uint32_t len, int retx)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint8_t flags = 0;
    uint32_t data_end = f->snd_una + f->tx_data; /* where the FIN goes */
    if ((f->fl & TAS_FL_FIN_QUEUED) && seq + len == data_end)
        flags |= TCP_FIN;
    if (len && seq + len == data_end)
        flags |= TCP_PSH;
    if (fp_tcp_output(w, index, seq, len, flags, retx) != 0)
        return -1;
    if (flags & TCP_FIN) {
        if (!(f->fl & TAS_FL_FIN_SENT)) {
            f->fin_seq = data_end;
            f->fl |= TAS_FL_FIN_SENT;
            fp_tcp_event(w, index, TAS_FEV_FIN_SENT);
        }
        len++;
    }
    if (retx) {
        if ((f->fl & TAS_FL_RECOVERY) && (f->opts & TAS_OPT_SACK))
            rexmit_add(f, seq, seq + len, w->now);
        f->rexmit_mark = f->snd_max; /* see head_lost() in tcp_in.c */
    }
    uint32_t end = seq + len;
    if (seq_gt(end, f->snd_nxt))
        f->snd_nxt = end;
    if (seq_gt(end, f->snd_max))
        f->snd_max = end;
    if (!retx && !(f->fl & TAS_FL_TIMING) && len) {
        f->fl |= TAS_FL_TIMING;
        f->rtt_seq = seq;
        f->rtt_start_ns = w->now;
    }
    arm_rto(w, index);
    if (!retx)
        fp_tcp_arm_tlp(w, index);
    return 0;
}

/* Is [seq, seq+1) covered by the peer's SACK scoreboard? Returns the end
 * of the covering block, or seq if none. */
static uint32_t sacked_until(const struct tas_flow *f, uint32_t seq)
{
    for (uint32_t i = 0; i < f->sack_n; i++)
        if (seq_ge(seq, f->sack_start[i]) && seq_lt(seq, f->sack_end[i]))
            return f->sack_end[i];
    return seq;
}

/* The next scoreboard block starting after seq (to bound a retransmission). */
static uint32_t next_sacked(const struct tas_flow *f, uint32_t seq, uint32_t limit)
{
    uint32_t best = limit;
    for (uint32_t i = 0; i < f->sack_n; i++)
        if (seq_gt(f->sack_start[i], seq) && seq_lt(f->sack_start[i], best))
            best = f->sack_start[i];
    return best;
}

/* During SACK recovery: at seq, skip what the peer has and what was resent
 * and is not deemed lost; else resend one segment of the hole there, not
 * past limit.  Advances *seq; returns 1 if a segment went, 0 if not, -1
 * if no buffer. */
static int resend_hole(struct fp_worker *w, uint32_t index, uint32_t *seq, uint32_t limit)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint32_t s = *seq, x = sacked_until(f, s);
    if (x == s)
        x = tcp_rexmit_until(f, s);
    if (x != s) {
        *seq = x;
        return 0;
    }
    uint32_t end = next_sacked(f, s, limit);
    for (uint32_t i = 0; i < f->rexmit_n; i++)
        if (seq_gt(f->rexmit_start[i], s) && seq_lt(f->rexmit_start[i], end))
            end = f->rexmit_start[i];
    uint32_t data_end = f->snd_una + f->tx_data, len = end - s, mss = tcp_seg_mss(f);
    if (seq_gt(end, data_end))
        len = seq_gt(data_end, s) ? data_end - s : 0;
    if (len > mss)
        len = mss;
    int fin = (f->fl & TAS_FL_FIN_SENT) && s + len == f->fin_seq && seq_lt(f->fin_seq, limit);
    if (len == 0 && !fin) {
        *seq = limit;
        return 0;
    }
    if (send_range(w, index, s, len, 1) != 0)
        return -1;
    *seq = s + len + (fin ? 1 : 0);
    return 1;
}

/* Resend holes from snd_una up to limit while the pipe is below cwnd,
 * counting segments in *sent; -1 if out of buffers. */
static int resend_holes(struct fp_worker *w, uint32_t index, uint32_t limit, uint32_t cwnd, int *sent)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint32_t seq = f->snd_una;
    while (seq_lt(seq, limit) && tcp_pipe(f) < cwnd) {
        int r = resend_hole(w, index, &seq, limit);
        if (r < 0)
            return -1;
        *sent += r;
    }
    return 0;
}

/* A tail loss probe (RFC 8985 7.3): something the peer must answer, with
 * SACK blocks that start recovery if the tail was lost. */
void fp_tcp_send_tlp(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint32_t mss = tcp_seg_mss(f), unsent = tcp_unsent(f);
    f->fl |= TAS_FL_TLP_SENT;
    f->tlps++;
    if (f->fl & TAS_FL_RECOVERY) {
        /* the ACKs stopped in recovery: the resent head or its ACK is lost
         * and nothing sent after it will tell (RACK needs that), so it
         * goes again, long before the RTO */
        for (uint32_t i = 0; i < f->rexmit_n; i++)
            if (seq_le(f->rexmit_start[i], f->snd_una) && seq_gt(f->rexmit_end[i], f->snd_una)) {
                tcp_rexmit_drop(f, i);
                break;
            }
        fp_tcp_resend_head(w, index);
        return;
    }
    /* Two segments where RFC 8985 7.3 sends one: a delayed-ACK receiver
     * answers two at once, whether the tail or its ACK was lost.  New data
     * first; then the last segment again. */
    uint32_t flight = tcp_data_in_flight(f), sent = 0, first_new = f->snd_nxt;
    uint32_t end = f->snd_una + flight, last = flight < mss ? flight : mss;
    while (sent < 2 && unsent && f->snd_wnd > f->snd_nxt - f->snd_una) {
        uint32_t len = unsent < mss ? unsent : mss;
        if (send_range(w, index, f->snd_nxt, len, 0) != 0)
            break;
        unsent -= len;
        sent++;
    }
    if (sent < 2 && last)
        send_range(w, index, end - last, last, 1);
    else if (!sent && !last && (f->fl & TAS_FL_FIN_SENT) && !(f->fl & TAS_FL_FIN_ACKED))
        send_range(w, index, f->fin_seq, 0, 1); /* only the FIN is out */
    /* what left after the head: anything of it SACKed says the head is
     * lost (head_lost() in tcp_in.c) -- the old last segment counts only
     * if it is not the head itself */
    if (sent)
        f->rexmit_mark = first_new;
    else if (last)
        f->rexmit_mark = end - last == f->snd_una ? f->snd_max : end - last;
}

void fp_tcp_tx_flow(struct fp_worker *w, uint32_t index)
{
    struct fp_tcp *t = w->tcp;
    struct tas_flow *f = &t->flows[index];
    struct fp_flow_priv *p = &t->priv[index];
    if (f->state != TAS_FLOW_ACTIVE) {
        p->need_ack = 0;
        return;
    }
    uint32_t mss = tcp_seg_mss(f);
    uint32_t cwnd = f->cwnd, cap = t->ctl[index].cwnd_cap;
    /* Limited transmit (RFC 3042): a new segment for each of the first two
     * duplicate ACKs, to make the third one come */
    if (!(f->fl & TAS_FL_RECOVERY) && f->dupacks > 0 && f->dupacks < 3)
        cwnd += f->dupacks * mss;
    if (cap && cap < cwnd)
        cwnd = cap;
    int sent = 0;

    /* SACK recovery (RFC 6675 NextSeg): first what is lost (rule 1), then
     * new data (rule 2, below), while the pipe allows */
    int sack_recovery = (f->fl & TAS_FL_RECOVERY) && (f->opts & TAS_OPT_SACK);
    if (sack_recovery && resend_holes(w, index, tcp_lost_edge(f), cwnd, &sent) != 0)
        return;

    /* new data (or data again, after a timeout rewound snd_nxt) */
    for (;;) {
        uint32_t unsent = tcp_unsent(f);
        /* room: the congestion window bounds what is in the network, the
         * peer's window the sequence space beyond snd_una */
        uint32_t outstanding = f->snd_nxt - f->snd_una;
        uint32_t pipe = (f->fl & TAS_FL_RECOVERY) && f->sack_n ? tcp_pipe(f) : outstanding;
        uint32_t room_c = cwnd > pipe ? cwnd - pipe : 0;
        uint32_t room_w = f->snd_wnd > outstanding ? f->snd_wnd - outstanding : 0;
        uint32_t room = room_c < room_w ? room_c : room_w;
        /* the FIN goes right after the data: the first time, or again after
         * a timeout rewound snd_nxt to it */
        int fin_due = (f->fl & TAS_FL_FIN_QUEUED) && unsent == 0 &&
                      ((f->fl & TAS_FL_FIN_SENT) ? f->snd_nxt == f->fin_seq
                                                 : f->snd_nxt == f->snd_una + f->tx_data);
        if (unsent == 0 && !fin_due)
            break;
        if (unsent == 0) { /* a FIN alone needs no window */
            if (send_range(w, index, f->snd_nxt, 0, f->snd_nxt != f->snd_max) != 0)
                return;
            sent++;
            break;
        }
        /* data sent again after a timeout is a retransmission */
        int retx = seq_lt(f->snd_nxt, f->snd_max);
        uint32_t already = retx ? sacked_until(f, f->snd_nxt) : f->snd_nxt;
        if (already != f->snd_nxt) { /* skip what the peer has */
            f->snd_nxt = already;
            continue;
        }
        if (room == 0) {
            if (f->snd_wnd == 0 && f->snd_nxt == f->snd_una && !f->persist_at && !f->rto_at) {
                f->persist_at = w->now + (uint64_t)f->rto_us * 1000;
                fp_flow_timer_update(t, index);
            }
            break;
        }
        uint32_t len = unsent < mss ? unsent : mss;
        if (len > room)
            len = room;
        if (retx && seq_gt(f->snd_nxt + len, f->snd_max))
            len = f->snd_max - f->snd_nxt;
        if (retx) {
            uint32_t bound = next_sacked(f, f->snd_nxt, f->snd_nxt + len);
            len = bound - f->snd_nxt;
        }
        /* sender silly-window avoidance: no small segment while others are
         * in flight, unless it is all we have */
        if (len < mss && len < unsent && outstanding > 0)
            break;
        if (send_range(w, index, f->snd_nxt, len, retx) != 0)
            return;
        sent++;
        if (sent >= 16) { /* fairness: others get a turn, we come back */
            fp_flow_tx_schedule(t, index);
            break;
        }
    }
    /* rule 3: nothing new to send, so the holes not yet deemed lost */
    if (sack_recovery && tcp_unsent(f) == 0 && sent < 16 && resend_holes(w, index, tcp_sack_high(f), cwnd, &sent) != 0)
        return;
    if (!sent && p->need_ack)
        fp_tcp_send_ack(w, index);
}

/* SACK recovery has begun: resend the segment at snd_una whatever the pipe
 * says (RFC 6675 5 (4.3)). */
void fp_tcp_resend_head(struct fp_worker *w, uint32_t index)
{
    struct tas_flow *f = &w->tcp->flows[index];
    uint32_t seq = f->snd_una;
    while (seq_lt(seq, f->snd_max) && resend_hole(w, index, &seq, f->snd_max) == 0)
        ;
}
