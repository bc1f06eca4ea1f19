/*
 * The fastpath worker: one per pinned core, entered once from Python and
 * left only to stop.  Each iteration carries out the slowpath's messages
 * (sp2fp), receives a batch from the device and classifies it (rx.c; TCP
 * segments of installed flows go to tcp_in.c), takes the apps' messages,
 * runs the TCP timers and transmissions, sends everything built as one
 * batch, then tells apps and the slowpath what happened.  When nothing
 * happened for poll_us (or at once, when polling rarely pays: see
 * fp_worker_run) it sleeps in poll() on the device, the sp2fp eventfd
 * and the app doorbell, until the next timer at the latest, after
 * publishing that it sleeps (see abi.h), so no message or frame waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dev.h"
#include "fastpath.h"
#include "rx.h"
#include "tasd/abi.h"
#include "tasd/ring.h"
#include "tcp.h"
#include "wire.h"
#include "worker.h"

#define SLEEP_MAX_MS 100  /* wake at least this often to refresh the heartbeat */
#define FP_RX_BUDGET 512  /* frames received per iteration at most */

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_signal = 1;
}

int fp_worker_process_init(int parent_pid, char *err, size_t errlen)
{
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        snprintf(err, errlen, "PR_SET_PDEATHSIG: %s", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: poll() returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0) {
        snprintf(err, errlen, "sigaction: %s", strerror(errno));
        return -1;
    }
    /* Ctrl-C reaches the whole process group: tasd stops its workers itself */
    signal(SIGINT, SIG_IGN);
    /* the parent may already be gone between fork and prctl */
    if (parent_pid > 0 && getppid() != parent_pid)
        stop_signal = 1;
    return 0;
}

uint64_t fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the worker region ---------------------------------------------------- */

static uint64_t align64(uint64_t x) { return (x + 63) & ~63ull; }

uint64_t fp_shm_bytes(uint32_t ring_slots, uint32_t max_flows)
{
    uint64_t rings = sizeof(struct tas_worker_shm) + 2 * tas_ring_bytes(ring_slots, sizeof(struct tas_msg));
    return align64(rings) + align64((uint64_t)max_flows * sizeof(struct tas_flow)) +
           (uint64_t)max_flows * sizeof(struct tas_flow_ctl);
}

int fp_shm_init(struct tas_worker_shm *shm, uint64_t size, uint32_t ring_slots, uint32_t max_flows)
{
    if (size < fp_shm_bytes(ring_slots, max_flows))
        return -1;
    shm->size = size;
    shm->sp2fp_off = sizeof *shm;
    shm->fp2sp_off = sizeof *shm + tas_ring_bytes(ring_slots, sizeof(struct tas_msg));
    shm->flows_off = align64(shm->fp2sp_off + tas_ring_bytes(ring_slots, sizeof(struct tas_msg)));
    shm->flow_ctl_off = align64(shm->flows_off + (uint64_t)max_flows * sizeof(struct tas_flow));
    shm->max_flows = max_flows;
    shm->rto_min_us = 200000;
    shm->rto_max_us = 120000000;
    shm->delack_us = 40000;
    if (tas_ring_init((struct tas_ring *)((uint8_t *)shm + shm->sp2fp_off), ring_slots, sizeof(struct tas_msg)) != 0 ||
        tas_ring_init((struct tas_ring *)((uint8_t *)shm + shm->fp2sp_off), ring_slots, sizeof(struct tas_msg)) != 0)
        return -1;
    shm->abi_version = TAS_ABI_VERSION;
    __atomic_store_n(&shm->magic, TAS_ABI_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

struct fp_worker *fp_worker_new(struct tas_worker_shm *shm, struct fp_dev *dev, int sp2fp_efd, int fp2sp_efd,
                                int sock_fd, int doorbell_efd, char *err, size_t errlen)
{
    if (__atomic_load_n(&shm->magic, __ATOMIC_ACQUIRE) != TAS_ABI_MAGIC || shm->abi_version != TAS_ABI_VERSION) {
        snprintf(err, errlen, "worker region has a bad magic or ABI version");
        return NULL;
    }
    struct fp_worker *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (shm->sp2fp_off > shm->size || shm->fp2sp_off > shm->size ||
        tas_ring_cursor_init(&w->sp2fp, (struct tas_ring *)((uint8_t *)shm + shm->sp2fp_off), sizeof(struct tas_msg),
                             shm->size - shm->sp2fp_off) != 0 ||
        tas_ring_cursor_init(&w->fp2sp, (struct tas_ring *)((uint8_t *)shm + shm->fp2sp_off), sizeof(struct tas_msg),
                             shm->size - shm->fp2sp_off) != 0) {
        snprintf(err, errlen, "worker region rings are not valid");
        free(w);
        return NULL;
    }
    w->shm = shm;
    w->st = &shm->stats;
    w->dev = dev;
    w->sp2fp_efd = sp2fp_efd;
    w->fp2sp_efd = fp2sp_efd;
    w->sock_fd = sock_fd;
    w->doorbell_efd = doorbell_efd;
    w->now = fp_now_ns();
    memcpy(w->ifc.mac, shm->mac, 6);
    w->ifc.ip = shm->ip;
    w->ifc.max_frame = shm->mtu + 14 < dev->max_frame ? shm->mtu + 14 : dev->max_frame;
    if (fp_tcp_init(w, err, errlen) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void fp_worker_free(struct fp_worker *w)
{
    if (w == NULL)
        return;
    for (uint32_t i = 0; i < FP_MAX_APPS; i++)
        fp_app_detach(w, i);
    fp_tcp_free(w);
    free(w);
}

static void signal_efd(int fd)
{
    uint64_t one = 1;
    if (fd >= 0)
        (void)!write(fd, &one, sizeof one);
}

/* ---- transmission -------------------------------------------------------------- */

void fp_tx_flush(struct fp_worker *w)
{
    unsigned n = w->ntx;
    if (n == 0)
        return;
    unsigned sent = fp_dev_tx(w->dev, w->txq, n);
    for (unsigned i = 0; i < n; i++)
        w->st->tx_bytes += w->txq[i].len; /* zeroed by the device for frames it did not send */
    w->st->tx_frames += sent;
    w->st->tx_errors += n - sent;
    w->ntx = 0;
}

struct fp_buf *fp_tx_alloc(struct fp_worker *w)
{
    if (w->ntx == FP_TXQ)
        fp_tx_flush(w);
    struct fp_buf *b = &w->txq[w->ntx];
    if (fp_dev_alloc(w->dev, b, 1) != 1) {
        fp_tx_flush(w); /* sending frees buffers on some devices */
        b = &w->txq[w->ntx];
        if (fp_dev_alloc(w->dev, b, 1) != 1) {
            w->st->tx_errors++;
            return NULL;
        }
    }
    return b;
}

void fp_tx_commit(struct fp_worker *w, struct fp_buf *b)
{
    (void)b; /* it is txq[ntx] */
    w->ntx++;
}

/* ---- events for the slowpath ------------------------------------------------------ */

static int push_event(struct fp_worker *w, const struct tas_flow_event *ev)
{
    if (tas_msg_push(&w->fp2sp, TAS_MSG_FLOW_EVENT, ev->kind, w->shm->worker_id, w->now, ev, sizeof *ev) != 0)
        return -1;
    w->fp2sp_published++;
    w->st->flow_events++;
    return 0;
}

void fp_flow_event(struct fp_worker *w, const struct tas_flow_event *ev)
{
    /* keep the order: behind anything already waiting */
    if (w->evq_len == 0 && push_event(w, ev) == 0)
        return;
    w->st->fp2sp_full++;
    if (w->evq_len == FP_EVQ) {
        w->st->sp_bad_msgs++; /* cannot happen unless the slowpath is gone */
        return;
    }
    w->evq[(w->evq_head + w->evq_len++) % FP_EVQ] = *ev;
}

/* ---- capture (dev_pcap.c) ------------------------------------------------------- */

static void flush_capture_answers(struct fp_worker *w)
{
    unsigned done = 0;
    while (done < w->capq_len) {
        const struct fp_capture_answer *a = &w->capq[done];
        if (tas_msg_push(&w->fp2sp, a->type, a->rep.id, w->shm->worker_id, w->now, &a->rep, sizeof a->rep) != 0)
            break;
        w->fp2sp_published++;
        done++;
    }
    memmove(w->capq, w->capq + done, (w->capq_len - done) * sizeof w->capq[0]);
    w->capq_len -= done;
}

static void capture_answer(struct fp_worker *w, uint16_t type, const struct tas_capture_report *rep)
{
    if (w->capq_len == sizeof w->capq / sizeof w->capq[0]) {
        w->st->sp_bad_msgs++; /* the slowpath sent more than it waits for */
        return;
    }
    w->capq[w->capq_len].type = type;
    w->capq[w->capq_len++].rep = *rep;
    flush_capture_answers(w);
}

static void flush_events(struct fp_worker *w)
{
    if (w->capq_len)
        flush_capture_answers(w);
    while (w->evq_len && push_event(w, &w->evq[w->evq_head]) == 0) {
        w->evq_head = (w->evq_head + 1) % FP_EVQ;
        w->evq_len--;
    }
    if (w->fp2sp_published && tas_ring_prod_wake_needed(&w->fp2sp))
        signal_efd(w->fp2sp_efd);
    w->fp2sp_published = 0;
}

/* ---- frames from the device ------------------------------------------------------ */

static void rx_frame(struct fp_worker *w, struct fp_buf *b)
{
    uint32_t reason = 0;
    w->st->rx_frames++;
    w->st->rx_bytes += b->len;
    switch (fp_rx_frame(&w->ifc, b, &reason)) {
    case FP_REPLY:
        w->st->rx_icmp_echo++;
        if (w->ntx == FP_TXQ)
            fp_tx_flush(w);
        w->txq[w->ntx++] = *b; /* the reply reuses the buffer */
        return;
    case FP_EXCEPTION:
        if (reason == TAS_EXC_TCP_NOFLOW) {
            const uint8_t *ip = b->data + ETH_HLEN_;
            if (fp_tcp_rx(w, ip, (uint32_t)(ip[0] & 0x0f) * 4, rd16(ip + 2))) {
                fp_dev_release(w->dev, b, 1);
                return;
            }
        }
        if (tas_msg_push(&w->fp2sp, TAS_MSG_EXCEPTION, reason, w->shm->worker_id, w->now, b->data, b->len) == 0) {
            w->st->rx_exceptions++;
            w->st->exceptions[reason]++;
            w->fp2sp_published++;
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

/* Received frames, in batches, up to a budget: the device's ring must not
 * fill while the iteration's transmissions (whose kicks can take long on a
 * veth, which runs the peer's receive path) are under way. */
static unsigned poll_rx(struct fp_worker *w)
{
    struct fp_buf rx[FP_BATCH];
    unsigned total = 0, n;
    do {
        n = fp_dev_rx(w->dev, rx, FP_BATCH);
        for (unsigned i = 0; i < n; i++)
            rx_frame(w, &rx[i]);
        total += n;
    } while (n == FP_BATCH && total < FP_RX_BUDGET);
    return total;
}

/* ---- messages from the slowpath ----------------------------------------------------- */

/* An fd the slowpath sent over the worker socket before the command that
 * names it; -1 if none. */
static int recv_fd(struct fp_worker *w)
{
    char byte;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    if (w->sock_fd < 0 || recvmsg(w->sock_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
        return -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm == NULL || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

static int app_command(struct fp_worker *w, const struct tas_msg *m)
{
    struct tas_app_cmd c;
    char err[128];
    if (m->len < sizeof c)
        return -1;
    memcpy(&c, m->data, sizeof c);
    if (m->type == TAS_MSG_APP_REMOVE) {
        fp_app_detach(w, c.app_id);
        return tas_msg_push(&w->fp2sp, TAS_MSG_APP_REMOVED, c.app_id, w->shm->worker_id, w->now, NULL, 0) == 0
                   ? (w->fp2sp_published++, 0)
                   : -1;
    }
    int fd = recv_fd(w);
    if (fd < 0)
        return -1;
    if (m->type == TAS_MSG_APP_ADD) {
        void *base = mmap(NULL, c.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (base == MAP_FAILED)
            return -1;
        if (fp_app_attach(w, c.app_id, base, c.size, err, sizeof err) != 0) {
            munmap(base, c.size);
            return -1;
        }
        w->apps[c.app_id].mapped_here = 1;
        return 0;
    }
    if (fp_app_ctx_attach(w, c.app_id, c.ctx, fd, err, sizeof err) != 0) {
        close(fd);
        return -1;
    }
    w->apps[c.app_id].ctx[c.ctx]->own_efd = 1;
    return 0;
}

/* A replayed segment: what the slowpath received before the flow existed. */
static int replay_frame(struct fp_worker *w, const struct tas_msg *m)
{
    struct fp_buf b;
    if (m->len < ETH_HLEN_ || fp_dev_alloc(w->dev, &b, 1) != 1)
        return -1;
    if (b.cap < m->len) {
        fp_dev_release(w->dev, &b, 1);
        return -1;
    }
    memcpy(b.data, m->data, m->len);
    b.len = m->len;
    uint32_t reason = 0;
    const uint8_t *ip = b.data + ETH_HLEN_;
    int ok = fp_rx_frame(&w->ifc, &b, &reason) == FP_EXCEPTION && reason == TAS_EXC_TCP_NOFLOW &&
             fp_tcp_rx(w, ip, (uint32_t)(ip[0] & 0x0f) * 4, rd16(ip + 2));
    fp_dev_release(w->dev, &b, 1);
    return ok ? 0 : -1;
}

/* Start or stop a capture; the slowpath waits for the answer, and the
 * counters include everything before it. */
static int capture_command(struct fp_worker *w, const struct tas_msg *m)
{
    struct tas_capture_report rep = {.id = m->arg};
    char err[128];
    if (m->type == TAS_MSG_CAPTURE_STOP) {
        if (w->dev->ops->capture_stop)
            w->dev->ops->capture_stop(w->dev, &rep);
        rep.id = m->arg;
    } else {
        static struct tas_capture_cmd c; /* 2 KiB: not on the stack */
        int fd = recv_fd(w); /* first, whatever happens: the fds come in message order */
        memset(&c, 0, sizeof c);
        memcpy(&c, m->data, m->len < sizeof c ? m->len : sizeof c);
        if (fd < 0)
            rep.status = EBADF;
        else if (m->len < offsetof(struct tas_capture_cmd, insns) || c.id != m->arg)
            rep.status = EINVAL;
        else if (w->dev->ops->capture_start == NULL)
            rep.status = ENOTSUP;
        else if (w->dev->ops->capture_start(w->dev, fd, &c, err, sizeof err) != 0)
            rep.status = errno ? errno : EINVAL;
        if (rep.status != 0 && fd >= 0)
            close(fd);
    }
    if (w->dev->ops->counters)
        w->dev->ops->counters(w->dev, w->st);
    capture_answer(w, m->type == TAS_MSG_CAPTURE_STOP ? TAS_MSG_CAPTURE_STOPPED : TAS_MSG_CAPTURE_STARTED, &rep);
    return rep.status == EINVAL ? -1 : 0;
}

static int sp_message(struct fp_worker *w, const struct tas_msg *m)
{
    switch (m->type) {
    case TAS_MSG_TX_FRAME: {
        if (m->len < ETH_HLEN_ || m->len > w->ifc.max_frame)
            return -1;
        struct fp_buf *b = fp_tx_alloc(w);
        if (b == NULL || b->cap < m->len) {
            if (b) {
                b->len = 0;
                fp_dev_release(w->dev, b, 1);
            }
            return 0; /* counted as a TX error */
        }
        memcpy(b->data, m->data, m->len);
        b->len = m->len;
        fp_tx_commit(w, b);
        w->st->sp_tx_frames++;
        return 0;
    }
    case TAS_MSG_RX_FRAME:
        replay_frame(w, m);
        return 0; /* a segment the flow no longer wants is not the slowpath's fault */
    case TAS_MSG_FLOW_ADD: {
        struct tas_flow_params p;
        if (m->len < sizeof p)
            return -1;
        memcpy(&p, m->data, sizeof p);
        return fp_tcp_flow_add(w, &p);
    }
    case TAS_MSG_FLOW_REMOVE:
    case TAS_MSG_FLOW_RETRANSMIT:
    case TAS_MSG_FLOW_PROBE:
    case TAS_MSG_FLOW_SHUT:
    case TAS_MSG_FLOW_MOVE: {
        struct tas_flow_cmd c;
        if (m->len < sizeof c)
            return -1;
        memcpy(&c, m->data, sizeof c);
        if (m->type == TAS_MSG_FLOW_REMOVE)
            return fp_tcp_flow_remove(w, &c);
        if (m->type == TAS_MSG_FLOW_MOVE)
            return fp_tcp_flow_move(w, &c);
        if (m->type == TAS_MSG_FLOW_SHUT)
            return fp_tcp_flow_shut(w, &c);
        /* a flow removed meanwhile is no error: the slowpath's decision crossed it */
        if (m->type == TAS_MSG_FLOW_RETRANSMIT)
            fp_tcp_flow_retransmit(w, &c);
        else
            fp_tcp_flow_probe(w, &c);
        return 0;
    }
    case TAS_MSG_APP_ADD:
    case TAS_MSG_APP_REMOVE:
    case TAS_MSG_CTX_ADD:
        return app_command(w, m);
    case TAS_MSG_CAPTURE_START:
    case TAS_MSG_CAPTURE_STOP:
        return capture_command(w, m);
    default:
        return -1;
    }
}

unsigned fp_worker_poll_sp(struct fp_worker *w, int flows_only)
{
    unsigned n;
    struct tas_msg *m;
    for (n = 0; n < FP_BATCH && (m = tas_ring_cons_slot(&w->sp2fp)) != NULL; n++) {
        if (flows_only && (m->type == TAS_MSG_APP_ADD || m->type == TAS_MSG_APP_REMOVE || m->type == TAS_MSG_CTX_ADD))
            break; /* not while an app's messages are being read: it may go */
        if (m->len > TAS_RING_DATA_MAX || sp_message(w, m) != 0)
            w->st->sp_bad_msgs++;
        tas_ring_cons_release(&w->sp2fp, m);
    }
    return n;
}

/* ---- the loop ---------------------------------------------------------------------- */

unsigned fp_worker_poll(struct fp_worker *w, uint64_t now_ns)
{
    w->now = now_ns;
    fp_tcp_clock(w);
    unsigned work = fp_worker_poll_sp(w, 0);
    work += poll_rx(w);
    work += fp_app_poll(w);
    fp_tcp_poll(w);
    fp_tx_flush(w);
    fp_app_wake(w);
    flush_events(w);
    w->st->polls++;
    if (now_ns - w->last_counters_ns > 100000000u && w->dev->ops->counters) {
        w->dev->ops->counters(w->dev, w->st);
        w->last_counters_ns = now_ns;
    }
    __atomic_store_n(&w->shm->heartbeat_ns, now_ns, __ATOMIC_RELAXED);
    if (work)
        w->last_work_ns = now_ns;
    return work;
}

static int stopping(struct fp_worker *w)
{
    return stop_signal || w->dev_failed || __atomic_load_n(&w->shm->stop, __ATOMIC_ACQUIRE);
}

static void drain_efd(int fd)
{
    uint64_t v;
    (void)!read(fd, &v, sizeof v);
}

static void sleep_until_work(struct fp_worker *w)
{
    if (tas_ring_cons_arm(&w->sp2fp))
        return;
    fp_app_arm(w);
    int timeout = SLEEP_MAX_MS;
    uint64_t next = fp_tcp_next_deadline(w);
    if (next) {
        uint64_t now = fp_now_ns();
        uint64_t ms = next > now ? (next - now + 999999) / 1000000 : 0;
        if (ms < (uint64_t)timeout)
            timeout = (int)ms;
    }
    if (timeout > 0 && !fp_app_pending(w) && !fp_dev_rx_pending(w->dev) && !stopping(w) && !w->evq_len &&
        !w->capq_len) {
        struct pollfd pfd[3] = {{.fd = w->sp2fp_efd, .events = POLLIN},
                                {.fd = w->dev->wait_fd, .events = POLLIN},
                                {.fd = w->doorbell_efd, .events = POLLIN}};
        w->st->sleeps++;
        if (poll(pfd, 3, timeout) > 0) {
            if (pfd[0].revents & POLLIN)
                drain_efd(w->sp2fp_efd);
            if (pfd[2].revents & POLLIN)
                drain_efd(w->doorbell_efd);
            if (pfd[1].revents & (POLLERR | POLLHUP | POLLNVAL))
                w->dev_failed = 1; /* the interface went away under us */
        }
    }
    fp_app_disarm(w);
    tas_ring_cons_disarm(&w->sp2fp);
}

/* Polling after work pays when more work comes within the window: the next
 * frame is handled without a wakeup.  When it mostly does not (a light load,
 * requests further apart than poll_us), the window only burns the core, so
 * the worker learns which case it is in: `score` (0..256) follows the share
 * of windows that found work; below half, idle periods sleep at once,
 * except one in PROBE_EVERY, which polls to notice the load coming back. */
#define SCORE_MAX 256
#define PROBE_EVERY 16

int fp_worker_run(struct fp_worker *w)
{
    uint64_t poll_ns = (uint64_t)w->shm->poll_us * 1000, idle_since = 0, window = 0;
    unsigned score = SCORE_MAX, idles = 0;
    int idle = 0;
    w->shm->pid = getpid();
    w->last_work_ns = fp_now_ns();
    __atomic_store_n(&w->shm->state, TAS_WORKER_RUNNING, __ATOMIC_RELEASE);
    while (!stopping(w)) {
        uint64_t now = fp_now_ns();
        if (fp_worker_poll(w, now) != 0) {
            if (idle && window) /* the window found work */
                score += (SCORE_MAX - score) / 8;
            idle = 0;
            continue;
        }
        if (!idle) {
            idle = 1;
            idle_since = now;
            window = score >= SCORE_MAX / 2 || ++idles % PROBE_EVERY == 0 ? poll_ns : 0;
        }
        if (now - idle_since >= window) {
            if (window)
                score -= score / 8; /* it did not */
            sleep_until_work(w);
            idle = 0;
            poll_ns = (uint64_t)w->shm->poll_us * 1000; /* the slowpath may change it (reload) */
        }
    }
    if (w->dev_failed) {
        snprintf(w->shm->error, sizeof w->shm->error, "the %s device failed (interface removed or down?)",
                 w->dev->kind);
        __atomic_store_n(&w->shm->state, TAS_WORKER_FAILED, __ATOMIC_RELEASE);
        return -1;
    }
    __atomic_store_n(&w->shm->state, TAS_WORKER_STOPPED, __ATOMIC_RELEASE);
    return 0;
}
