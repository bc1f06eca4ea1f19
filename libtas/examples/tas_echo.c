/*
 * tas-echo: a TCP echo server on libtas's low-level API, the smallest real
 * program on tasd.  One context, one thread: poll events, move what arrived
 * back out, close when the peer has closed and everything is echoed.
 *
 *   tas-echo PORT      (tasd's app socket from $TASD_APP_SOCKET)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tas.h"

#define MAX_EVENTS 256
#define SPIN 2000 /* empty polls before sleeping */

static char buf[1 << 16];
static FILE *report; /* $TAS_ECHO_REPORT: one line per connection at its end */

struct totals {
    uint64_t rx, tx;
};

static void echo(struct tas_conn *c)
{
    for (;;) {
        size_t n = tas_rx_ready(c), room = tas_tx_space(c);
        if (n > room)
            n = room;
        if (n > sizeof buf)
            n = sizeof buf;
        if (n == 0)
            break;
        ssize_t got = tas_recv(c, buf, n);
        if (got <= 0)
            break;
        struct totals *t = tas_conn_user(c);
        if (t) {
            t->rx += (uint64_t)got;
            t->tx += (uint64_t)got;
        }
        if (tas_send(c, buf, (size_t)got) != got) { /* cannot happen: the room was checked */
            fprintf(stderr, "tas-echo: short send\n");
            tas_abort(c);
            return;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (getenv("TAS_ECHO_REPORT"))
        report = fopen(getenv("TAS_ECHO_REPORT"), "w");
    struct tas_app *app;
    struct tas_ctx *ctx;
    int rc = tas_app_open(NULL, "tas-echo", &app);
    if (rc == 0)
        rc = tas_ctx_open(app, &ctx);
    if (rc == 0)
        rc = tas_listen(ctx, (uint16_t)atoi(argv[1]), 4096, 0, 0);
    if (rc != 0) {
        fprintf(stderr, "tas-echo: %s\n", strerror(-rc));
        return 1;
    }
    struct tas_event ev[MAX_EVENTS];
    unsigned idle = 0;
    for (;;) {
        int n = tas_poll(ctx, ev, MAX_EVENTS);
        for (int i = 0; i < n; i++) {
            struct tas_conn *c = ev[i].conn;
            switch (ev[i].type) {
            case TAS_EV_LISTENED:
                if (ev[i].status) {
                    fprintf(stderr, "tas-echo: listen: %s\n", strerror(ev[i].status));
                    return 1;
                }
                tas_accept(ev[i].listener, 4096);
                printf("{\"listening\": %u}\n", tas_listener_port(ev[i].listener));
                fflush(stdout);
                break;
            case TAS_EV_ACCEPTED:
                tas_accept(ev[i].listener, 1);
                if (report)
                    tas_conn_set_user(c, calloc(1, sizeof(struct totals)));
                break;
            case TAS_EV_DATA:
            case TAS_EV_TX_SPACE:
            case TAS_EV_FIN:
                echo(c);
                if (tas_rx_ready(c) == 0 && tas_recv(c, buf, 1) == 0) /* end of stream, all echoed */
                    tas_close(c);
                break;
            case TAS_EV_ERROR:
                tas_close(c);
                break;
            case TAS_EV_CLOSED: {
                struct totals *t = tas_conn_user(c);
                if (t) {
                    uint32_t ip;
                    uint16_t port;
                    tas_conn_peer(c, &ip, &port);
                    fprintf(report, "{\"port\": %u, \"rx\": %llu, \"tx\": %llu}\n", port,
                            (unsigned long long)t->rx, (unsigned long long)t->tx);
                    fflush(report);
                    free(t);
                }
                break;
            }
            default:
                break;
            }
        }
        if (n > 0) {
            idle = 0;
        } else if (++idle > SPIN) {
            tas_wait(ctx, -1);
            idle = 0;
        }
    }
}
