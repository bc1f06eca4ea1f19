/*
 * The fastpath worker: one per pinned core, entered once from Python and
 * left only to stop.  Each iteration receives a batch from the device,
 * classifies it (rx.c), sends the replies in one batch, hands exceptions to
 * the slowpath over the fp2sp ring, and carries out the slowpath's
 * messages from the sp2fp ring.  When nothing happened for poll_us it
 * sleeps in poll() on the device and the sp2fp eventfd, after publishing
 * that it sleeps (see abi.h), so no message or frame waits for a timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "dev.h"
#include "fastpath.h"
#include "rx.h"
#include "tasd/abi.h"
#include "tasd/ring.h"

#define BATCH 32
#define SLEEP_MAX_MS 100 /* wake at least this often to refresh the heartbeat */

struct fp_worker {
    struct tas_worker_shm *shm;
    struct tas_fp_stats *st;
    struct fp_dev *dev;
    struct fp_iface ifc;
    struct tas_ring_cursor sp2fp, fp2sp;
    int sp2fp_efd, fp2sp_efd;
    uint64_t last_work_ns;
};

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_signal = 1;
}

int fp_worker_process_init(char *err, size_t errlen)
{
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        snprintf(err, errlen, "PR_SET_PDEATHSIG: %s", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: poll() returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        snprintf(err, errlen, "sigaction: %s", strerror(errno));
        return -1;
    }
    /* the parent may already be gone between fork and prctl */
    if (getppid() == 1)
        stop_signal = 1;
    return 0;
}

uint64_t fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t fp_shm_bytes(uint32_t ring_slots)
{
    return sizeof(struct tas_worker_shm) + 2 * tas_ring_bytes(ring_slots);
}

int fp_shm_init(struct tas_worker_shm *shm, uint64_t size, uint32_t ring_slots)
{
    if (size < fp_shm_bytes(ring_slots))
        return -1;
    shm->size = size;
    shm->sp2fp_off = sizeof *shm;
    shm->fp2sp_off = sizeof *shm + tas_ring_bytes(ring_slots);
    if (tas_ring_init((struct tas_ring *)((uint8_t *)shm + shm->sp2fp_off), ring_slots) != 0 ||
        tas_ring_init((struct tas_ring *)((uint8_t *)shm + shm->fp2sp_off), ring_slots) != 0)
        return -1;
    shm->abi_version = TAS_ABI_VERSION;
    __atomic_store_n(&shm->magic, TAS_ABI_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

struct fp_worker *fp_worker_new(struct tas_worker_shm *shm, struct fp_dev *dev, int sp2fp_efd, int fp2sp_efd,
                                char *err, size_t errlen)
{
    if (__atomic_load_n(&shm->magic, __ATOMIC_ACQUIRE) != TAS_ABI_MAGIC || shm->abi_version != TAS_ABI_VERSION) {
        snprintf(err, errlen, "worker region has a bad magic or ABI version");
        return NULL;
    }
    if (shm->fp2sp_off + tas_ring_bytes(1) > shm->size || shm->sp2fp_off + tas_ring_bytes(1) > shm->size) {
        snprintf(err, errlen, "worker region rings out of bounds");
        return NULL;
    }
    struct fp_worker *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (tas_ring_cursor_init(&w->sp2fp, (struct tas_ring *)((uint8_t *)shm + shm->sp2fp_off)) != 0 ||
        tas_ring_cursor_init(&w->fp2sp, (struct tas_ring *)((uint8_t *)shm + shm->fp2sp_off)) != 0 ||
        shm->fp2sp_off + tas_ring_bytes(w->fp2sp.mask + 1) > shm->size ||
        shm->sp2fp_off + tas_ring_bytes(w->sp2fp.mask + 1) > shm->size) {
        snprintf(err, errlen, "worker region rings are not valid");
        free(w);
        return NULL;
    }
    w->shm = shm;
    w->st = &shm->stats;
    w->dev = dev;
    w->sp2fp_efd = sp2fp_efd;
    w->fp2sp_efd = fp2sp_efd;
    memcpy(w->ifc.mac, shm->mac, 6);
    w->ifc.ip = shm->ip;
    w->ifc.max_frame = shm->mtu + 14 < dev->max_frame ? shm->mtu + 14 : dev->max_frame;
    return w;
}

void fp_worker_free(struct fp_worker *w) { free(w); }

static void signal_efd(int fd)
{
    uint64_t one = 1;
    if (fd >= 0)
        (void)!write(fd, &one, sizeof one);
}

static void send_batch(struct fp_worker *w, struct fp_buf *bufs, unsigned n)
{
    if (n == 0)
        return;
    unsigned sent = fp_dev_tx(w->dev, bufs, n);
    for (unsigned i = 0; i < n; i++)
        w->st->tx_bytes += bufs[i].len; /* zeroed by the device for frames it did not send */
    w->st->tx_frames += sent;
    w->st->tx_errors += n - sent;
}

/* Frames from the device. */
static unsigned poll_rx(struct fp_worker *w, uint64_t now)
{
    struct fp_buf rx[BATCH], reply[BATCH];
    unsigned nreply = 0, nexc = 0;
    unsigned n = fp_dev_rx(w->dev, rx, BATCH);
    for (unsigned i = 0; i < n; i++) {
        struct fp_buf *b = &rx[i];
        uint32_t reason = 0;
        w->st->rx_frames++;
        w->st->rx_bytes += b->len;
        switch (fp_rx_frame(&w->ifc, b, &reason)) {
        case FP_REPLY:
            w->st->rx_icmp_echo++;
            reply[nreply++] = *b;
            continue;
        case FP_EXCEPTION:
            if (tas_ring_push(&w->fp2sp, TAS_MSG_EXCEPTION, reason, w->shm->worker_id, now, b->data, b->len) == 0) {
                w->st->rx_exceptions++;
                w->st->exceptions[reason]++;
                nexc++;
            } else {
                w->st->drops[TAS_DROP_EXC_RING_FULL]++;
            }
            break;
        default:
            w->st->drops[reason < TAS_DROP__COUNT ? reason : TAS_DROP_RUNT]++;
            break;
        }
        fp_dev_release(w->dev, b, 1);
    }
    send_batch(w, reply, nreply);
    if (nexc && tas_ring_prod_wake_needed(&w->fp2sp))
        signal_efd(w->fp2sp_efd);
    return n;
}

/* Messages from the slowpath.  Their contents are checked like wire input:
 * the slowpath is trusted, but a bad message must not become a bad frame. */
static unsigned poll_sp(struct fp_worker *w)
{
    struct fp_buf tx[BATCH];
    unsigned ntx = 0, n;
    struct tas_msg *m;
    for (n = 0; n < BATCH && (m = tas_ring_cons_slot(&w->sp2fp)) != NULL; n++) {
        if (m->type == TAS_MSG_TX_FRAME && m->len >= 14 && m->len <= w->ifc.max_frame) {
            if (fp_dev_alloc(w->dev, &tx[ntx], 1) == 1 && tx[ntx].cap >= m->len) {
                memcpy(tx[ntx].data, m->data, m->len);
                tx[ntx].len = m->len;
                ntx++;
                w->st->sp_tx_frames++;
            } else {
                w->st->tx_errors++;
            }
        } else {
            w->st->sp_bad_msgs++;
        }
        tas_ring_cons_release(&w->sp2fp, m);
    }
    send_batch(w, tx, ntx);
    return n;
}

unsigned fp_worker_poll(struct fp_worker *w, uint64_t now_ns)
{
    unsigned work = poll_rx(w, now_ns) + poll_sp(w);
    w->st->polls++;
    __atomic_store_n(&w->shm->heartbeat_ns, now_ns, __ATOMIC_RELAXED);
    if (work)
        w->last_work_ns = now_ns;
    return work;
}

static int stopping(struct fp_worker *w)
{
    return stop_signal || __atomic_load_n(&w->shm->stop, __ATOMIC_ACQUIRE);
}

static void sleep_until_work(struct fp_worker *w)
{
    if (tas_ring_cons_arm(&w->sp2fp))
        return;
    if (fp_dev_rx_pending(w->dev) || stopping(w)) {
        tas_ring_cons_disarm(&w->sp2fp);
        return;
    }
    struct pollfd pfd[2] = {{.fd = w->sp2fp_efd, .events = POLLIN}, {.fd = w->dev->wait_fd, .events = POLLIN}};
    w->st->sleeps++;
    if (poll(pfd, 2, SLEEP_MAX_MS) > 0 && (pfd[0].revents & POLLIN)) {
        uint64_t v;
        (void)!read(w->sp2fp_efd, &v, sizeof v);
    }
    tas_ring_cons_disarm(&w->sp2fp);
}

int fp_worker_run(struct fp_worker *w)
{
    uint64_t poll_ns = (uint64_t)w->shm->poll_us * 1000;
    w->shm->pid = getpid();
    w->last_work_ns = fp_now_ns();
    __atomic_store_n(&w->shm->state, TAS_WORKER_RUNNING, __ATOMIC_RELEASE);
    while (!stopping(w)) {
        uint64_t now = fp_now_ns();
        if (fp_worker_poll(w, now) == 0 && now - w->last_work_ns >= poll_ns)
            sleep_until_work(w);
    }
    __atomic_store_n(&w->shm->state, TAS_WORKER_STOPPED, __ATOMIC_RELEASE);
    return 0;
}
