/*
 * LD_PRELOAD entry points (docs/sockets.md): every call that may concern a
 * socket asks sock.c whether the fd (or address) is tasd's; if not, or if
 * sock.c says TS_PASS, libc does the call as if libtas were not there.
 * This file decides nothing; it only dispatches.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define EXPORT __attribute__((visibility("default")))

struct libc_fns libc_;

static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_shutdown)(int, int);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_ioctl)(int, unsigned long, ...);
static int (*real_dup)(int);
static int (*real_close_range)(unsigned, unsigned, int);
static int (*real_select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
static int (*real_pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static int (*real_epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
static long (*real_syscall)(long, ...);

static void *next_sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p == NULL) {
        fprintf(stderr, "libtas: libc has no %s\n", name);
        abort();
    }
    return p;
}

static void resolve(void)
{
#define R(field, name) __atomic_store_n((void **)&(field), next_sym(name), __ATOMIC_RELAXED)
    R(libc_.socket, "socket");
    R(libc_.bind, "bind");
    R(libc_.listen, "listen");
    R(libc_.connect, "connect");
    R(libc_.getsockname, "getsockname");
    R(libc_.getsockopt, "getsockopt");
    R(libc_.close, "close");
    R(libc_.dup2, "dup2");
    R(libc_.dup3, "dup3");
    R(libc_.fcntl, "fcntl");
    R(libc_.read, "read");
    R(libc_.write, "write");
    R(libc_.poll, "poll");
    R(libc_.ppoll, "ppoll");
    R(libc_.epoll_ctl, "epoll_ctl");
    R(libc_.epoll_pwait, "epoll_pwait");
    R(real_readv, "readv");
    R(real_writev, "writev");
    R(real_recv, "recv");
    R(real_send, "send");
    R(real_recvfrom, "recvfrom");
    R(real_sendto, "sendto");
    R(real_recvmsg, "recvmsg");
    R(real_sendmsg, "sendmsg");
    R(real_accept4, "accept4");
    R(real_shutdown, "shutdown");
    R(real_getpeername, "getpeername");
    R(real_setsockopt, "setsockopt");
    R(real_ioctl, "ioctl");
    R(real_dup, "dup");
    R(real_close_range, "close_range");
    R(real_select, "select");
    R(real_pselect, "pselect");
    R(real_epoll_wait, "epoll_wait");
    R(real_sendfile, "sendfile");
    R(real_epoll_pwait2, "epoll_pwait2");
    R(real_syscall, "syscall");
#undef R
}

/* Called before any use: a program may call us before our constructor ran. */
#define READY() \
    do { \
        if (__builtin_expect(libc_.close == NULL, 0)) \
            resolve(); \
    } while (0)

__attribute__((constructor)) static void interpose_init(void) { READY(); }

/* ---- sockets ---- */

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    READY();
    int rc = ts_bind(fd, addr, len);
    return rc != TS_PASS ? rc : libc_.bind(fd, addr, len);
}

EXPORT int listen(int fd, int backlog)
{
    READY();
    int rc = ts_listen(fd, backlog);
    return rc != TS_PASS ? rc : libc_.listen(fd, backlog);
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    READY();
    int rc = ts_connect(fd, addr, len);
    return rc != TS_PASS ? rc : libc_.connect(fd, addr, len);
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    READY();
    if (ts_owns(fd)) {
        int rc = ts_accept4(fd, addr, len, flags);
        if (rc != TS_PASS)
            return rc;
    }
    return real_accept4(fd, addr, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len) { return accept4(fd, addr, len, 0); }

EXPORT int shutdown(int fd, int how)
{
    READY();
    if (ts_owns(fd)) {
        int rc = ts_shutdown(fd, how);
        if (rc != TS_PASS)
            return rc;
    }
    return real_shutdown(fd, how);
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    READY();
    if (ts_owns(fd)) {
        int rc = ts_getsockname(fd, addr, len);
        if (rc != TS_PASS)
            return rc;
    }
    return libc_.getsockname(fd, addr, len);
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    READY();
    if (ts_owns(fd)) {
        int rc = ts_getpeername(fd, addr, len);
        if (rc != TS_PASS)
            return rc;
    }
    return real_getpeername(fd, addr, len);
}

EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    READY();
    if (ts_owns(fd)) {
        int rc = ts_getsockopt(fd, level, name, val, len);
        if (rc != TS_PASS)
            return rc;
    }
    return libc_.getsockopt(fd, level, name, val, len);
}

EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    READY();
    if (ts_owns(fd)) {
        int rc = ts_setsockopt(fd, level, name, val, len);
        if (rc != TS_PASS)
            return rc;
    }
    return real_setsockopt(fd, level, name, val, len);
}

/* ---- data ---- */

static ssize_t recv_one(int fd, void *buf, size_t len, int flags)
{
    struct iovec v = {buf, len};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    return ts_recvmsg(fd, &m, flags);
}

static ssize_t send_one(int fd, const void *buf, size_t len, int flags)
{
    struct iovec v = {(void *)buf, len};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    return ts_sendmsg(fd, &m, flags);
}

EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = recv_one(fd, buf, len, 0);
        if (rc != TS_PASS)
            return rc;
    }
    return libc_.read(fd, buf, len);
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    if (len > buflen)
        abort(); /* what glibc's checking version does */
    return read(fd, buf, len);
}

EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = send_one(fd, buf, len, 0);
        if (rc != TS_PASS)
            return rc;
    }
    return libc_.write(fd, buf, len);
}

/* readv or writev on a tasd socket: TS_PASS if fd is not one */
static ssize_t vector_io(int fd, const struct iovec *iov, int n, int send)
{
    if (!ts_owns(fd))
        return TS_PASS;
    if (n < 0 || n > IOV_MAX) {
        errno = EINVAL;
        return -1;
    }
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    return send ? ts_sendmsg(fd, &m, 0) : ts_recvmsg(fd, &m, 0);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    READY();
    ssize_t rc = vector_io(fd, iov, n, 0);
    return rc != TS_PASS ? rc : real_readv(fd, iov, n);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
    READY();
    ssize_t rc = vector_io(fd, iov, n, 1);
    return rc != TS_PASS ? rc : real_writev(fd, iov, n);
}

EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = recv_one(fd, buf, len, flags);
        if (rc != TS_PASS)
            return rc;
    }
    return real_recv(fd, buf, len, flags);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    if (len > buflen)
        abort();
    return recv(fd, buf, len, flags);
}

EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = send_one(fd, buf, len, flags);
        if (rc != TS_PASS)
            return rc;
    }
    return real_send(fd, buf, len, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = recv_one(fd, buf, len, flags);
        if (rc != TS_PASS) {
            if (rc >= 0 && alen)
                *alen = 0; /* a TCP socket names no sender (Linux leaves addr alone) */
            return rc;
        }
    }
    return real_recvfrom(fd, buf, len, flags, addr, alen);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *addr,
                              socklen_t *alen)
{
    if (len > buflen)
        abort();
    return recvfrom(fd, buf, len, flags, addr, alen);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t alen)
{
    READY();
    if (ts_owns(fd)) {
        /* Linux ignores the address on a connected TCP socket */
        ssize_t rc = send_one(fd, buf, len, flags);
        if (rc != TS_PASS)
            return rc;
    }
    return real_sendto(fd, buf, len, flags, addr, alen);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = ts_recvmsg(fd, m, flags);
        if (rc != TS_PASS)
            return rc;
    }
    return real_recvmsg(fd, m, flags);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    READY();
    if (ts_owns(fd)) {
        ssize_t rc = ts_sendmsg(fd, m, flags);
        if (rc != TS_PASS)
            return rc;
    }
    return real_sendmsg(fd, m, flags);
}

/* A file's bytes into a tasd socket: read here, sent like write(2). */
EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
    READY();
    if (!ts_owns(out))
        return real_sendfile(out, in, offset, count);
    char buf[65536];
    size_t total = 0;
    off_t pos = offset ? *offset : 0;
    while (total < count) {
        size_t want = count - total < sizeof buf ? count - total : sizeof buf;
        ssize_t n = offset ? pread(in, buf, want, pos) : libc_.read(in, buf, want);
        if (n <= 0) {
            if (n < 0 && total == 0)
                return -1;
            break;
        }
        ssize_t w = send_one(out, buf, (size_t)n, 0);
        if (w < 0) {
            if (!offset)
                lseek(in, -n, SEEK_CUR);
            if (total == 0)
                return -1;
            break;
        }
        total += (size_t)w;
        pos += w;
        if (w < n) { /* a non-blocking socket is full */
            if (!offset)
                lseek(in, -(n - w), SEEK_CUR);
            break;
        }
    }
    if (offset)
        *offset = pos;
    return (ssize_t)total;
}

EXPORT ssize_t sendfile64(int out, int in, off_t *offset, size_t count) { return sendfile(out, in, offset, count); }

/* ---- descriptors ---- */

EXPORT int close(int fd)
{
    READY();
    if (ts_owns(fd))
        ts_forget(fd);
    return libc_.close(fd);
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    READY();
    if (!(flags & CLOSE_RANGE_CLOEXEC) && ts_active())
        for (unsigned fd = first; fd <= last && fd < (1u << 20); fd++)
            if (ts_owns((int)fd))
                ts_forget((int)fd);
    return real_close_range(first, last, flags);
}

EXPORT int dup(int fd)
{
    READY();
    int r = real_dup(fd);
    if (r >= 0 && ts_owns(fd))
        ts_dup(fd, r);
    return r;
}

EXPORT int dup3(int old, int new, int flags)
{
    READY();
    if (old != new && ts_owns(new) && fcntl(old, F_GETFD) >= 0)
        ts_forget(new); /* dup3 closes it */
    int r = libc_.dup3(old, new, flags);
    if (r >= 0 && ts_owns(old))
        ts_dup(old, new);
    return r;
}

EXPORT int dup2(int old, int new)
{
    READY();
    if (old == new)
        return libc_.dup2(old, new);
    if (ts_owns(new) && libc_.fcntl(old, F_GETFD) >= 0)
        ts_forget(new);
    int r = libc_.dup2(old, new);
    if (r >= 0 && ts_owns(old))
        ts_dup(old, new);
    return r;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
    READY();
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    if (ts_owns(fd)) {
        if (cmd == F_GETFL || cmd == F_SETFL) {
            int rc = ts_fcntl(fd, cmd, arg);
            if (rc != TS_PASS)
                return rc;
        } else if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
            int r = libc_.fcntl(fd, cmd, arg);
            if (r >= 0)
                ts_dup(fd, r);
            return r;
        }
    }
    return libc_.fcntl(fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return fcntl(fd, cmd, arg);
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
    READY();
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (ts_owns(fd)) {
        int rc = ts_ioctl(fd, req, arg);
        if (rc != TS_PASS)
            return rc;
    }
    return real_ioctl(fd, req, arg);
}

/* ---- readiness ---- */

static int any_ours(const struct pollfd *fds, nfds_t n)
{
    if (!ts_active())
        return 0;
    for (nfds_t i = 0; i < n; i++)
        if (ts_owns(fds[i].fd))
            return 1;
    return 0;
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    READY();
    if (any_ours(fds, n))
        return ts_poll(fds, n, timeout, NULL);
    return libc_.poll(fds, n, timeout);
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        abort();
    return poll(fds, n, timeout);
}

static int timespec_ms(const struct timespec *t)
{
    if (t == NULL)
        return -1;
    long long ms = (long long)t->tv_sec * 1000 + (t->tv_nsec + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask)
{
    READY();
    if (any_ours(fds, n))
        return ts_poll(fds, n, timespec_ms(t), mask);
    return libc_.ppoll(fds, n, t, mask);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        abort();
    return ppoll(fds, n, t, mask);
}

/* select and pselect on tasd sockets: the same wait as poll. */
static int select_ours(int nfds, fd_set *r, fd_set *w, fd_set *x, int timeout_ms, const sigset_t *mask)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    struct pollfd p[FD_SETSIZE];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = 0;
        if (r && FD_ISSET(fd, r))
            ev |= POLLIN;
        if (w && FD_ISSET(fd, w))
            ev |= POLLOUT;
        if (x && FD_ISSET(fd, x))
            ev |= POLLPRI;
        if (ev)
            p[n++] = (struct pollfd){.fd = fd, .events = ev};
    }
    int rc = ts_poll(p, n, timeout_ms, mask);
    if (rc < 0)
        return rc;
    for (nfds_t i = 0; i < n; i++)
        if (p[i].revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    if (r)
        FD_ZERO(r);
    if (w)
        FD_ZERO(w);
    if (x)
        FD_ZERO(x);
    int count = 0;
    for (nfds_t i = 0; i < n; i++) {
        short re = p[i].revents;
        /* as Linux: readable on data, end or error; writable likewise */
        if (r && (p[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) {
            FD_SET(p[i].fd, r);
            count++;
        }
        if (w && (p[i].events & POLLOUT) && (re & (POLLOUT | POLLERR))) {
            FD_SET(p[i].fd, w);
            count++;
        }
        if (x && (p[i].events & POLLPRI) && (re & POLLPRI)) {
            FD_SET(p[i].fd, x);
            count++;
        }
    }
    return count;
}

static int sets_have_ours(int nfds, fd_set *r, fd_set *w, fd_set *x)
{
    if (!ts_active() || nfds > FD_SETSIZE)
        return 0;
    for (int fd = 0; fd < nfds; fd++)
        if (((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (x && FD_ISSET(fd, x))) && ts_owns(fd))
            return 1;
    return 0;
}

EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
    READY();
    if (!sets_have_ours(nfds, r, w, x))
        return real_select(nfds, r, w, x, tv);
    int ms = -1;
    if (tv) {
        long long t = (long long)tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000;
        ms = t > 0x7fffffff ? 0x7fffffff : (int)t;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = select_ours(nfds, r, w, x, ms, NULL);
    if (tv) { /* Linux leaves the time not slept */
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long long used = (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000;
        long long left = (long long)tv->tv_sec * 1000000 + tv->tv_usec - used;
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000;
        tv->tv_usec = left % 1000000;
    }
    return rc;
}

EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *x, const struct timespec *t, const sigset_t *mask)
{
    READY();
    if (!sets_have_ours(nfds, r, w, x))
        return real_pselect(nfds, r, w, x, t, mask);
    return select_ours(nfds, r, w, x, timespec_ms(t), mask);
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    READY();
    if (ts_owns(fd) || ts_owns(epfd)) {
        int rc = ts_epoll_ctl(epfd, op, fd, ev);
        if (rc != TS_PASS)
            return rc;
    }
    return libc_.epoll_ctl(epfd, op, fd, ev);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int max, int timeout, const sigset_t *mask)
{
    READY();
    if (ts_owns(epfd))
        return ts_epoll_wait(epfd, events, max, timeout, mask);
    return libc_.epoll_pwait(epfd, events, max, timeout, mask);
}

EXPORT int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
    READY();
    if (ts_owns(epfd))
        return ts_epoll_wait(epfd, events, max, timeout, NULL);
    return real_epoll_wait(epfd, events, max, timeout);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *events, int max, const struct timespec *t, const sigset_t *mask)
{
    READY();
    if (ts_owns(epfd))
        return ts_epoll_wait(epfd, events, max, timespec_ms(t), mask);
    return real_epoll_pwait2(epfd, events, max, t, mask);
}

/* ---- the raw entry ---- */

/* Runtimes that make system calls through syscall(2) reach the same
 * dispatch.  io_uring is refused (ENOSYS): its rings would carry socket
 * operations past libtas (libuv, for one, then falls back to epoll_ctl). */
EXPORT long syscall(long nr, ...)
{
    READY();
    va_list ap;
    va_start(ap, nr);
    long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long);
    long d = va_arg(ap, long), e = va_arg(ap, long), f = va_arg(ap, long);
    va_end(ap);
    switch (nr) {
    case SYS_io_uring_setup:
        errno = ENOSYS;
        return -1;
    case SYS_read: return read((int)a, (void *)b, (size_t)c);
    case SYS_write: return write((int)a, (const void *)b, (size_t)c);
    case SYS_readv: return readv((int)a, (const struct iovec *)b, (int)c);
    case SYS_writev: return writev((int)a, (const struct iovec *)b, (int)c);
    case SYS_close: return close((int)a);
    case SYS_dup: return dup((int)a);
    case SYS_dup2: return dup2((int)a, (int)b);
    case SYS_dup3: return dup3((int)a, (int)b, (int)c);
    case SYS_fcntl: return fcntl((int)a, (int)b, c);
    case SYS_ioctl: return ioctl((int)a, (unsigned long)b, (void *)c);
    case SYS_bind: return bind((int)a, (const struct sockaddr *)b, (socklen_t)c);
    case SYS_listen: return listen((int)a, (int)b);
    case SYS_connect: return connect((int)a, (const struct sockaddr *)b, (socklen_t)c);
    case SYS_accept: return accept((int)a, (struct sockaddr *)b, (socklen_t *)c);
    case SYS_accept4: return accept4((int)a, (struct sockaddr *)b, (socklen_t *)c, (int)d);
    case SYS_shutdown: return shutdown((int)a, (int)b);
    case SYS_getsockname: return getsockname((int)a, (struct sockaddr *)b, (socklen_t *)c);
    case SYS_getpeername: return getpeername((int)a, (struct sockaddr *)b, (socklen_t *)c);
    case SYS_getsockopt: return getsockopt((int)a, (int)b, (int)c, (void *)d, (socklen_t *)e);
    case SYS_setsockopt: return setsockopt((int)a, (int)b, (int)c, (const void *)d, (socklen_t)e);
    case SYS_sendto:
        return sendto((int)a, (const void *)b, (size_t)c, (int)d, (const struct sockaddr *)e, (socklen_t)f);
    case SYS_recvfrom: return recvfrom((int)a, (void *)b, (size_t)c, (int)d, (struct sockaddr *)e, (socklen_t *)f);
    case SYS_sendmsg: return sendmsg((int)a, (const struct msghdr *)b, (int)c);
    case SYS_recvmsg: return recvmsg((int)a, (struct msghdr *)b, (int)c);
    case SYS_poll: return poll((struct pollfd *)a, (nfds_t)b, (int)c);
    case SYS_ppoll:
        return ppoll((struct pollfd *)a, (nfds_t)b, (const struct timespec *)c, (const sigset_t *)d);
    case SYS_epoll_ctl: return epoll_ctl((int)a, (int)b, (int)c, (struct epoll_event *)d);
    case SYS_epoll_wait: return epoll_wait((int)a, (struct epoll_event *)b, (int)c, (int)d);
    case SYS_epoll_pwait: return epoll_pwait((int)a, (struct epoll_event *)b, (int)c, (int)d, (const sigset_t *)e);
    case SYS_close_range: return close_range((unsigned)a, (unsigned)b, (int)c);
    default: return real_syscall(nr, a, b, c, d, e, f);
    }
}
