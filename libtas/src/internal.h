/*
 * libtas internals shared by its layers (see docs/sockets.md); not part of
 * the API and not exported.
 */
#ifndef LIBTAS_INTERNAL_H
#define LIBTAS_INTERNAL_H

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "tas.h"

/* ---- tas.c, for the sockets layer ---- */

/* Copy up to len ready bytes, from off on, without consuming them (MSG_PEEK). */
size_t tas_peek_(const struct tas_conn *c, void *buf, size_t len, size_t off);
/* The peer's FIN came (recv returns 0 once the data is read). */
int tas_conn_fin_(const struct tas_conn *c);
/* The connection's error (a positive errno), 0 if none. */
int tas_conn_error_(const struct tas_conn *c);
/* Bytes sent and not yet acknowledged; the receive buffer's size. */
size_t tas_tx_used_(const struct tas_conn *c);
size_t tas_rx_size_(const struct tas_conn *c);

/* tas_app_open with registration flags (enum tas_reg_flag). */
int tas_app_open_(const char *socket_path, const char *name, uint32_t flags, struct tas_app **out);
/* After fork, in the child: register as another process of the app. */
int tas_app_join_(const struct tas_app *parent, struct tas_app **out);
/* A handle in ctx for the app's listener id (inherited from the parent). */
struct tas_listener *tas_listener_adopt_(struct tas_ctx *c, uint32_t id, uint16_t port);
uint32_t tas_listener_id_(const struct tas_listener *l);

/* fork (docs/sockets.md): the parent registers its child-to-be, holding
 * what it holds (a socket for the child, or -errno); the child joins with
 * it; a holder lets go of what it never used; a child takes a connection. */
struct tas_hold;
int tas_fork_prepare_(const struct tas_app *a, const struct tas_hold *holds, uint32_t n);
int tas_app_join_fd_(const struct tas_app *parent, int sock, struct tas_app **out);
void tas_app_drop_sock_(struct tas_app *a);
int tas_release_(int sock, const struct tas_hold *holds, uint32_t n);
void tas_conn_ids_(const struct tas_conn *c, uint32_t *flow, uint32_t *gen);
void tas_conn_share_(struct tas_conn *c);
struct tas_conn *tas_conn_take_(struct tas_ctx *ctx, struct tas_conn *copy, int *err);
int tas_conn_taking_(const struct tas_conn *c);

/* TCP_INFO's numbers from tasd: ask, then poll until answered (1). */
struct tas_qe_info;
int tas_conn_ask_info_(struct tas_conn *c);
int tas_conn_info_(const struct tas_conn *c, struct tas_qe_info *out);

/* ---- libc's own functions, past the interposition (interpose.c) ---- */

struct libc_fns {
    int (*socket)(int, int, int);
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*close)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
};
extern struct libc_fns libc_;

/* ---- sock.c, for the interposition ---- */

/* A call the sockets layer leaves to libc (the fd or address is not tasd's). */
#define TS_PASS (-2)

/* Is fd one of tasd's sockets?  Lock-free: the interposition asks this
 * before every call on an fd, and most fds are not ours. */
int ts_owns(int fd);
/* Does the process have any tasd socket (or epoll set with one)? */
int ts_active(void);

int ts_bind(int fd, const struct sockaddr *addr, socklen_t len);
int ts_listen(int fd, int backlog);
int ts_connect(int fd, const struct sockaddr *addr, socklen_t len);
int ts_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
ssize_t ts_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t ts_sendmsg(int fd, const struct msghdr *msg, int flags);
int ts_shutdown(int fd, int how);
int ts_close(int fd);
int ts_getsockname(int fd, struct sockaddr *addr, socklen_t *len);
int ts_getpeername(int fd, struct sockaddr *addr, socklen_t *len);
int ts_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int ts_setsockopt(int fd, int level, int name, const void *val, socklen_t len);
int ts_fcntl(int fd, int cmd, long arg);
int ts_ioctl(int fd, unsigned long req, void *arg);
/* After libc made newfd a duplicate of oldfd (dup, dup2, dup3, F_DUPFD). */
void ts_dup(int oldfd, int newfd);
/* Before libc closes or replaces fd (close, dup2 onto it): forget it. */
void ts_forget(int fd);

/* Readiness, for sets that may mix tasd sockets and kernel fds. */
int ts_poll(struct pollfd *fds, nfds_t n, int timeout_ms, const sigset_t *sigmask);
int ts_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int ts_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms, const sigset_t *sigmask);

#endif /* LIBTAS_INTERNAL_H */
