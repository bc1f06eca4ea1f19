/*
 * The fastpath's device interface: everything the worker loop needs from a
 * NIC-like thing.  Backends (AF_XDP, TAP, in-memory) implement it; wrappers
 * (pcap capture, dev_pcap.c) hold another device and forward to it.
 *
 * Buffers belong to the device.  A buffer obtained from rx() or alloc() is
 * given back exactly once, either to tx() (which takes it whether or not the
 * frame could be sent) or to release().  An RX buffer may be rewritten in
 * place and passed to tx(): that is how replies are sent without a copy.
 */
#ifndef FP_DEV_H
#define FP_DEV_H

#include <stddef.h>
#include <stdint.h>

struct tas_fp_stats;
struct tas_capture_cmd;
struct tas_capture_report;

struct fp_buf {
    uint8_t *data; /* first byte of the frame */
    uint32_t len;  /* frame length */
    uint32_t cap;  /* bytes available from data */
    uint64_t id;   /* device-private handle */
};

struct fp_dev;

struct fp_dev_ops {
    /* Receive up to n frames into bufs; returns how many. */
    unsigned (*rx)(struct fp_dev *d, struct fp_buf *bufs, unsigned n);
    /* Get up to n empty buffers to build frames in; returns how many. */
    unsigned (*alloc)(struct fp_dev *d, struct fp_buf *bufs, unsigned n);
    /* Send n frames, taking every buffer; returns how many were accepted and
     * sets bufs[i].len to 0 for each frame that was not. */
    unsigned (*tx)(struct fp_dev *d, struct fp_buf *bufs, unsigned n);
    /* Give back n buffers unsent. */
    void (*release)(struct fp_dev *d, struct fp_buf *bufs, unsigned n);
    /* Nonzero if rx() would return frames now (checked before sleeping). */
    int (*rx_pending)(struct fp_dev *d);
    /* Free everything the device holds (not the fds it was given). */
    void (*close)(struct fp_dev *d);
    /* Optional: the device's own drop counters into the worker's stats. */
    void (*counters)(struct fp_dev *d, struct tas_fp_stats *st);
    /* Optional (the capture wrapper): write frames to the pcap file fd
     * (O_APPEND, header written) as c says; the device owns fd on success. */
    int (*capture_start)(struct fp_dev *d, int fd, const struct tas_capture_cmd *c, char *err, size_t errlen);
    /* Optional: stop the capture (write what waits, close the file) and
     * report its counts; a zeroed report if none ran. */
    void (*capture_stop)(struct fp_dev *d, struct tas_capture_report *rep);
};

struct fp_dev {
    const struct fp_dev_ops *ops;
    const char *kind; /* "xdp", "tap", "mem" (a wrapper keeps its device's) */
    int wait_fd;      /* fd that polls readable when frames arrive, or -1 */
    uint32_t max_frame; /* largest frame sent or accepted, Ethernet header included */
};

static inline unsigned fp_dev_rx(struct fp_dev *d, struct fp_buf *b, unsigned n) { return d->ops->rx(d, b, n); }
static inline unsigned fp_dev_alloc(struct fp_dev *d, struct fp_buf *b, unsigned n) { return d->ops->alloc(d, b, n); }
static inline unsigned fp_dev_tx(struct fp_dev *d, struct fp_buf *b, unsigned n) { return d->ops->tx(d, b, n); }
static inline void fp_dev_release(struct fp_dev *d, struct fp_buf *b, unsigned n) { d->ops->release(d, b, n); }
static inline int fp_dev_rx_pending(struct fp_dev *d) { return d->ops->rx_pending(d); }

/* A fixed pool of equal buffers carved from one allocation, for devices
 * whose frames live in process memory (TAP, in-memory). */
struct fp_pool {
    uint8_t *mem;
    uint32_t buf_size;
    uint32_t nbufs;
    uint32_t nfree;
    uint32_t *free; /* stack of free buffer indices */
};

int fp_pool_init(struct fp_pool *p, uint32_t nbufs, uint32_t buf_size);
void fp_pool_fini(struct fp_pool *p);
unsigned fp_pool_get(struct fp_pool *p, struct fp_buf *bufs, unsigned n);
void fp_pool_put(struct fp_pool *p, const struct fp_buf *bufs, unsigned n);

#endif /* FP_DEV_H */
