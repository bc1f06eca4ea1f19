/*
 * AF_XDP backend.
 *
 * The slowpath creates, once, a UMEM in a memfd and one XDP socket per
 * worker, all bound to the same queue of the interface: the first socket
 * registers the UMEM, the others share it (XDP_SHARED_UMEM).  Each worker
 * maps its own socket's RX and TX rings; the fill and completion rings
 * belong to the queue and are shared by all workers, under a lock in struct
 * tas_xdp_shared, taken once per batch.
 *
 * Every free frame is in one pool in the shared region (next to the lock)
 * or in a worker's small cache.  Whichever worker holds the lock reaps all
 * completions into the pool and tops the fill ring up to its target from
 * the pool; caches are kept between two marks.  So frames cannot pile up
 * in one worker, and the fill ring does not depend on which worker
 * received or sent what.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include "dev.h"
#include "fastpath.h"
#include "tasd/abi.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#define XDP_FRAME_SIZE FP_XDP_FRAME_SIZE

_Static_assert(sizeof(((struct fp_xdp_sockets *)0)->fds) / sizeof(int) == FP_MAX_WORKERS, "fds size");

/* ---- setup, in the slowpath process ---- */

static int xsk_socket_new(int umem_owner, void *area, uint64_t len, uint32_t ring_size, uint32_t fill_size,
                          char *err, size_t errlen)
{
    int fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "AF_XDP socket: %s%s", strerror(errno),
                 errno == EAFNOSUPPORT ? " (kernel without CONFIG_XDP_SOCKETS)" : "");
        return -1;
    }
    int rs = (int)ring_size, fs = (int)fill_size;
    if (umem_owner) {
        struct xdp_umem_reg mr = {
            .addr = (uint64_t)(uintptr_t)area, .len = len, .chunk_size = XDP_FRAME_SIZE, .headroom = 0};
        if (setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &mr, sizeof mr) < 0 ||
            setsockopt(fd, SOL_XDP, XDP_UMEM_FILL_RING, &fs, sizeof fs) < 0 ||
            setsockopt(fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &fs, sizeof fs) < 0) {
            snprintf(err, errlen, "AF_XDP UMEM setup: %s", strerror(errno));
            close(fd);
            return -1;
        }
    }
    if (setsockopt(fd, SOL_XDP, XDP_RX_RING, &rs, sizeof rs) < 0 ||
        setsockopt(fd, SOL_XDP, XDP_TX_RING, &rs, sizeof rs) < 0) {
        snprintf(err, errlen, "AF_XDP ring setup: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* bind, retrying for a while on EBUSY: a queue stays busy for about a second
 * after the previous socket on it was closed. */
static int xsk_bind_retry(int fd, struct sockaddr_xdp *sa)
{
    for (int tries = 0;; tries++) {
        if (bind(fd, (struct sockaddr *)sa, sizeof *sa) == 0)
            return 0;
        if (errno != EBUSY || tries >= 40)
            return -1;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int fp_xdp_sockets_create(const char *ifname, uint32_t queue, uint32_t nsockets, uint32_t nframes,
                          uint32_t ring_size, int zerocopy, struct fp_xdp_sockets *out, char *err,
                          size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->umem_fd = out->shared_fd = -1;
    unsigned ifindex = if_nametoindex(ifname);
    if (ifindex == 0) {
        snprintf(err, errlen, "interface %s: %s", ifname, strerror(errno));
        return -1;
    }
    if (nsockets == 0 || nsockets > FP_MAX_WORKERS || ring_size == 0 || (ring_size & (ring_size - 1)) ||
        nframes < 2 * ring_size * nsockets || (nframes & (nframes - 1))) {
        snprintf(err, errlen, "bad AF_XDP sizes: %u sockets, %u frames, rings of %u", nsockets, nframes,
                 ring_size);
        return -1;
    }
    uint32_t fill_size = nframes / 2;
    uint64_t len = (uint64_t)nframes * XDP_FRAME_SIZE;
    void *area = MAP_FAILED;
    struct tas_xdp_shared *sh = MAP_FAILED;
    size_t sh_len = sizeof *sh + (size_t)nframes * sizeof(uint64_t);

    out->umem_fd = memfd_create("tasd-umem", MFD_CLOEXEC);
    out->shared_fd = memfd_create("tasd-xdp", MFD_CLOEXEC);
    if (out->umem_fd < 0 || out->shared_fd < 0 || ftruncate(out->umem_fd, (off_t)len) < 0 ||
        ftruncate(out->shared_fd, (off_t)sh_len) < 0) {
        snprintf(err, errlen, "UMEM memory: %s", strerror(errno));
        goto fail;
    }
    area = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, out->umem_fd, 0);
    sh = mmap(NULL, sh_len, PROT_READ | PROT_WRITE, MAP_SHARED, out->shared_fd, 0);
    if (area == MAP_FAILED || sh == MAP_FAILED) {
        snprintf(err, errlen, "UMEM mmap: %s", strerror(errno));
        goto fail;
    }

    /* zero-copy where the driver offers it, else copy mode */
    uint16_t modes[2];
    int nmodes = 0;
    if (zerocopy != 0)
        modes[nmodes++] = XDP_ZEROCOPY;
    if (zerocopy != 1)
        modes[nmodes++] = XDP_COPY;
    int bound = 0;
    for (int m = 0; m < nmodes && !bound; m++) {
        int fd = xsk_socket_new(1, area, len, ring_size, fill_size, err, errlen);
        if (fd < 0)
            goto fail;
        struct sockaddr_xdp sa = {.sxdp_family = AF_XDP,
                                  .sxdp_flags = modes[m] | XDP_USE_NEED_WAKEUP,
                                  .sxdp_ifindex = ifindex,
                                  .sxdp_queue_id = queue};
        if (xsk_bind_retry(fd, &sa) == 0) {
            out->fds[0] = fd;
            out->zerocopy = modes[m] == XDP_ZEROCOPY;
            bound = 1;
        } else {
            snprintf(err, errlen, "AF_XDP bind to %s queue %u (%s mode): %s", ifname, queue,
                     modes[m] == XDP_ZEROCOPY ? "zero-copy" : "copy", strerror(errno));
            close(fd);
        }
    }
    if (!bound)
        goto fail;
    out->nsockets = 1;
    for (uint32_t i = 1; i < nsockets; i++) {
        int fd = xsk_socket_new(0, NULL, 0, ring_size, 0, err, errlen);
        if (fd < 0)
            goto fail;
        /* a socket sharing the UMEM on the same queue takes the owner's
         * flags; giving any is an error */
        struct sockaddr_xdp sa = {.sxdp_family = AF_XDP,
                                  .sxdp_flags = XDP_SHARED_UMEM,
                                  .sxdp_ifindex = ifindex,
                                  .sxdp_queue_id = queue,
                                  .sxdp_shared_umem_fd = (uint32_t)out->fds[0]};
        if (xsk_bind_retry(fd, &sa) < 0) {
            snprintf(err, errlen, "AF_XDP shared bind %u: %s", i, strerror(errno));
            close(fd);
            goto fail;
        }
        out->fds[out->nsockets++] = fd;
    }

    memset(sh, 0, sh_len);
    uint64_t *pool = (uint64_t *)(sh + 1);
    for (uint32_t i = 0; i < nframes; i++)
        pool[i] = (uint64_t)(nframes - 1 - i) * XDP_FRAME_SIZE;
    sh->nfree = nframes;
    sh->fill_target = fill_size - fill_size / 8;
    sh->nframes = nframes;
    sh->frame_size = XDP_FRAME_SIZE;
    sh->fill_size = fill_size;
    sh->comp_size = fill_size;
    sh->ring_size = ring_size;
    sh->nworkers = nsockets;
    __atomic_store_n(&sh->magic, TAS_ABI_MAGIC, __ATOMIC_RELEASE);
    munmap(sh, sh_len);
    munmap(area, len); /* the kernel keeps the pages pinned; workers map the memfd */
    return 0;

fail:
    if (sh != MAP_FAILED)
        munmap(sh, sh_len);
    if (area != MAP_FAILED)
        munmap(area, len);
    fp_xdp_sockets_close(out);
    return -1;
}

void fp_xdp_sockets_close(struct fp_xdp_sockets *s)
{
    for (int i = 0; i < s->nsockets; i++)
        close(s->fds[i]);
    s->nsockets = 0;
    if (s->umem_fd >= 0)
        close(s->umem_fd);
    if (s->shared_fd >= 0)
        close(s->shared_fd);
    s->umem_fd = s->shared_fd = -1;
}

/* ---- the device, in a worker ---- */

#define CACHE_MAX 512   /* frames a worker keeps for itself */
#define CACHE_LOW 64    /* below this it takes from the pool */
#define CACHE_HIGH 384  /* above this it gives back to the pool */
#define CACHE_TARGET 256

struct xdp_dev {
    struct fp_dev base;
    int fd;
    struct tas_xdp_shared *sh;   /* followed by the pool: uint64_t free[nframes] */
    uint64_t *pool;
    size_t sh_len;
    uint8_t *umem;
    uint64_t umem_len;
    uint32_t frame_size;
    struct xsk_ring_cons rx, comp;
    struct xsk_ring_prod tx, fill;
    void *maps[4];
    size_t map_len[4];
    uint64_t cache[CACHE_MAX];   /* this worker's free frames */
    uint32_t ncache;
    int kick_pending;            /* TX descriptors queued but the last kick failed */
};

/* The lock of the queue's shared state.  Held for a few hundred
 * instructions per batch; a holder that is descheduled makes the others
 * yield rather than spin out their time slice. */
static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void sh_lock(struct tas_xdp_shared *sh)
{
    for (unsigned spins = 0; __atomic_exchange_n(&sh->lock, 1, __ATOMIC_ACQUIRE); spins++) {
        while (__atomic_load_n(&sh->lock, __ATOMIC_RELAXED)) {
            if (++spins > 1000) {
                sched_yield();
                spins = 0;
            } else {
                cpu_relax();
            }
        }
    }
}

static void sh_unlock(struct tas_xdp_shared *sh) { __atomic_store_n(&sh->lock, 0, __ATOMIC_RELEASE); }

static uint64_t chunk_of(const struct xdp_dev *x, uint64_t addr) { return addr & ~((uint64_t)x->frame_size - 1); }

/* Give a frame back to this worker's cache; a full cache spills into the
 * pool.  A frame address outside the UMEM is a bug: counted, never kept. */
static void cache_put(struct xdp_dev *x, uint64_t addr);

/* Under the lock: completions into the pool, the fill ring topped up from
 * the pool, and the cache brought back between its marks.  The shared
 * rings' cached indices are reloaded first: another worker may have moved
 * them. */
static void maintain_locked(struct xdp_dev *x)
{
    struct tas_xdp_shared *sh = x->sh;
    uint32_t idx, n;
    x->comp.cached_cons = *x->comp.consumer;
    x->comp.cached_prod = x->comp.cached_cons;
    n = xsk_ring_cons__peek(&x->comp, sh->nframes, &idx);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t a = chunk_of(x, *xsk_ring_cons__comp_addr(&x->comp, idx + i));
        if (a < x->umem_len && sh->nfree < sh->nframes)
            x->pool[sh->nfree++] = a;
        else
            sh->bad_frames++;
    }
    if (n)
        xsk_ring_cons__release(&x->comp, n);

    if (x->ncache > CACHE_HIGH) {
        while (x->ncache > CACHE_TARGET && sh->nfree < sh->nframes)
            x->pool[sh->nfree++] = x->cache[--x->ncache];
    }

    x->fill.cached_prod = *x->fill.producer;
    x->fill.cached_cons = *x->fill.consumer + x->fill.size;
    uint32_t level = x->fill.size - xsk_prod_nb_free(&x->fill, x->fill.size);
    n = level < sh->fill_target ? sh->fill_target - level : 0;
    if (n > sh->nfree)
        n = sh->nfree;
    if (n && xsk_ring_prod__reserve(&x->fill, n, &idx) == n) {
        for (uint32_t i = 0; i < n; i++)
            *xsk_ring_prod__fill_addr(&x->fill, idx + i) = x->pool[--sh->nfree];
        xsk_ring_prod__submit(&x->fill, n);
    }

    if (x->ncache < CACHE_LOW) {
        while (x->ncache < CACHE_TARGET && sh->nfree > 0)
            x->cache[x->ncache++] = x->pool[--sh->nfree];
    }
}

static void maintain(struct xdp_dev *x)
{
    sh_lock(x->sh);
    maintain_locked(x);
    int wake = xsk_ring_prod__needs_wakeup(&x->fill);
    sh_unlock(x->sh);
    if (wake)
        recvfrom(x->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
}

/* Cheap unlocked look: is maintenance due? */
static int maintenance_due(struct xdp_dev *x)
{
    uint32_t comp_pending = __atomic_load_n(x->comp.producer, __ATOMIC_ACQUIRE) - *x->comp.consumer;
    uint32_t fill_level = *x->fill.producer - __atomic_load_n(x->fill.consumer, __ATOMIC_ACQUIRE);
    return comp_pending || fill_level < x->sh->fill_target / 2 || x->ncache < CACHE_LOW || x->ncache > CACHE_HIGH;
}

static void cache_put(struct xdp_dev *x, uint64_t addr)
{
    uint64_t a = chunk_of(x, addr);
    if (a >= x->umem_len) {
        __atomic_fetch_add(&x->sh->bad_frames, 1, __ATOMIC_RELAXED);
        return;
    }
    if (x->ncache == CACHE_MAX)
        maintain(x); /* spills down to the target */
    x->cache[x->ncache++] = a;
}

/* Copy mode sends only from a system call, need_wakeup or not.  If the
 * kernel is busy the frames stay in the TX ring and the kick is retried from
 * the RX poll. */
static void kick_tx(struct xdp_dev *x)
{
    x->kick_pending = sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 &&
                      (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS);
}

static unsigned xdp_rx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    uint32_t idx;
    if (x->kick_pending)
        kick_tx(x);
    if (maintenance_due(x))
        maintain(x);
    unsigned got = xsk_ring_cons__peek(&x->rx, n, &idx);
    for (unsigned i = 0; i < got; i++) {
        const struct xdp_desc *dsc = xsk_ring_cons__rx_desc(&x->rx, idx + i);
        uint64_t base = chunk_of(x, dsc->addr);
        bufs[i].id = base;
        bufs[i].data = x->umem + dsc->addr;
        bufs[i].len = dsc->len;
        bufs[i].cap = (uint32_t)(base + x->frame_size - dsc->addr);
    }
    if (got)
        xsk_ring_cons__release(&x->rx, got);
    return got;
}

static unsigned xdp_alloc(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    if (x->ncache < n)
        maintain(x);
    unsigned i;
    for (i = 0; i < n && x->ncache > 0; i++) {
        uint64_t a = x->cache[--x->ncache];
        bufs[i].id = a;
        bufs[i].data = x->umem + a;
        bufs[i].len = 0;
        bufs[i].cap = x->frame_size;
    }
    return i;
}

static void xdp_release(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    for (unsigned i = 0; i < n; i++)
        cache_put(x, bufs[i].id);
}

static unsigned xdp_tx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    uint32_t idx, ok = 0;
    unsigned room = xsk_prod_nb_free(&x->tx, n);
    if (room > n)
        room = n;
    if (room && xsk_ring_prod__reserve(&x->tx, room, &idx) == room) {
        for (unsigned i = 0; i < room; i++) {
            if (bufs[i].len > d->max_frame || bufs[i].len == 0) {
                cache_put(x, bufs[i].id); /* not sendable: dropped, counted by the caller */
                bufs[i].len = 0;
                continue;
            }
            struct xdp_desc *dsc = xsk_ring_prod__tx_desc(&x->tx, idx + ok);
            dsc->addr = (uint64_t)(bufs[i].data - x->umem);
            dsc->len = bufs[i].len;
            dsc->options = 0;
            ok++;
        }
        if (ok < room)
            x->tx.cached_prod -= room - ok; /* unreserve the slots not used */
        if (ok)
            xsk_ring_prod__submit(&x->tx, ok);
    }
    for (unsigned i = room; i < n; i++) {
        cache_put(x, bufs[i].id); /* TX ring full: dropped */
        bufs[i].len = 0;
    }
    if (ok)
        kick_tx(x); /* completions are reaped by the next maintenance */
    return ok;
}

static int xdp_rx_pending(struct fp_dev *d)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    return x->kick_pending || xsk_cons_nb_avail(&x->rx, 1) > 0;
}

static void xdp_close(struct fp_dev *d)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    for (int i = 0; i < 4; i++)
        if (x->maps[i] && x->maps[i] != MAP_FAILED)
            munmap(x->maps[i], x->map_len[i]);
    if (x->umem)
        munmap(x->umem, x->umem_len);
    if (x->sh)
        munmap(x->sh, x->sh_len);
    free(x);
}

static void xdp_counters(struct fp_dev *d, struct tas_fp_stats *st)
{
    struct xdp_dev *x = (struct xdp_dev *)d;
    struct xdp_statistics xs;
    socklen_t len = sizeof xs;
    if (getsockopt(x->fd, SOL_XDP, XDP_STATISTICS, &xs, &len) != 0)
        return;
    st->dev_rx_dropped = xs.rx_dropped;
    st->dev_rx_ring_full = xs.rx_ring_full;
    st->dev_fill_empty = xs.rx_fill_ring_empty_descs;
    st->dev_tx_invalid = xs.tx_invalid_descs;
}

static const struct fp_dev_ops xdp_ops = {
    .rx = xdp_rx,
    .alloc = xdp_alloc,
    .tx = xdp_tx,
    .release = xdp_release,
    .rx_pending = xdp_rx_pending,
    .close = xdp_close,
    .counters = xdp_counters,
};

static void *map_ring(struct xdp_dev *x, int slot, uint64_t pgoff, const struct xdp_ring_offset *o,
                      uint32_t entries, size_t esize)
{
    x->map_len[slot] = o->desc + (size_t)entries * esize;
    x->maps[slot] = mmap(NULL, x->map_len[slot], PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, x->fd,
                         (off_t)pgoff);
    return x->maps[slot] == MAP_FAILED ? NULL : x->maps[slot];
}

#define RING_SETUP(r, base, o, entries)                                                                \
    do {                                                                                               \
        (r).producer = (uint32_t *)((uint8_t *)(base) + (o).producer);                                 \
        (r).consumer = (uint32_t *)((uint8_t *)(base) + (o).consumer);                                 \
        (r).flags = (uint32_t *)((uint8_t *)(base) + (o).flags);                                       \
        (r).ring = (uint8_t *)(base) + (o).desc;                                                       \
        (r).size = (entries);                                                                          \
        (r).mask = (entries) - 1;                                                                      \
    } while (0)

struct fp_dev *fp_dev_xdp_open(int xsk_fd, int umem_fd, int shared_fd, uint32_t worker_id, uint32_t mtu,
                               char *err, size_t errlen)
{
    struct xdp_dev *x = calloc(1, sizeof *x);
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    x->fd = xsk_fd;
    struct stat stt;
    if (fstat(shared_fd, &stt) != 0 || (size_t)stt.st_size < sizeof *x->sh) {
        snprintf(err, errlen, "AF_XDP shared state: bad fd");
        goto fail;
    }
    x->sh_len = (size_t)stt.st_size;
    x->sh = mmap(NULL, x->sh_len, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd, 0);
    if (x->sh == MAP_FAILED) {
        x->sh = NULL;
        snprintf(err, errlen, "map AF_XDP shared state: %s", strerror(errno));
        goto fail;
    }
    struct tas_xdp_shared *sh = x->sh;
    if (__atomic_load_n(&sh->magic, __ATOMIC_ACQUIRE) != TAS_ABI_MAGIC || worker_id >= sh->nworkers ||
        x->sh_len < sizeof *sh + (uint64_t)sh->nframes * sizeof(uint64_t)) {
        snprintf(err, errlen, "AF_XDP shared state not initialised for worker %u", worker_id);
        goto fail;
    }
    x->pool = (uint64_t *)(sh + 1);
    x->frame_size = sh->frame_size;
    x->umem_len = (uint64_t)sh->nframes * sh->frame_size;
    x->umem = mmap(NULL, x->umem_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, umem_fd, 0);
    if (x->umem == MAP_FAILED) {
        x->umem = NULL;
        snprintf(err, errlen, "map UMEM: %s", strerror(errno));
        goto fail;
    }
    struct xdp_mmap_offsets off;
    socklen_t ol = sizeof off;
    if (getsockopt(xsk_fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &ol) < 0) {
        snprintf(err, errlen, "AF_XDP ring offsets: %s", strerror(errno));
        goto fail;
    }
    void *rx = map_ring(x, 0, XDP_PGOFF_RX_RING, &off.rx, sh->ring_size, sizeof(struct xdp_desc));
    void *tx = map_ring(x, 1, XDP_PGOFF_TX_RING, &off.tx, sh->ring_size, sizeof(struct xdp_desc));
    void *fr = map_ring(x, 2, XDP_UMEM_PGOFF_FILL_RING, &off.fr, sh->fill_size, sizeof(uint64_t));
    void *cr = map_ring(x, 3, XDP_UMEM_PGOFF_COMPLETION_RING, &off.cr, sh->comp_size, sizeof(uint64_t));
    if (!rx || !tx || !fr || !cr) {
        snprintf(err, errlen, "map AF_XDP rings: %s", strerror(errno));
        goto fail;
    }
    RING_SETUP(x->rx, rx, off.rx, sh->ring_size);
    RING_SETUP(x->tx, tx, off.tx, sh->ring_size);
    RING_SETUP(x->fill, fr, off.fr, sh->fill_size);
    RING_SETUP(x->comp, cr, off.cr, sh->comp_size);
    x->rx.cached_prod = *x->rx.producer;
    x->rx.cached_cons = *x->rx.consumer;
    x->tx.cached_prod = *x->tx.producer;
    x->tx.cached_cons = *x->tx.consumer + sh->ring_size;

    maintain(x); /* the first worker fills the fill ring; each takes a cache */

    x->base.ops = &xdp_ops;
    x->base.kind = "xdp";
    x->base.wait_fd = xsk_fd;
    x->base.max_frame = mtu + 14;
    return &x->base;
fail:
    xdp_close(&x->base);
    return NULL;
}
