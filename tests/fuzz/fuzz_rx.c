/*
 * Fuzzing the fastpath's receive path (and its sp2fp message handling):
 * random frames and mutations of valid seed frames go through the real
 * worker loop on the in-memory device.  Invariant: every frame is answered,
 * handed to the slowpath or dropped under a named reason; nothing crashes,
 * reads out of bounds (built with ASan/UBSan) or leaks a buffer.
 *
 *   fuzz_rx SEEDS_FILE COUNT RNG_SEED    standalone run; prints a JSON summary
 *   built with -DWITH_LIBFUZZER: a libFuzzer target (one input = one frame)
 *
 * SEEDS_FILE: frames as [u16 little-endian length][bytes]...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dev.h"
#include "fastpath.h"
#include "tasd/abi.h"
#include "tasd/ring.h"

#define NBUFS 256
#define MAX_FRAME 2048
#define RING_SLOTS 64

static const uint8_t our_mac[6] = {0x02, 0, 0, 0, 0, 0x02};

struct rig {
    struct tas_worker_shm *shm;
    struct fp_dev *dev;
    struct fp_worker *w;
    struct tas_ring_cursor sp2fp, fp2sp;
    uint64_t now;
};

static int rig_init(struct rig *r)
{
    uint64_t size = fp_shm_bytes(RING_SLOTS, 0);
    r->shm = aligned_alloc(64, (size + 63) & ~63ull);
    if (r->shm == NULL)
        return -1;
    memset(r->shm, 0, size);
    if (fp_shm_init(r->shm, size, RING_SLOTS, 0) != 0)
        return -1;
    r->shm->nworkers = 1;
    r->shm->ip = 0x0200000a; /* 10.0.0.2 in network byte order */
    r->shm->mtu = 1500;
    memcpy(r->shm->mac, our_mac, 6);
    char err[128];
    r->dev = fp_dev_mem_open(NBUFS, 1500);
    r->w = r->dev ? fp_worker_new(r->shm, r->dev, -1, -1, -1, -1, err, sizeof err) : NULL;
    if (r->w == NULL)
        return -1;
    tas_ring_cursor_init(&r->sp2fp, (struct tas_ring *)((uint8_t *)r->shm + r->shm->sp2fp_off), sizeof(struct tas_msg),
                         r->shm->size - r->shm->sp2fp_off);
    tas_ring_cursor_init(&r->fp2sp, (struct tas_ring *)((uint8_t *)r->shm + r->shm->fp2sp_off), sizeof(struct tas_msg),
                         r->shm->size - r->shm->fp2sp_off);
    return 0;
}

/* Run the worker and play the slowpath: drain what it sent and handed up. */
static void rig_drain(struct rig *r)
{
    static uint8_t out[MAX_FRAME];
    while (fp_worker_poll(r->w, ++r->now))
        ;
    while (fp_dev_mem_take(r->dev, out, sizeof out) >= 0)
        ;
    struct tas_msg *m;
    while ((m = (struct tas_msg *)tas_ring_cons_slot(&r->fp2sp)) != NULL) {
        if (m->len > TAS_RING_DATA_MAX)
            abort(); /* the fastpath wrote a bad length */
        tas_ring_cons_release(&r->fp2sp, m);
    }
}

#ifdef WITH_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct rig r;
    static int ready;
    if (!ready && rig_init(&r) == 0)
        ready = 1;
    if (size <= MAX_FRAME && fp_dev_mem_inject(r.dev, data, (uint32_t)size) == 0)
        rig_drain(&r);
    return 0;
}
#else

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

struct seed {
    uint8_t *data;
    uint32_t len;
};

static int load_seeds(const char *path, struct seed **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    int n = 0, cap = 0;
    uint8_t hdr[2];
    while (fread(hdr, 1, 2, f) == 2) {
        uint32_t len = hdr[0] | (uint32_t)hdr[1] << 8;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, sizeof **out * (size_t)cap);
        }
        (*out)[n].data = malloc(len ? len : 1);
        (*out)[n].len = len;
        if (fread((*out)[n].data, 1, len, f) != len)
            break;
        n++;
    }
    fclose(f);
    return n;
}

/* Values that tend to find length and offset bugs. */
static const uint8_t interesting[] = {0x00, 0x01, 0x05, 0x0f, 0x14, 0x40, 0x45, 0x7f, 0x80, 0xf0, 0xff};

static uint32_t mutate(uint8_t *buf, uint32_t len, uint32_t cap)
{
    int rounds = 1 + (int)(rnd() % 4);
    for (int i = 0; i < rounds; i++) {
        uint32_t pos = len ? (uint32_t)(rnd() % len) : 0;
        switch (rnd() % 7) {
        case 0: /* flip a bit */
            if (len)
                buf[pos] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1: /* set an interesting byte */
            if (len)
                buf[pos] = interesting[rnd() % sizeof interesting];
            break;
        case 2: /* random byte */
            if (len)
                buf[pos] = (uint8_t)rnd();
            break;
        case 3: /* truncate */
            len = len ? (uint32_t)(rnd() % len) : 0;
            break;
        case 4: /* grow with random bytes */ {
            uint32_t add = (uint32_t)(rnd() % 64);
            for (uint32_t k = 0; k < add && len < cap; k++)
                buf[len++] = (uint8_t)rnd();
            break;
        }
        case 5: /* big-endian 16-bit interesting value (lengths, ports, offsets) */
            if (len >= 2) {
                static const uint16_t v16[] = {0, 1, 20, 28, 40, 60, 1480, 1500, 1514, 0x7fff, 0xffff};
                uint16_t v = v16[rnd() % (sizeof v16 / sizeof v16[0])];
                pos = pos >= len - 1 ? len - 2 : pos;
                buf[pos] = (uint8_t)(v >> 8);
                buf[pos + 1] = (uint8_t)v;
            }
            break;
        default: /* keep the headers, scramble the rest */
            for (uint32_t k = pos; k < len; k++)
                if (rnd() % 8 == 0)
                    buf[k] = (uint8_t)rnd();
            break;
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s SEEDS_FILE COUNT RNG_SEED\n", argv[0]);
        return 2;
    }
    struct seed *seeds = NULL;
    int nseeds = load_seeds(argv[1], &seeds);
    long count = atol(argv[2]);
    rng_state = strtoull(argv[3], NULL, 0) | 1;
    if (nseeds <= 0 || count <= 0) {
        fprintf(stderr, "no seeds or bad count\n");
        return 2;
    }
    struct rig r;
    if (rig_init(&r) != 0) {
        fprintf(stderr, "rig setup failed\n");
        return 2;
    }
    static uint8_t buf[MAX_FRAME];
    long injected = 0;
    for (long i = 0; i < count; i++) {
        uint32_t len;
        if (rnd() % 4 == 0) {
            len = (uint32_t)(rnd() % 1600);
            for (uint32_t k = 0; k < len; k++)
                buf[k] = (uint8_t)rnd();
            if (len >= 12 && rnd() % 2) /* often make it look like it is for us */
                memcpy(buf, our_mac, 6);
        } else {
            struct seed *s = &seeds[rnd() % (uint64_t)nseeds];
            len = s->len < MAX_FRAME ? s->len : MAX_FRAME;
            memcpy(buf, s->data, len);
            len = mutate(buf, len, MAX_FRAME);
        }
        if (fp_dev_mem_inject(r.dev, buf, len) != 0) {
            fprintf(stderr, "inject failed at %ld\n", i);
            return 1;
        }
        injected++;
        if (rnd() % 64 == 0) { /* and some garbage from the slowpath side */
            uint32_t mlen = (uint32_t)(rnd() % 1600);
            for (uint32_t k = 0; k < mlen; k++)
                buf[k] = (uint8_t)rnd();
            tas_msg_push(&r.sp2fp, (uint16_t)(rnd() % 4), 0, 0, 0, buf, mlen);
        }
        if (rnd() % 16 == 0)
            rig_drain(&r);
    }
    rig_drain(&r);

    const struct tas_fp_stats *st = &r.shm->stats;
    uint64_t dropped = 0;
    for (int i = 0; i < TAS_DROP__COUNT; i++)
        dropped += st->drops[i];
    int ok = st->rx_frames == (uint64_t)injected &&
             st->rx_frames == st->rx_icmp_echo + st->rx_exceptions + dropped &&
             fp_dev_mem_free_bufs(r.dev) == NBUFS;
    printf("{\"frames\": %ld, \"rx_frames\": %lu, \"answered\": %lu, \"exceptions\": %lu, \"dropped\": %lu, "
           "\"sp_tx_frames\": %lu, \"sp_bad_msgs\": %lu, \"free_bufs\": %u, \"drops\": [",
           injected, st->rx_frames, st->rx_icmp_echo, st->rx_exceptions, dropped, st->sp_tx_frames,
           st->sp_bad_msgs, fp_dev_mem_free_bufs(r.dev));
    for (int i = 0; i < TAS_DROP__COUNT; i++)
        printf("%s%lu", i ? ", " : "", st->drops[i]);
    printf("], \"ok\": %s}\n", ok ? "true" : "false");
    fp_worker_free(r.w);
    fp_dev_close(r.dev);
    free(r.shm);
    for (int i = 0; i < nseeds; i++)
        free(seeds[i].data);
    free(seeds);
    return ok ? 0 : 1;
}
#endif
