/*
 * rpcbench: the load of tools/bench.py, in C so that the client costs little
 * next to the stacks it measures.  Plain POSIX sockets and epoll: the same
 * binary runs on the kernel's TCP and, under tasd-run, on tasd.
 *
 *   rpcbench server PORT [--busy] [--procs P]
 *       echo every byte back, on every connection (epoll; P processes
 *       sharing the listener, for more connections than one may have fds)
 *   rpcbench client IP PORT [--conns N] [--active A] [--inflight K] [--size S]
 *                   [--time T] [--warmup W] [--rate R] [--busy] [--ports-from P]
 *       N connections, A of them (default all) carrying closed-loop RPCs of S
 *       bytes (echoed), K in flight on each; with --rate, at most R RPCs per
 *       second in all (a fixed offered load).  Prints one JSON line: RPCs per
 *       second and round-trip latency percentiles from a 1 us histogram.
 *       --ports-from P binds connection i to local port P + i: Linux's
 *       connect() searches for a free port, which slows to a few hundred
 *       connections a second once half the range is taken (tens of
 *       thousands open).
 *   rpcbench connrate IP PORT [--parallel P] [--time T] [--warmup W]
 *       P connections at a time, each: connect, 64 B request, 64 B reply,
 *       close.  Prints connections per second.
 *
 * --busy polls (epoll_wait with no timeout) instead of sleeping.  --procs P
 * splits a client's connections (and rate) over P processes and adds up
 * their results (histograms included).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 1000000 /* 1 us bins up to 1 s; beyond: the last bin */
#define MAX_INFLIGHT 64
#define MAX_SIZE 65536

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "rpcbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void raise_nofile(void)
{
    long most = 1 << 20; /* up to fs.nr_open: root may raise the hard limit that far */
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        if (fscanf(f, "%ld", &most) != 1)
            most = 1 << 20;
        fclose(f);
    }
    struct rlimit r = {(rlim_t)most, (rlim_t)most};
    if (setrlimit(RLIMIT_NOFILE, &r) != 0 && getrlimit(RLIMIT_NOFILE, &r) == 0) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- options ---------------------------------------------------------------------- */

struct opts {
    long conns, active, inflight, size, parallel, procs, ports_from;
    double time, warmup, rate;
    int busy;
};

static void parse(int argc, char **argv, int first, struct opts *o)
{
    *o = (struct opts){.conns = 1, .active = -1, .inflight = 1, .size = 64, .parallel = 16, .procs = 1, .time = 5,
                       .warmup = 1, .rate = 0, .busy = 0};
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--busy") == 0) {
            o->busy = 1;
            continue;
        }
        if (v == NULL)
            goto bad;
        i++;
        /* every valued option: its name and where it goes */
        const struct { const char *name; long *l; double *d; } opt[] = {
            {"--conns", &o->conns, NULL},       {"--active", &o->active, NULL}, {"--inflight", &o->inflight, NULL},
            {"--size", &o->size, NULL},         {"--parallel", &o->parallel, NULL}, {"--procs", &o->procs, NULL},
            {"--ports-from", &o->ports_from, NULL}, {"--time", NULL, &o->time}, {"--warmup", NULL, &o->warmup},
            {"--rate", NULL, &o->rate}};
        size_t k = 0;
        while (k < sizeof opt / sizeof opt[0] && strcmp(a, opt[k].name) != 0)
            k++;
        if (k == sizeof opt / sizeof opt[0])
            goto bad;
        if (opt[k].l)
            *opt[k].l = atol(v);
        else
            *opt[k].d = atof(v);
    }
    if (o->active < 0 || o->active > o->conns)
        o->active = o->conns;
    if (o->conns < 1 || o->inflight < 1 || o->inflight > MAX_INFLIGHT || o->size < 1 || o->size > MAX_SIZE ||
        o->parallel < 1 || o->procs < 1 || o->procs > 64 || o->time <= 0 || o->warmup < 0 || o->rate < 0 ||
        o->ports_from < 0 || (o->ports_from && o->ports_from + o->conns > 65536))
        goto bad;
    return;
bad:
    fprintf(stderr, "rpcbench: bad arguments (see the comment at the top of tools/rpcbench.c)\n");
    exit(2);
}

static struct sockaddr_in address(const char *ip, const char *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "rpcbench: bad address %s\n", ip);
        exit(2);
    }
    return a;
}

/* ---- server -------------------------------------------------------------------------- */

static _Noreturn void server(const char *port, int busy, int procs)
{
    static char buf[1 << 16];
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4096) != 0)
        die("listen");
    nonblock(l);
    printf("{\"listening\": %s}\n", port);
    fflush(stdout);
    for (int i = 1; i < procs; i++) /* processes sharing the listener (fd limits: one per 16K connections) */
        if (fork() == 0)
            break;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, busy ? 0 : -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    nodelay(c);
                    ev = (struct epoll_event){.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) {
                    ssize_t off = 0;
                    while (off < r) { /* an echo of at most 64 KiB: its buffer takes it, or we wait */
                        ssize_t w = write(fd, buf + off, (size_t)(r - off));
                        if (w > 0)
                            off += w;
                        else if (w < 0 && errno == EAGAIN)
                            usleep(10);
                        else
                            break;
                    }
                    if (off < r)
                        r = 0;
                    else
                        continue;
                }
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                }
                break;
            }
        }
    }
}

/* ---- client --------------------------------------------------------------------------- */

struct conn {
    int fd;
    int connected;
    uint64_t sent_at[MAX_INFLIGHT]; /* a ring of the requests in flight, oldest first */
    int head, n;
    long rx_partial;    /* bytes of the oldest reply so far */
    long tx_pending;    /* bytes of requests not yet written */
};

/* What one process measured (in shared memory: with --procs, the parent adds them up). */
struct result {
    uint64_t done, failed, n, over, sum_ns, max_ns;
    double secs;
    uint32_t hist[HIST_US];
};

static struct result *res;

static void record(uint64_t ns)
{
    uint64_t us = ns / 1000;
    res->hist[us < HIST_US ? us : HIST_US - 1]++;
    res->n++;
    res->over += us >= HIST_US;
    res->sum_ns += ns;
    if (ns > res->max_ns)
        res->max_ns = ns;
}

static void reset(void) { memset(res, 0, sizeof *res); }

static double percentile(const struct result *r, double p)
{
    uint64_t want = (uint64_t)(p * (double)r->n + 0.5), seen = 0;
    if (want == 0)
        want = 1;
    for (uint32_t i = 0; i < HIST_US; i++) {
        seen += r->hist[i];
        if (seen >= want)
            return i + 0.5;
    }
    return HIST_US;
}

/* The results of nprocs processes, added up, as one JSON line. */
static void report(struct result *rs, int nprocs, const char *count, const char *rate)
{
    struct result *t = &rs[0];
    for (int i = 1; i < nprocs; i++) {
        t->done += rs[i].done;
        t->failed += rs[i].failed;
        t->n += rs[i].n;
        t->over += rs[i].over;
        t->sum_ns += rs[i].sum_ns;
        t->max_ns = rs[i].max_ns > t->max_ns ? rs[i].max_ns : t->max_ns;
        t->secs = rs[i].secs > t->secs ? rs[i].secs : t->secs;
        for (uint32_t b = 0; b < HIST_US; b++)
            t->hist[b] += rs[i].hist[b];
    }
    printf("{\"%s\": %llu, \"failed\": %llu, \"seconds\": %.3f, \"%s\": %.1f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"p999_us\": %.1f, \"p9999_us\": %.1f, \"mean_us\": %.1f, \"max_us\": %.1f, "
           "\"over_1s\": %llu, \"procs\": %d}\n",
           count, (unsigned long long)t->done, (unsigned long long)t->failed, t->secs, rate,
           t->secs > 0 ? t->done / t->secs : 0.0, percentile(t, 0.5), percentile(t, 0.99), percentile(t, 0.999),
           percentile(t, 0.9999), t->n ? (double)t->sum_ns / t->n / 1000 : 0.0, t->max_ns / 1000.0,
           (unsigned long long)t->over, nprocs);
}

static char zeros[MAX_SIZE * MAX_INFLIGHT];

static int flush_tx(struct conn *c)
{
    while (c->tx_pending > 0) {
        ssize_t w = write(c->fd, zeros, (size_t)c->tx_pending);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->tx_pending -= w;
    }
    return 0;
}

static int connect_all(struct conn *cs, long n, const struct sockaddr_in *a, int ep, long ports_from)
{
    long pending = 0;
    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
        if (fd < 0)
            die("socket");
        nodelay(fd);
        if (ports_from) { /* that port, or (taken) whatever the kernel finds */
            struct sockaddr_in l = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(ports_from + i))};
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            (void)bind(fd, (struct sockaddr *)&l, sizeof l);
        }
        int rc = connect(fd, (const struct sockaddr *)a, sizeof *a);
        if (rc != 0 && errno == EADDRNOTAVAIL && ports_from) {
            close(fd); /* that pair is still in TIME_WAIT: let the kernel pick */
            if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0)
                die("socket");
            nodelay(fd);
            rc = connect(fd, (const struct sockaddr *)a, sizeof *a);
        }
        if (rc != 0 && errno != EINPROGRESS)
            die("connect");
        cs[i] = (struct conn){.fd = fd};
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        pending++;
        /* no more than 64 handshakes at a time (per process): a listener's
         * backlog, and SYNs lost beyond what a server takes in come again
         * only after seconds */
        while (pending >= 64 || (i == n - 1 && pending > 0)) {
            struct epoll_event evs[64];
            int k = epoll_wait(ep, evs, 64, 30000);
            if (k <= 0) {
                fprintf(stderr, "rpcbench: no connection completed in 30 s\n");
                return -1;
            }
            for (int j = 0; j < k; j++) {
                struct conn *c = evs[j].data.ptr;
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    errno = err;
                    die("connect");
                }
                if (!c->connected) {
                    c->connected = 1;
                    pending--;
                    struct epoll_event ev2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev2);
                }
            }
        }
    }
    return 0;
}

static int client(const char *ip, const char *port, const struct opts *o)
{
    static char buf[1 << 16];
    struct sockaddr_in a = address(ip, port);
    struct conn *cs = calloc((size_t)o->conns, sizeof *cs);
    int ep = epoll_create1(0);
    if (cs == NULL || ep < 0)
        die("setup");
    if (connect_all(cs, o->conns, &a, ep, o->ports_from) != 0)
        return 1;
    uint64_t start = now_ns(), measure_at = start + (uint64_t)(o->warmup * 1e9),
             end = measure_at + (uint64_t)(o->time * 1e9);
    double interval = o->rate > 0 ? 1e9 / o->rate : 0, next_send = (double)start;
    long rr = 0; /* round robin over active connections (rate mode) */
    int measuring = 0;
    if (interval == 0) { /* closed loop: every active connection starts with K requests */
        for (long i = 0; i < o->active; i++) {
            uint64_t t = now_ns();
            for (long k = 0; k < o->inflight; k++)
                cs[i].sent_at[(cs[i].head + cs[i].n++) % MAX_INFLIGHT] = t;
            cs[i].tx_pending = o->size * o->inflight;
            if (flush_tx(&cs[i]) != 0)
                die("write");
        }
    }
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= measure_at) {
            reset();
            measuring = 1;
        }
        if (t >= end)
            break;
        if (interval > 0) { /* the offered load: send what is due, where there is room */
            for (long tries = 0; next_send <= (double)t && tries < o->active; tries++) {
                struct conn *c = &cs[rr++ % o->active];
                if (c->n >= o->inflight)
                    continue;
                c->sent_at[(c->head + c->n++) % MAX_INFLIGHT] = (uint64_t)next_send; /* due time: no coordinated omission */
                c->tx_pending += o->size;
                if (flush_tx(c) != 0)
                    die("write");
                next_send += interval;
                tries = -1;
            }
            if (next_send < (double)t - 1e9) /* more than a second behind: the load cannot be carried */
                next_send = (double)t;
        }
        /* sleep until data comes, or (at a fixed rate) the next send is due */
        struct timespec ts = {0, 0}, *timeout = o->busy ? &ts : NULL;
        if (!o->busy && interval > 0) {
            double wait = next_send - (double)now_ns();
            ts.tv_nsec = wait > 0 ? (long)(wait < 999999999 ? wait : 999999999) : 0;
            timeout = &ts;
        } else if (!o->busy) {
            ts.tv_nsec = 100000000;
            timeout = &ts;
        }
        int n = epoll_pwait2(ep, evs, 256, timeout, NULL);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT && flush_tx(c) != 0)
                die("write");
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    fprintf(stderr, "rpcbench: the server closed a connection\n");
                    return 1;
                }
                if (r < 0)
                    break;
                c->rx_partial += r;
                uint64_t got = now_ns();
                while (c->rx_partial >= o->size && c->n > 0) {
                    c->rx_partial -= o->size;
                    record(got - c->sent_at[c->head]);
                    c->head = (c->head + 1) % MAX_INFLIGHT;
                    c->n--;
                    res->done++;
                    if (interval == 0) { /* closed loop: the next one at once */
                        c->sent_at[(c->head + c->n++) % MAX_INFLIGHT] = got;
                        c->tx_pending += o->size;
                    }
                }
                if (flush_tx(c) != 0)
                    die("write");
            }
            struct epoll_event ev = {.events = EPOLLIN | (c->tx_pending ? EPOLLOUT : 0), .data.ptr = c};
            if (c->tx_pending || (evs[i].events & EPOLLOUT))
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    res->secs = (double)(now_ns() - measure_at) / 1e9;
    return 0;
}

/* ---- connection rate ----------------------------------------------------------------- */

enum { C_CONNECTING, C_WAITING };

struct slot {
    int fd, state;
    long got;
    uint64_t started;
};

static void slot_start(struct slot *s, const struct sockaddr_in *a, int ep)
{
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0)
        die("socket");
    nodelay(s->fd);
    s->started = now_ns();
    s->got = 0;
    s->state = C_CONNECTING;
    if (connect(s->fd, (const struct sockaddr *)a, sizeof *a) != 0 && errno != EINPROGRESS)
        die("connect");
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static int connrate(const char *ip, const char *port, const struct opts *o)
{
    static char buf[256];
    struct sockaddr_in a = address(ip, port);
    struct slot *ss = calloc((size_t)o->parallel, sizeof *ss);
    int ep = epoll_create1(0);
    if (ss == NULL || ep < 0)
        die("setup");
    for (long i = 0; i < o->parallel; i++)
        slot_start(&ss[i], &a, ep);
    uint64_t start = now_ns(), measure_at = start + (uint64_t)(o->warmup * 1e9),
             end = measure_at + (uint64_t)(o->time * 1e9);
    int measuring = 0;
    struct epoll_event evs[256];
    while (now_ns() < end) {
        if (!measuring && now_ns() >= measure_at) {
            reset();
            measuring = 1;
        }
        int n = epoll_wait(ep, evs, 256, o->busy ? 0 : 100);
        for (int i = 0; i < n; i++) {
            struct slot *s = evs[i].data.ptr;
            int again = 0;
            if (s->state == C_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || write(s->fd, zeros, 64) != 64) {
                    res->failed++;
                    again = 1;
                } else {
                    s->state = C_WAITING;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                }
            } else {
                ssize_t r;
                while ((r = read(s->fd, buf, sizeof buf)) > 0)
                    s->got += r;
                if (s->got >= 64) {
                    record(now_ns() - s->started);
                    res->done++;
                    again = 1;
                } else if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    res->failed++;
                    again = 1;
                }
            }
            if (again) {
                close(s->fd);
                slot_start(s, &a, ep);
            }
        }
    }
    res->secs = (double)(now_ns() - measure_at) / 1e9;
    return 0;
}

/* Run a client mode in o->procs processes (each its share of the
 * connections and of the rate), then print the sum. */
static int run_procs(int (*fn)(const char *, const char *, const struct opts *), const char *ip, const char *port,
                     const struct opts *o, const char *count, const char *rate)
{
    int np = (int)o->procs;
    struct result *rs = mmap(NULL, sizeof *rs * (size_t)np, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rs == MAP_FAILED)
        die("mmap");
    for (int i = 0, first = 0; i < np; i++) {
        struct opts mine = *o;
        mine.conns = o->conns / np + (i < o->conns % np);
        if (o->ports_from) { /* each process its own run of ports */
            mine.ports_from = o->ports_from + first;
            first += (int)mine.conns;
        }
        mine.active = o->active / np + (i < o->active % np);
        mine.parallel = o->parallel / np + (i < o->parallel % np);
        mine.rate = o->rate / np;
        if ((fn == client && mine.conns < 1) || (fn == connrate && mine.parallel < 1)) {
            fprintf(stderr, "rpcbench: fewer connections than processes\n");
            return 2;
        }
        pid_t pid = np == 1 ? 0 : fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            res = &rs[i];
            int rc = fn(ip, port, &mine);
            if (np == 1)
                return rc == 0 ? (report(rs, 1, count, rate), 0) : rc;
            _exit(rc);
        }
    }
    int bad = 0, st;
    while (wait(&st) > 0)
        bad |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    if (bad)
        return 1;
    report(rs, np, count, rate);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    struct opts o;
    if (argc >= 3 && strcmp(argv[1], "server") == 0) {
        parse(argc, argv, 3, &o);
        server(argv[2], o.busy, (int)o.procs);
    }
    if (argc >= 4 && strcmp(argv[1], "client") == 0) {
        parse(argc, argv, 4, &o);
        return run_procs(client, argv[2], argv[3], &o, "rpcs", "rps");
    }
    if (argc >= 4 && strcmp(argv[1], "connrate") == 0) {
        parse(argc, argv, 4, &o);
        return run_procs(connrate, argv[2], argv[3], &o, "connections", "cps");
    }
    fprintf(stderr, "usage: see the comment at the top of tools/rpcbench.c\n");
    return 2;
}
