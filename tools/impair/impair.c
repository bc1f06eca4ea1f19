/*
 * impair: a two-port Ethernet bridge that impairs what it forwards.
 *
 * Frames received on interface A are sent out of B ("a_to_b") and the other
 * way round ("b_to_a"); each direction has its own impairments, queue,
 * counters and PRNG stream.  One thread, one ppoll loop, no per-frame syscall
 * on receive (TPACKET_V2 RX ring), sendmmsg batches on transmit
 * (PACKET_QDISC_BYPASS).  Used by tools/impair.py for the testbed.
 *
 *   impair --if-a IF --if-b IF [--ctl PATH] [--ctl-fd FD] [SETTING...]
 *
 * SETTING is `[ab.|ba.]key=value` (no prefix: both directions) or `seed=N`:
 *   loss, duplicate, corrupt, reorder   probabilities in [0, 1]
 *   delay_ms, jitter_ms                 one-way delay, uniform +-jitter
 *   rate_mbit                           token bucket on bytes incl. the
 *                                       Ethernet header; 0 = unlimited
 *   queue_frames                        queue bound (tail drop), default 1000
 *   ecn_threshold                       K for CE marking; 0 = off
 *
 * The pipeline of one direction, per received frame:
 *   loss -> duplicate (a second, independent copy) -> per copy: corrupt (one
 *   random bit after the 14-byte Ethernet header) -> reorder hold -> queue.
 * The queue is FIFO: a frame's release time is arrival + delay + U(-j, +j),
 * clamped to be no earlier than its arrival and than the release time of the
 * frame ahead of it, so jitter never reorders.  Frames past their release
 * time form the backlog in front of the rate limiter; the bound queue_frames
 * covers the whole queue (delayed and backlogged frames).
 * Reordering: with probability `reorder` a frame is held aside and enqueued
 * right behind the next frame of its direction that is not held (so it is
 * overtaken by exactly one frame; consecutive held frames stay in order
 * among themselves).  If no such frame arrives within 1 ms, held frames are
 * enqueued in order and not counted as reordered.
 * ECN (DCTCP-style, needs rate_mbit > 0): a frame entering the backlog that
 * finds ecn_threshold or more frames waiting ahead of it (so the queue then
 * holds more than K) gets CE if it is IPv4 with ECT(0) or ECT(1); the header
 * checksum is updated.  Not-ECT frames are never marked nor dropped for this.
 *
 * Control (SOCK_SEQPACKET, one request per message, one JSON reply each):
 * --ctl PATH listens on a socket path; --ctl-fd FD is an already-connected
 * socket whose hang-up makes impair exit (its owner is gone).  Requests:
 *   ping               {"ok":true}   (sent only once frames are forwarded)
 *   stats              {"ok":true,"a_to_b":{counters},"b_to_a":{counters}}
 *   config             {"ok":true,"config":{...}}
 *   set SETTING...     {"ok":true,"config":{...}} once in force, or
 *                      {"ok":false,"error":"..."} and nothing changed
 * Requests are served between frames of the same loop, so the reply to
 * `set` means every frame received afterwards sees the new settings.
 * Frames already queued keep their release times.  On SIGTERM or SIGINT the
 * counters are printed to stdout as JSON ({"a_to_b":...,"b_to_a":...}) and
 * impair exits with status 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BATCH        64              /* frames per sendmmsg */
#define RX_BUDGET    256             /* frames per direction per loop turn */
#define RING_BYTES   (8u << 20)      /* RX ring size per port */
#define HELD_MAX     32              /* frames held back for reordering */
#define HOLD_NS      1000000ull      /* ... for at most this long */
#define QUEUE_MAX    (1u << 18)      /* largest queue_frames accepted */
#define MAX_CONNS    8
#define NS_PER_S     1000000000ull

/* ---- configuration ------------------------------------------------------ */

struct cfg {
    double loss, duplicate, corrupt, delay_ms, jitter_ms, reorder, rate_mbit,
           queue_frames, ecn_threshold;
};

/* One table drives parsing, validation and printing of the settings. */
static const struct {
    const char *name;
    size_t off;
    double min, max;
    bool integer;
} cfg_keys[] = {
    {"loss",          offsetof(struct cfg, loss),          0, 1,         false},
    {"duplicate",     offsetof(struct cfg, duplicate),     0, 1,         false},
    {"corrupt",       offsetof(struct cfg, corrupt),       0, 1,         false},
    {"delay_ms",      offsetof(struct cfg, delay_ms),      0, 3.6e6,     false},
    {"jitter_ms",     offsetof(struct cfg, jitter_ms),     0, 3.6e6,     false},
    {"reorder",       offsetof(struct cfg, reorder),       0, 1,         false},
    {"rate_mbit",     offsetof(struct cfg, rate_mbit),     0, 1e6,       false},
    {"queue_frames",  offsetof(struct cfg, queue_frames),  1, QUEUE_MAX, true},
    {"ecn_threshold", offsetof(struct cfg, ecn_threshold), 0, QUEUE_MAX, true},
};
#define NKEYS (sizeof cfg_keys / sizeof cfg_keys[0])

static const struct cfg cfg_default = {.queue_frames = 1000};

static double *cfg_field(struct cfg *c, size_t i)
{
    return (double *)((char *)c + cfg_keys[i].off);
}

/* ---- counters ----------------------------------------------------------- */

struct counters {
    uint64_t received, bytes_received, forwarded, bytes_forwarded,
             dropped_loss, dropped_queue, dropped_ring, dropped_tx,
             dropped_oversize, duplicated, corrupted, reordered, delayed,
             ce_marked, queue_peak;
};

static const struct { const char *name; size_t off; } counter_keys[] = {
#define C(x) {#x, offsetof(struct counters, x)}
    C(received), C(bytes_received), C(forwarded), C(bytes_forwarded),
    C(dropped_loss), C(dropped_queue), C(dropped_ring), C(dropped_tx),
    C(dropped_oversize), C(duplicated), C(corrupted), C(reordered),
    C(delayed), C(ce_marked), C(queue_peak),
#undef C
};

/* ---- ports and directions ----------------------------------------------- */

struct port {
    const char *ifname;
    int ifindex, fd;
    uint8_t *ring;
    size_t ring_len;
    uint32_t frame_sz, frame_nr, idx;
};

struct frame {
    uint8_t *buf;
    uint32_t len;
    uint64_t t;          /* release time when queued; arrival time when held */
};

struct dir {
    const char *name;
    struct port *in, *out;
    struct cfg cfg;
    uint64_t rng;
    /* queue: slots [head, ready) wait for the rate limiter (the backlog),
     * [ready, tail) for their release time; indices run freely */
    struct frame *q;
    uint32_t cap, head, ready, tail;
    uint64_t last_release;
    struct frame held[HELD_MAX];
    uint32_t nheld;
    struct frame scratch;        /* the frame being ingested */
    double tokens;               /* bytes */
    uint64_t t_refill;
    bool blocked;                /* TX socket full: wait for POLLOUT */
    struct counters c;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
};

static struct port ports[2];
static struct dir dirs[2];
static uint32_t bufsz;           /* room for the largest frame + VLAN tag */
static volatile sig_atomic_t stopping;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("impair: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p)
        die("out of memory");
    return p;
}

/* ---- PRNG: splitmix64, one stream per direction --------------------------- */

static uint64_t rnd(struct dir *d)
{
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_unit(struct dir *d)          /* uniform in [0, 1) */
{
    return (double)(rnd(d) >> 11) * 0x1.0p-53;
}

static bool chance(struct dir *d, double p)
{
    return p > 0 && (p >= 1 || rnd_unit(d) < p);
}

static void seed_rng(uint64_t seed)
{
    for (int i = 0; i < 2; i++) {
        dirs[i].rng = seed * 2 + (uint64_t)i;  /* distinct streams */
        rnd(&dirs[i]);
    }
}

/* ---- frame edits ---------------------------------------------------------- */

static bool flip_bit(struct dir *d, struct frame *f)
{
    if (f->len <= ETH_HLEN)
        return false;
    uint64_t bit = (uint64_t)(((unsigned __int128)rnd(d) * ((f->len - ETH_HLEN) * 8u)) >> 64);
    f->buf[ETH_HLEN + bit / 8] ^= (uint8_t)(1u << (bit % 8));
    return true;
}

/* Set CE on an IPv4 ECT(0)/ECT(1) frame (one optional VLAN tag); fix the
 * header checksum incrementally (RFC 1624, eqn. 3). */
static bool mark_ce(struct frame *f)
{
    uint8_t *p = f->buf;
    uint32_t off = ETH_HLEN;
    uint16_t type = (uint16_t)(p[12] << 8 | p[13]);
    if ((type == 0x8100 || type == 0x88a8) && f->len >= 18) {
        type = (uint16_t)(p[16] << 8 | p[17]);
        off += 4;
    }
    if (type != ETHERTYPE_IP || f->len < off + 20)
        return false;
    uint8_t *ip = p + off;
    if (ip[0] >> 4 != 4 || (ip[0] & 15) < 5 || (ip[1] & 3) == 0 || (ip[1] & 3) == 3)
        return false;
    uint32_t old = (uint32_t)(ip[0] << 8 | ip[1]), new = old | 3;
    uint32_t sum = (~(uint32_t)(ip[10] << 8 | ip[11]) & 0xffff) + (~old & 0xffff) + new;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[1] |= 3;
    ip[10] = (uint8_t)(~sum >> 8);
    ip[11] = (uint8_t)~sum;
    return true;
}

/* ---- queue ---------------------------------------------------------------- */

static struct frame *slot(struct dir *d, uint32_t i)
{
    return &d->q[i & (d->cap - 1)];
}

/* Make room for n frames (a power of two at least n); keeps queued frames. */
static bool queue_reserve(struct dir *d, uint32_t n)
{
    uint32_t cap = 16;
    while (cap < n)
        cap <<= 1;
    if (cap <= d->cap)
        return true;
    struct frame *q = calloc(cap, sizeof *q);
    if (!q)
        return false;
    for (uint32_t i = 0; i < d->cap; i++)
        q[i] = *slot(d, d->head + i);
    for (uint32_t i = d->cap; i < cap; i++)
        if (!(q[i].buf = malloc(bufsz))) {
            while (i-- > d->cap)
                free(q[i].buf);
            free(q);
            return false;
        }
    free(d->q);
    d->q = q;
    d->tail -= d->head;
    d->ready -= d->head;
    d->head = 0;
    d->cap = cap;
    return true;
}

static void swap_buf(struct frame *a, struct frame *b)
{
    uint8_t *t = a->buf;
    a->buf = b->buf;
    b->buf = t;
    a->len = b->len;
}

/* Queue frame f (its buffer is swapped into the slot) that arrived at t. */
static bool enqueue(struct dir *d, struct frame *f, uint64_t t)
{
    uint32_t n = d->tail - d->head;
    if (n >= (uint32_t)d->cfg.queue_frames) {
        d->c.dropped_queue++;
        return false;
    }
    double delay = d->cfg.delay_ms;
    if (d->cfg.jitter_ms > 0)
        delay += (2 * rnd_unit(d) - 1) * d->cfg.jitter_ms;
    uint64_t rel = t + (delay > 0 ? (uint64_t)(delay * 1e6) : 0);
    if (rel < d->last_release)
        rel = d->last_release;
    if (rel > t)
        d->c.delayed++;
    d->last_release = rel;
    struct frame *s = slot(d, d->tail++);
    swap_buf(s, f);
    s->t = rel;
    if (n + 1 > d->c.queue_peak)
        d->c.queue_peak = n + 1;
    return true;
}

static void release_held(struct dir *d, bool overtaken)
{
    for (uint32_t i = 0; i < d->nheld; i++)
        if (enqueue(d, &d->held[i], d->held[i].t) && overtaken)
            d->c.reordered++;
    d->nheld = 0;
}

/* Copy a ring frame into the scratch buffer, putting back a VLAN tag that
 * the kernel moved into the header. */
static void materialize(struct dir *d, const struct tpacket2_hdr *h)
{
    const uint8_t *data = (const uint8_t *)h + h->tp_mac;
    uint8_t *out = d->scratch.buf;
    if (h->tp_status & TP_STATUS_VLAN_VALID) {
        uint16_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->tp_vlan_tpid : 0x8100;
        memcpy(out, data, 12);
        out[12] = (uint8_t)(tpid >> 8), out[13] = (uint8_t)tpid;
        out[14] = (uint8_t)(h->tp_vlan_tci >> 8), out[15] = (uint8_t)h->tp_vlan_tci;
        memcpy(out + 16, data + 12, h->tp_snaplen - 12);
        d->scratch.len = h->tp_snaplen + 4;
    } else {
        memcpy(out, data, h->tp_snaplen);
        d->scratch.len = h->tp_snaplen;
    }
}

static void ingest(struct dir *d, const struct tpacket2_hdr *h, uint64_t now)
{
    uint32_t tag = h->tp_status & TP_STATUS_VLAN_VALID ? 4 : 0;
    d->c.received++;
    d->c.bytes_received += h->tp_len + tag;
    if (h->tp_snaplen < h->tp_len || h->tp_snaplen < ETH_HLEN || h->tp_snaplen + tag > bufsz) {
        d->c.dropped_oversize++;
        return;
    }
    if (chance(d, d->cfg.loss)) {
        d->c.dropped_loss++;
        return;
    }
    int copies = 1;
    if (chance(d, d->cfg.duplicate)) {
        copies = 2;
        d->c.duplicated++;
    }
    while (copies--) {
        materialize(d, h);
        if (chance(d, d->cfg.corrupt) && flip_bit(d, &d->scratch))
            d->c.corrupted++;
        if (d->nheld < HELD_MAX && chance(d, d->cfg.reorder)) {
            struct frame *f = &d->held[d->nheld++];
            swap_buf(f, &d->scratch);
            f->t = now;
            continue;
        }
        enqueue(d, &d->scratch, now);
        if (d->nheld)
            release_held(d, true);
    }
}

/* Drain up to RX_BUDGET frames from the RX ring; true if it may hold more. */
static bool rx(struct dir *d, uint64_t now)
{
    struct port *p = d->in;
    for (int n = 0; n < RX_BUDGET; n++) {
        struct tpacket2_hdr *h = (void *)(p->ring + (size_t)p->idx * p->frame_sz);
        if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
            return false;
        ingest(d, h, now);
        __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        p->idx = (p->idx + 1) % p->frame_nr;
    }
    return true;
}

/* ---- transmit --------------------------------------------------------------- */

static double rate_Bps(const struct dir *d)
{
    return d->cfg.rate_mbit * 1e6 / 8;
}

static void refill(struct dir *d, uint64_t now)
{
    double r = rate_Bps(d);
    /* depth: 1 ms at the rate, but at least two full frames */
    double depth = r * 1e-3 > 2.0 * bufsz ? r * 1e-3 : 2.0 * bufsz;
    d->tokens += (double)(now - d->t_refill) * r / 1e9;
    if (d->tokens > depth)
        d->tokens = depth;
    d->t_refill = now;
}

/* Send the backlog as far as the token bucket allows. */
static void send_backlog(struct dir *d)
{
    bool limited = d->cfg.rate_mbit > 0;
    while (!d->blocked && d->head != d->ready) {
        int n = 0;
        for (; n < BATCH && d->head + (uint32_t)n != d->ready; n++) {
            struct frame *f = slot(d, d->head + (uint32_t)n);
            if (limited) {
                if (d->tokens < f->len)
                    break;
                d->tokens -= f->len;
            }
            d->iov[n] = (struct iovec){f->buf, f->len};
            d->msgs[n] = (struct mmsghdr){.msg_hdr = {.msg_iov = &d->iov[n], .msg_iovlen = 1}};
        }
        if (n == 0)
            return;
        /* A partial count means frame `sent` failed; the next call says why. */
        int sent = sendmmsg(d->out->fd, d->msgs, (unsigned)n, MSG_DONTWAIT), done = sent;
        for (int i = 0; i < sent; i++) {
            d->c.forwarded++;
            d->c.bytes_forwarded += d->iov[i].iov_len;
        }
        if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
            d->blocked = errno == EAGAIN;
            done = 0;
        } else if (sent < 0) {
            done = 1;           /* the device refused the first frame: lost */
            d->c.dropped_tx++;
        }
        for (int i = done; i < n && limited; i++)
            d->tokens += (double)d->iov[i].iov_len;     /* not sent: refund */
        d->head += (uint32_t)done;
        if (d->blocked)
            return;
    }
}

static void transmit(struct dir *d, uint64_t now)
{
    if (d->nheld && now >= d->held[0].t + HOLD_NS)
        release_held(d, false);
    bool limited = d->cfg.rate_mbit > 0;
    if (limited)
        refill(d, now);
    send_backlog(d);
    /* Frames whose delay is over join the backlog.  With a rate limit,
     * `waiting` tracks the backlog as it would be at each frame's arrival:
     * frames the leftover tokens cover leave at once and are not counted. */
    uint32_t waiting = d->ready - d->head;
    double credit = waiting ? 0 : d->tokens;
    uint32_t k = (uint32_t)d->cfg.ecn_threshold;
    while (d->ready != d->tail) {
        struct frame *f = slot(d, d->ready);
        if (f->t > now)
            break;
        if (limited && k) {
            if (waiting == 0 && credit >= f->len)
                credit -= f->len;
            else if (waiting++ >= k && mark_ce(f))
                d->c.ce_marked++;
        }
        d->ready++;
    }
    send_backlog(d);
}

/* When this direction next needs the loop (UINT64_MAX: only on I/O). */
static uint64_t next_deadline(struct dir *d, uint64_t now)
{
    uint64_t t = UINT64_MAX;
    if (d->head != d->ready && !d->blocked) {
        double need = d->cfg.rate_mbit > 0 ? slot(d, d->head)->len - d->tokens : 0;
        t = now + (need > 0 ? (uint64_t)(need * 1e9 / rate_Bps(d)) + 1 : 0);
    }
    if (d->ready != d->tail && slot(d, d->ready)->t < t)
        t = slot(d, d->ready)->t;
    if (d->nheld && d->held[0].t + HOLD_NS < t)
        t = d->held[0].t + HOLD_NS;
    return t;
}

/* ---- ports ---------------------------------------------------------------- */

static void setopt(int fd, int level, int name, int val, const char *what)
{
    if (setsockopt(fd, level, name, &val, sizeof val) < 0)
        die("setsockopt %s: %s", what, strerror(errno));
}

static void port_open(struct port *p, uint32_t mtu_max)
{
    p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (p->fd < 0)
        die("AF_PACKET socket: %s", strerror(errno));
    if (!(p->ifindex = (int)if_nametoindex(p->ifname)))
        die("interface %s: %s", p->ifname, strerror(errno));
    setopt(p->fd, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
    setopt(p->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING");
    setopt(p->fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS");
    setopt(p->fd, SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20, "SO_SNDBUFFORCE");
    /* ring frames: header + sockaddr_ll + padding, then the frame */
    p->frame_sz = 2048;
    while (p->frame_sz < mtu_max + 18 + 128)
        p->frame_sz <<= 1;
    uint32_t block = p->frame_sz > 65536 ? p->frame_sz : 65536;
    p->frame_nr = RING_BYTES / p->frame_sz;
    if (p->frame_nr < 256)
        p->frame_nr = 256;
    struct tpacket_req req = {
        .tp_block_size = block,
        .tp_block_nr = p->frame_nr * p->frame_sz / block,
        .tp_frame_size = p->frame_sz,
        .tp_frame_nr = p->frame_nr,
    };
    if (setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0)
        die("PACKET_RX_RING: %s", strerror(errno));
    p->ring_len = (size_t)req.tp_block_size * req.tp_block_nr;
    p->ring = mmap(NULL, p->ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->fd, 0);
    if (p->ring == MAP_FAILED)
        die("mmap RX ring: %s", strerror(errno));
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = p->ifindex};
    if (bind(p->fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("bind %s: %s", p->ifname, strerror(errno));
    struct packet_mreq mr = {.mr_ifindex = p->ifindex, .mr_type = PACKET_MR_PROMISC};
    if (setsockopt(p->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0)
        die("promiscuous %s: %s", p->ifname, strerror(errno));
}

static uint32_t if_mtu(const char *ifname)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    if (fd < 0 || ioctl(fd, SIOCGIFMTU, &ifr) < 0)
        die("interface %s: %s", ifname, strerror(errno));
    close(fd);
    return (uint32_t)ifr.ifr_mtu;
}

/* Kernel ring drops since the last call, charged to the receiving direction. */
static void collect_ring_drops(void)
{
    for (int i = 0; i < 2; i++) {
        struct tpacket_stats st;
        socklen_t len = sizeof st;
        if (getsockopt(dirs[i].in->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0)
            dirs[i].c.dropped_ring += st.tp_drops;
    }
}

/* ---- settings and JSON ------------------------------------------------------ */

struct out {
    char buf[8192];
    size_t len;
};

static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof o->buf - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len = o->len + (size_t)n < sizeof o->buf ? o->len + (size_t)n : sizeof o->buf - 1;
}

static void put_config(struct out *o, uint64_t seed)
{
    put(o, "{\"seed\":%llu", (unsigned long long)seed);
    for (int i = 0; i < 2; i++) {
        put(o, ",\"%s\":{", dirs[i].name);
        for (size_t k = 0; k < NKEYS; k++)
            put(o, "%s\"%s\":%.17g", k ? "," : "", cfg_keys[k].name, *cfg_field(&dirs[i].cfg, k));
        put(o, "}");
    }
    put(o, "}");
}

static void put_stats(struct out *o)
{
    collect_ring_drops();
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        put(o, "%s\"%s\":{", i ? "," : "", d->name);
        for (size_t k = 0; k < sizeof counter_keys / sizeof counter_keys[0]; k++)
            put(o, "\"%s\":%llu,", counter_keys[k].name,
                (unsigned long long)*(uint64_t *)((char *)&d->c + counter_keys[k].off));
        put(o, "\"queue_len\":%u,\"held\":%u}", d->tail - d->head, d->nheld);
    }
}

/* Parse settings into cfg[2] and *seed; on error write it to err. */
static bool parse_settings(char **tok, int n, struct cfg cfg[2], uint64_t *seed, char *err, size_t errlen)
{
    for (int t = 0; t < n; t++) {
        char *s = tok[t], *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "expected key=value, got '%s'", s);
            return false;
        }
        *eq = '\0';
        const char *val = eq + 1, *key = s;
        char *end;
        if (!strcmp(key, "seed")) {
            errno = 0;
            unsigned long long v = strtoull(val, &end, 0);
            if (errno || !*val || *end) {
                snprintf(err, errlen, "seed: bad value '%s'", val);
                return false;
            }
            *seed = v;
            continue;
        }
        int lo = 0, hi = 2;                     /* directions it applies to */
        if (!strncmp(key, "ab.", 3))
            hi = 1, key += 3;
        else if (!strncmp(key, "ba.", 3))
            lo = 1, key += 3;
        size_t k = 0;
        while (k < NKEYS && strcmp(key, cfg_keys[k].name))
            k++;
        if (k == NKEYS) {
            snprintf(err, errlen, "unknown setting '%s'", s);
            return false;
        }
        double v = strtod(val, &end);
        if (!*val || *end || v != v || v < cfg_keys[k].min || v > cfg_keys[k].max ||
            (cfg_keys[k].integer && v != (double)(long long)v)) {
            snprintf(err, errlen, "%s: bad value '%s' (%s in [%g, %g])", s, val,
                     cfg_keys[k].integer ? "integer" : "number", cfg_keys[k].min, cfg_keys[k].max);
            return false;
        }
        for (int i = lo; i < hi; i++)
            *cfg_field(&cfg[i], k) = v;
    }
    return true;
}

static uint64_t cur_seed = 1;

/* Validate everything, then apply everything (or nothing). */
static bool apply_settings(char **tok, int n, char *err, size_t errlen)
{
    struct cfg cfg[2] = {dirs[0].cfg, dirs[1].cfg};
    uint64_t seed = cur_seed;
    bool reseed = false;
    for (int t = 0; t < n; t++)
        reseed |= !strncmp(tok[t], "seed=", 5);
    if (!parse_settings(tok, n, cfg, &seed, err, errlen))
        return false;
    for (int i = 0; i < 2; i++)
        if (!queue_reserve(&dirs[i], (uint32_t)cfg[i].queue_frames)) {
            snprintf(err, errlen, "out of memory for the queue");
            return false;
        }
    uint64_t now = now_ns();
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        if (d->cfg.rate_mbit > 0)
            refill(d, now);
        else
            d->tokens = 0;      /* a limit switched on starts from an empty bucket */
        d->t_refill = now;
        d->cfg = cfg[i];
    }
    if (reseed)
        seed_rng(cur_seed = seed);
    return true;
}

/* ---- control ------------------------------------------------------------------ */

static int ctl_listen = -1, owner_fd = -1;
static int conns[MAX_CONNS];
static int nconns;

static void ctl_request(int fd, char *req)
{
    struct out o = {.len = 0};
    size_t len = strlen(req);
    while (len && (req[len - 1] == '\n' || req[len - 1] == '\r' || req[len - 1] == ' '))
        req[--len] = '\0';
    char *tok[64];
    int n = 0;
    for (char *save = NULL, *s = strtok_r(req, " \t\n", &save); s && n < 64; s = strtok_r(NULL, " \t\n", &save))
        tok[n++] = s;
    if (n == 0) {
        put(&o, "{\"ok\":false,\"error\":\"empty request\"}");
    } else if (!strcmp(tok[0], "ping")) {
        put(&o, "{\"ok\":true}");
    } else if (!strcmp(tok[0], "stats")) {
        put(&o, "{\"ok\":true,");
        put_stats(&o);
        put(&o, "}");
    } else if (!strcmp(tok[0], "config") || !strcmp(tok[0], "set")) {
        char err[256];
        if (!strcmp(tok[0], "set") && !apply_settings(tok + 1, n - 1, err, sizeof err)) {
            put(&o, "{\"ok\":false,\"error\":\"");
            for (char *c = err; *c; c++)        /* messages hold no control characters */
                put(&o, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
            put(&o, "\"}");
        } else {
            put(&o, "{\"ok\":true,\"config\":");
            put_config(&o, cur_seed);
            put(&o, "}");
        }
    } else {
        put(&o, "{\"ok\":false,\"error\":\"unknown request\"}");
    }
    if (send(fd, o.buf, o.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        fprintf(stderr, "impair: control reply: %s\n", strerror(errno));
}

static void ctl_drop(int i)
{
    if (conns[i] == owner_fd)
        stopping = 1;           /* whoever started us is gone */
    close(conns[i]);
    conns[i] = conns[--nconns];
}

static void ctl_readable(int i)
{
    char req[4096];
    ssize_t n = recv(conns[i], req, sizeof req - 1, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        ctl_drop(i);
        return;
    }
    req[n] = '\0';
    ctl_request(conns[i], req);
}

static void ctl_open(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        die("control socket path too long");
    strcpy(sa.sun_path, path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    ctl_listen = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (ctl_listen < 0 || bind(ctl_listen, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ctl_listen, 4) < 0)
        die("control socket %s: %s", path, strerror(errno));
}

/* ---- main loop ------------------------------------------------------------------ */

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void port_error(struct port *p)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == ENODEV || err == ENXIO)
        die("interface %s is gone", p->ifname);
}

static void run(void)
{
    sigset_t block, unblocked;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &unblocked);
    sigdelset(&unblocked, SIGTERM);
    sigdelset(&unblocked, SIGINT);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    while (!stopping) {
        uint64_t now = now_ns();
        bool more = false;
        for (int i = 0; i < 2; i++) {
            more |= rx(&dirs[i], now);
            transmit(&dirs[i], now);
        }
        struct pollfd pfd[2 + 1 + MAX_CONNS];
        int n = 0;
        for (int i = 0; i < 2; i++)     /* port i receives dirs[i], sends dirs[1-i] */
            pfd[n++] = (struct pollfd){ports[i].fd, (short)(POLLIN | (dirs[1 - i].blocked ? POLLOUT : 0)), 0};
        if (ctl_listen >= 0)
            pfd[n++] = (struct pollfd){ctl_listen, POLLIN, 0};
        for (int i = 0; i < nconns; i++)
            pfd[n++] = (struct pollfd){conns[i], POLLIN, 0};

        struct timespec ts = {0, 0}, *tsp = &ts;
        if (!more) {
            uint64_t t = UINT64_MAX, after = now_ns();
            for (int i = 0; i < 2; i++) {
                uint64_t ti = next_deadline(&dirs[i], after);
                t = ti < t ? ti : t;
            }
            if (t == UINT64_MAX)
                tsp = NULL;
            else if (t > after)
                ts = (struct timespec){(time_t)((t - after) / NS_PER_S), (long)((t - after) % NS_PER_S)};
        }
        int r = ppoll(pfd, (nfds_t)n, tsp, &unblocked);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("ppoll: %s", strerror(errno));
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i].revents & POLLOUT)
                dirs[1 - i].blocked = false;
            if (pfd[i].revents & POLLERR)
                port_error(&ports[i]);
        }
        int c = 2;
        if (ctl_listen >= 0 && (pfd[c++].revents & POLLIN)) {
            int fd = accept4(ctl_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0 && nconns < MAX_CONNS)
                conns[nconns++] = fd;
            else if (fd >= 0)
                close(fd);
        }
        /* back to front: ctl_drop moves the last connection into the hole */
        for (int i = n - 1; i >= c; i--)
            if (pfd[i].revents)
                ctl_readable(i - c);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: impair --if-a IF --if-b IF [--ctl PATH] [--ctl-fd FD] "
               "[[ab.|ba.]KEY=VALUE ...] [seed=N]\nkeys:");
    for (size_t k = 0; k < NKEYS; k++)
        fprintf(f, " %s", cfg_keys[k].name);
    fputc('\n', f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"if-a", required_argument, 0, 'a'}, {"if-b", required_argument, 0, 'b'},
        {"ctl", required_argument, 0, 'c'},  {"ctl-fd", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},       {0, 0, 0, 0},
    };
    const char *ctl_path = NULL;
    for (int o; (o = getopt_long(argc, argv, "a:b:c:f:h", opts, NULL)) != -1;) {
        switch (o) {
        case 'a': ports[0].ifname = optarg; break;
        case 'b': ports[1].ifname = optarg; break;
        case 'c': ctl_path = optarg; break;
        case 'f': owner_fd = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!ports[0].ifname || !ports[1].ifname) {
        usage(stderr);
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1UL);      /* wake-ups on time, for delay accuracy */

    uint32_t mtu = if_mtu(ports[0].ifname), mtu_b = if_mtu(ports[1].ifname);
    mtu = mtu > mtu_b ? mtu : mtu_b;
    bufsz = (mtu + 18 + 63) & ~63u;
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        d->name = i ? "b_to_a" : "a_to_b";
        d->in = &ports[i];
        d->out = &ports[1 - i];
        d->cfg = cfg_default;
        d->scratch.buf = xcalloc(1, bufsz);
        for (int h = 0; h < HELD_MAX; h++)
            d->held[h].buf = xcalloc(1, bufsz);
    }
    seed_rng(cur_seed);
    char err[256];
    if (!apply_settings(argv + optind, argc - optind, err, sizeof err))
        die("%s", err);

    for (int i = 0; i < 2; i++)
        port_open(&ports[i], mtu);
    if (ctl_path)
        ctl_open(ctl_path);
    if (owner_fd >= 0)
        conns[nconns++] = owner_fd;

    run();

    struct out o = {.len = 0};
    put(&o, "{");
    put_stats(&o);
    put(&o, "}\n");
    fputs(o.buf, stdout);
    fflush(stdout);
    if (ctl_path)
        unlink(ctl_path);
    return 0;
}
