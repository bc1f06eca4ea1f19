/*
 * Capture wrapper: a device that forwards to another and, while a capture
 * is on, writes the frames received from it and sent through it to a pcap
 * file (nanosecond timestamps, Ethernet link type), readable by tcpdump,
 * tshark and Wireshark.  Frames are written in the order the worker saw them.
 *
 * tasd wraps every worker's device, so that a capture can be switched on
 * and off while traffic flows (TAS_MSG_CAPTURE_START/_STOP, tasctl capture);
 * while it is off the cost is one predictable branch per batch.  A capture
 * keeps snaplen bytes of the frames a classic BPF filter (compiled by
 * libpcap in the slowpath, fp_capture_compile; run with libpcap's
 * bpf_filter) accepts, up to a limit.  Records are gathered in a buffer and
 * appended with one write() per batch: several workers append to the same
 * O_APPEND file without interleaving inside a record (each worker's records
 * are in its order; the batches of several interleave, so time may step back
 * by a batch between them).  The buffer is written out before the worker
 * sleeps, every 100 ms (the counters' refresh) and when the capture stops.
 *
 * The capture option (a file per worker from start to stop) is the same
 * writer, started on a file this module opens (fp_dev_pcap_wrap).
 */
#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dev.h"
#include "fastpath.h"
#include "tasd/abi.h"

#define PCAP_MAGIC_NS 0xa1b23c4du
#define LINKTYPE_ETHERNET 1
#define CAPTURE_BUF (64 * 1024) /* records written per write(), at most */
#define OPTION_SNAPLEN 65535    /* the capture option keeps whole frames */

_Static_assert(sizeof(struct tas_bpf_insn) == sizeof(struct bpf_insn) &&
                   offsetof(struct tas_bpf_insn, jt) == offsetof(struct bpf_insn, jt) &&
                   offsetof(struct tas_bpf_insn, jf) == offsetof(struct bpf_insn, jf) &&
                   offsetof(struct tas_bpf_insn, k) == offsetof(struct bpf_insn, k),
               "tas_bpf_insn is struct bpf_insn");

struct pcap_file_hdr {
    uint32_t magic;
    uint16_t major, minor;
    int32_t thiszone;
    uint32_t sigfigs, snaplen, linktype;
};

struct pcap_rec_hdr {
    uint32_t sec, nsec, caplen, len;
};

struct capture_dev {
    struct fp_dev base;
    struct fp_dev *inner;
    int fd;                  /* -1: no capture */
    /* the capture on now */
    uint32_t id, snaplen, limit;
    uint32_t ninsns;
    struct bpf_insn *insns;
    uint8_t *buf;            /* records not written yet */
    uint32_t used, pending;  /* bytes and records in buf */
    int torn;                /* a write went in part: what follows could not be read */
    struct tas_capture_report rep;
    /* every capture so far, for the worker's counters */
    uint64_t frames, filtered, lost;
};

/* ---- the file -------------------------------------------------------------- */

int fp_capture_file_init(int fd, uint32_t snaplen, char *err, size_t errlen)
{
    struct pcap_file_hdr h = {PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET};
    if (ftruncate(fd, 0) != 0 || pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(err, errlen, "%s", strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}

int fp_capture_compile(const char *expr, uint32_t snaplen, struct tas_capture_cmd *out, char *err, size_t errlen)
{
    out->ninsns = 0;
    if (expr == NULL || expr[strspn(expr, " \t\n")] == '\0')
        return 0; /* no filter: every frame */
    pcap_t *p = pcap_open_dead(DLT_EN10MB, (int)snaplen);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct bpf_program prog;
    int rc = -1;
    if (pcap_compile(p, &prog, expr, 1, PCAP_NETMASK_UNKNOWN) != 0) {
        snprintf(err, errlen, "%s", pcap_geterr(p));
    } else {
        if (prog.bf_len > TAS_CAPTURE_INSNS_MAX) {
            snprintf(err, errlen, "filter too long: %u BPF instructions, at most %u", prog.bf_len,
                     TAS_CAPTURE_INSNS_MAX);
        } else {
            memcpy(out->insns, prog.bf_insns, prog.bf_len * sizeof *prog.bf_insns);
            out->ninsns = prog.bf_len;
            rc = (int)prog.bf_len;
        }
        pcap_freecode(&prog);
    }
    pcap_close(p);
    return rc;
}

/* ---- writing ----------------------------------------------------------------- */

static void flush_records(struct capture_dev *p)
{
    if (p->used == 0)
        return;
    ssize_t r;
    do
        r = write(p->fd, p->buf, p->used);
    while (r < 0 && errno == EINTR);
    if (r != (ssize_t)p->used) { /* a full disk, a file gone bad: these records are lost */
        p->torn = r > 0;
        p->rep.frames -= p->pending;
        p->rep.bytes -= p->used;
        p->rep.lost += p->pending;
        p->frames -= p->pending;
        p->lost += p->pending;
    }
    p->used = p->pending = 0;
}

static void record(struct capture_dev *p, const struct fp_buf *bufs, unsigned n)
{
    struct timespec ts;
    if (p->torn) {
        p->rep.lost += n;
        p->lost += n;
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    for (unsigned i = 0; i < n; i++) {
        uint32_t len = bufs[i].len, keep = len;
        if (len == 0)
            continue;
        if (p->limit && p->rep.frames >= p->limit)
            return;
        if (p->ninsns) {
            u_int accept = bpf_filter(p->insns, bufs[i].data, len, len);
            if (accept == 0) {
                p->rep.filtered++;
                p->filtered++;
                continue;
            }
            if (accept < keep)
                keep = accept;
        }
        if (keep > p->snaplen)
            keep = p->snaplen;
        uint32_t size = (uint32_t)sizeof(struct pcap_rec_hdr) + keep;
        if (p->used + size > CAPTURE_BUF) {
            flush_records(p);
            if (size > CAPTURE_BUF)
                continue; /* cannot be: frames are at most 64 KiB less a header */
        }
        struct pcap_rec_hdr h = {(uint32_t)ts.tv_sec, (uint32_t)ts.tv_nsec, keep, len};
        memcpy(p->buf + p->used, &h, sizeof h);
        memcpy(p->buf + p->used + sizeof h, bufs[i].data, keep);
        p->used += size;
        p->pending++;
        p->rep.frames++;
        p->rep.bytes += size;
        p->frames++;
    }
}

/* ---- the device ---------------------------------------------------------------- */

static unsigned capture_rx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct capture_dev *p = (struct capture_dev *)d;
    unsigned got = fp_dev_rx(p->inner, bufs, n);
    if (__builtin_expect(p->fd >= 0, 0) && got)
        record(p, bufs, got);
    return got;
}

static unsigned capture_alloc(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    return fp_dev_alloc(((struct capture_dev *)d)->inner, bufs, n);
}

static unsigned capture_tx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct capture_dev *p = (struct capture_dev *)d;
    if (__builtin_expect(p->fd >= 0, 0))
        record(p, bufs, n); /* before the inner device takes the buffers */
    return fp_dev_tx(p->inner, bufs, n);
}

static void capture_release(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    fp_dev_release(((struct capture_dev *)d)->inner, bufs, n);
}

static int capture_rx_pending(struct fp_dev *d)
{
    struct capture_dev *p = (struct capture_dev *)d;
    if (p->used)
        flush_records(p); /* about to sleep: make what we have readable */
    return fp_dev_rx_pending(p->inner);
}

static void capture_counters(struct fp_dev *d, struct tas_fp_stats *st)
{
    struct capture_dev *p = (struct capture_dev *)d;
    if (p->used)
        flush_records(p);
    st->capture_frames = p->frames;
    st->capture_filtered = p->filtered;
    st->capture_lost = p->lost;
    if (p->inner->ops->counters)
        p->inner->ops->counters(p->inner, st);
}

static void capture_stop(struct fp_dev *d, struct tas_capture_report *rep)
{
    struct capture_dev *p = (struct capture_dev *)d;
    if (p->fd < 0) {
        memset(rep, 0, sizeof *rep);
        return;
    }
    flush_records(p);
    close(p->fd);
    p->fd = -1;
    free(p->insns);
    p->insns = NULL;
    p->ninsns = 0;
    *rep = p->rep;
}

static int capture_start(struct fp_dev *d, int fd, const struct tas_capture_cmd *c, char *err, size_t errlen)
{
    struct capture_dev *p = (struct capture_dev *)d;
    if (p->fd >= 0) {
        snprintf(err, errlen, "a capture is already running (id %u)", p->id);
        errno = EBUSY;
        return -1;
    }
    if (c->snaplen == 0 || c->ninsns > TAS_CAPTURE_INSNS_MAX ||
        (c->ninsns && !bpf_validate((const struct bpf_insn *)c->insns, (int)c->ninsns))) {
        snprintf(err, errlen, "bad capture command (snap length 0, or an invalid BPF program)");
        errno = EINVAL;
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || !(fcntl(fd, F_GETFL) & O_APPEND)) {
        snprintf(err, errlen, "the capture file is not a regular file opened for appending");
        errno = EBADF;
        return -1;
    }
    if (p->buf == NULL && (p->buf = malloc(CAPTURE_BUF)) == NULL) {
        snprintf(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    if (c->ninsns) {
        p->insns = malloc(c->ninsns * sizeof *p->insns);
        if (p->insns == NULL) {
            snprintf(err, errlen, "out of memory");
            errno = ENOMEM;
            return -1;
        }
        memcpy(p->insns, c->insns, c->ninsns * sizeof *p->insns);
    }
    p->ninsns = c->ninsns;
    p->id = c->id;
    p->snaplen = c->snaplen;
    p->limit = c->limit;
    p->used = p->pending = 0;
    p->torn = 0;
    memset(&p->rep, 0, sizeof p->rep);
    p->rep.id = c->id;
    p->fd = fd; /* last: from now on frames are recorded */
    return 0;
}

static void capture_close(struct fp_dev *d)
{
    struct capture_dev *p = (struct capture_dev *)d;
    struct tas_capture_report rep;
    capture_stop(d, &rep);
    free(p->buf);
    fp_dev_close(p->inner);
    free(p);
}

static const struct fp_dev_ops capture_ops = {
    .rx = capture_rx,
    .alloc = capture_alloc,
    .tx = capture_tx,
    .release = capture_release,
    .rx_pending = capture_rx_pending,
    .close = capture_close,
    .counters = capture_counters,
    .capture_start = capture_start,
    .capture_stop = capture_stop,
};

struct fp_dev *fp_dev_capture_wrap(struct fp_dev *inner, char *err, size_t errlen)
{
    struct capture_dev *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->inner = inner;
    p->fd = -1;
    p->base = *inner; /* kind, wait_fd and max_frame as the inner device */
    p->base.ops = &capture_ops;
    return &p->base;
}

struct fp_dev *fp_dev_pcap_wrap(struct fp_dev *inner, const char *path, char *err, size_t errlen)
{
    /* 0600 and no symlinks: captures hold payloads, and tasd runs as root */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    char why[128];
    if (fd < 0 || fp_capture_file_init(fd, OPTION_SNAPLEN, why, sizeof why) != 0) {
        snprintf(err, errlen, "capture file %s: %s", path, fd < 0 ? strerror(errno) : why);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    struct fp_dev *d = fp_dev_capture_wrap(inner, err, errlen);
    struct tas_capture_cmd c = {.id = 0, .snaplen = OPTION_SNAPLEN};
    if (d == NULL || capture_start(d, fd, &c, err, errlen) != 0) {
        close(fd);
        if (d != NULL) { /* inner stays the caller's */
            free(((struct capture_dev *)d)->buf);
            free(d);
        }
        return NULL;
    }
    return d;
}
