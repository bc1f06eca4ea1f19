/*
 * Capture wrapper: a device that forwards to another and writes every frame
 * received from it or sent through it to a pcap file (nanosecond
 * timestamps, Ethernet link type), readable by tcpdump, tshark and
 * Wireshark.  Frames are written in the order the worker saw them.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dev.h"
#include "fastpath.h"

#define PCAP_MAGIC_NS 0xa1b23c4du
#define PCAP_SNAPLEN 65535
#define LINKTYPE_ETHERNET 1

struct pcap_dev {
    struct fp_dev base;
    struct fp_dev *inner;
    FILE *f;
};

struct pcap_file_hdr {
    uint32_t magic;
    uint16_t major, minor;
    int32_t thiszone;
    uint32_t sigfigs, snaplen, linktype;
};

struct pcap_rec_hdr {
    uint32_t sec, nsec, caplen, len;
};

static void record(struct pcap_dev *p, const struct fp_buf *bufs, unsigned n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (unsigned i = 0; i < n; i++) {
        struct pcap_rec_hdr h = {(uint32_t)ts.tv_sec, (uint32_t)ts.tv_nsec, bufs[i].len, bufs[i].len};
        fwrite(&h, sizeof h, 1, p->f);
        fwrite(bufs[i].data, 1, bufs[i].len, p->f);
    }
}

static unsigned pcap_rx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct pcap_dev *p = (struct pcap_dev *)d;
    unsigned got = fp_dev_rx(p->inner, bufs, n);
    if (got)
        record(p, bufs, got);
    return got;
}

static unsigned pcap_alloc(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    return fp_dev_alloc(((struct pcap_dev *)d)->inner, bufs, n);
}

static unsigned pcap_tx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct pcap_dev *p = (struct pcap_dev *)d;
    record(p, bufs, n); /* before the inner device takes the buffers */
    return fp_dev_tx(p->inner, bufs, n);
}

static void pcap_release(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    fp_dev_release(((struct pcap_dev *)d)->inner, bufs, n);
}

static int pcap_rx_pending(struct fp_dev *d)
{
    struct pcap_dev *p = (struct pcap_dev *)d;
    fflush(p->f); /* about to sleep: make what we have readable */
    return fp_dev_rx_pending(p->inner);
}

static void pcap_close(struct fp_dev *d)
{
    struct pcap_dev *p = (struct pcap_dev *)d;
    fclose(p->f);
    fp_dev_close(p->inner);
    free(p);
}

static void pcap_counters(struct fp_dev *d, struct tas_fp_stats *st)
{
    struct pcap_dev *p = (struct pcap_dev *)d;
    if (p->inner->ops->counters)
        p->inner->ops->counters(p->inner, st);
}

static const struct fp_dev_ops pcap_ops = {
    .rx = pcap_rx,
    .alloc = pcap_alloc,
    .tx = pcap_tx,
    .release = pcap_release,
    .rx_pending = pcap_rx_pending,
    .close = pcap_close,
    .counters = pcap_counters,
};

struct fp_dev *fp_dev_pcap_wrap(struct fp_dev *inner, const char *path, char *err, size_t errlen)
{
    struct pcap_dev *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* 0600 and no symlinks: captures hold payloads, and tasd runs as root */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    p->f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (p->f == NULL) {
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "capture file %s: %s", path, strerror(errno));
        free(p);
        return NULL;
    }
    struct pcap_file_hdr h = {PCAP_MAGIC_NS, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET};
    if (fwrite(&h, sizeof h, 1, p->f) != 1 || fflush(p->f) != 0) {
        snprintf(err, errlen, "capture file %s: %s", path, strerror(errno));
        fclose(p->f);
        free(p);
        return NULL;
    }
    p->inner = inner;
    p->base = *inner; /* kind, wait_fd and max_frame as the inner device */
    p->base.ops = &pcap_ops;
    p->base.kind = "pcap";
    return &p->base;
}
