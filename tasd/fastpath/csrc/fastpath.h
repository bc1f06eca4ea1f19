/*
 * The fastpath's C API as seen from Python (through cffi) and from the C
 * test harnesses.  Everything here is called once per setup step, per batch
 * or per control event, never per packet.
 *
 * Functions that can fail take (char *err, size_t errlen) and write a
 * one-line reason there.
 */
#ifndef FP_FASTPATH_H
#define FP_FASTPATH_H

#include <stddef.h>
#include <stdint.h>

#define FP_MAX_WORKERS 64     /* TAS_MAX_WORKERS */
#define FP_XDP_FRAME_SIZE 2048 /* a UMEM chunk */
#define FP_XDP_HEADROOM 256    /* what the kernel keeps in front of a received frame (XDP_PACKET_HEADROOM) */

struct fp_dev;
struct fp_worker;
struct fp_xdp_prog;
struct tas_worker_shm;
struct tas_capture_cmd;

/* ---- time ---- */
uint64_t fp_now_ns(void);

/* ---- worker region (slowpath side) ---- */
uint64_t fp_shm_bytes(uint32_t ring_slots, uint32_t max_flows);
int fp_shm_init(struct tas_worker_shm *shm, uint64_t size, uint32_t ring_slots, uint32_t max_flows);

/* ---- application regions (slowpath side) ---- */
struct tas_app_hdr;
uint64_t fp_app_region_bytes(uint32_t nctx, uint32_t nworkers, uint32_t ring_entries, uint64_t buf_size);
int fp_app_region_init(struct tas_app_hdr *h, uint64_t size, uint32_t app_id, uint32_t nctx, uint32_t nworkers,
                       uint32_t ring_entries, uint64_t buf_size);

/* ---- devices ---- */
/* In-memory device for tests: frames injected are received, frames sent are
 * queued for fp_dev_mem_take. */
struct fp_dev *fp_dev_mem_open(uint32_t nbufs, uint32_t mtu);
int fp_dev_mem_inject(struct fp_dev *d, const uint8_t *frame, uint32_t len);
int fp_dev_mem_take(struct fp_dev *d, uint8_t *out, uint32_t cap);
uint32_t fp_dev_mem_free_bufs(struct fp_dev *d);

/* TAP: open (creating it if needed) n queues of TAP interface ifname; the
 * fds are written to fds[0..n-1].  Returns 0 or -1. */
int fp_tap_open_queues(const char *ifname, uint32_t nqueues, int *fds, char *err, size_t errlen);
/* Steer frames over the queues of a multi-queue TAP with the same flow hash
 * as the XDP program (BPF program "tasd_tap_steer" in obj_path). */
int fp_tap_set_steering(int tap_fd, const char *obj_path, uint32_t ip_be, uint32_t nqueues, char *err,
                        size_t errlen);
struct fp_dev *fp_dev_tap_open(int fd, uint32_t mtu, uint32_t nbufs, char *err, size_t errlen);

/* AF_XDP.  The slowpath creates the UMEM and one socket per worker, all on
 * one queue (the first owns the UMEM, the others share it), and passes the
 * fds to the workers, which map the rings with fp_dev_xdp_open. */
struct fp_xdp_sockets {
    int umem_fd;   /* memfd holding the UMEM */
    int shared_fd; /* memfd holding struct tas_xdp_shared */
    int zerocopy;  /* 1 if bound in zero-copy mode */
    int nsockets;
    int fds[FP_MAX_WORKERS];
};
int fp_xdp_sockets_create(const char *ifname, uint32_t queue, uint32_t nsockets, uint32_t nframes,
                          uint32_t ring_size, int zerocopy, struct fp_xdp_sockets *out, char *err,
                          size_t errlen);
void fp_xdp_sockets_close(struct fp_xdp_sockets *s);
struct fp_dev *fp_dev_xdp_open(int xsk_fd, int umem_fd, int shared_fd, uint32_t worker_id, uint32_t mtu,
                               char *err, size_t errlen);

/* Capture (dev_pcap.c).  fp_dev_capture_wrap: a device that forwards to
 * inner and writes frames to a pcap file while a capture runs (started and
 * stopped by TAS_MSG_CAPTURE_START/_STOP).  fp_dev_pcap_wrap: the same,
 * capturing every frame from now on to a file it creates at path (the
 * capture option).  Either wrapper owns inner from then on. */
struct fp_dev *fp_dev_capture_wrap(struct fp_dev *inner, char *err, size_t errlen);
struct fp_dev *fp_dev_pcap_wrap(struct fp_dev *inner, const char *path, char *err, size_t errlen);
/* Slowpath side: compile a tcpdump filter expression (libpcap syntax, for
 * Ethernet frames) into c->insns and c->ninsns; returns the number of
 * instructions (0: no filter, the expression is empty) or -1 with libpcap's
 * reason.  Start a capture file: truncate fd, write the pcap header. */
int fp_capture_compile(const char *expr, uint32_t snaplen, struct tas_capture_cmd *c, char *err, size_t errlen);
int fp_capture_file_init(int fd, uint32_t snaplen, char *err, size_t errlen);

void fp_dev_close(struct fp_dev *d);
const char *fp_dev_kind(struct fp_dev *d);

/* ---- the XDP program (slowpath side) ---- */
enum fp_xdp_mode { FP_XDP_AUTO = 0, FP_XDP_NATIVE = 1, FP_XDP_SKB = 2 };
struct fp_xdp_prog *fp_xdp_prog_attach(const char *obj_path, int ifindex, int mode, uint32_t ip_be,
                                       const int *xsk_fds, uint32_t nsockets, char *err, size_t errlen);
int fp_xdp_prog_mode(struct fp_xdp_prog *p);       /* enum fp_xdp_mode actually used */
int fp_xdp_prog_dispatcher(struct fp_xdp_prog *p); /* 1 if attached through libxdp's dispatcher */
int fp_xdp_prog_detach(struct fp_xdp_prog *p, char *err, size_t errlen); /* also frees p */
/* Detach tasd programs left on ifindex by a run that did not clean up;
 * returns how many, or -1. */
int fp_xdp_prog_remove_stale(int ifindex, char *err, size_t errlen);
/* Number of tasd XDP programs attached to ifindex (0 if none), or -1. */
int fp_xdp_prog_count(int ifindex);

/* ---- the worker ---- */
/* sock_fd: where the slowpath sends fds (app regions, context eventfds), or
 * -1; doorbell_efd: the eventfd apps signal after writing to the worker. */
struct fp_worker *fp_worker_new(struct tas_worker_shm *shm, struct fp_dev *dev, int sp2fp_efd, int fp2sp_efd,
                                int sock_fd, int doorbell_efd, char *err, size_t errlen);
/* Attach an app region mapped by the caller, and one of its contexts (for
 * tests and tools that drive a worker in-process; tasd itself sends the fds
 * with TAS_MSG_APP_ADD and TAS_MSG_CTX_ADD). */
int fp_worker_app_attach(struct fp_worker *w, uint32_t app_id, uint8_t *base, uint64_t size, char *err,
                         size_t errlen);
int fp_worker_ctx_attach(struct fp_worker *w, uint32_t app_id, uint32_t ctx, int efd, char *err, size_t errlen);
/* The earliest TCP timer, ns on CLOCK_MONOTONIC, 0 if none. */
uint64_t fp_worker_next_deadline(struct fp_worker *w);
/* One iteration of the loop at time now_ns; returns the work done (frames
 * and messages handled). */
unsigned fp_worker_poll(struct fp_worker *w, uint64_t now_ns);
/* The loop: poll while busy, sleep when idle, until shm->stop is set or
 * SIGTERM arrives (0), or the device fails (-1; the reason is in
 * shm->error). */
int fp_worker_run(struct fp_worker *w);
void fp_worker_free(struct fp_worker *w);
/* Worker process setup: die with the parent (parent_pid), turn SIGTERM
 * into a clean stop of fp_worker_run, and ignore SIGINT (tasd stops its
 * workers itself). */
int fp_worker_process_init(int parent_pid, char *err, size_t errlen);

#endif /* FP_FASTPATH_H */
