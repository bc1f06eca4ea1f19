/*
 * In-memory device: the test harness injects frames that rx() returns and
 * takes the frames tx() sent.  Buffers come from a pool like a real device's,
 * so leaks show up as a pool that does not refill.
 */
#include <stdlib.h>
#include <string.h>

#include "dev.h"
#include "fastpath.h"

#define MEM_QLEN 1024

struct mem_dev {
    struct fp_dev base;
    struct fp_pool pool;
    struct fp_buf rxq[MEM_QLEN], txq[MEM_QLEN];
    unsigned rx_head, rx_tail, tx_head, tx_tail; /* free-running */
};

static unsigned mem_rx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct mem_dev *m = (struct mem_dev *)d;
    unsigned i;
    for (i = 0; i < n && m->rx_head != m->rx_tail; i++)
        bufs[i] = m->rxq[m->rx_head++ % MEM_QLEN];
    return i;
}

static unsigned mem_alloc(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    return fp_pool_get(&((struct mem_dev *)d)->pool, bufs, n);
}

static unsigned mem_tx(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    struct mem_dev *m = (struct mem_dev *)d;
    unsigned sent = 0;
    for (unsigned i = 0; i < n; i++) {
        if (m->tx_tail - m->tx_head < MEM_QLEN && bufs[i].len <= d->max_frame) {
            m->txq[m->tx_tail++ % MEM_QLEN] = bufs[i];
            sent++;
        } else {
            fp_pool_put(&m->pool, &bufs[i], 1);
            bufs[i].len = 0;
        }
    }
    return sent;
}

static void mem_release(struct fp_dev *d, struct fp_buf *bufs, unsigned n)
{
    fp_pool_put(&((struct mem_dev *)d)->pool, bufs, n);
}

static int mem_rx_pending(struct fp_dev *d)
{
    struct mem_dev *m = (struct mem_dev *)d;
    return m->rx_head != m->rx_tail;
}

static void mem_close(struct fp_dev *d)
{
    struct mem_dev *m = (struct mem_dev *)d;
    fp_pool_fini(&m->pool);
    free(m);
}

static const struct fp_dev_ops mem_ops = {
    .rx = mem_rx,
    .alloc = mem_alloc,
    .tx = mem_tx,
    .release = mem_release,
    .rx_pending = mem_rx_pending,
    .close = mem_close,
};

struct fp_dev *fp_dev_mem_open(uint32_t nbufs, uint32_t mtu)
{
    struct mem_dev *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    if (fp_pool_init(&m->pool, nbufs, 2048) != 0) {
        free(m);
        return NULL;
    }
    m->base.ops = &mem_ops;
    m->base.kind = "mem";
    m->base.wait_fd = -1;
    m->base.max_frame = mtu + 14;
    return &m->base;
}

int fp_dev_mem_inject(struct fp_dev *d, const uint8_t *frame, uint32_t len)
{
    struct mem_dev *m = (struct mem_dev *)d;
    struct fp_buf b;
    if (m->rx_tail - m->rx_head >= MEM_QLEN || len > m->pool.buf_size || fp_pool_get(&m->pool, &b, 1) != 1)
        return -1;
    memcpy(b.data, frame, len);
    b.len = len;
    m->rxq[m->rx_tail++ % MEM_QLEN] = b;
    return 0;
}

int fp_dev_mem_take(struct fp_dev *d, uint8_t *out, uint32_t cap)
{
    struct mem_dev *m = (struct mem_dev *)d;
    if (m->tx_head == m->tx_tail)
        return -1;
    struct fp_buf b = m->txq[m->tx_head++ % MEM_QLEN];
    uint32_t n = b.len < cap ? b.len : cap;
    memcpy(out, b.data, n);
    fp_pool_put(&m->pool, &b, 1);
    return (int)n;
}

uint32_t fp_dev_mem_free_bufs(struct fp_dev *d)
{
    return ((struct mem_dev *)d)->pool.nfree;
}
