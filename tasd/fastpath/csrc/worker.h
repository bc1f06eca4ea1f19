/*
 * The worker's state, shared by the modules of its loop (worker.c, tcp_*.c,
 * app.c).  Private to one worker process; nothing here is shared memory
 * except what the pointers point to.
 */
#ifndef FP_WORKER_H
#define FP_WORKER_H

#include <stdint.h>

#include "dev.h"
#include "rx.h"
#include "tasd/abi.h"

#define FP_BATCH 32
#define FP_TXQ 64
#define FP_MAX_APPS 256
#define FP_EVQ 4096

struct fp_app;
struct fp_tcp;

/* One application context as this worker sees it. */
struct fp_appctx {
    struct fp_app *app;
    uint32_t index;
    int efd;                         /* the context's eventfd: wake the app */
    int own_efd;                     /* the worker received it and closes it */
    struct tas_ring_cursor app2fp;   /* we consume */
    struct tas_ring_cursor fp2app;   /* we produce */
    uint32_t published;              /* entries published since the last wake check */
    uint32_t notify_head, notify_tail; /* flows with news for this context (index + 1) */
    struct fp_appctx *next_active;
};

/* One application as this worker sees it: its region, mapped here. */
struct fp_app {
    uint32_t id;
    int in_use;
    int mapped_here;                 /* the worker mapped the region and unmaps it */
    uint8_t *base;
    uint64_t size;
    uint32_t nctx;
    struct fp_appctx **ctx;          /* nctx entries, NULL until added */
};

struct fp_worker {
    struct tas_worker_shm *shm;
    struct tas_fp_stats *st;
    struct fp_dev *dev;
    struct fp_iface ifc;
    struct tas_ring_cursor sp2fp, fp2sp;
    int sp2fp_efd, fp2sp_efd;
    int sock_fd;                     /* fds from the slowpath arrive here (SCM_RIGHTS) */
    int doorbell_efd;                /* apps ring it after writing an app2fp ring */
    uint64_t now;                    /* CLOCK_MONOTONIC ns of this iteration */
    uint64_t last_work_ns;
    uint64_t last_counters_ns;       /* when the device's counters were last read */
    int dev_failed;                  /* poll() reported an error on the device */
    /* frames built this iteration, sent as one batch */
    struct fp_buf txq[FP_TXQ];
    unsigned ntx;
    unsigned fp2sp_published;
    /* flow events the fp2sp ring had no room for, oldest first */
    struct tas_flow_event evq[FP_EVQ];
    unsigned evq_head, evq_len;
    /* capture answers the fp2sp ring had no room for (STARTED, STOPPED) */
    struct fp_capture_answer {
        uint16_t type;
        struct tas_capture_report rep;
    } capq[4];
    unsigned capq_len;
    /* applications */
    struct fp_app apps[FP_MAX_APPS];
    struct fp_appctx *active_ctx;    /* list of contexts to poll */
    int app_polling;                 /* inside fp_app_poll (its rings are being read) */
    struct fp_tcp *tcp;
};

/* A buffer for one outgoing frame of at most len bytes, or NULL (counted)
 * when the device has none; the frame goes out with the iteration's batch
 * once fp_tx_commit is called on it. */
struct fp_buf *fp_tx_alloc(struct fp_worker *w);
void fp_tx_commit(struct fp_worker *w, struct fp_buf *b);
void fp_tx_flush(struct fp_worker *w);

/* Report a flow event to the slowpath (queued if its ring is full). */
void fp_flow_event(struct fp_worker *w, const struct tas_flow_event *ev);
/* Carry out what the slowpath queued (a batch; flows_only: up to the first
 * message about apps); returns how many messages. */
unsigned fp_worker_poll_sp(struct fp_worker *w, int flows_only);

/* The app and context a message from an app is checked against. */
struct fp_app *fp_app_get(struct fp_worker *w, uint32_t app_id);

/* app.c */
int fp_app_attach(struct fp_worker *w, uint32_t app_id, uint8_t *base, uint64_t size, char *err, size_t errlen);
int fp_app_ctx_attach(struct fp_worker *w, uint32_t app_id, uint32_t ctx, int efd, char *err, size_t errlen);
void fp_app_detach(struct fp_worker *w, uint32_t app_id);
unsigned fp_app_poll(struct fp_worker *w);
/* Everything waiting in one context's app2fp ring (not while fp_app_poll runs). */
void fp_app_drain(struct fp_worker *w, struct fp_appctx *c);
/* Queue an entry for a context's fp2app ring; 0, or -1 if it is full. */
int fp_app_notify(struct fp_worker *w, struct fp_appctx *c, const struct tas_qe *e);
void fp_app_wake(struct fp_worker *w);
void fp_app_arm(struct fp_worker *w);
void fp_app_disarm(struct fp_worker *w);
int fp_app_pending(struct fp_worker *w);

#endif /* FP_WORKER_H */
