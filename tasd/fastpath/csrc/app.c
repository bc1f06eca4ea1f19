/*
 * Applications as a worker sees them: their regions (mapped here when the
 * slowpath adds them), their contexts' app2fp and fp2app rings for this
 * worker, and the messages in them.  Everything an app wrote is read once
 * into a local copy and checked before use.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fastpath.h"
#include "tasd/ring.h"
#include "tcp.h"

#define APP_BUDGET 64 /* messages per context per iteration */

/* ---- regions (made by the slowpath) ---- */

static uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t fp_app_region_bytes(uint32_t nctx, uint32_t nworkers, uint32_t ring_entries, uint64_t buf_size)
{
    uint64_t ring = round_up(tas_ring_bytes(ring_entries, TAS_QE_SIZE), 64);
    uint64_t rings = (uint64_t)nctx * (2 + 2 * (uint64_t)nworkers) * ring;
    return round_up(sizeof(struct tas_app_hdr) + rings, 4096) + buf_size;
}

int fp_app_region_init(struct tas_app_hdr *h, uint64_t size, uint32_t app_id, uint32_t nctx, uint32_t nworkers,
                       uint32_t ring_entries, uint64_t buf_size)
{
    if (size < fp_app_region_bytes(nctx, nworkers, ring_entries, buf_size) || nctx == 0 || nworkers == 0 ||
        nworkers > TAS_MAX_WORKERS)
        return -1;
    uint64_t ring = round_up(tas_ring_bytes(ring_entries, TAS_QE_SIZE), 64);
    h->size = size;
    h->app_id = app_id;
    h->nworkers = nworkers;
    h->nctx = nctx;
    h->ring_entries = ring_entries;
    h->rings_off = sizeof *h;
    h->ring_bytes = ring;
    h->ring_stride = (2 + 2 * (uint64_t)nworkers) * ring;
    h->buf_off = round_up(h->rings_off + (uint64_t)nctx * h->ring_stride, 4096);
    h->buf_size = size - h->buf_off;
    for (uint32_t c = 0; c < nctx; c++)
        for (uint32_t k = 0; k < 2 + 2 * nworkers; k++)
            if (tas_ring_init((struct tas_ring *)((uint8_t *)h + tas_app_ring_off(h, c, k)), ring_entries,
                              TAS_QE_SIZE) != 0)
                return -1;
    h->abi_version = TAS_ABI_VERSION;
    __atomic_store_n(&h->magic, TAS_ABI_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

int fp_worker_app_attach(struct fp_worker *w, uint32_t app_id, uint8_t *base, uint64_t size, char *err,
                         size_t errlen)
{
    return fp_app_attach(w, app_id, base, size, err, errlen);
}

int fp_worker_ctx_attach(struct fp_worker *w, uint32_t app_id, uint32_t ctx, int efd, char *err, size_t errlen)
{
    return fp_app_ctx_attach(w, app_id, ctx, efd, err, errlen);
}

/* ---- the worker's view ---- */

struct fp_app *fp_app_get(struct fp_worker *w, uint32_t app_id)
{
    if (app_id >= FP_MAX_APPS || !w->apps[app_id].in_use)
        return NULL;
    return &w->apps[app_id];
}

int fp_app_attach(struct fp_worker *w, uint32_t app_id, uint8_t *base, uint64_t size, char *err, size_t errlen)
{
    const struct tas_app_hdr *h = (const struct tas_app_hdr *)base;
    if (app_id >= FP_MAX_APPS || w->apps[app_id].in_use) {
        snprintf(err, errlen, "app id %u unusable", app_id);
        return -1;
    }
    if (size < sizeof *h || h->magic != TAS_ABI_MAGIC || h->abi_version != TAS_ABI_VERSION || h->app_id != app_id ||
        h->size != size || h->nctx == 0 || h->nctx > 4096 || h->nworkers != w->shm->nworkers) {
        snprintf(err, errlen, "app %u: region header does not match", app_id);
        return -1;
    }
    struct fp_app *a = &w->apps[app_id];
    a->ctx = calloc(h->nctx, sizeof *a->ctx);
    if (a->ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    a->id = app_id;
    a->base = base;
    a->size = size;
    a->nctx = h->nctx;
    a->in_use = 1;
    return 0;
}

int fp_app_ctx_attach(struct fp_worker *w, uint32_t app_id, uint32_t ctx, int efd, char *err, size_t errlen)
{
    struct fp_app *a = fp_app_get(w, app_id);
    if (a == NULL || ctx >= a->nctx || a->ctx[ctx] != NULL) {
        snprintf(err, errlen, "app %u context %u unusable", app_id, ctx);
        return -1;
    }
    /* the geometry comes from the header the slowpath wrote at creation;
     * rings are checked against the region's size before use */
    const struct tas_app_hdr *h = (const struct tas_app_hdr *)a->base;
    uint32_t nw = w->shm->nworkers, me = w->shm->worker_id;
    uint64_t in_off = tas_app_ring_off(h, ctx, TAS_RING_APP2FP + me);
    uint64_t out_off = tas_app_ring_off(h, ctx, TAS_RING_APP2FP + nw + me);
    struct fp_appctx *c = calloc(1, sizeof *c);
    if (c == NULL || in_off + h->ring_bytes > a->size || out_off + h->ring_bytes > a->size ||
        tas_ring_cursor_init(&c->app2fp, (struct tas_ring *)(a->base + in_off), TAS_QE_SIZE, h->ring_bytes) != 0 ||
        tas_ring_cursor_init(&c->fp2app, (struct tas_ring *)(a->base + out_off), TAS_QE_SIZE, h->ring_bytes) != 0) {
        free(c);
        snprintf(err, errlen, "app %u context %u: rings are not valid", app_id, ctx);
        return -1;
    }
    c->app = a;
    c->index = ctx;
    c->efd = efd;
    a->ctx[ctx] = c;
    c->next_active = w->active_ctx;
    w->active_ctx = c;
    return 0;
}

/* Forget an app (its flows are gone: the slowpath removed them first). */
void fp_app_detach(struct fp_worker *w, uint32_t app_id)
{
    struct fp_app *a = fp_app_get(w, app_id);
    if (a == NULL)
        return;
    struct fp_appctx **link = &w->active_ctx;
    while (*link) {
        if ((*link)->app == a)
            *link = (*link)->next_active;
        else
            link = &(*link)->next_active;
    }
    for (uint32_t i = 0; i < a->nctx; i++) {
        struct fp_appctx *c = a->ctx[i];
        if (c == NULL)
            continue;
        /* flows still queued for it (all removed by now) leave the list */
        while (w->tcp && fp_flow_notify_pop(w->tcp, c))
            ;
        if (c->own_efd)
            close(c->efd);
        free(c);
    }
    free(a->ctx);
    if (a->mapped_here)
        munmap(a->base, a->size);
    memset(a, 0, sizeof *a);
}

static unsigned ctx_poll(struct fp_worker *w, struct fp_appctx *c, unsigned budget)
{
    unsigned n;
    for (n = 0; n < budget; n++) {
        struct tas_qe *slot = tas_ring_cons_slot(&c->app2fp);
        if (slot == NULL)
            break;
        struct tas_qe e;
        memcpy(&e, slot, sizeof e); /* one read of what the app wrote */
        tas_ring_cons_release(&c->app2fp, slot);
        w->st->app_msgs++;
        fp_tcp_app_msg(w, c->app, &e);
    }
    return n;
}

unsigned fp_app_poll(struct fp_worker *w)
{
    unsigned n = 0;
    w->app_polling = 1;
    for (struct fp_appctx *c = w->active_ctx; c; c = c->next_active)
        n += ctx_poll(w, c, APP_BUDGET);
    w->app_polling = 0;
    return n;
}

void fp_app_drain(struct fp_worker *w, struct fp_appctx *c)
{
    if (w->app_polling)
        return; /* called from within the reading of a ring (rare): its order holds anyway */
    w->app_polling = 1;
    ctx_poll(w, c, ~0u);
    w->app_polling = 0;
}

int fp_app_notify(struct fp_worker *w, struct fp_appctx *c, const struct tas_qe *e)
{
    (void)w;
    struct tas_qe *slot = tas_ring_prod_slot(&c->fp2app);
    if (slot == NULL)
        return -1;
    memcpy((uint8_t *)slot + 4, (const uint8_t *)e + 4, sizeof *e - 4); /* all but the owner word */
    tas_ring_prod_publish(&c->fp2app, slot);
    c->published++;
    return 0;
}

/* After a batch of notifications: wake the contexts that sleep. */
void fp_app_wake(struct fp_worker *w)
{
    for (struct fp_appctx *c = w->active_ctx; c; c = c->next_active) {
        if (!c->published)
            continue;
        c->published = 0;
        if (tas_ring_prod_wake_needed(&c->fp2app) && c->efd >= 0) {
            uint64_t one = 1;
            (void)!write(c->efd, &one, sizeof one);
        }
    }
}

/* Before the worker sleeps: every app2fp ring says so (then the caller
 * checks fp_app_pending, and disarms when it wakes). */
void fp_app_arm(struct fp_worker *w)
{
    for (struct fp_appctx *c = w->active_ctx; c; c = c->next_active)
        __atomic_store_n(&c->app2fp.ring->consumer_armed, 1, __ATOMIC_SEQ_CST);
}

int fp_app_pending(struct fp_worker *w)
{
    for (struct fp_appctx *c = w->active_ctx; c; c = c->next_active)
        if (tas_ring_cons_slot(&c->app2fp))
            return 1;
    return 0;
}

void fp_app_disarm(struct fp_worker *w)
{
    for (struct fp_appctx *c = w->active_ctx; c; c = c->next_active)
        tas_ring_cons_disarm(&c->app2fp);
}
