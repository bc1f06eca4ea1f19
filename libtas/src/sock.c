/*
 * POSIX sockets emulation on libtas's low-level API (docs/sockets.md).
 *
 * A kernel TCP socket becomes tasd's at the first bind to tasd's address,
 * listen on tasd's address or any, or connect to an address tasd reaches;
 * its fd then names an eventfd (dup2) and the socket lives here.  One context
 * per process; everything below sits behind one lock, `big`.  Calls return
 * like the system calls they stand for: -1 with errno, or TS_PASS for libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "tasd/abi.h"

/* ---- the objects behind fds -------------------------------------------------------- */

enum { T_SOCK = 1, T_EPOLL = 2 };

enum ts_state {
    S_BOUND,       /* bound to tasd's address; not listening or connected */
    S_LISTEN_WAIT, /* asked tasd to listen */
    S_LISTENING,
    S_CONNECTING,
    S_CONNECTED,
    S_FAILED,      /* connect failed: err says why */
    S_INHERITED,   /* a connection inherited across fork, not yet used here (claim) */
    S_ORPHAN,      /* inherited across fork, but tasd was not told: unusable */
};

struct tobj {
    int type;
    int refs; /* fds naming it (dup) */
};

struct tsock {
    struct tobj h;
    int family;               /* AF_INET, or AF_INET6 (dual-stack, v4-mapped addresses) */
    enum ts_state state;
    uint64_t cookie;          /* of a listen or connect in flight */
    struct tsock *next_wait;  /* on the in-flight list */
    int nonblock;
    uint32_t ip;              /* local address (network order), 0: any */
    uint16_t port;            /* local port (host order) */
    uint32_t peer_ip;
    uint16_t peer_port;
    /* listening */
    struct tas_listener *l;
    int backlog;
    int credit;               /* connections tasd may still hand us (tas_accept) */
    uint32_t lid;             /* the listener's id (inherited across fork: adopted by the child) */
    struct tas_conn **q;      /* accepted by tasd, not yet by the program */
    int qhead, qlen, qcap;
    /* connected */
    struct tas_conn *c;
    int err;                  /* pending error (SO_ERROR, the next call) */
    int async_connect;        /* connected after EINPROGRESS, not yet confirmed by connect() */
    int err_done;             /* the connection's error was reported */
    int shut_rd, shut_wr;
    unsigned gen;             /* bumped at each wakeup (edge-triggered epoll): bump() */
    struct treg *regs;        /* its epoll registrations (treg.snext) */
    /* options, kept for getsockopt (tasd applies its defaults) */
    int reuseaddr, reuseport, keepalive, nodelay, quickack, cork;
    int linger_on, linger_s, rcvbuf, sndbuf, rcvlowat, sndlowat;
    int keepidle, keepintvl, keepcnt, user_timeout, maxseg, defer_accept;
    int tos, ttl;
    struct timeval rcvtimeo, sndtimeo;
};

struct tep;

/* A tasd socket in an epoll set.  Those that may be ready wait on the set's
 * ready list (a socket that wakes up is put there: bump), so epoll_wait
 * looks at them only, not at every registration. */
struct treg {
    int fd;
    struct tsock *s;
    struct tep *ep;
    int idx;                  /* in ep->regs */
    struct epoll_event ev;
    unsigned seen;            /* s->gen when last reported (EPOLLET) */
    int disabled;             /* EPOLLONESHOT, reported */
    int on_ready;
    struct treg *rprev, *rnext; /* the ready list */
    struct treg *snext;       /* the socket's registrations */
};

struct tep {
    struct tobj h;
    struct tep *next;         /* all of them */
    struct treg **regs;
    int n, cap;
    struct treg *rhead, *rtail;
    int ctx_added;            /* the context's eventfd is in the kernel set */
};

#define CTX_TAG 0x7461736463747800ull /* epoll data of the context's eventfd */

/* fd -> object: pages of atomic pointers, read without the lock */
#define FD_PAGE 1024
#define FD_PAGES 1024
static struct tobj **fdtab[FD_PAGES];

static pthread_mutex_t big = PTHREAD_MUTEX_INITIALIZER;
static struct tas_app *app;
static struct tas_ctx *ctx;
static int ctx_fd = -1;
static int init_state;        /* 0: not tried, 1: registered, -1: tasd unreachable */
static int fallback_kernel;   /* TASD_FALLBACK=kernel: without tasd, sockets stay the kernel's */
static uint32_t my_ip, my_plen, my_gw;
static uint32_t *local_ips;   /* the kernel's own addresses here: connections to them stay its */
static int n_local_ips;
static int sleepers;          /* threads asleep on ctx_fd in poll(2) (level-triggered) */
static int ep_sleepers;       /* threads asleep in epoll_wait (ctx_fd edge-triggered in their sets) */
static int nobjs;             /* live tasd sockets and epoll sets */
static struct tsock *waiting; /* listen and connect in flight */
static struct tep *eps;       /* epoll sets with tasd sockets */
static struct tas_app *forked_from; /* after fork, in the child: the parent's registration, to join */
static int reg_sock = -1;     /* in a child its parent registered: its registration socket */
static int fork_sock = -1;    /* while forking: the child's registration (tas_fork_prepare_) */
static uint64_t next_cookie = 1;

static struct tobj *obj_get(int fd)
{
    if (fd < 0 || fd >= FD_PAGE * FD_PAGES)
        return NULL;
    struct tobj **page = __atomic_load_n(&fdtab[fd / FD_PAGE], __ATOMIC_ACQUIRE);
    return page ? __atomic_load_n(&page[fd % FD_PAGE], __ATOMIC_ACQUIRE) : NULL;
}

static int obj_set(int fd, struct tobj *o)
{
    if (fd < 0 || fd >= FD_PAGE * FD_PAGES)
        return -1;
    struct tobj **page = fdtab[fd / FD_PAGE];
    if (page == NULL) {
        page = calloc(FD_PAGE, sizeof *page);
        if (page == NULL)
            return -1;
        __atomic_store_n(&fdtab[fd / FD_PAGE], page, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&page[fd % FD_PAGE], o, __ATOMIC_RELEASE);
    return 0;
}

int ts_owns(int fd) { return obj_get(fd) != NULL; }

int ts_active(void) { return __atomic_load_n(&nobjs, __ATOMIC_RELAXED) > 0; }

static struct tsock *sock_get(int fd)
{
    struct tobj *o = obj_get(fd);
    return o && o->type == T_SOCK ? (struct tsock *)o : NULL;
}

static int fail(int e)
{
    errno = e;
    return -1;
}

/* ---- registration ----------------------------------------------------------------- */

static void load_local_ips(void)
{
    struct ifaddrs *ifa, *p;
    if (getifaddrs(&ifa) != 0)
        return;
    int n = 0;
    for (p = ifa; p; p = p->ifa_next)
        n += p->ifa_addr && p->ifa_addr->sa_family == AF_INET;
    local_ips = calloc(n ? n : 1, sizeof *local_ips);
    for (p = ifa; p && local_ips; p = p->ifa_next)
        if (p->ifa_addr && p->ifa_addr->sa_family == AF_INET)
            local_ips[n_local_ips++] = ((struct sockaddr_in *)p->ifa_addr)->sin_addr.s_addr;
    freeifaddrs(ifa);
}

/* Register with tasd on first need (lock held): 0, or an errno. */
static int ensure_app(void)
{
    if (init_state == 1)
        return 0;
    if (init_state == -1)
        return ENETDOWN;
    const char *fb = getenv("TASD_FALLBACK");
    fallback_kernel = fb && strcmp(fb, "kernel") == 0;
    char name[64] = "";
    FILE *f = fopen("/proc/self/comm", "re");
    if (f) {
        if (fgets(name, sizeof name, f))
            name[strcspn(name, "\n")] = 0;
        fclose(f);
    }
    int rc = tas_app_open_(NULL, name, TAS_REG_F_POSIX, &app); /* an exit closes as on Linux */
    if (rc == 0 && (rc = tas_ctx_open(app, &ctx)) != 0) {
        tas_app_close(app);
        app = NULL;
    }
    if (rc != 0) {
        const char *path = getenv("TASD_APP_SOCKET");
        fprintf(stderr, "libtas: cannot reach tasd at %s: %s; %s\n", path ? path : TAS_APP_SOCKET_PATH,
                strerror(-rc), fallback_kernel ? "TCP stays on the kernel" : "TCP calls fail with ENETDOWN");
        init_state = -1;
        return ENETDOWN;
    }
    ctx_fd = tas_ctx_fd(ctx);
    tas_app_address(app, &my_ip, &my_plen, &my_gw);
    load_local_ips();
    init_state = 1;
    return 0;
}

/* Without tasd: TS_PASS if the kernel is to carry on, else -1 ENETDOWN. */
static int no_tasd(void) { return fallback_kernel ? TS_PASS : fail(ENETDOWN); }

static int kernel_local(uint32_t ip)
{
    if ((ntohl(ip) >> 24) == 127)
        return 1;
    for (int i = 0; i < n_local_ips; i++)
        if (local_ips[i] == ip)
            return 1;
    return 0;
}

/* Does tasd carry a connection to ip (network order)? */
static int tasd_reaches(uint32_t ip)
{
    if (ip == my_ip || kernel_local(ip) || ip == 0 || ip == 0xffffffffu)
        return 0;
    uint32_t mask = my_plen ? htonl(~0u << (32 - my_plen)) : 0;
    return (ip & mask) == (my_ip & mask) || my_gw != 0;
}

/* ---- events ------------------------------------------------------------------------ */

/* The options tasd applies per connection (keepalive, user timeout): sent
 * when set on a connection, and when a connection starts with any set. */
static void send_opts(struct tsock *s)
{
    if (s->state == S_CONNECTED && s->c)
        tas_set_options(s->c, s->keepalive, (uint32_t)s->keepidle, (uint32_t)s->keepintvl, (uint32_t)s->keepcnt,
                        (uint32_t)s->user_timeout);
}

static void start_opts(struct tsock *s)
{
    if (s->keepalive || s->user_timeout)
        send_opts(s);
}

static void wake_sleepers(void)
{
    if (sleepers > 0 || ep_sleepers > 0) {
        uint64_t one = 1;
        (void)!libc_.write(ctx_fd, &one, sizeof one);
    }
}

static struct tsock *take_waiting(uint64_t cookie)
{
    for (struct tsock **p = &waiting; *p; p = &(*p)->next_wait) {
        if ((*p)->cookie == cookie) {
            struct tsock *s = *p;
            *p = s->next_wait;
            s->next_wait = NULL;
            s->cookie = 0;
            return s;
        }
    }
    return NULL;
}

static void unwait(struct tsock *s)
{
    if (s->cookie)
        take_waiting(s->cookie);
}

static void ready_push(struct treg *r)
{
    if (r->on_ready)
        return;
    r->on_ready = 1;
    r->rnext = NULL;
    r->rprev = r->ep->rtail;
    if (r->ep->rtail)
        r->ep->rtail->rnext = r;
    else
        r->ep->rhead = r;
    r->ep->rtail = r;
}

static void ready_del(struct treg *r)
{
    if (!r->on_ready)
        return;
    r->on_ready = 0;
    if (r->rprev)
        r->rprev->rnext = r->rnext;
    else
        r->ep->rhead = r->rnext;
    if (r->rnext)
        r->rnext->rprev = r->rprev;
    else
        r->ep->rtail = r->rprev;
    r->rprev = r->rnext = NULL;
}

/* Something happened to s: its epoll registrations look at it again. */
static void bump(struct tsock *s)
{
    s->gen++;
    for (struct treg *r = s->regs; r; r = r->snext)
        ready_push(r);
}

static void handle(const struct tas_event *e)
{
    struct tsock *s;
    switch (e->type) {
    case TAS_EV_LISTENED:
        s = take_waiting(e->cookie);
        if (s == NULL) {
            if (e->listener)
                tas_unlisten(e->listener);
        } else if (e->status) {
            s->state = S_BOUND;
            s->err = e->status;
        } else {
            s->l = e->listener;
            tas_listener_set_user(s->l, s);
            s->state = S_LISTENING; /* credit comes with interest: want_credit() */
        }
        break;
    case TAS_EV_ACCEPTED:
        s = tas_listener_user(e->listener);
        if (s == NULL || s->qlen == s->qcap) { /* closed meanwhile; or beyond the credit we gave */
            tas_abort(e->conn);
            break;
        }
        s->q[(s->qhead + s->qlen++) % s->qcap] = e->conn;
        if (s->credit > 0)
            s->credit--;
        bump(s);
        break;
    case TAS_EV_CONNECTED:
        s = take_waiting(e->cookie);
        if (s == NULL) {
            if (e->conn)
                tas_abort(e->conn);
        } else if (e->status) {
            s->state = S_FAILED;
            s->err = e->status;
            bump(s);
        } else {
            s->c = e->conn;
            tas_conn_set_user(s->c, s);
            s->port = tas_conn_local_port(s->c);
            tas_conn_peer(s->c, &s->peer_ip, &s->peer_port);
            s->state = S_CONNECTED;
            bump(s);
            start_opts(s);
        }
        break;
    case TAS_EV_DATA:
    case TAS_EV_TX_SPACE:
    case TAS_EV_FIN:
    case TAS_EV_ERROR:
        s = tas_conn_user(e->conn);
        if (s)
            bump(s);
        break;
    default:
        break;
    }
}

static void adopt_inherited(void);

/* Take every event tasd has for us (lock held); returns how many. */
static int progress(void)
{
    if (forked_from != NULL) /* the first use after fork: register as the app's process */
        adopt_inherited();
    if (ctx == NULL)
        return 0;
    struct tas_event ev[64];
    int total = 0, n;
    while ((n = tas_poll(ctx, ev, 64)) > 0) {
        for (int i = 0; i < n; i++)
            handle(&ev[i]);
        total += n;
    }
    if (total)
        wake_sleepers();
    return total;
}

/* A listener the process shows interest in (accept, poll or epoll for
 * input) asks tasd for connections, up to a window; one nobody waits on
 * asks for none, so that a process that never accepts (nginx's master, its
 * workers sharing its listener after fork) leaves them to those that do. */
static void want_credit(struct tsock *s)
{
    if (s->state != S_LISTENING || s->l == NULL || s->shut_rd || ctx == NULL)
        return;
    int target = s->backlog < 64 ? s->backlog : 64, have = s->credit + s->qlen;
    if (have < target && tas_accept(s->l, (uint32_t)(target - have)) == 0)
        s->credit = target - s->qlen;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int64_t deadline_of(const struct timeval *tv)
{
    if (tv->tv_sec == 0 && tv->tv_usec == 0)
        return -1; /* forever */
    return now_ms() + (int64_t)tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000;
}

/* Sleepers share the context's eventfd.  A wakeup must reach all of them:
 * poll(2) looks at the fd again after waking, so a sleeper that reset the
 * counter while others had not yet run would leave them asleep.  Only the
 * last one out resets it (and disarms the rings); others find it set. */
static void sleeper_leave(void)
{
    if (--sleepers == 0) {
        uint64_t v;
        (void)!libc_.read(ctx_fd, &v, sizeof v);
        if (ep_sleepers == 0)
            tas_ctx_disarm(ctx);
    }
}

/* Threads asleep in epoll_wait need no reset of the eventfd: it is in their
 * kernel sets edge-triggered, so every write wakes each set once (a level-
 * triggered one kept readable by an absent reset made them spin).  The
 * rings stay armed while anyone sleeps. */
static void ep_sleeper_leave(void)
{
    if (--ep_sleepers == 0 && sleepers == 0)
        tas_ctx_disarm(ctx);
}

/* How long a poll or epoll_wait that found `ready` fds may sleep (ms, -1:
 * no limit, 0: not at all).  If it may, it counts in *count (sleepers or
 * ep_sleepers) with the rings armed (*armed), and must end with
 * sleeper_leave() or ep_sleeper_leave(). */
static int sleeper_enter(int ready, int64_t deadline, int *armed, int *count)
{
    int wait = ready ? 0 : -1;
    if (!ready && deadline >= 0) {
        int64_t left = deadline - now_ms();
        wait = left > 0 ? (int)(left > 0x7fffffff ? 0x7fffffff : left) : 0;
    }
    *armed = 0;
    if (wait != 0 && ctx != NULL) {
        (*count)++;
        *armed = 1;
        if (tas_ctx_arm(ctx))
            wait = 0; /* news already */
    }
    return wait;
}

/* Linux restarts a blocking socket call that a signal handler installed
 * with SA_RESTART interrupted, unless the socket has a timeout.  Which
 * signal came is not known here: restart if every handler has the flag. */
static int handlers_restart(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) != 0)
            continue;
        int caught = (sa.sa_flags & SA_SIGINFO) || (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN);
        if (caught && !(sa.sa_flags & SA_RESTART))
            return 0;
    }
    return 1;
}

/* Sleep until tasd has news or the deadline (-1: none, the socket has no
 * timeout) passes; the lock is dropped meanwhile.  Returns 0, ETIMEDOUT,
 * or EINTR (a signal whose handler does not restart the call). */
static int sleep_ctx(int64_t deadline)
{
    int timeout = -1;
    if (deadline >= 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return ETIMEDOUT;
        timeout = left > 0x7fffffff ? 0x7fffffff : (int)left;
    }
    sleepers++;
    int rc = 0;
    if (!tas_ctx_arm(ctx)) {
        pthread_mutex_unlock(&big);
        struct pollfd p = {.fd = ctx_fd, .events = POLLIN};
        if (libc_.poll(&p, 1, timeout) < 0 && errno == EINTR && (deadline >= 0 || !handlers_restart()))
            rc = EINTR;
        pthread_mutex_lock(&big);
    }
    sleeper_leave();
    progress();
    return rc;
}

/* A connection inherited across fork, at its first use here (lock held):
 * take it from tasd, which sends where its buffers stand; until then the
 * call waits (a round trip through tasd).  0, or -1 with errno. */
static int claim(int fd, struct tsock *s)
{
    if (s->state != S_INHERITED)
        return 0;
    progress(); /* joins the app, if this is the first use of tasd here */
    int err = ENOTCONN;
    struct tas_conn *c = NULL;
    int64_t deadline = now_ms() + 10000;
    while (init_state == 1 && sock_get(fd) == s && s->state == S_INHERITED &&
           (c = tas_conn_take_(ctx, s->c, &err)) == NULL && err == -EAGAIN)
        if (sleep_ctx(deadline) == ETIMEDOUT)
            break;
    if (c == NULL) {
        if (sock_get(fd) == s && s->state == S_INHERITED)
            s->state = S_ORPHAN;
        return fail(EBADF);
    }
    s->c = c;
    tas_conn_set_user(c, s);
    s->state = S_CONNECTED;
    while (tas_conn_taking_(c) && sleep_ctx(deadline) != ETIMEDOUT)
        ;
    bump(s);
    return 0;
}

/* After claim() when the call may have slept: the socket fd names now. */
static struct tsock *claimed(int fd, struct tsock *s)
{
    if (s != NULL && s->state == S_INHERITED && claim(fd, s) != 0)
        return sock_get(fd) == s ? s : NULL;
    return sock_get(fd);
}

/* ---- sockets ---------------------------------------------------------------------- */

static int getsockopt_int(int fd, int level, int name)
{
    int v = 0;
    socklen_t len = sizeof v;
    return libc_.getsockopt(fd, level, name, &v, &len) == 0 ? v : 0;
}

/* Take fd over from the kernel (lock held): its options come along, an
 * eventfd takes its place.  Returns the socket, or NULL with errno. */
static struct tsock *adopt(int fd)
{
    struct tsock *s = calloc(1, sizeof *s);
    if (s == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    s->h.type = T_SOCK;
    s->h.refs = 1;
    int fl = libc_.fcntl(fd, F_GETFL), fdfl = libc_.fcntl(fd, F_GETFD);
    s->nonblock = fl >= 0 && (fl & O_NONBLOCK);
    s->reuseaddr = getsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR);
    s->reuseport = getsockopt_int(fd, SOL_SOCKET, SO_REUSEPORT);
    s->keepalive = getsockopt_int(fd, SOL_SOCKET, SO_KEEPALIVE);
    s->user_timeout = getsockopt_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT);
    if (getsockopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE) != 7200) /* set by the program, not Linux's default */
        s->keepidle = getsockopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE);
    if (getsockopt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL) != 75)
        s->keepintvl = getsockopt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL);
    if (getsockopt_int(fd, IPPROTO_TCP, TCP_KEEPCNT) != 9)
        s->keepcnt = getsockopt_int(fd, IPPROTO_TCP, TCP_KEEPCNT);
    s->nodelay = getsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY);
    s->rcvbuf = getsockopt_int(fd, SOL_SOCKET, SO_RCVBUF);
    s->sndbuf = getsockopt_int(fd, SOL_SOCKET, SO_SNDBUF);
    s->rcvlowat = 1;
    s->sndlowat = 1;
    socklen_t len = sizeof s->rcvtimeo;
    libc_.getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &s->rcvtimeo, &len);
    len = sizeof s->sndtimeo;
    libc_.getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s->sndtimeo, &len);
    struct linger lg = {0};
    len = sizeof lg;
    if (libc_.getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0) {
        s->linger_on = lg.l_onoff;
        s->linger_s = lg.l_linger;
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0 || libc_.dup3(efd, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0 ||
        obj_set(fd, &s->h) != 0) {
        int e = errno;
        if (efd >= 0)
            libc_.close(efd);
        free(s);
        errno = e;
        return NULL;
    }
    libc_.close(efd);
    nobjs++;
    return s;
}

/* What tasd knows s by, as a holding: 0, or -1 if s is nothing tasd holds. */
static int hold_of(const struct tsock *s, struct tas_hold *x)
{
    *x = (struct tas_hold){0};
    if ((s->state == S_CONNECTED || s->state == S_INHERITED) && s->c) {
        x->kind = TAS_HOLD_CONN;
        tas_conn_ids_(s->c, &x->id, &x->gen);
    } else if (s->state == S_LISTENING) {
        x->kind = TAS_HOLD_LISTENER;
        x->id = s->l ? tas_listener_id_(s->l) : s->lid;
    } else {
        return -1;
    }
    return 0;
}

static void release_inherited(struct tsock *s)
{
    struct tas_hold h;
    if (hold_of(s, &h) == 0 && reg_sock >= 0)
        tas_release_(reg_sock, &h, 1);
    if (s->state == S_INHERITED) {
        free(s->c); /* the parent's, copied at fork */
        s->c = NULL;
    }
}

static void sock_free(struct tsock *s)
{
    unwait(s);
    if (s->state == S_INHERITED || (s->state == S_LISTENING && s->l == NULL))
        release_inherited(s); /* never used here: tasd forgets that we hold it */
    else if (s->state == S_ORPHAN)
        s->c = NULL;
    if (s->c && s->state == S_CONNECTED && s->linger_on && s->linger_s > 0 && !s->shut_wr) {
        /* SO_LINGER: close returns once what was written is acknowledged,
         * or when the time is up (the rest still goes, as on Linux) */
        int64_t deadline = now_ms() + (int64_t)s->linger_s * 1000;
        s->shut_wr = 1;
        tas_shutdown(s->c);
        while (tas_tx_used_(s->c) && !tas_conn_error_(s->c) && sleep_ctx(deadline) == 0)
            ;
    }
    if (s->c) {
        tas_conn_set_user(s->c, NULL);
        if (s->linger_on && s->linger_s == 0)
            tas_abort(s->c);
        else
            tas_close(s->c);
    }
    if (s->l) {
        tas_listener_set_user(s->l, NULL);
        tas_unlisten(s->l);
        for (int i = 0; i < s->qlen; i++) /* connections the program never took: reset */
            tas_abort(s->q[(s->qhead + i) % s->qcap]);
    }
    free(s->q);
    free(s);
    nobjs--;
}

/* AF_INET or AF_INET6 for a kernel TCP socket that tasd could carry, else 0.
 * An IPv6 socket qualifies when it may carry IPv4 (not IPV6_V6ONLY): tasd's
 * connections then appear to it as v4-mapped addresses, as on Linux. */
static int tcp_family(int fd)
{
    if (getsockopt_int(fd, SOL_SOCKET, SO_TYPE) != SOCK_STREAM)
        return 0;
    int fam = getsockopt_int(fd, SOL_SOCKET, SO_DOMAIN);
    if (fam == AF_INET6 && getsockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY))
        return 0;
    return fam == AF_INET || fam == AF_INET6 ? fam : 0;
}

/* The IPv4 endpoint in an AF_INET address, or in an AF_INET6 one that is
 * v4-mapped or unspecified (ip 0); -1 for anything else. */
static int v4_of(const struct sockaddr *a, socklen_t len, uint32_t *ip, uint16_t *port)
{
    if (a == NULL)
        return -1;
    if (a->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)a;
        *ip = sin->sin_addr.s_addr;
        *port = ntohs(sin->sin_port);
        return 0;
    }
    if (a->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
        *port = ntohs(s6->sin6_port);
        if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr)) {
            *ip = 0;
            return 0;
        }
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            memcpy(ip, &s6->sin6_addr.s6_addr[12], 4);
            return 0;
        }
    }
    return -1;
}

static int is_loopback(uint32_t ip) { return (ntohl(ip) >> 24) == 127; }

/* The kernel socket's local endpoint: 0, or -1 if it has none we know. */
static int kernel_local_addr(int fd, uint32_t *ip, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (libc_.getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    return v4_of((struct sockaddr *)&ss, len, ip, port);
}

int ts_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    uint32_t ip;
    uint16_t port;
    if (v4_of(addr, len, &ip, &port) != 0)
        return TS_PASS;
    if (!ts_owns(fd) && (ip == INADDR_ANY || is_loopback(ip)))
        return TS_PASS; /* the kernel binds; listen or connect decide */
    pthread_mutex_lock(&big);
    int rc = TS_PASS, fam = 0;
    struct tsock *s = sock_get(fd);
    if (s != NULL) {
        rc = fail(EINVAL); /* bound already */
    } else if ((fam = tcp_family(fd)) && ensure_app() == 0 && ip == my_ip) {
        /* tasd's address is not the kernel's: this socket can only be tasd's */
        if ((s = adopt(fd)) == NULL) {
            rc = -1;
        } else {
            s->family = fam;
            s->state = S_BOUND;
            s->ip = my_ip;
            s->port = port;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

/* Ask tasd to listen (lock held) and wait for its answer. */
static int start_listen(struct tsock *s, int backlog)
{
    if (s->port == 0)
        return fail(EINVAL); /* tasd has no ephemeral listening ports */
    s->backlog = backlog < 1 ? 1 : backlog > 4096 ? 4096 : backlog;
    s->qcap = s->backlog;
    s->q = calloc((size_t)s->qcap, sizeof *s->q);
    if (s->q == NULL)
        return fail(ENOMEM);
    s->cookie = next_cookie++;
    s->next_wait = waiting;
    waiting = s;
    s->state = S_LISTEN_WAIT;
    int rc = tas_listen(ctx, s->port, (uint32_t)s->backlog, s->reuseport ? TAS_LISTEN_REUSEPORT : 0, s->cookie);
    if (rc != 0) {
        unwait(s);
        s->state = S_BOUND;
        return fail(-rc);
    }
    int64_t deadline = now_ms() + 10000;
    progress();
    while (s->state == S_LISTEN_WAIT) {
        int e = sleep_ctx(deadline);
        if (e == ETIMEDOUT) {
            unwait(s);
            s->state = S_BOUND;
            return fail(ETIMEDOUT);
        }
    }
    if (s->state != S_LISTENING) {
        int e = s->err ? s->err : EADDRINUSE;
        s->err = 0;
        return fail(e);
    }
    return 0;
}

int ts_listen(int fd, int backlog)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    if (s != NULL) {
        if (s->state == S_LISTENING)
            rc = 0; /* Linux: listen again only changes the backlog */
        else if (s->state != S_BOUND)
            rc = fail(EINVAL);
        else
            rc = start_listen(s, backlog);
    } else {
        int fam = tcp_family(fd);
        uint32_t ip;
        uint16_t port;
        if (fam && kernel_local_addr(fd, &ip, &port) == 0 && ip == INADDR_ANY) {
            if (ensure_app() != 0) {
                rc = no_tasd();
            } else {
                if (port == 0) { /* Linux picks a port: let the kernel pick one */
                    struct sockaddr_storage ss;
                    socklen_t len = sizeof ss;
                    libc_.getsockname(fd, (struct sockaddr *)&ss, &len);
                    libc_.bind(fd, (struct sockaddr *)&ss, len);
                    kernel_local_addr(fd, &ip, &port);
                }
                if ((s = adopt(fd)) == NULL) {
                    rc = -1;
                } else {
                    s->family = fam;
                    s->state = S_BOUND;
                    s->port = port;
                    rc = start_listen(s, backlog);
                }
            }
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

int ts_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    uint32_t dip;
    uint16_t dport;
    if (v4_of(addr, len, &dip, &dport) != 0)
        return TS_PASS; /* AF_UNSPEC (disconnect), IPv6, other families: the kernel's */
    if (!ts_owns(fd) && is_loopback(dip))
        return TS_PASS;
    pthread_mutex_lock(&big);
    int rc = TS_PASS, fam;
    struct tsock *s = sock_get(fd);
    if (s == NULL && (fam = tcp_family(fd))) {
        uint32_t lip;
        uint16_t lport;
        int bound_any = kernel_local_addr(fd, &lip, &lport) == 0 && lip == INADDR_ANY;
        if (bound_any && ensure_app() != 0) {
            rc = no_tasd();
        } else if (bound_any && tasd_reaches(dip)) {
            if ((s = adopt(fd)) == NULL)
                rc = -1;
            else {
                s->family = fam;
                s->state = S_BOUND;
                s->port = lport;
            }
        }
    }
    if (s != NULL) {
        switch (s->state) {
        case S_FAILED: /* Linux: the error once (unless SO_ERROR took it), then unconnected */
            rc = fail(s->err ? s->err : ECONNABORTED);
            s->err = 0;
            s->state = S_BOUND;
            break;
        case S_BOUND:
            if (!tasd_reaches(dip)) {
                rc = fail(ENETUNREACH);
                break;
            }
            s->err = 0;
            s->cookie = next_cookie++;
            s->next_wait = waiting;
            waiting = s;
            s->state = S_CONNECTING;
            s->peer_ip = dip;
            s->peer_port = dport;
            int e = tas_connect(ctx, s->peer_ip, s->peer_port, s->port, s->cookie);
            if (e != 0) {
                unwait(s);
                s->state = S_FAILED;
                rc = fail(-e);
                break;
            }
            if (s->nonblock) {
                s->async_connect = 1;
                rc = fail(EINPROGRESS);
                break;
            }
            int64_t deadline = deadline_of(&s->sndtimeo);
            progress();
            while (s->state == S_CONNECTING) {
                e = sleep_ctx(deadline);
                if (e)
                    break;
            }
            if (s->state == S_CONNECTED) {
                rc = 0;
            } else if (s->state == S_FAILED) {
                e = s->err;
                s->err = 0;
                rc = fail(e);
            } else {
                rc = fail(e == ETIMEDOUT ? EINPROGRESS : e); /* it goes on, as on Linux */
            }
            break;
        case S_CONNECTING:
            rc = fail(EALREADY);
            break;
        case S_CONNECTED: /* Linux: once 0 after an asynchronous connect, then EISCONN */
            rc = s->async_connect ? 0 : fail(EISCONN);
            s->async_connect = 0;
            break;
        case S_LISTEN_WAIT:
        case S_LISTENING:
            rc = fail(EINVAL);
            break;
        default:
            rc = fail(EBADF);
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

/* An address as the socket's family names it (IPv6: v4-mapped). */
static void fill_addr(int family, struct sockaddr *addr, socklen_t *len, uint32_t ip, uint16_t port)
{
    if (addr == NULL || len == NULL)
        return;
    if (family == AF_INET6) {
        struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        if (ip != 0) {
            s6.sin6_addr.s6_addr[10] = s6.sin6_addr.s6_addr[11] = 0xff;
            memcpy(&s6.sin6_addr.s6_addr[12], &ip, 4);
        }
        memcpy(addr, &s6, *len < sizeof s6 ? *len : sizeof s6);
        *len = sizeof s6;
        return;
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip};
    memcpy(addr, &sin, *len < sizeof sin ? *len : sizeof sin);
    *len = sizeof sin;
}

int ts_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return fail(EINVAL);
    pthread_mutex_lock(&big);
    int rc;
    struct tsock *s = sock_get(fd);
    if (s == NULL) {
        rc = TS_PASS;
        goto out;
    }
    if (s->state != S_LISTENING) {
        rc = fail(EINVAL);
        goto out;
    }
    progress();
    want_credit(s);
    int64_t deadline = deadline_of(&s->rcvtimeo);
    while (s->qlen == 0) {
        if (s->nonblock) {
            rc = fail(EAGAIN);
            goto out;
        }
        int e = sleep_ctx(deadline);
        if (e) {
            rc = fail(e == ETIMEDOUT ? EAGAIN : e);
            goto out;
        }
        if (sock_get(fd) != s || s->state != S_LISTENING) { /* closed by another thread */
            rc = fail(EBADF);
            goto out;
        }
    }
    struct tsock *n = calloc(1, sizeof *n);
    int nfd = n ? eventfd(0, EFD_NONBLOCK | (flags & SOCK_CLOEXEC ? EFD_CLOEXEC : 0)) : -1;
    if (nfd < 0 || obj_set(nfd, &n->h) != 0) {
        int e = n ? errno : ENOMEM;
        if (nfd >= 0)
            libc_.close(nfd);
        free(n);
        rc = fail(e == EMFILE || e == ENFILE ? e : ENOMEM);
        goto out;
    }
    struct tas_conn *c = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % s->qcap;
    s->qlen--;
    want_credit(s);
    n->h.type = T_SOCK;
    n->h.refs = 1;
    n->family = s->family;
    n->state = S_CONNECTED;
    n->c = c;
    n->nonblock = (flags & SOCK_NONBLOCK) != 0;
    n->ip = my_ip;
    n->port = tas_conn_local_port(c);
    tas_conn_peer(c, &n->peer_ip, &n->peer_port);
    /* Linux: an accepted socket inherits these from the listener */
    n->nodelay = s->nodelay;
    n->keepalive = s->keepalive;
    n->keepidle = s->keepidle;
    n->keepintvl = s->keepintvl;
    n->keepcnt = s->keepcnt;
    n->user_timeout = s->user_timeout;
    n->rcvbuf = s->rcvbuf;
    n->sndbuf = s->sndbuf;
    n->rcvlowat = n->sndlowat = 1;
    tas_conn_set_user(c, n);
    start_opts(n);
    nobjs++;
    fill_addr(n->family, addr, len, n->peer_ip, n->peer_port);
    rc = nfd;
out:
    pthread_mutex_unlock(&big);
    return rc;
}

/* What a connected socket can do now, as poll(2) bits (lock held). */
static short sock_revents(struct tsock *s)
{
    switch (s->state) {
    case S_BOUND:
        return POLLOUT | POLLWRNORM | POLLHUP; /* as Linux answers for an unconnected TCP socket */
    case S_LISTENING:
        return s->qlen ? POLLIN | POLLRDNORM : 0;
    case S_FAILED: /* as Linux after a refused or timed-out connect */
        return POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM | POLLHUP | (s->err ? POLLERR : 0);
    case S_CONNECTED: {
        short m = 0;
        int err = tas_conn_error_(s->c);
        int fin = tas_conn_fin_(s->c);
        if (tas_rx_ready(s->c) || fin || err || s->shut_rd)
            m |= POLLIN | POLLRDNORM;
        if (fin || err)
            m |= POLLRDHUP; /* a reset shuts both ways */
        /* writable, as Linux says it: free space at least half of what is
         * queued (so a full buffer does not flap on every ACK), or a write
         * would fail at once */
        size_t space = tas_tx_space(s->c);
        if (s->shut_wr || err || (space > 0 && space >= tas_tx_used_(s->c) / 2))
            m |= POLLOUT | POLLWRNORM;
        if (err && !s->err_done)
            m |= POLLERR;
        if (err || (fin && s->shut_wr))
            m |= POLLHUP;
        return m;
    }
    case S_INHERITED: /* claim() failed */
    case S_ORPHAN:
        return POLLNVAL;
    default:
        return 0;
    }
}

/* The connection's error once, as Linux reports a reset: then end of stream. */
static int take_conn_error(struct tsock *s)
{
    int e = tas_conn_error_(s->c);
    if (e && !s->err_done) {
        s->err_done = 1;
        return e;
    }
    return 0;
}

static size_t iov_total(const struct msghdr *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++)
        n += m->msg_iov[i].iov_len;
    return n;
}

/* A data call that cannot finish now, having moved done bytes: 1 with *rc
 * set (done, or -1 and errno) if it ends here; else 0 after a sleep, to try
 * again. */
static int stop_or_sleep(int fd, struct tsock *s, int dontwait, int64_t deadline, size_t done, ssize_t *rc)
{
    int e = dontwait ? EAGAIN : sleep_ctx(deadline);
    if (!dontwait && sock_get(fd) != s) /* closed by another thread */
        e = EBADF;
    if (e == 0)
        return 0;
    *rc = done ? (ssize_t)done : fail(e == ETIMEDOUT ? EAGAIN : e);
    return 1;
}

ssize_t ts_recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (flags & ~(MSG_PEEK | MSG_DONTWAIT | MSG_WAITALL | MSG_NOSIGNAL | MSG_CMSG_CLOEXEC | MSG_TRUNC))
        return fail(EOPNOTSUPP);
    pthread_mutex_lock(&big);
    ssize_t rc;
    struct tsock *s = sock_get(fd);
    s = claimed(fd, s); /* inherited across fork: used here now */
    if (s == NULL) {
        rc = TS_PASS;
        goto out;
    }
    if (s->state != S_CONNECTED) {
        rc = s->state == S_ORPHAN ? fail(EBADF) : fail(ENOTCONN);
        goto out;
    }
    msg->msg_controllen = 0;
    msg->msg_flags = 0;
    if (msg->msg_name && msg->msg_namelen) /* a TCP socket names no sender */
        msg->msg_namelen = 0;
    size_t want = iov_total(msg), got = 0;
    int64_t deadline = deadline_of(&s->rcvtimeo);
    progress();
    for (;;) {
        size_t ready = tas_rx_ready(s->c); /* Linux: SHUT_RD still returns what had come */
        if (ready && got < want) {
            size_t pos = 0;
            if (flags & MSG_PEEK)
                got = 0; /* a peek looks from the start again */
            for (size_t i = 0; i < msg->msg_iovlen; i++) {
                const struct iovec *v = &msg->msg_iov[i];
                if (got >= pos + v->iov_len) {
                    pos += v->iov_len;
                    continue;
                }
                size_t skip = got - pos, n;
                if (flags & MSG_PEEK) {
                    n = tas_peek_(s->c, (char *)v->iov_base + skip, v->iov_len - skip, got);
                } else {
                    ssize_t r = tas_recv(s->c, (char *)v->iov_base + skip, v->iov_len - skip);
                    n = r > 0 ? (size_t)r : 0;
                }
                got += n;
                pos += v->iov_len;
                if (n < v->iov_len - skip)
                    break; /* nothing more there */
            }
        }
        if (got == want || (got > 0 && (!(flags & MSG_WAITALL) || (flags & MSG_PEEK)))) {
            rc = (ssize_t)got;
            break;
        }
        if (s->shut_rd || tas_conn_fin_(s->c)) {
            rc = (ssize_t)got; /* end of stream */
            break;
        }
        int e = take_conn_error(s);
        if (e || tas_conn_error_(s->c)) {
            rc = got ? (ssize_t)got : (e ? fail(e) : 0);
            break;
        }
        if (stop_or_sleep(fd, s, s->nonblock || (flags & MSG_DONTWAIT), deadline, got, &rc))
            break;
    }
out:
    pthread_mutex_unlock(&big);
    return rc;
}

ssize_t ts_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE | MSG_EOR | MSG_CONFIRM))
        return fail(EOPNOTSUPP);
    pthread_mutex_lock(&big);
    ssize_t rc;
    int pipe = 0;
    struct tsock *s = sock_get(fd);
    s = claimed(fd, s); /* inherited across fork: used here now */
    if (s == NULL) {
        rc = TS_PASS;
        goto out;
    }
    if (s->state != S_CONNECTED) {
        rc = s->state == S_ORPHAN ? fail(EBADF) : s->state == S_FAILED && s->err ? fail(s->err) : fail(EPIPE);
        if (s->state == S_FAILED)
            s->err = 0;
        pipe = errno == EPIPE;
        goto out;
    }
    size_t want = iov_total(msg), put = 0;
    int64_t deadline = deadline_of(&s->sndtimeo);
    progress();
    for (;;) {
        if (s->shut_wr) {
            rc = put ? (ssize_t)put : fail(EPIPE);
            pipe = !put;
            break;
        }
        int e = take_conn_error(s);
        if (e || tas_conn_error_(s->c)) {
            rc = put ? (ssize_t)put : fail(e ? e : EPIPE);
            pipe = !put && !e;
            break;
        }
        size_t before = 0;
        for (size_t i = 0; i < msg->msg_iovlen && put < want; i++) {
            const struct iovec *v = &msg->msg_iov[i];
            if (put >= before + v->iov_len) {
                before += v->iov_len;
                continue;
            }
            size_t skip = put - before;
            ssize_t r = tas_send(s->c, (const char *)v->iov_base + skip, v->iov_len - skip);
            if (r <= 0)
                break;
            put += (size_t)r;
            before += v->iov_len;
            if ((size_t)r < v->iov_len - skip)
                break; /* full */
        }
        if (put == want) {
            rc = (ssize_t)put;
            break;
        }
        if (stop_or_sleep(fd, s, s->nonblock || (flags & MSG_DONTWAIT), deadline, put, &rc))
            break;
    }
out:
    pthread_mutex_unlock(&big);
    if (pipe && !(flags & MSG_NOSIGNAL)) {
        int e = errno;
        pthread_kill(pthread_self(), SIGPIPE);
        errno = e;
    }
    return rc;
}

int ts_shutdown(int fd, int how)
{
    pthread_mutex_lock(&big);
    int rc = 0;
    struct tsock *s = sock_get(fd);
    s = claimed(fd, s); /* inherited across fork: used here now */
    if (s == NULL) {
        rc = TS_PASS;
    } else if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
        rc = fail(EINVAL);
    } else if (s->state == S_LISTENING && how != SHUT_WR) {
        /* Linux: shutting a listener's reading side stops it accepting */
        s->shut_rd = 1;
    } else if (s->state != S_CONNECTED || (s->shut_wr && tas_conn_fin_(s->c) && tas_tx_used_(s->c) == 0)) {
        rc = fail(ENOTCONN); /* Linux: both FINs exchanged, the socket is closed (TIME_WAIT) */
    } else {
        if (how != SHUT_WR)
            s->shut_rd = 1;
        if (how != SHUT_RD && !s->shut_wr) {
            s->shut_wr = 1;
            tas_shutdown(s->c);
        }
        bump(s);
        wake_sleepers();
    }
    pthread_mutex_unlock(&big);
    return rc;
}

static void ep_drop_sock(struct tsock *s);
static void ep_free(struct tep *ep);

/* fd is going away (close, or dup2 onto it): drop our reference. */
void ts_forget(int fd)
{
    pthread_mutex_lock(&big);
    struct tobj *o = obj_get(fd);
    if (o != NULL) {
        obj_set(fd, NULL);
        if (--o->refs == 0) {
            if (o->type == T_SOCK) {
                ep_drop_sock((struct tsock *)o);
                sock_free((struct tsock *)o);
            } else {
                struct tep *ep = (struct tep *)o, **link = &eps;
                while (*link && *link != ep)
                    link = &(*link)->next;
                if (*link)
                    *link = ep->next;
                ep_free(ep);
                nobjs--;
            }
            wake_sleepers(); /* threads blocked on it look again */
        }
    }
    pthread_mutex_unlock(&big);
}

int ts_close(int fd)
{
    if (!ts_owns(fd))
        return TS_PASS;
    ts_forget(fd);
    return TS_PASS; /* libc closes the eventfd */
}

void ts_dup(int oldfd, int newfd)
{
    pthread_mutex_lock(&big);
    struct tobj *o = obj_get(oldfd);
    if (o != NULL && oldfd != newfd && obj_set(newfd, o) == 0)
        o->refs++;
    pthread_mutex_unlock(&big);
}

int ts_getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    if (s != NULL) {
        if (addr == NULL || len == NULL)
            rc = fail(EFAULT);
        else {
            fill_addr(s->family, addr, len, s->state == S_CONNECTED ? my_ip : s->ip, s->port);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

int ts_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    if (s != NULL) {
        if (s->state != S_CONNECTED)
            rc = fail(ENOTCONN);
        else if (addr == NULL || len == NULL)
            rc = fail(EFAULT);
        else {
            fill_addr(s->family, addr, len, s->peer_ip, s->peer_port);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

/* ---- options ------------------------------------------------------------------------ */

static int put_int(void *val, socklen_t *len, int v)
{
    if (val == NULL || len == NULL)
        return fail(EFAULT);
    if (*len < 1)
        return fail(EINVAL);
    if (*len < sizeof(int)) { /* Linux copies what fits */
        memcpy(val, &v, *len);
        return 0;
    }
    memcpy(val, &v, sizeof v);
    *len = sizeof v;
    return 0;
}

static int get_int(const void *val, socklen_t len, int *out)
{
    if (len < sizeof(int))
        return fail(EINVAL);
    if (val == NULL)
        return fail(EFAULT);
    memcpy(out, val, sizeof *out);
    return 0;
}

static uint8_t tcpi_state(const struct tsock *s)
{
    switch (s->state) {
    case S_LISTENING:
        return TCP_LISTEN;
    case S_CONNECTING:
        return TCP_SYN_SENT;
    case S_CONNECTED:
        if (tas_conn_error_(s->c))
            return TCP_CLOSE;
        if (tas_conn_fin_(s->c))
            return s->shut_wr ? TCP_LAST_ACK : TCP_CLOSE_WAIT;
        return s->shut_wr ? TCP_FIN_WAIT1 : TCP_ESTABLISHED;
    default:
        return TCP_CLOSE;
    }
}

int ts_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    if (s == NULL)
        goto out;
    if (len == NULL) {
        rc = fail(EFAULT);
        goto out;
    }
    progress();
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_TYPE: rc = put_int(val, len, SOCK_STREAM); break;
        case SO_DOMAIN: rc = put_int(val, len, s->family); break;
        case SO_PROTOCOL: rc = put_int(val, len, IPPROTO_TCP); break;
        case SO_ACCEPTCONN: rc = put_int(val, len, s->state == S_LISTENING); break;
        case SO_REUSEADDR: rc = put_int(val, len, s->reuseaddr); break;
        case SO_REUSEPORT: rc = put_int(val, len, s->reuseport); break;
        case SO_KEEPALIVE: rc = put_int(val, len, s->keepalive); break;
        /* a connection's real buffers are tasd's (app.rx_buffer, app.tx_buffer) */
        case SO_RCVBUF: rc = put_int(val, len, s->state == S_CONNECTED ? (int)tas_rx_size_(s->c) : s->rcvbuf); break;
        case SO_SNDBUF:
            rc = put_int(val, len, s->state == S_CONNECTED ? (int)(tas_tx_space(s->c) + tas_tx_used_(s->c)) : s->sndbuf);
            break;
        case SO_RCVLOWAT: rc = put_int(val, len, s->rcvlowat); break;
        case SO_SNDLOWAT: rc = put_int(val, len, s->sndlowat); break;
        case SO_ERROR: {
            int e = s->err;
            s->err = 0;
            if (!e && s->state == S_CONNECTED)
                e = take_conn_error(s);
            rc = put_int(val, len, e);
            break;
        }
        case SO_LINGER: {
            struct linger lg = {.l_onoff = s->linger_on, .l_linger = s->linger_s};
            if (val == NULL || *len < sizeof lg) {
                rc = fail(EINVAL);
                break;
            }
            memcpy(val, &lg, sizeof lg);
            *len = sizeof lg;
            rc = 0;
            break;
        }
        case SO_RCVTIMEO:
        case SO_SNDTIMEO: {
            const struct timeval *tv = name == SO_RCVTIMEO ? &s->rcvtimeo : &s->sndtimeo;
            if (val == NULL || *len < sizeof *tv) {
                rc = fail(EINVAL);
                break;
            }
            memcpy(val, tv, sizeof *tv);
            *len = sizeof *tv;
            rc = 0;
            break;
        }
        default: rc = fail(ENOPROTOOPT);
        }
    } else if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_NODELAY: rc = put_int(val, len, s->nodelay); break;
        case TCP_QUICKACK: rc = put_int(val, len, s->quickack); break;
        case TCP_CORK: rc = put_int(val, len, s->cork); break;
        case TCP_KEEPIDLE: rc = put_int(val, len, s->keepidle ? s->keepidle : 7200); break;
        case TCP_KEEPINTVL: rc = put_int(val, len, s->keepintvl ? s->keepintvl : 75); break;
        case TCP_KEEPCNT: rc = put_int(val, len, s->keepcnt ? s->keepcnt : 9); break;
        case TCP_USER_TIMEOUT: rc = put_int(val, len, s->user_timeout); break;
        case TCP_DEFER_ACCEPT: rc = put_int(val, len, s->defer_accept); break;
        case TCP_MAXSEG: rc = put_int(val, len, s->maxseg ? s->maxseg : 1448); break;
        case TCP_CONGESTION: {
            static const char cc[] = "newreno";
            if (val == NULL) {
                rc = fail(EFAULT);
                break;
            }
            socklen_t n = *len < sizeof cc ? *len : sizeof cc;
            memcpy(val, cc, n);
            *len = n;
            rc = 0;
            break;
        }
        case TCP_INFO: {
            struct tcp_info ti;
            memset(&ti, 0, sizeof ti);
            ti.tcpi_state = tcpi_state(s);
            ti.tcpi_snd_mss = ti.tcpi_rcv_mss = 1448;
            struct tas_qe_info in;
            if (s->state == S_CONNECTED && tas_conn_ask_info_(s->c) == 0) { /* a round trip through tasd */
                int64_t deadline = now_ms() + 1000;
                while (!tas_conn_info_(s->c, &in) && sleep_ctx(deadline) != ETIMEDOUT && sock_get(fd) == s)
                    ;
            }
            if (s->state == S_CONNECTED && sock_get(fd) == s) {
                tas_conn_info_(s->c, &in);
                uint32_t mss = in.mss ? in.mss : 1448;
                ti.tcpi_snd_mss = ti.tcpi_rcv_mss = ti.tcpi_advmss = mss;
                ti.tcpi_unacked = (uint32_t)((tas_tx_used_(s->c) + mss - 1) / mss);
                ti.tcpi_rtt = in.rtt_us;
                ti.tcpi_rttvar = in.rttvar_us;
                ti.tcpi_rto = in.rto_us;
                ti.tcpi_snd_cwnd = in.cwnd / mss;
                ti.tcpi_snd_ssthresh = in.ssthresh >= 0x7fffffffu ? 0x7fffffffu : in.ssthresh / mss;
                ti.tcpi_total_retrans = in.retrans;
                ti.tcpi_rcv_space = (uint32_t)tas_rx_size_(s->c);
                ti.tcpi_pmtu = mss + 52;
            }
            if (val == NULL) {
                rc = fail(EFAULT);
                break;
            }
            socklen_t n = *len < sizeof ti ? *len : sizeof ti;
            memcpy(val, &ti, n);
            *len = n;
            rc = 0;
            break;
        }
        default: rc = fail(ENOPROTOOPT);
        }
    } else if (level == IPPROTO_IPV6 && s->family == AF_INET6) {
        switch (name) {
        case IPV6_V6ONLY: rc = put_int(val, len, 0); break;
        case IPV6_TCLASS: rc = put_int(val, len, s->tos); break;
        default: rc = fail(ENOPROTOOPT);
        }
    } else if (level == IPPROTO_IP) {
        switch (name) {
        case IP_TOS: rc = put_int(val, len, s->tos); break;
        case IP_TTL: rc = put_int(val, len, s->ttl ? s->ttl : 64); break;
        default: rc = fail(ENOPROTOOPT);
        }
    } else {
        rc = fail(EOPNOTSUPP);
    }
out:
    pthread_mutex_unlock(&big);
    return rc;
}

int ts_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS, v = 0;
    struct tsock *s = sock_get(fd);
    s = claimed(fd, s); /* inherited across fork: used here now */
    if (s == NULL)
        goto out;
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_LINGER: {
            struct linger lg;
            if (val == NULL || len < sizeof lg) {
                rc = fail(EINVAL);
                break;
            }
            memcpy(&lg, val, sizeof lg);
            s->linger_on = lg.l_onoff != 0;
            s->linger_s = lg.l_linger;
            rc = 0;
            break;
        }
        case SO_RCVTIMEO:
        case SO_SNDTIMEO: {
            struct timeval tv;
            if (val == NULL || len < sizeof tv) {
                rc = fail(EINVAL);
                break;
            }
            memcpy(&tv, val, sizeof tv);
            if (tv.tv_usec < 0 || tv.tv_usec >= 1000000) {
                rc = fail(EDOM);
                break;
            }
            if (tv.tv_sec < 0) /* Linux: a negative timeout means none */
                tv.tv_sec = tv.tv_usec = 0;
            *(name == SO_RCVTIMEO ? &s->rcvtimeo : &s->sndtimeo) = tv;
            rc = 0;
            break;
        }
        case SO_REUSEADDR:
        case SO_REUSEPORT:
        case SO_KEEPALIVE:
        case SO_RCVBUF:
        case SO_SNDBUF:
        case SO_RCVLOWAT:
        case SO_BROADCAST:
        case SO_OOBINLINE:
        case SO_PRIORITY:
        case SO_MARK:
        case SO_ZEROCOPY:
        case SO_BUSY_POLL:
            if ((rc = get_int(val, len, &v)) != 0)
                break;
            if (name == SO_REUSEADDR)
                s->reuseaddr = v != 0;
            else if (name == SO_REUSEPORT)
                s->reuseport = v != 0;
            else if (name == SO_KEEPALIVE) {
                s->keepalive = v != 0;
                send_opts(s);
            }
            else if (name == SO_RCVBUF) /* Linux doubles it (bookkeeping) */
                s->rcvbuf = v < 1152 ? 2304 : 2 * v;
            else if (name == SO_SNDBUF)
                s->sndbuf = v < 2304 ? 4608 : 2 * v;
            else if (name == SO_RCVLOWAT)
                s->rcvlowat = v < 1 ? 1 : v;
            break;
        default: rc = fail(ENOPROTOOPT);
        }
    } else if (level == IPPROTO_TCP) {
        if (name == TCP_CONGESTION) {
            /* tasd runs its own; names it does not have are unknown (Linux: ENOENT) */
            if (val == NULL) {
                rc = fail(EFAULT);
                goto out;
            }
            char buf[16] = "";
            memcpy(buf, val, len < sizeof buf - 1 ? len : sizeof buf - 1);
            rc = strcmp(buf, "newreno") == 0 || strcmp(buf, "reno") == 0 ? 0 : fail(ENOENT);
            goto out;
        }
        if ((rc = get_int(val, len, &v)) != 0)
            goto out;
        switch (name) {
        case TCP_NODELAY: s->nodelay = v != 0; break;
        case TCP_QUICKACK: s->quickack = v != 0; break;
        case TCP_CORK: s->cork = v != 0; break;
        case TCP_KEEPIDLE:
        case TCP_KEEPINTVL:
            if (v < 1 || v > 32767) {
                rc = fail(EINVAL);
                break;
            }
            *(name == TCP_KEEPIDLE ? &s->keepidle : &s->keepintvl) = v;
            if (s->keepalive)
                send_opts(s);
            break;
        case TCP_KEEPCNT:
            if (v < 1 || v > 127) {
                rc = fail(EINVAL);
                break;
            }
            s->keepcnt = v;
            if (s->keepalive)
                send_opts(s);
            break;
        case TCP_USER_TIMEOUT:
            if (v < 0) {
                rc = fail(EINVAL);
                break;
            }
            s->user_timeout = v;
            send_opts(s);
            break;
        case TCP_DEFER_ACCEPT: s->defer_accept = v; break;
        case TCP_MAXSEG: s->maxseg = v; break;
        case TCP_FASTOPEN: break; /* accepted; tasd does not do TFO (data waits for the handshake) */
        default: rc = fail(ENOPROTOOPT);
        }
    } else if (level == IPPROTO_IPV6 && s->family == AF_INET6) {
        if ((rc = get_int(val, len, &v)) != 0)
            goto out;
        if (name == IPV6_V6ONLY) /* too late to carry only IPv6: it carries IPv4 */
            rc = v ? fail(EINVAL) : 0;
        else if (name == IPV6_TCLASS)
            s->tos = v & 0xfc;
        else
            rc = fail(ENOPROTOOPT);
    } else if (level == IPPROTO_IP) {
        if ((rc = get_int(val, len, &v)) != 0)
            goto out;
        switch (name) {
        case IP_TOS: s->tos = v & 0xfc; break;
        case IP_TTL: s->ttl = v; break;
        default: rc = fail(ENOPROTOOPT);
        }
    } else {
        rc = fail(ENOPROTOOPT);
    }
out:
    pthread_mutex_unlock(&big);
    return rc;
}

int ts_fcntl(int fd, int cmd, long arg)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    if (s != NULL) {
        if (cmd == F_GETFL) {
            rc = O_RDWR | (s->nonblock ? O_NONBLOCK : 0);
        } else if (cmd == F_SETFL) {
            s->nonblock = (arg & O_NONBLOCK) != 0;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

int ts_ioctl(int fd, unsigned long req, void *arg)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    s = claimed(fd, s); /* inherited across fork: used here now */
    if (s != NULL) {
        progress();
        if ((req == FIONBIO || req == FIONREAD || req == TIOCOUTQ) && arg == NULL) {
            rc = fail(EFAULT);
        } else if (req == FIONBIO) {
            s->nonblock = *(int *)arg != 0;
            rc = 0;
        } else if (req == FIONREAD || req == TIOCOUTQ) {
            if (s->state == S_LISTENING)
                rc = fail(EINVAL);
            else {
                size_t n = s->state != S_CONNECTED ? 0 : req == FIONREAD ? tas_rx_ready(s->c) : tas_tx_used_(s->c);
                *(int *)arg = (int)n;
                rc = 0;
            }
        } else {
            rc = fail(ENOTTY);
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

/* ---- poll ---------------------------------------------------------------------------- */

int ts_poll(struct pollfd *fds, nfds_t n, int timeout_ms, const sigset_t *sigmask)
{
    /* the kernel's fds, then the context's eventfd */
    struct pollfd stack[64], *k = n + 1 <= 64 ? stack : malloc((n + 1) * sizeof *k);
    if (k == NULL)
        return fail(ENOMEM);
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    int rc;
    pthread_mutex_lock(&big);
    for (;;) {
        progress();
        int ready = 0;
        nfds_t nk = 0;
        for (nfds_t i = 0; i < n; i++) {
            struct tsock *s = claimed(fds[i].fd, sock_get(fds[i].fd));
            fds[i].revents = 0;
            if (s != NULL) {
                if (fds[i].events & POLLIN)
                    want_credit(s);
                short m = sock_revents(s);
                fds[i].revents = m & (fds[i].events | POLLERR | POLLHUP | POLLNVAL);
                ready += fds[i].revents != 0;
            } else if (fds[i].fd >= 0) {
                k[nk].fd = fds[i].fd;
                k[nk].events = fds[i].events;
                k[nk].revents = 0;
                nk++;
            }
        }
        int armed, wait = sleeper_enter(ready, deadline, &armed, &sleepers);
        if (armed) {
            k[nk].fd = ctx_fd;
            k[nk].events = POLLIN;
            k[nk].revents = 0;
        }
        pthread_mutex_unlock(&big);
        int kr;
        if (sigmask) {
            struct timespec ts = {wait / 1000, (long)(wait % 1000) * 1000000};
            kr = libc_.ppoll(k, nk + (armed ? 1 : 0), wait < 0 ? NULL : &ts, sigmask);
        } else {
            kr = libc_.poll(k, nk + (armed ? 1 : 0), wait);
        }
        int kerr = errno;
        pthread_mutex_lock(&big);
        if (armed)
            sleeper_leave();
        if (kr < 0) {
            rc = -1;
            errno = kerr;
            break;
        }
        /* the kernel's answers go back in place */
        nfds_t j = 0;
        int kready = 0;
        for (nfds_t i = 0; i < n; i++) {
            if (sock_get(fds[i].fd) == NULL && fds[i].fd >= 0) {
                fds[i].revents = k[j++].revents;
                kready += fds[i].revents != 0;
            }
        }
        if (ready || kready) {
            if (!ready && armed) { /* tasd may have news too: report them together */
                progress();
                for (nfds_t i = 0; i < n; i++) {
                    struct tsock *s = sock_get(fds[i].fd);
                    if (s != NULL) {
                        fds[i].revents = sock_revents(s) & (fds[i].events | POLLERR | POLLHUP | POLLNVAL);
                        ready += fds[i].revents != 0;
                    }
                }
            }
            rc = ready + kready;
            break;
        }
        if (deadline >= 0 && now_ms() >= deadline) {
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&big);
    if (k != stack)
        free(k);
    return rc;
}

/* ---- epoll ------------------------------------------------------------------------- */

/* The context's eventfd in the kernel set, so that epoll_wait wakes for tasd. */
static int ep_attach_ctx(int epfd, struct tep *ep)
{
    if (ep->ctx_added || ctx == NULL)
        return 0;
    struct epoll_event cev = {.events = EPOLLIN | EPOLLET, .data.u64 = CTX_TAG}; /* see ep_sleeper_enter */
    if (libc_.epoll_ctl(epfd, EPOLL_CTL_ADD, ctx_fd, &cev) != 0 && errno != EEXIST)
        return -1;
    ep->ctx_added = 1;
    return 0;
}

static struct tep *ep_get(int epfd)
{
    struct tobj *o = obj_get(epfd);
    return o && o->type == T_EPOLL ? (struct tep *)o : NULL;
}

static struct treg *reg_add(struct tep *ep, int fd, struct tsock *s, const struct epoll_event *ev)
{
    if (ep->n == ep->cap) {
        int cap = ep->cap ? 2 * ep->cap : 16;
        struct treg **more = realloc(ep->regs, (size_t)cap * sizeof *more);
        if (more == NULL)
            return NULL;
        ep->regs = more;
        ep->cap = cap;
    }
    struct treg *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    *r = (struct treg){.fd = fd, .s = s, .ep = ep, .idx = ep->n, .ev = *ev, .seen = s->gen - 1, .snext = s->regs};
    s->regs = r;
    ep->regs[ep->n++] = r;
    ready_push(r); /* report what is ready now */
    return r;
}

/* Drop a registration; unlink: from its socket's list too (not when the
 * socket goes, which walks that list itself). */
static void reg_del(struct treg *r, int unlink)
{
    struct tep *ep = r->ep;
    ready_del(r);
    ep->regs[r->idx] = ep->regs[--ep->n];
    ep->regs[r->idx]->idx = r->idx;
    if (unlink) {
        struct treg **link = &r->s->regs;
        while (*link != r)
            link = &(*link)->snext;
        *link = r->snext;
    }
    free(r);
}

static struct treg *reg_find(struct tep *ep, int fd, struct tsock *s)
{
    for (struct treg *r = s->regs; r; r = r->snext)
        if (r->ep == ep && r->fd == fd)
            return r;
    return NULL;
}

static void ep_drop_sock(struct tsock *s)
{
    /* Linux drops a registration when its file's last fd closes */
    while (s->regs) {
        struct treg *r = s->regs;
        s->regs = r->snext;
        reg_del(r, 0);
    }
}

/* An epoll set goes: its registrations leave their sockets. */
static void ep_free(struct tep *ep)
{
    while (ep->n > 0)
        reg_del(ep->regs[ep->n - 1], 1);
    free(ep->regs);
    free(ep);
}

int ts_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    pthread_mutex_lock(&big);
    int rc = TS_PASS;
    struct tsock *s = sock_get(fd);
    s = claimed(fd, s); /* inherited across fork: used here now */
    struct tep *ep = ep_get(epfd);
    if (s == NULL) {
        /* a kernel fd: the kernel's set, except that the context's eventfd
         * must be there once tasd sockets are */
        goto out;
    }
    if (fd == epfd) {
        rc = fail(EINVAL);
        goto out;
    }
    if (ep == NULL) { /* the first tasd socket in this epoll set */
        if (op != EPOLL_CTL_ADD) {
            rc = fail(ENOENT);
            goto out;
        }
        int fl = libc_.fcntl(epfd, F_GETFD);
        if (fl < 0) {
            rc = -1; /* EBADF */
            goto out;
        }
        ep = calloc(1, sizeof *ep);
        if (ep == NULL || obj_set(epfd, &ep->h) != 0) {
            free(ep);
            rc = fail(ENOMEM);
            goto out;
        }
        ep->h.type = T_EPOLL;
        ep->h.refs = 1;
        ep->next = eps;
        eps = ep;
        nobjs++;
    }
    progress(); /* (in a forked child, the first use joins the app: ctx comes now) */
    if (ep_attach_ctx(epfd, ep) != 0) {
        rc = -1;
        goto out;
    }
    struct treg *r = reg_find(ep, fd, s);
    /* EPOLLEXCLUSIVE as Linux takes it: at ADD only, with input/output bits,
     * EPOLLET and the error bits; such a registration cannot be modified */
    const uint32_t exclusive_ok = EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND |
                                  EPOLLPRI | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE;
    if (op != EPOLL_CTL_DEL && ev != NULL && (ev->events & EPOLLEXCLUSIVE) &&
        (op == EPOLL_CTL_MOD || (ev->events & ~exclusive_ok))) {
        rc = fail(EINVAL);
        goto out;
    }
    if (op == EPOLL_CTL_MOD && r != NULL && (r->ev.events & EPOLLEXCLUSIVE)) {
        rc = fail(EINVAL);
        goto out;
    }
    if (op == EPOLL_CTL_ADD) {
        if (r != NULL) {
            rc = fail(EEXIST);
            goto out;
        }
        if (ev == NULL) {
            rc = fail(EFAULT);
            goto out;
        }
        rc = reg_add(ep, fd, s, ev) ? 0 : fail(ENOMEM);
    } else if (op == EPOLL_CTL_MOD) {
        if (r == NULL) {
            rc = fail(ENOENT);
            goto out;
        }
        if (ev == NULL) {
            rc = fail(EFAULT);
            goto out;
        }
        r->ev = *ev;
        r->disabled = 0;
        r->seen = s->gen - 1; /* re-armed: report what is ready now */
        ready_push(r);
        rc = 0;
    } else if (op == EPOLL_CTL_DEL) {
        if (r == NULL) {
            rc = fail(ENOENT);
            goto out;
        }
        reg_del(r, 1);
        rc = 0;
    } else {
        rc = fail(EINVAL);
    }
    wake_sleepers();
out:
    pthread_mutex_unlock(&big);
    return rc;
}

static uint32_t to_epoll(short m)
{
    uint32_t e = 0;
    if (m & POLLIN)
        e |= EPOLLIN | EPOLLRDNORM;
    if (m & POLLOUT)
        e |= EPOLLOUT | EPOLLWRNORM;
    if (m & POLLRDHUP)
        e |= EPOLLRDHUP;
    if (m & POLLERR)
        e |= EPOLLERR;
    if (m & POLLHUP)
        e |= EPOLLHUP;
    return e;
}

/* The tasd sockets of ep that are ready (lock held). */
static int ep_collect(struct tep *ep, struct epoll_event *out, int max)
{
    int n = 0;
    struct treg *last = ep->rtail, *next;
    for (struct treg *r = ep->rhead; r && n < max; r = next) {
        next = r == last ? NULL : r->rnext; /* each once: reported ones go to the tail */
        if (r->disabled) {
            ready_del(r);
            continue;
        }
        if (r->ev.events & EPOLLIN)
            want_credit(r->s);
        uint32_t want = r->ev.events | EPOLLERR | EPOLLHUP;
        uint32_t got = to_epoll(sock_revents(r->s)) & want;
        if (!got || ((r->ev.events & EPOLLET) && r->seen == r->s->gen)) {
            ready_del(r); /* not ready, or reported and nothing happened since: until it wakes */
            continue;
        }
        r->seen = r->s->gen;
        if (r->ev.events & EPOLLONESHOT)
            r->disabled = 1;
        out[n].events = got;
        out[n].data = r->ev.data;
        n++;
        ready_del(r);
        if (!(r->ev.events & (EPOLLET | EPOLLONESHOT)))
            ready_push(r); /* level-triggered: asked again next time, after the others */
    }
    return n;
}

int ts_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms, const sigset_t *sigmask)
{
    if (max <= 0)
        return fail(EINVAL);
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    int rc;
    pthread_mutex_lock(&big);
    for (;;) {
        struct tep *ep = ep_get(epfd);
        if (ep == NULL) { /* no tasd socket in it (any more): the kernel alone */
            pthread_mutex_unlock(&big);
            int wait = deadline < 0 ? -1 : (int)(deadline - now_ms() > 0 ? deadline - now_ms() : 0);
            rc = libc_.epoll_pwait(epfd, events, max, wait, sigmask);
            if (rc > 0) { /* the context's eventfd may still be in the set */
                int j = 0;
                for (int i = 0; i < rc; i++)
                    if (events[i].data.u64 != CTX_TAG)
                        events[j++] = events[i];
                rc = j;
            }
            return rc;
        }
        progress();
        ep_attach_ctx(epfd, ep);
        int n = ep_collect(ep, events, max);
        int armed, wait = sleeper_enter(n, deadline, &armed, &ep_sleepers);
        pthread_mutex_unlock(&big);
        int kr = n < max ? libc_.epoll_pwait(epfd, events + n, max - n, wait, sigmask) : 0;
        int kerr = errno;
        pthread_mutex_lock(&big);
        if (kr > 0) { /* the context's eventfd: tasd has news, seen at the top */
            int j = n;
            for (int i = n; i < n + kr; i++)
                if (events[i].data.u64 != CTX_TAG)
                    events[j++] = events[i];
            kr = j - n;
        }
        if (armed)
            ep_sleeper_leave();
        if (kr < 0) {
            if (n) {
                rc = n;
                break;
            }
            errno = kerr;
            rc = -1;
            break;
        }
        if (n + kr > 0) {
            rc = n + kr;
            break;
        }
        if (deadline >= 0 && now_ms() >= deadline) {
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&big);
    return rc;
}

/* ---- fork ---------------------------------------------------------------------------- */

/* Linux shares a socket between the processes that hold it after fork.
 * Here, before the fork, the parent registers the child with tasd as
 * another process of the app holding the same connections and listeners
 * (tas_fork_prepare_), so that a close in either one leaves the socket to
 * the other.  The child's rings are its own: it takes a connection at its
 * first use of it (claim), and listens through a handle of its own. */

static void for_each_sock(void (*fn)(struct tsock *, void *), void *arg)
{
    for (int p = 0; p < FD_PAGES; p++) {
        struct tobj **page = fdtab[p];
        for (int i = 0; page && i < FD_PAGE; i++)
            if (page[i] != NULL && page[i]->type == T_SOCK)
                fn((struct tsock *)page[i], arg);
    }
}

struct holds {
    struct tas_hold *e;
    uint32_t n, cap;
};

static void add_hold(struct tsock *s, void *arg)
{
    struct holds *h = arg;
    struct tas_hold x;
    if (hold_of(s, &x) != 0)
        return;
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? 2 * h->cap : 64;
        struct tas_hold *more = realloc(h->e, cap * sizeof *more);
        if (more == NULL)
            return;
        h->e = more;
        h->cap = cap;
    }
    h->e[h->n++] = x;
}

static void before_fork(void)
{
    pthread_mutex_lock(&big);
    fork_sock = -1;
    const struct tas_app *a = init_state == 1 ? app : forked_from;
    if (a == NULL || nobjs == 0)
        return;
    struct holds h = {0};
    for_each_sock(add_hold, &h);
    if (h.n > 0) {
        fork_sock = tas_fork_prepare_(a, h.e, h.n);
        if (fork_sock < 0)
            fprintf(stderr, "libtas: fork: tasd cannot share this process's sockets with the child: %s\n",
                    strerror(-fork_sock));
    }
    free(h.e);
}

static void share_conn(struct tsock *s, void *arg)
{
    (void)arg;
    if (s->state == S_CONNECTED && s->c)
        tas_conn_share_(s->c);
}

static void after_fork_parent(void)
{
    if (fork_sock >= 0) {
        libc_.close(fork_sock);
        fork_sock = -1;
        for_each_sock(share_conn, NULL); /* the child holds them too: a close here sends no FIN */
    }
    pthread_mutex_unlock(&big);
}

/* In the child: the parent's context is not ours (its rings are the
 * parent's); what the fds name waits for this process to join the app. */
static void after_fork_child(void)
{
    pthread_mutex_init(&big, NULL);
    for (int p = 0; p < FD_PAGES; p++) {
        struct tobj **page = fdtab[p];
        for (int i = 0; page && i < FD_PAGE; i++) {
            if (page[i] == NULL)
                continue;
            if (page[i]->type == T_EPOLL) { /* the set is shared with the parent; its tasd part was the parent's */
                struct tep *ep = (struct tep *)page[i];
                if (--ep->h.refs == 0) {
                    ep_free(ep);
                    nobjs--;
                }
                page[i] = NULL;
                continue;
            }
            struct tsock *s = (struct tsock *)page[i];
            if (s->state == S_LISTENING && s->l) {
                s->lid = tas_listener_id_(s->l);
                s->l = NULL; /* adopt_inherited takes a handle of our own */
                s->qlen = s->credit = 0; /* what was queued is the parent's */
            } else if (s->state == S_CONNECTED || s->state == S_INHERITED) {
                s->state = fork_sock >= 0 ? S_INHERITED : S_ORPHAN;
            } else if (s->state != S_LISTENING) {
                s->state = S_ORPHAN;
            }
        }
    }
    /* the registration of the process we came from is its own: tasd learns
     * that process is gone when it closes, so no copy may stay here */
    if (init_state == 1)
        forked_from = app;
    if (forked_from != NULL)
        tas_app_drop_sock_(forked_from);
    if (reg_sock >= 0)
        libc_.close(reg_sock);
    reg_sock = fork_sock;
    fork_sock = -1;
    app = NULL;
    ctx = NULL;
    ctx_fd = -1;
    init_state = 0;
    sleepers = ep_sleepers = 0;
    waiting = NULL;
    eps = NULL; /* the kernel's epoll sets are shared with the parent: ours start anew */
}

static void adopt_listener(struct tsock *s, void *arg)
{
    (void)arg;
    if (s->state == S_LISTENING && s->l == NULL && (s->l = tas_listener_adopt_(ctx, s->lid, s->port)))
        tas_listener_set_user(s->l, s);
}

/* In the child, at its first use of tasd: join the parent's app, then take
 * handles for the listeners it inherited (lock held). */
static void adopt_inherited(void)
{
    struct tas_app *parent = forked_from;
    forked_from = NULL;
    int rc = reg_sock >= 0 ? tas_app_join_fd_(parent, reg_sock, &app) : tas_app_join_(parent, &app);
    if (rc == 0 && (rc = tas_ctx_open(app, &ctx)) != 0)
        app = NULL;
    if (rc != 0) {
        fprintf(stderr, "libtas: a forked process cannot join its app in tasd: %s\n", strerror(-rc));
        init_state = -1;
        return;
    }
    ctx_fd = tas_ctx_fd(ctx);
    tas_app_address(app, &my_ip, &my_plen, &my_gw);
    init_state = 1;
    for_each_sock(adopt_listener, NULL);
}

__attribute__((constructor)) static void sock_init(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }
