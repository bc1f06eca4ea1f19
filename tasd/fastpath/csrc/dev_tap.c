/*
 * TAP backend: one file descriptor per queue of a (multi-queue) TAP device,
 * one frame per read() or write().  Portable and slow; AF_XDP is the main
 * backend.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "dev.h"
#include "fastpath.h"

struct tap_dev {
    struct fp_dev base;
    struct fp_pool pool;
    int fd;
};

static unsigned tap_rx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct tap_dev *t = (struct tap_dev *)d;
    unsigned got = 0;
    while (got < n) {
        if (fp_pool_get(&t->pool, &bufs[got], 1) != 1)
            break;
        ssize_t r = read(t->fd, bufs[got].data, bufs[got].cap);
        if (r <= 0) {
            fp_pool_put(&t->pool, &bufs[got], 1);
            break; /* EAGAIN: nothing more now; errors show up again on the next call */
        }
        bufs[got].len = (uint32_t)r;
        got++;
    }
    return got;
}

static unsigned tap_alloc(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    return fp_pool_get(&((struct tap_dev *)d)->pool, bufs, n);
}

static unsigned tap_tx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct tap_dev *t = (struct tap_dev *)d;
    unsigned sent = 0;
    for (unsigned i = 0; i < n; i++) {
        if (bufs[i].len <= d->max_frame && write(t->fd, bufs[i].data, bufs[i].len) == (ssize_t)bufs[i].len)
            sent++;
        else
            bufs[i].len = 0;
    }
    fp_pool_put(&t->pool, bufs, n);
    return sent;
}

static void tap_release(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    fp_pool_put(&((struct tap_dev *)d)->pool, bufs, n);
}

static int tap_rx_pending(struct fp_dev *d)
{
    (void)d;
    return 0; /* the fd is level-triggered: poll() sees pending frames */
}

static void tap_close(struct fp_dev *d)
{
    struct tap_dev *t = (struct tap_dev *)d;
    fp_pool_fini(&t->pool);
    free(t);
}

static const struct fp_dev_ops tap_ops = {
    .rx = tap_rx,
    .alloc = tap_alloc,
    .tx = tap_tx,
    .release = tap_release,
    .rx_pending = tap_rx_pending,
    .close = tap_close,
};

struct fp_dev *fp_dev_tap_open(int fd, uint32_t mtu, uint32_t nbufs, char *err, size_t errlen)
{
    struct tap_dev *t = calloc(1, sizeof *t);
    if (t == NULL || fp_pool_init(&t->pool, nbufs, 2048) != 0) {
        snprintf(err, errlen, "out of memory for TAP buffers");
        free(t);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "TAP fd %d: %s", fd, strerror(errno));
        tap_close(&t->base);
        return NULL;
    }
    t->fd = fd;
    t->base.ops = &tap_ops;
    t->base.kind = "tap";
    t->base.wait_fd = fd;
    t->base.max_frame = mtu + 14;
    return &t->base;
}

int fp_tap_open_queues(const char *ifname, uint32_t nqueues, int *fds, char *err, size_t errlen)
{
    if (nqueues == 0 || nqueues > FP_MAX_WORKERS || strlen(ifname) >= IFNAMSIZ) {
        snprintf(err, errlen, "bad TAP request (%s, %u queues)", ifname, nqueues);
        return -1;
    }
    for (uint32_t i = 0; i < nqueues; i++) {
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            snprintf(err, errlen, "/dev/net/tun: %s", strerror(errno));
            goto fail;
        }
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
        /* Always ask for a multi-queue device (so that a worker can be added
         * later); a single-queue device made by someone else accepts one
         * queue opened without the flag. */
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
        int rc = ioctl(fd, TUNSETIFF, &ifr);
        if (rc < 0 && errno == EINVAL && nqueues == 1) {
            ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
            rc = ioctl(fd, TUNSETIFF, &ifr);
        }
        if (rc < 0) {
            snprintf(err, errlen, "TAP %s: %s%s", ifname, strerror(errno),
                     errno == EINVAL ? " (exists with other flags, or not a TAP device?)"
                     : errno == EBUSY ? " (in use by another process?)"
                                      : "");
            close(fd);
            goto fail;
        }
        fds[i] = fd;
        continue;
    fail:
        while (i-- > 0)
            close(fds[i]);
        return -1;
    }
    return 0;
}
