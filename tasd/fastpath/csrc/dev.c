/* Pieces shared by all devices. */
#include <stdlib.h>

#include "dev.h"
#include "fastpath.h"

void fp_dev_close(struct fp_dev *d)
{
    if (d)
        d->ops->close(d);
}

const char *fp_dev_kind(struct fp_dev *d) { return d->kind; }


int fp_pool_init(struct fp_pool *p, uint32_t nbufs, uint32_t buf_size)
{
    p->mem = aligned_alloc(64, (size_t)nbufs * buf_size);
    p->free = malloc(sizeof(uint32_t) * nbufs);
    if (p->mem == NULL || p->free == NULL) {
        free(p->mem);
        free(p->free);
        return -1;
    }
    p->buf_size = buf_size;
    p->nbufs = nbufs;
    p->nfree = nbufs;
    for (uint32_t i = 0; i < nbufs; i++)
        p->free[i] = nbufs - 1 - i;
    return 0;
}

void fp_pool_fini(struct fp_pool *p)
{
    free(p->mem);
    free(p->free);
    p->mem = NULL;
    p->free = NULL;
}

unsigned fp_pool_get(struct fp_pool *p, struct fp_buf *bufs, unsigned n)
{
    unsigned i;
    for (i = 0; i < n && p->nfree > 0; i++) {
        uint32_t idx = p->free[--p->nfree];
        bufs[i].id = idx;
        bufs[i].data = p->mem + (size_t)idx * p->buf_size;
        bufs[i].len = 0;
        bufs[i].cap = p->buf_size;
    }
    return i;
}

void fp_pool_put(struct fp_pool *p, const struct fp_buf *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p->free[p->nfree++] = (uint32_t)bufs[i].id;
}
