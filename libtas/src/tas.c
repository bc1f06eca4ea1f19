/*
 * libtas low-level API (see include/tas.h).
 *
 * The app's side of the queues and buffers in its region (include/tasd/abi.h):
 * positions are kept here, only counts travel to tasd.  A connection's RX
 * buffer holds rx_ready bytes from rx_pos on; its TX buffer holds tx_used
 * bytes not yet acknowledged, ending at tx_pos.  Counts that could not be
 * queued (ring full) wait in the connection and go with the next message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "tasd/abi.h"
#include "tasd/ring.h"

struct tas_app {
    int sock;                    /* the registration socket, open for the app's lifetime */
    struct sockaddr_un sa;       /* tasd's app socket (a forked process registers there) */
    pthread_mutex_t lock;        /* serialises its use, and context allocation */
    uint8_t *base;
    uint64_t size;
    const struct tas_app_hdr *hdr;
    uint32_t app_id, nworkers, nctx, max_conns, next_ctx;
    uint32_t ip, gateway, prefix_len; /* tasd's address (network byte order) */
    int joined;                  /* a forked process that registered as this app's */
    int sp_doorbell;
    int fp_doorbell[TAS_MAX_WORKERS];
};

struct tas_conn {
    struct tas_ctx *ctx;
    uint32_t flow, gen, worker;
    uint8_t *rx, *tx;
    uint32_t rx_size, tx_size;
    uint32_t rx_pos, rx_ready;   /* next byte to read; bytes readable */
    uint32_t tx_pos, tx_used;    /* next byte to write; bytes not yet acknowledged */
    uint32_t tx_unsent_bump;     /* written, not yet announced to tasd */
    uint32_t rx_unsent_free;     /* read, not yet announced */
    uint32_t remote_ip;
    uint16_t remote_port, local_port;
    int fin, shut, closed, error;
    int hidden;                  /* never shown to the app: no events for it */
    int shared;                  /* other processes may hold it (fork): closing it sends no FIN */
    int taking;                  /* inherited, taken: waiting for its state (FLOW_STATE) */
    int info_asked;              /* an INFO is out; info holds the last answer */
    struct tas_qe_info info;
    int want_shut, want_close, want_abort; /* requested, waiting for room in a ring */
    int want_opt;
    struct tas_qe_opt opt;
    struct tas_conn *next_pending;
    int pending;
    struct tas_conn *next_dead;   /* CLOSED delivered: freed at the next tas_poll */
    void *user;
};

struct tas_listener {
    struct tas_ctx *ctx;
    uint32_t id;
    uint16_t port;
    uint64_t cookie;
    void *user;
    struct tas_listener *next;
};

struct tas_early {
    uint32_t flow, gen, rx, tx;
    int fin;
};

struct tas_ctx {
    struct tas_app *app;
    uint32_t index;
    int efd;
    struct tas_ring_cursor app2sp, sp2app;
    struct tas_ring_cursor app2fp[TAS_MAX_WORKERS], fp2app[TAS_MAX_WORKERS];
    /* connections by flow id: open addressing, power-of-two size */
    struct tas_conn **map;
    uint32_t map_size, map_used;
    struct tas_listener *listeners;
    struct tas_conn *pending;    /* connections with counts to announce */
    struct tas_conn *dead;       /* handles to free at the next tas_poll */
    struct tas_early *early;     /* updates for connections not yet delivered */
    uint32_t n_early, cap_early;
};

const char *tas_version(void) { return "0.1.0"; }

uint32_t tas_abi_version(void) { return TAS_ABI_VERSION; }

uint32_t tas_app_max_conns(const struct tas_app *app) { return app->max_conns; }

void tas_app_address(const struct tas_app *app, uint32_t *ip, uint32_t *prefix_len, uint32_t *gateway)
{
    *ip = app->ip;
    *prefix_len = app->prefix_len;
    *gateway = app->gateway;
}

/* ---- registration ------------------------------------------------------------------ */

static int send_reg(int sock, const struct tas_reg_msg *m, int fd)
{
    struct iovec iov = {(void *)m, sizeof *m};
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(cbuf, 0, sizeof cbuf);
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)sizeof *m ? 0 : -errno;
}

/* A registration message of type, for app (0 before registration). */
static struct tas_reg_msg reg_msg(uint32_t type, uint32_t app_id)
{
    struct tas_reg_msg m;
    memset(&m, 0, sizeof m);
    m.magic = TAS_ABI_MAGIC;
    m.abi_version = TAS_ABI_VERSION;
    m.type = type;
    m.app_id = app_id;
    return m;
}

/* One reply; its fds (up to max) go to fds, their count to *nfds. */
static int recv_reg(int sock, struct tas_reg_msg *m, int *fds, int max, int *nfds)
{
    struct iovec iov = {m, sizeof *m};
    char cbuf[CMSG_SPACE(sizeof(int) * (2 + TAS_MAX_WORKERS))];
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    *nfds = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            if (*nfds < max)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
    if (n < 0)
        return -errno;
    if (n != (ssize_t)sizeof *m || m->magic != TAS_ABI_MAGIC)
        return -EPROTO;
    if (m->type == TAS_REG_REFUSED)
        return -(m->status > 0 ? m->status : EPERM);
    return 0;
}

int tas_app_open(const char *socket_path, const char *name, struct tas_app **out)
{
    return tas_app_open_(socket_path, name, 0, out);
}

int tas_app_open_(const char *socket_path, const char *name, uint32_t flags, struct tas_app **out)
{
    if (socket_path == NULL)
        socket_path = getenv("TASD_APP_SOCKET");
    if (socket_path == NULL)
        socket_path = TAS_APP_SOCKET_PATH;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, socket_path);
    struct tas_app *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -ENOMEM;
    a->sp_doorbell = -1;
    for (int i = 0; i < TAS_MAX_WORKERS; i++)
        a->fp_doorbell[i] = -1;
    pthread_mutex_init(&a->lock, NULL);
    int rc, fds[2 + TAS_MAX_WORKERS], nfds = 0;
    a->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (a->sock < 0 || connect(a->sock, (struct sockaddr *)&sa, sizeof sa) < 0) {
        rc = -errno;
        goto fail;
    }
    a->sa = sa;
    struct tas_reg_msg m = reg_msg(TAS_REG_HELLO, 0);
    m.flags = flags;
    snprintf(m.name, sizeof m.name, "%s", name ? name : "");
    if ((rc = send_reg(a->sock, &m, -1)) != 0 || (rc = recv_reg(a->sock, &m, fds, 2 + TAS_MAX_WORKERS, &nfds)) != 0) {
        if (m.type == TAS_REG_REFUSED)
            fprintf(stderr, "libtas: tasd refused: %.*s\n", (int)sizeof m.error, m.error);
        goto fail;
    }
    if (m.type != TAS_REG_WELCOME || m.nworkers == 0 || m.nworkers > TAS_MAX_WORKERS || nfds != 2 + (int)m.nworkers) {
        rc = -EPROTO;
        goto fail;
    }
    a->base = mmap(NULL, m.region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    if (a->base == MAP_FAILED) {
        a->base = NULL;
        rc = -errno;
        goto fail;
    }
    close(fds[0]);
    fds[0] = -1;
    a->size = m.region_size;
    a->hdr = (const struct tas_app_hdr *)a->base;
    if (a->hdr->magic != TAS_ABI_MAGIC || a->hdr->abi_version != TAS_ABI_VERSION || a->hdr->size != a->size ||
        a->hdr->nworkers != m.nworkers) {
        rc = -EPROTO;
        goto fail;
    }
    a->app_id = m.app_id;
    a->nworkers = m.nworkers;
    a->nctx = a->hdr->nctx;
    a->max_conns = m.max_conns;
    a->ip = m.ip;
    a->gateway = m.gateway;
    a->prefix_len = m.prefix_len;
    a->sp_doorbell = fds[1];
    for (uint32_t i = 0; i < m.nworkers; i++)
        a->fp_doorbell[i] = fds[2 + i];
    *out = a;
    return 0;
fail:
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    for (int i = 0; i < TAS_MAX_WORKERS; i++)
        a->fp_doorbell[i] = -1; /* closed above, if they came */
    a->sp_doorbell = -1;
    tas_app_close(a);
    return rc;
}

/* After fork, in the child, if the parent did not register it: register as
 * another process of the parent's app (the region, the doorbells and the
 * parent's handles are inherited; the parent's contexts are not to be
 * touched). */
int tas_app_join_(const struct tas_app *parent, struct tas_app **out)
{
    int sock = tas_fork_prepare_(parent, NULL, 0), rc;
    if (sock < 0)
        return sock;
    if ((rc = tas_app_join_fd_(parent, sock, out)) != 0)
        close(sock);
    return rc;
}

/* HOLD or RELEASE messages for holds[n] on a registration socket. */
static int send_holds(int sock, uint32_t type, const struct tas_hold *holds, uint32_t n)
{
    struct tas_reg_hold h;
    for (uint32_t done = 0; done < n;) {
        memset(&h, 0, sizeof h);
        h.magic = TAS_ABI_MAGIC;
        h.abi_version = TAS_ABI_VERSION;
        h.type = type;
        h.n = n - done < TAS_REG_HOLD_MAX ? n - done : TAS_REG_HOLD_MAX;
        memcpy(h.e, holds + done, h.n * sizeof *holds);
        if (send(sock, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h)
            return -errno;
        done += h.n;
    }
    return 0;
}

/* Register another process of the app holding holds[n]: before fork, in
 * the parent, the child-to-be (holding what the parent holds); returns the
 * socket that becomes that process's registration, or a negative errno. */
int tas_fork_prepare_(const struct tas_app *a, const struct tas_hold *holds, uint32_t n)
{
    int rc = 0, fds[1], nfds;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (const struct sockaddr *)&a->sa, sizeof a->sa) < 0)
        rc = -errno;
    if (rc == 0)
        rc = send_holds(s, TAS_REG_HOLD, holds, n);
    if (rc == 0) {
        struct tas_reg_msg m = reg_msg(TAS_REG_HELLO, a->app_id);
        m.secret = a->hdr->join_secret;
        if ((rc = send_reg(s, &m, -1)) == 0 && (rc = recv_reg(s, &m, fds, 1, &nfds)) == 0 &&
            (m.type != TAS_REG_WELCOME || m.app_id != a->app_id))
            rc = -EPROTO;
    }
    if (rc != 0 && s >= 0)
        close(s);
    return rc != 0 ? rc : s;
}

/* In a forked child: the registration of the process it came from is that
 * one's (tasd learns it is gone when its last copy closes): drop ours. */
void tas_app_drop_sock_(struct tas_app *a)
{
    if (a->sock >= 0)
        close(a->sock);
    a->sock = -1;
}

/* Tell tasd (on a registration socket) that this process let go of holds[n]. */
int tas_release_(int sock, const struct tas_hold *holds, uint32_t n)
{
    return send_holds(sock, TAS_REG_RELEASE, holds, n);
}

/* In the child, the parent having registered it (tas_fork_prepare_): the
 * app as the parent had it, with sock as this process's registration. */
int tas_app_join_fd_(const struct tas_app *parent, int sock, struct tas_app **out)
{
    struct tas_app *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -ENOMEM;
    *a = *parent;
    pthread_mutex_init(&a->lock, NULL);
    a->joined = 1;
    a->sock = sock;
    *out = a;
    return 0;
}

/* A handle in ctx for the app's listener id (a new one, or one inherited
 * from the process this one was forked from). */
struct tas_listener *tas_listener_adopt_(struct tas_ctx *c, uint32_t id, uint16_t port)
{
    struct tas_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->ctx = c;
    l->id = id;
    l->port = port;
    l->next = c->listeners;
    c->listeners = l;
    return l;
}

uint32_t tas_listener_id_(const struct tas_listener *l) { return l->id; }

void tas_app_close(struct tas_app *a)
{
    if (a == NULL)
        return;
    if (a->sock >= 0)
        close(a->sock); /* tasd resets what is left */
    if (a->base)
        munmap(a->base, a->size);
    if (a->sp_doorbell >= 0)
        close(a->sp_doorbell);
    for (int i = 0; i < TAS_MAX_WORKERS; i++)
        if (a->fp_doorbell[i] >= 0)
            close(a->fp_doorbell[i]);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static int cursor(struct tas_ctx *c, struct tas_ring_cursor *cur, uint32_t which)
{
    const struct tas_app_hdr *h = c->app->hdr;
    uint64_t off = tas_app_ring_off(h, c->index, which);
    if (off + h->ring_bytes > c->app->size)
        return -EPROTO;
    return tas_ring_cursor_init(cur, (struct tas_ring *)(c->app->base + off), TAS_QE_SIZE, h->ring_bytes) == 0
               ? 0
               : -EPROTO;
}

int tas_ctx_open(struct tas_app *a, struct tas_ctx **out)
{
    struct tas_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -ENOMEM;
    c->app = a;
    c->map_size = 64;
    c->map = calloc(c->map_size, sizeof *c->map);
    c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int rc = c->map == NULL ? -ENOMEM : c->efd < 0 ? -errno : 0;
    pthread_mutex_lock(&a->lock);
    /* slots are shared with processes forked from this one (or the one it
     * was forked from): one taken meanwhile is refused, the next is tried */
    for (int again = 1; rc == 0 && again;) {
        if (a->next_ctx >= a->nctx) {
            rc = -EMFILE; /* every context slot is in use */
            break;
        }
        c->index = a->next_ctx++;
        struct tas_reg_msg m = reg_msg(TAS_REG_CTX_OPEN, a->app_id);
        m.ctx = c->index;
        m.pid = getpid();
        int fds[1], nfds;
        if ((rc = send_reg(a->sock, &m, c->efd)) == 0 && (rc = recv_reg(a->sock, &m, fds, 1, &nfds)) == 0 &&
            m.type != TAS_REG_CTX_OPENED)
            rc = -EPROTO;
        again = rc == -EINVAL;
        if (again)
            rc = 0;
    }
    pthread_mutex_unlock(&a->lock);
    if (rc == 0 && ((rc = cursor(c, &c->app2sp, TAS_RING_APP2SP)) == 0) &&
        (rc = cursor(c, &c->sp2app, TAS_RING_SP2APP)) == 0) {
        for (uint32_t w = 0; w < a->nworkers && rc == 0; w++) {
            rc = cursor(c, &c->app2fp[w], TAS_RING_APP2FP + w);
            if (rc == 0)
                rc = cursor(c, &c->fp2app[w], TAS_RING_APP2FP + a->nworkers + w);
        }
    }
    if (rc != 0) {
        if (c->efd >= 0)
            close(c->efd);
        free(c->map);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int tas_ctx_fd(const struct tas_ctx *c) { return c->efd; }

/* ---- connections by flow id ------------------------------------------------------------ */

static uint32_t map_slot(const struct tas_ctx *c, uint32_t flow) { return (flow * 0x9e3779b1u) & (c->map_size - 1); }

/* A flow id names a new connection once tasd reuses the slot, while the
 * app may still hold the old one: the generation tells them apart. */
static struct tas_conn *map_get(const struct tas_ctx *c, uint32_t flow, uint32_t gen)
{
    for (uint32_t i = map_slot(c, flow);; i = (i + 1) & (c->map_size - 1)) {
        if (c->map[i] == NULL)
            return NULL;
        if (c->map[i]->flow == flow && c->map[i]->gen == gen)
            return c->map[i];
    }
}

static int map_put(struct tas_ctx *c, struct tas_conn *conn)
{
    if (2 * (c->map_used + 1) > c->map_size) {
        uint32_t old_size = c->map_size;
        struct tas_conn **old = c->map;
        c->map = calloc(old_size * 2, sizeof *c->map);
        if (c->map == NULL) {
            c->map = old;
            return -ENOMEM;
        }
        c->map_size = old_size * 2;
        c->map_used = 0;
        for (uint32_t i = 0; i < old_size; i++)
            if (old[i])
                map_put(c, old[i]);
        free(old);
    }
    uint32_t i = map_slot(c, conn->flow);
    while (c->map[i])
        i = (i + 1) & (c->map_size - 1);
    c->map[i] = conn;
    c->map_used++;
    return 0;
}

static void map_del(struct tas_ctx *c, struct tas_conn *conn)
{
    uint32_t i = map_slot(c, conn->flow);
    while (c->map[i] && c->map[i] != conn)
        i = (i + 1) & (c->map_size - 1);
    if (c->map[i] == NULL)
        return;
    c->map[i] = NULL;
    c->map_used--;
    /* re-insert the rest of the cluster (linear probing deletion) */
    for (i = (i + 1) & (c->map_size - 1); c->map[i]; i = (i + 1) & (c->map_size - 1)) {
        struct tas_conn *x = c->map[i];
        c->map[i] = NULL;
        c->map_used--;
        map_put(c, x);
    }
}

/* ---- messages to tasd ------------------------------------------------------------------------ */

static void doorbell(int fd)
{
    uint64_t one = 1;
    if (fd >= 0)
        (void)!write(fd, &one, sizeof one);
}

/* Queue an entry; the caller fills type, flow, gen, flags and u. */
static int push(struct tas_ring_cursor *cur, int bell, const struct tas_qe *e)
{
    struct tas_qe *slot = tas_ring_prod_slot(cur);
    if (slot == NULL)
        return -EAGAIN;
    memcpy((uint8_t *)slot + 4, (const uint8_t *)e + 4, sizeof *e - 4);
    tas_ring_prod_publish(cur, slot);
    if (tas_ring_prod_wake_needed(cur))
        doorbell(bell);
    return 0;
}

static int push_sp(struct tas_ctx *c, const struct tas_qe *e) { return push(&c->app2sp, c->app->sp_doorbell, e); }

/* Tell tasd what the app did to a connection, in order: the bytes it wrote
 * and freed, then a shutdown, then a close or abort.  What does not fit (a
 * ring is full) waits in the connection for the next try, so none of the
 * calls fails for lack of room. */
static int flush_conn(struct tas_conn *conn)
{
    struct tas_ctx *c = conn->ctx;
    struct tas_ring_cursor *fp = &c->app2fp[conn->worker];
    int bell = c->app->fp_doorbell[conn->worker];
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.flow = conn->flow;
    e.gen = conn->gen;
    if (conn->tx_unsent_bump) {
        e.type = TAS_QE_TX;
        e.u.bump.len = conn->tx_unsent_bump;
        if (push(fp, bell, &e) != 0)
            return -EAGAIN;
        conn->tx_unsent_bump = 0;
    }
    if (conn->rx_unsent_free) {
        e.type = TAS_QE_RX_FREED;
        e.u.bump.len = conn->rx_unsent_free;
        if (push(fp, bell, &e) != 0)
            return -EAGAIN;
        conn->rx_unsent_free = 0;
    }
    memset(&e.u, 0, sizeof e.u);
    if (conn->want_opt) {
        e.type = TAS_QE_SETOPT;
        e.u.opt = conn->opt;
        if (push(&c->app2sp, c->app->sp_doorbell, &e) != 0)
            return -EAGAIN;
        conn->want_opt = 0;
        memset(&e.u, 0, sizeof e.u);
    }
    if (conn->want_shut) {
        e.type = TAS_QE_SHUT_WR;
        if (push(fp, bell, &e) != 0)
            return -EAGAIN;
        conn->want_shut = 0;
    }
    if (conn->want_close || conn->want_abort) {
        e.type = conn->want_abort ? TAS_QE_ABORT : TAS_QE_CLOSE;
        if (push(&c->app2sp, c->app->sp_doorbell, &e) != 0)
            return -EAGAIN;
        conn->want_close = conn->want_abort = 0;
    }
    return 0;
}

static void flush_or_defer(struct tas_conn *conn)
{
    if (flush_conn(conn) != 0 && !conn->pending) {
        conn->pending = 1;
        conn->next_pending = conn->ctx->pending;
        conn->ctx->pending = conn;
    }
}

static void flush_pending(struct tas_ctx *c)
{
    struct tas_conn **link = &c->pending;
    while (*link) {
        struct tas_conn *conn = *link;
        if (flush_conn(conn) == 0) {
            conn->pending = 0;
            *link = conn->next_pending;
        } else {
            link = &conn->next_pending;
        }
    }
}

int tas_listen(struct tas_ctx *c, uint16_t port, uint32_t backlog, uint32_t flags, uint64_t cookie)
{
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.type = TAS_QE_LISTEN;
    e.flags = (uint16_t)(flags & TAS_LISTEN_REUSEPORT ? TAS_QF_REUSEPORT : 0);
    e.u.req.cookie = cookie;
    e.u.req.port = port;
    e.u.req.n = backlog;
    return push_sp(c, &e);
}

int tas_accept(struct tas_listener *l, uint32_t n)
{
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.type = TAS_QE_ACCEPT;
    e.flow = l->id;
    e.u.req.n = n;
    return push_sp(l->ctx, &e);
}

int tas_unlisten(struct tas_listener *l)
{
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.type = TAS_QE_UNLISTEN;
    e.flow = l->id;
    int rc = push_sp(l->ctx, &e);
    if (rc == 0) {
        struct tas_listener **link = &l->ctx->listeners;
        while (*link && *link != l)
            link = &(*link)->next;
        if (*link)
            *link = l->next;
        free(l);
    }
    return rc;
}

int tas_connect(struct tas_ctx *c, uint32_t ip, uint16_t port, uint16_t lport, uint64_t cookie)
{
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.type = TAS_QE_CONNECT;
    e.u.req.cookie = cookie;
    e.u.req.ip = ip;
    e.u.req.port = port;
    e.u.req.lport = lport;
    return push_sp(c, &e);
}

/* ---- data ------------------------------------------------------------------------------------- */

size_t tas_rx_ready(const struct tas_conn *conn) { return conn->rx_ready; }

size_t tas_tx_space(const struct tas_conn *conn) { return conn->tx_size - conn->tx_used; }

ssize_t tas_send(struct tas_conn *conn, const void *buf, size_t len)
{
    if (conn->error)
        return -conn->error;
    if (conn->shut || conn->closed)
        return -EPIPE;
    size_t space = conn->tx_size - conn->tx_used;
    if (space == 0)
        return len ? -EAGAIN : 0;
    uint32_t n = (uint32_t)(len < space ? len : space);
    uint32_t first = conn->tx_size - conn->tx_pos < n ? conn->tx_size - conn->tx_pos : n;
    memcpy(conn->tx + conn->tx_pos, buf, first);
    memcpy(conn->tx, (const uint8_t *)buf + first, n - first);
    conn->tx_pos = (conn->tx_pos + n) & (conn->tx_size - 1);
    conn->tx_used += n;
    conn->tx_unsent_bump += n;
    flush_or_defer(conn);
    return n;
}

ssize_t tas_recv(struct tas_conn *conn, void *buf, size_t len)
{
    if (conn->rx_ready == 0) {
        if (conn->fin)
            return 0;
        if (conn->error)
            return -conn->error;
        return -EAGAIN;
    }
    uint32_t n = (uint32_t)(len < conn->rx_ready ? len : conn->rx_ready);
    uint32_t first = conn->rx_size - conn->rx_pos < n ? conn->rx_size - conn->rx_pos : n;
    memcpy(buf, conn->rx + conn->rx_pos, first);
    memcpy((uint8_t *)buf + first, conn->rx, n - first);
    conn->rx_pos = (conn->rx_pos + n) & (conn->rx_size - 1);
    conn->rx_ready -= n;
    conn->rx_unsent_free += n;
    flush_or_defer(conn);
    return n;
}

/* For the sockets layer (internal.h). */
size_t tas_peek_(const struct tas_conn *conn, void *buf, size_t len, size_t off)
{
    if (off >= conn->rx_ready)
        return 0;
    uint32_t n = (uint32_t)(len < conn->rx_ready - off ? len : conn->rx_ready - off);
    uint32_t pos = (conn->rx_pos + (uint32_t)off) & (conn->rx_size - 1);
    uint32_t first = conn->rx_size - pos < n ? conn->rx_size - pos : n;
    memcpy(buf, conn->rx + pos, first);
    memcpy((uint8_t *)buf + first, conn->rx, n - first);
    return n;
}

int tas_conn_fin_(const struct tas_conn *conn) { return conn->fin; }

int tas_conn_error_(const struct tas_conn *conn) { return conn->error; }

size_t tas_tx_used_(const struct tas_conn *conn) { return conn->tx_used; }

size_t tas_rx_size_(const struct tas_conn *conn) { return conn->rx_size; }

int tas_shutdown(struct tas_conn *conn)
{
    if (conn->shut || conn->closed)
        return 0;
    conn->shut = conn->want_shut = 1;
    flush_or_defer(conn);
    return 0;
}

int tas_set_options(struct tas_conn *conn, int keepalive, uint32_t idle_s, uint32_t intvl_s, uint32_t cnt,
                    uint32_t user_timeout_ms)
{
    if (idle_s > 32767 || intvl_s > 32767 || cnt > 127 || user_timeout_ms > 0x7fffffffu)
        return -EINVAL; /* Linux's bounds */
    if (conn->closed)
        return -EBADF;
    conn->opt = (struct tas_qe_opt){.keepalive = keepalive != 0, .keepidle_s = idle_s, .keepintvl_s = intvl_s,
                                    .keepcnt = cnt, .user_timeout_ms = user_timeout_ms};
    conn->want_opt = 1;
    flush_or_defer(conn);
    return 0;
}

int tas_close(struct tas_conn *conn)
{
    if (conn->closed)
        return -EBADF;
    if (!conn->shut && !conn->error && !conn->shared)
        conn->shut = conn->want_shut = 1; /* FIN after the data (tasd's to send if others hold it) */
    conn->closed = conn->want_close = 1;
    flush_or_defer(conn);
    return 0;
}

int tas_abort(struct tas_conn *conn)
{
    if (conn->closed)
        return -EBADF;
    conn->closed = conn->want_abort = 1;
    conn->want_shut = 0; /* a reset, not a FIN */
    flush_or_defer(conn);
    return 0;
}

void tas_conn_peer(const struct tas_conn *c, uint32_t *ip, uint16_t *port)
{
    *ip = c->remote_ip;
    *port = c->remote_port;
}

uint16_t tas_conn_local_port(const struct tas_conn *c) { return c->local_port; }
uint16_t tas_listener_port(const struct tas_listener *l) { return l->port; }
void tas_conn_set_user(struct tas_conn *c, void *user) { c->user = user; }
void *tas_conn_user(const struct tas_conn *c) { return c->user; }
void tas_listener_set_user(struct tas_listener *l, void *user) { l->user = user; }
void *tas_listener_user(const struct tas_listener *l) { return l->user; }

/* ---- events ------------------------------------------------------------------------------------- */

/* A connection from tasd's description, checked against the region. */
static struct tas_conn *conn_new(struct tas_ctx *c, uint32_t flow, uint32_t gen, const struct tas_conn_info *ci)
{
    struct tas_app *a = c->app;
    uint32_t worker = flow >> TAS_FLOW_INDEX_BITS;
    if (worker >= a->nworkers || ci->rx_size == 0 || (ci->rx_size & (ci->rx_size - 1)) || ci->tx_size == 0 ||
        (ci->tx_size & (ci->tx_size - 1)) || ci->rx_off + ci->rx_size > a->size || ci->tx_off + ci->tx_size > a->size ||
        ci->rx_off < a->hdr->buf_off || ci->tx_off < a->hdr->buf_off || map_get(c, flow, gen) != NULL)
        return NULL;
    struct tas_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL)
        return NULL;
    conn->ctx = c;
    conn->flow = flow;
    conn->gen = gen;
    conn->worker = worker;
    conn->rx = a->base + ci->rx_off;
    conn->tx = a->base + ci->tx_off;
    conn->rx_size = ci->rx_size;
    conn->tx_size = ci->tx_size;
    conn->remote_ip = ci->remote_ip;
    conn->remote_port = ci->remote_port;
    conn->local_port = ci->local_port;
    if (map_put(c, conn) != 0) {
        free(conn);
        return NULL;
    }
    return conn;
}

static void conn_free(struct tas_conn *conn)
{
    struct tas_ctx *c = conn->ctx;
    if (conn->pending) {
        struct tas_conn **link = &c->pending;
        while (*link && *link != conn)
            link = &(*link)->next_pending;
        if (*link)
            *link = conn->next_pending;
    }
    free(conn);
}

static struct tas_listener *listener_by_id(struct tas_ctx *c, uint32_t id)
{
    for (struct tas_listener *l = c->listeners; l; l = l->next)
        if (l->id == id)
            return l;
    return NULL;
}

/* What tasd says about a connection's buffers: the counts, then events for
 * them (data, space, FIN) as room allows; returns how many. */
static int apply_update(struct tas_conn *conn, uint32_t rx, uint32_t tx, int fin, struct tas_event *ev, int room)
{
    int n = 0;
    if (conn->closed && conn->shared)
        return 0; /* another process may read it */
    if (conn->closed) { /* nobody will read it: free the space at once */
        if (tx <= conn->tx_used)
            conn->tx_used -= tx;
        conn->rx_unsent_free += rx;
        flush_or_defer(conn);
        return 0;
    }
    if (rx <= conn->rx_size - conn->rx_ready)
        conn->rx_ready += rx;
    if (tx <= conn->tx_used)
        conn->tx_used -= tx;
    if (rx && n < room) {
        ev[n++] = (struct tas_event){.type = TAS_EV_DATA, .conn = conn, .bytes = rx};
    }
    if (tx && n < room) {
        ev[n++] = (struct tas_event){.type = TAS_EV_TX_SPACE, .conn = conn, .bytes = tx};
    }
    if (fin) {
        conn->fin = 1;
        if (n < room) {
            ev[n++] = (struct tas_event){.type = TAS_EV_FIN, .conn = conn};
        }
    }
    return n;
}

/* The workers' rings and the slowpath's are read separately, so a worker's
 * first update for a connection can come before the slowpath's ACCEPTED or
 * CONNECTED that introduces it: it waits here (merged per connection) for
 * that, instead of being lost (also while connections wait in the accept
 * queue).  At most one per connection tasd may hold for the app: beyond
 * that, the oldest goes (its connection was never delivered). */
static void early_add(struct tas_ctx *c, const struct tas_qe *e)
{
    for (uint32_t i = 0; i < c->n_early; i++) {
        struct tas_early *x = &c->early[i];
        if (x->flow == e->flow && x->gen == e->gen) {
            x->rx += e->u.update.rx_bytes;
            x->tx += e->u.update.tx_acked;
            x->fin |= (e->flags & TAS_QF_FIN) != 0;
            return;
        }
    }
    if (c->n_early == c->cap_early) {
        uint32_t cap = c->cap_early ? 2 * c->cap_early : 16;
        if (cap > c->app->max_conns)
            cap = c->app->max_conns;
        struct tas_early *more = cap > c->cap_early ? realloc(c->early, cap * sizeof *more) : NULL;
        if (more) {
            c->early = more;
            c->cap_early = cap;
        } else if (c->n_early == 0) {
            return;
        } else {
            memmove(c->early, c->early + 1, (c->n_early - 1) * sizeof *c->early);
            c->n_early--;
        }
    }
    c->early[c->n_early++] = (struct tas_early){e->flow, e->gen, e->u.update.rx_bytes, e->u.update.tx_acked,
                                                (e->flags & TAS_QF_FIN) != 0};
}

static int early_take(struct tas_ctx *c, struct tas_conn *conn, struct tas_event *ev, int room)
{
    for (uint32_t i = 0; i < c->n_early; i++) {
        struct tas_early x = c->early[i];
        if (x.flow == conn->flow && x.gen == conn->gen) {
            memmove(c->early + i, c->early + i + 1, (c->n_early - i - 1) * sizeof *c->early);
            c->n_early--;
            return apply_update(conn, x.rx, x.tx, x.fin, ev, room);
        }
    }
    return 0;
}

/* Turn one entry from tasd into events, as many as room allows (at least
 * three: data, space, FIN; or a new connection with what came before it);
 * returns how many. */
static int translate(struct tas_ctx *c, const struct tas_qe *e, struct tas_event *ev, int room)
{
    memset(ev, 0, sizeof *ev * (room < 3 ? room : 3));
    switch (e->type) {
    case TAS_QE_LISTENED: {
        ev->type = TAS_EV_LISTENED;
        ev->cookie = e->u.res.cookie;
        ev->status = e->u.res.status;
        if (ev->status == 0) {
            struct tas_listener *l = tas_listener_adopt_(c, e->u.res.listener, e->u.res.conn.local_port);
            if (l == NULL) {
                ev->status = ENOMEM;
                return 1;
            }
            l->cookie = e->u.res.cookie;
            ev->listener = l;
        }
        return 1;
    }
    case TAS_QE_ACCEPTED: {
        struct tas_listener *l = listener_by_id(c, e->u.res.listener);
        struct tas_conn *conn = conn_new(c, e->flow, e->gen, &e->u.res.conn);
        if (conn == NULL)
            return 0; /* not a connection we can hold: tasd resets it when the app goes */
        if (l == NULL) { /* its listener is closed: reset it now (the handle goes with CLOSED) */
            conn->hidden = 1;
            tas_abort(conn);
            return 0;
        }
        ev->type = TAS_EV_ACCEPTED;
        ev->listener = l;
        ev->cookie = l->cookie;
        ev->conn = conn;
        return 1 + early_take(c, conn, ev + 1, room - 1);
    }
    case TAS_QE_CONNECTED:
        ev->type = TAS_EV_CONNECTED;
        ev->cookie = e->u.res.cookie;
        ev->status = e->u.res.status;
        if (ev->status == 0) {
            ev->conn = conn_new(c, e->flow, e->gen, &e->u.res.conn);
            if (ev->conn == NULL)
                ev->status = EPROTO;
            else
                return 1 + early_take(c, ev->conn, ev + 1, room - 1);
        }
        return 1;
    case TAS_QE_CONN_ERROR: {
        struct tas_conn *conn = map_get(c, e->flow, e->gen);
        if (conn == NULL)
            return 0;
        conn->error = e->u.res.status > 0 ? e->u.res.status : ECONNRESET;
        ev->type = TAS_EV_ERROR;
        ev->conn = conn;
        ev->status = conn->error;
        return conn->hidden ? 0 : 1;
    }
    case TAS_QE_CLOSED: {
        struct tas_conn *conn = map_get(c, e->flow, e->gen);
        if (conn == NULL)
            return 0;
        ev->type = TAS_EV_CLOSED;
        ev->conn = conn;
        map_del(c, conn); /* nothing more for it; the memory goes at the next tas_poll */
        conn->next_dead = c->dead;
        c->dead = conn;
        return conn->hidden ? 0 : 1;
    }
    case TAS_QE_FLOW_STATE: { /* the answer to a TAKE */
        struct tas_conn *conn = map_get(c, e->flow, e->gen);
        if (conn == NULL || !conn->taking)
            return 0;
        conn->taking = 0;
        if (e->u.state.status) {
            conn->error = e->u.state.status;
            *ev = (struct tas_event){.type = TAS_EV_ERROR, .conn = conn, .status = conn->error};
            return 1;
        }
        if (!(e->flags & TAS_QF_STALE)) { /* the worker's word; else the inherited copy stands */
            const struct tas_qe_state *st = &e->u.state;
            if (st->rx_ready > conn->rx_size || st->tx_used > conn->tx_size)
                return 0;
            conn->rx_pos = st->rx_pos & (conn->rx_size - 1);
            conn->rx_ready = st->rx_ready;
            conn->tx_pos = st->tx_pos & (conn->tx_size - 1);
            conn->tx_used = st->tx_used;
            conn->fin = (e->flags & TAS_QF_FIN) != 0;
        }
        *ev = (struct tas_event){.type = TAS_EV_DATA, .conn = conn, .bytes = conn->rx_ready};
        return 1;
    }
    case TAS_QE_INFO_ANSWER: {
        struct tas_conn *conn = map_get(c, e->flow, e->gen);
        if (conn != NULL) {
            conn->info = e->u.info;
            conn->info_asked = 0;
        }
        return 0;
    }
    case TAS_QE_FLOW_UPDATE: {
        struct tas_conn *conn = map_get(c, e->flow, e->gen);
        if (conn == NULL) { /* before its ACCEPTED or CONNECTED (another ring): keep it */
            early_add(c, e);
            return 0;
        }
        return apply_update(conn, e->u.update.rx_bytes, e->u.update.tx_acked, e->flags & TAS_QF_FIN, ev, room);
    }
    default:
        return 0;
    }
}

static int drain(struct tas_ctx *c, struct tas_ring_cursor *cur, struct tas_event *events, int max, int *n)
{
    while (*n + 3 <= max) {
        struct tas_qe *slot = tas_ring_cons_slot(cur);
        if (slot == NULL)
            return 0;
        struct tas_qe e;
        memcpy(&e, slot, sizeof e);
        tas_ring_cons_release(cur, slot);
        *n += translate(c, &e, &events[*n], max - *n);
    }
    return 1; /* out of room: more may wait */
}

int tas_poll(struct tas_ctx *c, struct tas_event *events, int max)
{
    int n = 0;
    if (max < 3)
        return -EINVAL; /* one entry can make three events */
    while (c->dead) {
        struct tas_conn *conn = c->dead;
        c->dead = conn->next_dead;
        conn_free(conn);
    }
    flush_pending(c);
    if (!drain(c, &c->sp2app, events, max, &n))
        for (uint32_t w = 0; w < c->app->nworkers; w++)
            if (drain(c, &c->fp2app[w], events, max, &n))
                break;
    return n;
}

int tas_ctx_arm(struct tas_ctx *c)
{
    int pending = tas_ring_cons_arm(&c->sp2app);
    for (uint32_t w = 0; w < c->app->nworkers && !pending; w++)
        pending = tas_ring_cons_arm(&c->fp2app[w]);
    if (pending)
        tas_ctx_disarm(c);
    return pending;
}

void tas_ctx_disarm(struct tas_ctx *c)
{
    tas_ring_cons_disarm(&c->sp2app);
    for (uint32_t w = 0; w < c->app->nworkers; w++)
        tas_ring_cons_disarm(&c->fp2app[w]);
}

int tas_wait(struct tas_ctx *c, int timeout_ms)
{
    flush_pending(c);
    if (tas_ctx_arm(c))
        return 1;
    struct pollfd p = {.fd = c->efd, .events = POLLIN};
    int rc = poll(&p, 1, c->pending && (timeout_ms < 0 || timeout_ms > 1) ? 1 : timeout_ms);
    if (rc > 0) {
        uint64_t v;
        (void)!read(c->efd, &v, sizeof v);
    }
    tas_ctx_disarm(c);
    return rc < 0 ? -errno : rc;
}

/* ---- connections inherited across fork (internal.h) ------------------------------------ */

void tas_conn_ids_(const struct tas_conn *conn, uint32_t *flow, uint32_t *gen)
{
    *flow = conn->flow;
    *gen = conn->gen;
}

void tas_conn_share_(struct tas_conn *conn) { conn->shared = 1; }

int tas_conn_taking_(const struct tas_conn *conn) { return conn->taking; }

/* In a forked child: a handle in c for the connection the parent's copy
 * names, asking tasd for it (TAKE); usable once no longer taking.  The copy
 * is freed.  NULL: -EAGAIN (no room in the ring: try again) or another
 * error in *err. */
struct tas_conn *tas_conn_take_(struct tas_ctx *c, struct tas_conn *copy, int *err)
{
    struct tas_conn *conn = calloc(1, sizeof *conn);
    if (conn == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    *conn = *copy;
    conn->ctx = c;
    conn->tx_unsent_bump = conn->rx_unsent_free = 0; /* the parent's to announce */
    conn->want_shut = conn->want_close = conn->want_abort = conn->want_opt = 0;
    conn->pending = 0;
    conn->next_pending = conn->next_dead = NULL;
    conn->shared = conn->taking = 1;
    conn->user = NULL;
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.type = TAS_QE_TAKE;
    e.flow = conn->flow;
    e.gen = conn->gen;
    if (map_get(c, conn->flow, conn->gen) != NULL) {
        *err = -EEXIST;
    } else if ((*err = push_sp(c, &e)) == 0 && (*err = map_put(c, conn)) == 0) {
        free(copy);
        return conn;
    }
    free(conn);
    return NULL;
}

/* TCP_INFO: ask tasd how the connection is doing (the answer comes as the
 * context is polled: tas_conn_info_ says when it has). */
int tas_conn_ask_info_(struct tas_conn *conn)
{
    struct tas_qe e;
    memset(&e, 0, sizeof e);
    e.type = TAS_QE_INFO;
    e.flow = conn->flow;
    e.gen = conn->gen;
    int rc = push_sp(conn->ctx, &e);
    if (rc == 0)
        conn->info_asked = 1;
    return rc;
}

/* The last answer; 0 while a question is out. */
int tas_conn_info_(const struct tas_conn *conn, struct tas_qe_info *out)
{
    *out = conn->info;
    return !conn->info_asked;
}
