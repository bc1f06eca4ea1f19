/*
 * tasd ABI: every layout shared between processes (slowpath, fastpath workers,
 * and later applications through libtas) is defined here and only here.
 *
 * C includes this file; Python reads it through cffi (the build script feeds it
 * to ffi.cdef after dropping preprocessor lines other than integer #defines,
 * _Static_assert lines and the bodies of static inline functions).  So:
 *   - fixed-width integer types only, natural alignment, explicit padding;
 *   - constants as `#define NAME <integer literal>` or enums;
 *   - one static inline function per line-start `static inline`, body ending
 *     with a line holding only `}`;
 *   - no `packed`, no `volatile`: shared words are accessed with the GCC
 *     __atomic builtins (release to publish, acquire to observe).
 */
#ifndef TASD_ABI_H
#define TASD_ABI_H

#if defined(__bpf__)
#include <linux/types.h>
typedef __u8 uint8_t;
typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __s32 int32_t;
typedef __u64 uint64_t;
#else
#include <stdint.h>
#ifndef TAS_CDEF
#include <stddef.h>
#endif
#endif

#define TAS_ABI_MAGIC 0x54415344
#define TAS_ABI_VERSION 1
#define TAS_CACHELINE 64

/* ------------------------------------------------------------------------
 * Message rings: single producer, single consumer, fixed-size slots.
 *
 * Ownership of a slot passes with its `owner` word, written last by the
 * side that gives the slot away (release) and read first by the side that
 * takes it (acquire).  Producer and consumer keep their positions privately
 * (struct tas_ring_cursor), so the only shared words written per message are
 * in the slot itself.
 *
 * Wake-ups: a consumer that wants to sleep stores 1 in `consumer_armed`,
 * re-checks the next slot, and only then blocks on the ring's eventfd.  A
 * producer that publishes a slot exchanges `consumer_armed` with 0 and
 * signals the eventfd if it was 1.  Both use sequentially consistent
 * operations for this pair, so no wake-up is lost.
 * ---------------------------------------------------------------------- */

#define TAS_RING_SLOT_SIZE 2048
#define TAS_RING_HDR_SIZE 32
#define TAS_RING_DATA_MAX 2016

enum tas_slot_owner {
    TAS_SLOT_FREE = 0, /* producer owns it */
    TAS_SLOT_FULL = 1, /* consumer owns it */
};

enum tas_msg_type {
    TAS_MSG_NONE = 0,
    /* slowpath -> fastpath (sp2fp) */
    TAS_MSG_TX_FRAME = 1,  /* send data[0:len] as a frame */
    /* fastpath -> slowpath (fp2sp) */
    TAS_MSG_EXCEPTION = 2, /* received frame handed to the slowpath; arg = enum tas_exc */
};

/* Why a received frame went to the slowpath. */
enum tas_exc {
    TAS_EXC_ARP = 0,        /* ARP about our address (for it, or claiming it) */
    TAS_EXC_ICMP = 1,       /* ICMP other than echo request */
    TAS_EXC_TCP_NOFLOW = 2, /* TCP segment for a connection the fastpath does not own */
    TAS_EXC__COUNT = 3,
};

struct tas_msg {
    uint32_t owner;  /* enum tas_slot_owner, written last / read first */
    uint16_t type;   /* enum tas_msg_type */
    uint16_t len;    /* bytes used in data */
    uint32_t arg;    /* type-specific (exception reason, ...) */
    uint32_t worker; /* fastpath worker that produced / should consume it */
    uint64_t ts_ns;  /* CLOCK_MONOTONIC time the message was produced */
    uint64_t _pad0;
    uint8_t data[TAS_RING_DATA_MAX];
};

struct tas_ring {
    uint32_t magic;    /* TAS_ABI_MAGIC */
    uint32_t nslots;   /* power of two */
    uint32_t slot_size;
    uint32_t _pad0;
    uint8_t _pad1[48];
    uint32_t consumer_armed; /* 1 while the consumer is (about to be) asleep */
    uint8_t _pad2[60];
    /* struct tas_msg slots[nslots] follow, at offset sizeof(struct tas_ring) */
};

/* A side's private position in a ring (never shared). */
struct tas_ring_cursor {
    struct tas_ring *ring;
    struct tas_msg *slots;
    uint32_t mask;
    uint32_t pos;
};

/* ------------------------------------------------------------------------
 * Fastpath worker region: one shared-memory object per worker, mapped by the
 * slowpath and by that worker.  Layout, offsets from the start:
 *   struct tas_worker_shm | sp2fp ring | fp2sp ring
 * ---------------------------------------------------------------------- */

/* Why the fastpath dropped a received frame.  Names reach operators (tasctl,
 * metrics) through cffi, lower-cased without the prefix. */
enum tas_drop {
    TAS_DROP_RUNT = 0,            /* shorter than an Ethernet header */
    TAS_DROP_TOO_BIG = 1,         /* longer than the interface MTU allows */
    TAS_DROP_MAC_BAD_SOURCE = 2,  /* multicast source MAC */
    TAS_DROP_MAC_NOT_OURS = 3,    /* unicast to another MAC, or IPv4 not unicast to us */
    TAS_DROP_ETHERTYPE = 4,       /* neither IPv4 nor ARP */
    TAS_DROP_ARP_MALFORMED = 5,   /* truncated, or not Ethernet/IPv4 request or reply */
    TAS_DROP_ARP_NOT_OURS = 6,    /* ARP about other addresses only */
    TAS_DROP_IP_TRUNCATED = 7,    /* shorter than its header or total length */
    TAS_DROP_IP_MALFORMED = 8,    /* bad version, header length or total length */
    TAS_DROP_IP_CHECKSUM = 9,     /* bad IPv4 header checksum */
    TAS_DROP_IP_NOT_OURS = 10,    /* destination is not our address */
    TAS_DROP_IP_BAD_SOURCE = 11,  /* zero, broadcast, loopback, multicast or our own source */
    TAS_DROP_IP_FRAGMENT = 12,    /* fragments are not reassembled */
    TAS_DROP_IP_PROTOCOL = 13,    /* neither ICMP nor TCP */
    TAS_DROP_ICMP_TRUNCATED = 14,
    TAS_DROP_ICMP_CHECKSUM = 15,
    TAS_DROP_TCP_TRUNCATED = 16,  /* shorter than a TCP header */
    TAS_DROP_TCP_MALFORMED = 17,  /* data offset below 5 or beyond the segment */
    TAS_DROP_TCP_CHECKSUM = 18,
    TAS_DROP_EXC_RING_FULL = 19,  /* slowpath not keeping up */
    TAS_DROP__COUNT = 20,
};

struct tas_fp_stats {
    uint64_t rx_frames;
    uint64_t rx_bytes;
    uint64_t tx_frames;
    uint64_t tx_bytes;
    uint64_t tx_errors;      /* frames the device failed to send */
    uint64_t rx_icmp_echo;   /* echo requests answered */
    uint64_t rx_exceptions;  /* frames handed to the slowpath */
    uint64_t sp_tx_frames;   /* frames sent on behalf of the slowpath */
    uint64_t sp_bad_msgs;    /* malformed sp2fp messages */
    uint64_t polls;          /* loop iterations */
    uint64_t sleeps;         /* times the worker blocked */
    uint64_t drops[20];      /* indexed by enum tas_drop (TAS_DROP__COUNT) */
    uint64_t exceptions[3];  /* indexed by enum tas_exc (TAS_EXC__COUNT) */
};

enum tas_worker_state {
    TAS_WORKER_INIT = 0,
    TAS_WORKER_RUNNING = 1,
    TAS_WORKER_STOPPED = 2,
    TAS_WORKER_FAILED = 3,
};

struct tas_worker_shm {
    uint32_t magic;        /* TAS_ABI_MAGIC */
    uint32_t abi_version;  /* TAS_ABI_VERSION */
    uint64_t size;         /* bytes in the whole region */
    /* configuration, written by the slowpath before the worker starts */
    uint32_t worker_id;
    uint32_t nworkers;
    uint32_t ip;           /* our IPv4 address, network byte order */
    uint32_t mtu;          /* IP MTU of the interface */
    uint8_t mac[6];        /* our MAC */
    uint16_t _pad0;
    uint32_t poll_us;      /* busy-poll this long after the last work, then block */
    uint32_t _pad1;
    uint64_t sp2fp_off;    /* offset of the sp2fp ring */
    uint64_t fp2sp_off;    /* offset of the fp2sp ring */
    /* control, written by the slowpath */
    uint32_t stop;         /* nonzero: leave the loop */
    uint8_t _pad2[60];
    /* status, written by the worker */
    uint32_t state;        /* enum tas_worker_state */
    int32_t pid;
    uint64_t heartbeat_ns; /* CLOCK_MONOTONIC time of the last loop iteration */
    char error[112];       /* NUL-terminated reason when state is FAILED */
    /* counters, written by the worker only; readers tolerate staleness */
    struct tas_fp_stats stats;
};

/* ------------------------------------------------------------------------
 * AF_XDP shared state: one small region shared by all workers of a queue.
 * The UMEM's fill and completion rings belong to the queue, not to a socket,
 * so workers take this lock around their (batched) use of them.
 * ---------------------------------------------------------------------- */
struct tas_xdp_shared {
    uint32_t magic;
    uint32_t lock;         /* 0 free, 1 held */
    uint32_t nframes;      /* UMEM chunks */
    uint32_t frame_size;   /* UMEM chunk size */
    uint32_t fill_size;    /* fill ring entries */
    uint32_t comp_size;    /* completion ring entries */
    uint32_t ring_size;    /* RX and TX ring entries of each socket */
    uint32_t nworkers;
};

/* ------------------------------------------------------------------------
 * Flow steering: which worker owns a flow.  The XDP program, the TAP
 * steering program and the slowpath all decide with tas_flow_worker, over
 * addresses and ports as host-order integers (the remote end's as source,
 * ours as destination).  Frames that are not TCP hash with both ports zero;
 * ARP always goes to worker 0.
 * ---------------------------------------------------------------------- */
#define TAS_MAX_WORKERS 64

/* The XDP program's configuration (array map "tasd_cfg", one entry). */
struct tas_xdp_cfg {
    uint32_t ip;       /* our IPv4 address, network byte order; 0 = steer nothing */
    uint32_t nworkers; /* sockets in map "tasd_xsks", indexed by worker */
};

static inline uint32_t tas_flow_hash(uint32_t saddr, uint32_t daddr, uint32_t sport, uint32_t dport)
{
    uint32_t h = saddr * 0x9e3779b1u;
    h ^= (daddr + 0x7f4a7c15u) * 0x85ebca77u;
    h ^= ((sport << 16) | (dport & 0xffffu)) * 0xc2b2ae3du;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h;
}

static inline uint32_t tas_flow_worker(uint32_t saddr, uint32_t daddr, uint32_t sport, uint32_t dport, uint32_t nworkers)
{
    return nworkers ? tas_flow_hash(saddr, daddr, sport, dport) % nworkers : 0;
}

#if !defined(TAS_CDEF) && !defined(__bpf__)
_Static_assert(sizeof(struct tas_msg) == TAS_RING_SLOT_SIZE, "ring slot size");
_Static_assert(TAS_RING_HDR_SIZE + TAS_RING_DATA_MAX == TAS_RING_SLOT_SIZE, "ring slot layout");
_Static_assert(sizeof(struct tas_ring) == 2 * TAS_CACHELINE, "ring header size");
_Static_assert(sizeof(((struct tas_fp_stats *)0)->drops) == TAS_DROP__COUNT * 8, "drop counters");
_Static_assert(sizeof(((struct tas_fp_stats *)0)->exceptions) == TAS_EXC__COUNT * 8, "exception counters");
_Static_assert(offsetof(struct tas_worker_shm, stop) == TAS_CACHELINE, "stop on its own line");
_Static_assert(offsetof(struct tas_worker_shm, state) == 2 * TAS_CACHELINE, "status line");
_Static_assert(offsetof(struct tas_worker_shm, stats) == 4 * TAS_CACHELINE, "counters");
#endif

#endif /* TASD_ABI_H */
