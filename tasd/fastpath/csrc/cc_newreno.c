/*
 * NewReno congestion control (RFC 5681, RFC 6582), per ACK.  Recovery
 * itself (which segments to resend) is tcp_in.c's and tcp_out.c's; this
 * only moves cwnd and ssthresh.
 */
#include "tcp.h"

#define INIT_CWND_SEGS 10 /* RFC 6928 */

static uint32_t mss_of(const struct tas_flow *f) { return tcp_eff_mss(f); }

static void nr_init(struct tas_flow *f)
{
    f->cwnd = INIT_CWND_SEGS * mss_of(f);
    f->ssthresh = UINT32_MAX / 2;
}

static void nr_on_ack(struct tas_flow *f, uint32_t acked)
{
    uint32_t mss = mss_of(f);
    if (f->cwnd < f->ssthresh) {
        /* slow start, with appropriate byte counting (RFC 3465, L = 2) */
        f->cwnd += acked < 2 * mss ? acked : 2 * mss;
    } else {
        /* congestion avoidance: one MSS per window */
        uint32_t inc = (uint32_t)((uint64_t)mss * mss / f->cwnd);
        f->cwnd += inc ? inc : 1;
    }
    if (f->cwnd > (1u << 30))
        f->cwnd = 1u << 30;
}

static uint32_t half_flight(const struct tas_flow *f)
{
    uint32_t flight = f->snd_max - f->snd_una, mss = mss_of(f);
    return flight / 2 > 2 * mss ? flight / 2 : 2 * mss; /* RFC 5681 (4) */
}

static void nr_on_loss(struct tas_flow *f)
{
    f->ssthresh = half_flight(f);
    f->cwnd = f->ssthresh; /* RFC 6675 5 (4.2); tcp_in.c inflates it without SACK */
}

static void nr_on_recovery_exit(struct tas_flow *f)
{
    if (f->opts & TAS_OPT_SACK) {
        f->cwnd = f->ssthresh; /* the pipe kept sending in check; nothing to deflate */
        return;
    }
    /* RFC 6582 3.2 step 3 (1): deflate, without a burst */
    uint32_t flight = f->snd_max - f->snd_una, mss = mss_of(f);
    uint32_t w = (flight > mss ? flight : mss) + mss;
    f->cwnd = w < f->ssthresh ? w : f->ssthresh;
}

static void nr_on_ecn(struct tas_flow *f)
{
    uint32_t mss = mss_of(f);
    f->ssthresh = f->cwnd / 2 > 2 * mss ? f->cwnd / 2 : 2 * mss;
    f->cwnd = f->ssthresh;
}

static void nr_on_rto(struct tas_flow *f)
{
    f->ssthresh = half_flight(f);
    f->cwnd = mss_of(f); /* loss window (RFC 5681 3.1) */
}

const struct fp_cc_ops fp_cc_newreno = {
    .name = "newreno",
    .init = nr_init,
    .on_ack = nr_on_ack,
    .on_loss = nr_on_loss,
    .on_recovery_exit = nr_on_recovery_exit,
    .on_ecn = nr_on_ecn,
    .on_rto = nr_on_rto,
};
