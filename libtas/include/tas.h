/*
 * libtas low-level API: what an application (or the sockets emulation
 * layered on it) calls to use tasd's TCP.
 *
 * An application registers once (tas_app_open) and opens a context per
 * thread (tas_ctx_open).  A context carries the queues to tasd; it is used
 * by one thread at a time.  Connections and listeners belong to the context
 * that made them: their events are delivered there.  Everything is
 * non-blocking except tas_wait; results of listen and connect, accepted
 * connections, arriving data, freed send space, the peer's FIN and errors
 * arrive as events from tas_poll.
 *
 * Functions returning int return 0 (or a count) on success and a negative
 * errno on failure.
 */
#ifndef LIBTAS_TAS_H
#define LIBTAS_TAS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TAS_EXPORT __attribute__((visibility("default")))

struct tas_app;
struct tas_ctx;
struct tas_conn;
struct tas_listener;

enum tas_event_type {
    TAS_EV_LISTENED = 1,  /* listener (NULL on failure), cookie, status */
    TAS_EV_ACCEPTED = 2,  /* listener, conn */
    TAS_EV_CONNECTED = 3, /* conn (NULL on failure), cookie, status */
    TAS_EV_DATA = 4,      /* conn, bytes: more data to receive */
    TAS_EV_TX_SPACE = 5,  /* conn, bytes: send space freed */
    TAS_EV_FIN = 6,       /* conn: the peer closed its side; recv returns 0 after the data */
    TAS_EV_ERROR = 7,     /* conn, status: the connection failed (ECONNRESET, ETIMEDOUT...) */
    TAS_EV_CLOSED = 8,    /* conn: gone for good after tas_close; the handle is valid until the next tas_poll */
};

struct tas_event {
    uint32_t type;        /* enum tas_event_type */
    int32_t status;       /* 0 or a positive errno */
    struct tas_conn *conn;
    struct tas_listener *listener;
    uint64_t cookie;      /* as given to tas_listen / tas_connect */
    uint32_t bytes;
    uint32_t _pad0;
};

/* Version of libtas, "MAJOR.MINOR.PATCH". */
TAS_EXPORT const char *tas_version(void);
/* TAS_ABI_VERSION of include/tasd/abi.h this library was built against. */
TAS_EXPORT uint32_t tas_abi_version(void);

/* Register with tasd at socket_path (NULL: $TASD_APP_SOCKET, else the
 * default /run/tasd/app.sock).  name identifies the app to operators. */
TAS_EXPORT int tas_app_open(const char *socket_path, const char *name, struct tas_app **app);
/* Unregister: tasd resets every connection the app still has. */
TAS_EXPORT void tas_app_close(struct tas_app *app);
/* The largest number of connections tasd allows this app. */
TAS_EXPORT uint32_t tas_app_max_conns(const struct tas_app *app);
/* tasd's address and network (prefix length), and its gateway (0: none);
 * addresses in network byte order. */
TAS_EXPORT void tas_app_address(const struct tas_app *app, uint32_t *ip, uint32_t *prefix_len, uint32_t *gateway);

TAS_EXPORT int tas_ctx_open(struct tas_app *app, struct tas_ctx **ctx);
/* A descriptor that polls readable when tas_wait would return (for event
 * loops: call tas_ctx_arm first, and tas_poll when it fires). */
TAS_EXPORT int tas_ctx_fd(const struct tas_ctx *ctx);
/* Take up to max events (max >= 3: one message can make three); returns how
 * many (0: none now). */
TAS_EXPORT int tas_poll(struct tas_ctx *ctx, struct tas_event *events, int max);
/* Prepare to sleep on tas_ctx_fd: returns 1 if events are already pending
 * (do not sleep), else 0; call tas_ctx_disarm after waking. */
TAS_EXPORT int tas_ctx_arm(struct tas_ctx *ctx);
TAS_EXPORT void tas_ctx_disarm(struct tas_ctx *ctx);
/* Block until events may be pending or timeout_ms passes (-1: forever). */
TAS_EXPORT int tas_wait(struct tas_ctx *ctx, int timeout_ms);

/* Listen on port (host byte order) of tasd's address; the result comes as
 * TAS_EV_LISTENED.  flags: TAS_LISTEN_REUSEPORT. */
#define TAS_LISTEN_REUSEPORT 2
TAS_EXPORT int tas_listen(struct tas_ctx *ctx, uint16_t port, uint32_t backlog, uint32_t flags, uint64_t cookie);
/* Let up to n more connections of the listener be accepted (events). */
TAS_EXPORT int tas_accept(struct tas_listener *l, uint32_t n);
TAS_EXPORT int tas_unlisten(struct tas_listener *l);
/* Connect to ip (network byte order):port from local port lport (0: any);
 * the result comes as TAS_EV_CONNECTED. */
TAS_EXPORT int tas_connect(struct tas_ctx *ctx, uint32_t ip, uint16_t port, uint16_t lport, uint64_t cookie);

/* Copy up to len bytes into the connection's send buffer and hand them to
 * tasd; returns the bytes taken, or -EAGAIN if there is no room, -EPIPE
 * after shutdown, -ECONNRESET... after an error. */
TAS_EXPORT ssize_t tas_send(struct tas_conn *c, const void *buf, size_t len);
/* Copy up to len received bytes out and free their space; returns the
 * bytes, 0 at end of stream, or -EAGAIN if nothing is there yet. */
TAS_EXPORT ssize_t tas_recv(struct tas_conn *c, void *buf, size_t len);
/* Bytes ready to receive, and room to send. */
TAS_EXPORT size_t tas_rx_ready(const struct tas_conn *c);
TAS_EXPORT size_t tas_tx_space(const struct tas_conn *c);
/* Send FIN after the data already sent.  Like tas_close and tas_abort, it
 * never fails for lack of room in a queue: what cannot go now goes with the
 * next tas_poll or tas_wait. */
TAS_EXPORT int tas_shutdown(struct tas_conn *c);
/* Done with the connection: FIN after the data (unless shut down already);
 * the handle stays valid until its TAS_EV_CLOSED. */
TAS_EXPORT int tas_close(struct tas_conn *c);
/* Reset the connection now; the handle stays valid until TAS_EV_CLOSED. */
TAS_EXPORT int tas_abort(struct tas_conn *c);

/* Keepalive (on: probe after idle_s without traffic, every intvl_s, give up
 * after cnt unanswered; 0 keeps tasd's default for each) and the user
 * timeout (TCP_USER_TIMEOUT, ms; 0: count retries).  Never fails for lack of
 * room in a queue; returns -EINVAL for a value tasd would refuse. */
TAS_EXPORT int tas_set_options(struct tas_conn *c, int keepalive, uint32_t idle_s, uint32_t intvl_s, uint32_t cnt,
                               uint32_t user_timeout_ms);

/* Addresses: IPv4 in network byte order, ports in host byte order. */
TAS_EXPORT void tas_conn_peer(const struct tas_conn *c, uint32_t *ip, uint16_t *port);
TAS_EXPORT uint16_t tas_conn_local_port(const struct tas_conn *c);
TAS_EXPORT uint16_t tas_listener_port(const struct tas_listener *l);
/* Opaque pointers the app may attach to its handles. */
TAS_EXPORT void tas_conn_set_user(struct tas_conn *c, void *user);
TAS_EXPORT void *tas_conn_user(const struct tas_conn *c);
TAS_EXPORT void tas_listener_set_user(struct tas_listener *l, void *user);
TAS_EXPORT void *tas_listener_user(const struct tas_listener *l);

#endif /* LIBTAS_TAS_H */
