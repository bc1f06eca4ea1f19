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
#define TAS_ABI_VERSION 7
#define TAS_CACHELINE 64

/* ------------------------------------------------------------------------
 * Rings: single producer, single consumer, fixed-size slots.  Between the
 * slowpath and a worker the slots are 2 KiB messages (struct tas_msg); the
 * rings of applications hold 64-byte entries (struct tas_qe).
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
    TAS_MSG_TX_FRAME = 1,        /* send data[0:len] as a frame */
    TAS_MSG_RX_FRAME = 2,        /* process data[0:len] as if received (a replayed segment) */
    TAS_MSG_FLOW_ADD = 3,        /* data: struct tas_flow_params */
    TAS_MSG_FLOW_REMOVE = 4,     /* data: struct tas_flow_cmd (flags: TAS_FLOW_CMD_RST) */
    TAS_MSG_FLOW_RETRANSMIT = 5, /* data: struct tas_flow_cmd (timeout_us: the next RTO) */
    TAS_MSG_FLOW_PROBE = 6,      /* data: struct tas_flow_cmd (flags: probe kind; timeout_us: next) */
    TAS_MSG_APP_ADD = 7,         /* data: struct tas_app_cmd; the region's fd waits on the worker socket */
    TAS_MSG_APP_REMOVE = 8,      /* data: struct tas_app_cmd */
    TAS_MSG_CTX_ADD = 9,         /* data: struct tas_app_cmd; the context's eventfd waits on the socket */
    TAS_MSG_FLOW_SHUT = 11,      /* data: struct tas_flow_cmd: FIN after the data (the last holder closed) */
    TAS_MSG_FLOW_MOVE = 10,      /* data: struct tas_flow_cmd (flags: the context to notify now or
                                  * TAS_CTX_NONE; timeout_us: TAS_MOVE_STATE to send it FLOW_STATE) */
    TAS_MSG_CAPTURE_START = 12,  /* data: struct tas_capture_cmd; the pcap file's fd waits on the worker socket */
    TAS_MSG_CAPTURE_STOP = 13,   /* arg: the capture's id */
    /* fastpath -> slowpath (fp2sp) */
    TAS_MSG_EXCEPTION = 16,      /* received frame handed to the slowpath; arg = enum tas_exc */
    TAS_MSG_FLOW_EVENT = 17,     /* data: struct tas_flow_event */
    TAS_MSG_APP_REMOVED = 18,    /* arg: app id; the worker has unmapped the app */
    TAS_MSG_CAPTURE_STARTED = 19, /* arg: capture id; data: struct tas_capture_report (status) */
    TAS_MSG_CAPTURE_STOPPED = 20, /* arg: capture id; data: struct tas_capture_report (counts); the file is closed */
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
    /* nslots slots of slot_size bytes follow, each starting with its owner word */
};

/* A side's private position in a ring (never shared). */
struct tas_ring_cursor {
    struct tas_ring *ring;
    uint8_t *slots;
    uint32_t mask;
    uint32_t pos;
    uint32_t slot_size;
    uint32_t _pad0;
};

/* ------------------------------------------------------------------------
 * Fastpath worker region: one shared-memory object per worker, mapped by the
 * slowpath and by that worker.  Layout, offsets from the start:
 *   struct tas_worker_shm | sp2fp ring | fp2sp ring | flows | flow controls
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
    uint64_t tcp_rx_segs;    /* segments for installed flows */
    uint64_t tcp_tx_segs;
    uint64_t tcp_retx_segs;
    uint64_t tcp_rx_unacceptable; /* out of window, PAWS, bad ACK: answered with an ACK, dropped */
    uint64_t challenge_acks;
    uint64_t app_msgs;       /* messages from apps */
    uint64_t app_bad_msgs;   /* rejected: another app's flow, a bad generation or length */
    uint64_t app_stale_msgs; /* for flows already removed (normal after a close) */
    uint64_t app_ring_full;  /* updates that waited for room in an fp2app ring */
    uint64_t flow_events;    /* events sent to the slowpath */
    uint64_t dev_rx_dropped;     /* the device's own counters, refreshed every 100 ms: */
    uint64_t dev_rx_ring_full;   /*   frames lost because the worker's RX ring was full */
    uint64_t dev_fill_empty;     /*   ... because no free frame was in the fill ring */
    uint64_t dev_tx_invalid;     /*   TX descriptors the kernel refused */
    uint64_t fp2sp_full;     /* events that waited for room in fp2sp */
    uint64_t capture_frames;   /* frames written to pcap files (tasctl capture, the capture option) */
    uint64_t capture_filtered; /* frames a capture's filter left out */
    uint64_t capture_lost;     /* frames a capture lost to failed writes */
    uint64_t drops[TAS_DROP__COUNT];      /* indexed by enum tas_drop */
    uint64_t exceptions[TAS_EXC__COUNT];  /* indexed by enum tas_exc */
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
    uint32_t max_flows;    /* entries in the flow table */
    uint64_t flows_off;    /* struct tas_flow[max_flows] */
    uint64_t flow_ctl_off; /* struct tas_flow_ctl[max_flows] */
    uint32_t rto_min_us;   /* bounds for the RTO the worker computes (RFC 6298 2.4) */
    uint32_t rto_max_us;
    uint32_t delack_us;    /* delayed-ACK timer */
    uint8_t _pad2[28];
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
 * so workers take this lock around their (batched) use of them and of the
 * pool of free frames that follows this header.
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
    /* under the lock */
    uint32_t nfree;        /* frames in the pool that follows: uint64_t free[nframes] */
    uint32_t fill_target;  /* the fill ring is topped up to this many entries */
    uint64_t bad_frames;   /* addresses outside the UMEM met (a bug if nonzero) */
};

/* ------------------------------------------------------------------------
 * TCP flows (see docs/tcp.md).  A worker's flow table lives in its region,
 * written by the worker only; the slowpath allocates indices (it alone adds
 * and removes flows) and reads the table for stats.  Applications name a
 * flow by its id (worker and index) and generation.
 * ---------------------------------------------------------------------- */
#define TAS_FLOW_INDEX_BITS 24
#define TAS_FLOW_INDEX_MASK 0xffffff
static inline uint32_t tas_flow_id(uint32_t worker, uint32_t index) { return worker << 24 | (index & 0xffffff); }

/* Options agreed in the handshake (tas_flow.opts, tas_flow_params.opts). */
enum tas_flow_opt {
    TAS_OPT_TIMESTAMPS = 1,
    TAS_OPT_SACK = 2,
    TAS_OPT_ECN = 4,
    TAS_OPT_WSCALE = 8,
};

enum tas_flow_state {
    TAS_FLOW_FREE = 0,
    TAS_FLOW_ACTIVE = 1,
    TAS_FLOW_DEAD = 2,   /* reset or given up: carries no more data, waits for removal */
    TAS_FLOW_SYN_RCVD = 3, /* installed with its SYN-ACK: the worker takes the ACK that
                            * completes the handshake (then ACTIVE, TAS_FEV_ESTABLISHED);
                            * every other segment goes to the slowpath */
};

/* tas_flow.fl */
enum tas_flow_flag {
    TAS_FL_FIN_QUEUED = 1,      /* the app shut down writing: FIN after the data */
    TAS_FL_FIN_SENT = 2,        /* fin_seq is valid */
    TAS_FL_FIN_ACKED = 4,
    TAS_FL_FIN_RCVD = 8,
    TAS_FL_OOO_FIN = 16,        /* a FIN beyond rcv_nxt, at ooo_fin */
    TAS_FL_ECE_PENDING = 32,    /* echo ECE until the peer's CWR */
    TAS_FL_CWR_PENDING = 64,    /* set CWR on the next new data segment */
    TAS_FL_RECOVERY = 128,      /* in fast recovery until snd_una passes recover */
    TAS_FL_TIMING = 256,        /* an RTT measurement runs on rtt_seq */
    TAS_FL_RTO_WAIT = 512,      /* the RTO fired: waiting for the slowpath's decision */
    TAS_FL_BACKOFF = 1024,      /* retransmitting after a timeout until new data is acknowledged */
    TAS_FL_TLP_SENT = 2048,     /* a tail loss probe is out (RFC 8985 7) */
};

#define TAS_OOO_MAX 8
#define TAS_SACK_MAX 8
#define TAS_REXMIT_MAX 8

struct tas_flow {
    /* identity, set at install */
    uint32_t state;          /* enum tas_flow_state */
    uint32_t gen;
    uint32_t app_id;
    uint32_t ctx;            /* the app context that gets this flow's updates */
    uint32_t local_ip;       /* network byte order */
    uint32_t remote_ip;
    uint16_t local_port;     /* host byte order */
    uint16_t remote_port;
    uint8_t remote_mac[6];
    uint16_t mss;            /* payload bytes per segment, before TCP options */
    uint32_t opts;           /* enum tas_flow_opt */
    uint8_t snd_wscale;
    uint8_t rcv_wscale;
    uint16_t _pad0;
    uint32_t ts_offset;      /* our TSval = CLOCK_MONOTONIC ms + ts_offset */
    /* the flow's buffers, in its app's region */
    uint64_t rx_off;
    uint64_t tx_off;
    uint32_t rx_size;        /* powers of two */
    uint32_t tx_size;
    /* receive side */
    uint32_t rcv_nxt;
    uint32_t rx_head;        /* buffer position of rcv_nxt */
    uint32_t rx_avail;       /* free RX buffer bytes: the receive window */
    uint32_t rcv_adv;        /* right edge of the window last advertised */
    uint32_t last_ack_sent;  /* rcv_nxt carried by the last segment sent */
    uint32_t ts_recent;
    uint32_t ooo_start[TAS_OOO_MAX]; /* out-of-order intervals [start, end) */
    uint32_t ooo_end[TAS_OOO_MAX];
    uint32_t ooo_n;
    uint32_t ooo_fin;        /* sequence number of a FIN beyond rcv_nxt */
    uint32_t rx_unacked;     /* in-order bytes received since the last ACK */
    uint32_t quickacks;      /* segments still acknowledged at once */
    uint32_t rx_notify;      /* bytes received not yet reported to the app */
    uint32_t tx_notify;      /* bytes acknowledged not yet reported to the app */
    /* send side */
    uint32_t snd_una;
    uint32_t snd_nxt;
    uint32_t snd_max;        /* highest sequence number sent, plus one */
    uint32_t tx_pos;         /* buffer position of snd_una */
    uint32_t tx_data;        /* app bytes in the TX buffer not yet acknowledged */
    uint32_t snd_wnd;        /* the peer's window, in bytes */
    uint32_t snd_wl1;
    uint32_t snd_wl2;
    uint32_t max_snd_wnd;
    uint32_t cwnd;
    uint32_t ssthresh;
    uint32_t recover;        /* snd_max when recovery started (RFC 6582) */
    uint32_t dupacks;
    uint32_t sack_start[TAS_SACK_MAX]; /* the peer's SACK scoreboard above snd_una */
    uint32_t sack_end[TAS_SACK_MAX];
    uint32_t sack_n;
    /* ranges resent during this SACK recovery, not yet SACKed nor deemed
     * lost again; each with snd_max just after it went (see tcp_in.c) */
    uint32_t rexmit_start[TAS_REXMIT_MAX];
    uint32_t rexmit_end[TAS_REXMIT_MAX];
    uint32_t rexmit_at[TAS_REXMIT_MAX];
    uint32_t rexmit_us[TAS_REXMIT_MAX]; /* when each went, CLOCK_MONOTONIC us (wrapping) */
    uint32_t rexmit_n;
    uint32_t rexmit_mark;    /* outside recovery: snd_max after the head was resent, or the probe's seq */
    uint32_t rack_hi;        /* unSACKed bytes below it are lost: SACKed beyond for a reordering window */
    uint32_t rack_pend;      /* the highest SACKed byte, seen first at rack_pend_ns, not yet old enough */
    uint32_t fin_seq;
    uint32_t fl;             /* enum tas_flow_flag */
    /* round trip and timers */
    uint32_t srtt_us;        /* 0: no sample yet */
    uint32_t rttvar_us;
    uint32_t rto_us;
    uint32_t rtt_seq;        /* the timed segment: a sample when snd_una passes it */
    uint32_t _pad1;
    uint64_t rtt_start_ns;
    uint64_t rack_pend_ns;   /* 0: nothing pending */
    uint64_t rto_at;         /* CLOCK_MONOTONIC deadlines in ns, 0 when not armed */
    uint64_t delack_at;
    uint64_t persist_at;
    uint64_t tlp_at;         /* tail loss probe (RFC 8985 7) */
    uint64_t rack_at;        /* RACK's reordering timer (RFC 8985 6.2): rack_pend or a resent range is due */
    uint64_t last_rx_ns;
    uint64_t last_tx_ns;
    /* counters */
    uint64_t rx_bytes;       /* in-order payload delivered to the RX buffer */
    uint64_t tx_bytes;       /* payload acknowledged by the peer */
    uint64_t rx_segs;
    uint64_t tx_segs;
    uint64_t retx_segs;
    uint64_t fast_retx;
    uint64_t tlps;           /* tail loss probes sent */
    uint64_t lost_rexmits;   /* resent ranges lost again (found by SACK) */
    uint64_t rtos;
    uint64_t ooo_segs;
    uint64_t ooo_drops;      /* out-of-order segments dropped: no interval left to record them */
    uint64_t dup_segs;       /* segments entirely below rcv_nxt */
    uint64_t ce_bytes;       /* payload received with CE */
    uint64_t ece_acks;       /* ACKs received with ECE */
};

/* Per-flow controls written by the slowpath only (a parallel array). */
struct tas_flow_ctl {
    uint32_t cwnd_cap;       /* bytes; 0: no cap */
    uint32_t _pad0;
    uint64_t _pad1;
};

/* TAS_MSG_FLOW_ADD */
struct tas_flow_params {
    uint32_t index;
    uint32_t gen;
    uint32_t app_id;
    uint32_t ctx;
    uint32_t local_ip;       /* network byte order */
    uint32_t remote_ip;
    uint16_t local_port;
    uint16_t remote_port;
    uint8_t remote_mac[6];
    uint16_t mss;
    uint32_t opts;           /* enum tas_flow_opt */
    uint8_t snd_wscale;
    uint8_t rcv_wscale;
    uint16_t flags;          /* TAS_FLOW_PARAM_* */
    uint32_t snd_una;        /* iss + 1; with SYN_RCVD: iss */
    uint32_t snd_nxt;
    uint32_t rcv_nxt;        /* irs + 1 */
    uint32_t snd_wnd;        /* bytes; with SYN_RCVD: the SYN's window (never scaled) */
    uint32_t ts_recent;
    uint32_t ts_offset;
    uint32_t rto_us;
    uint32_t srtt_us;        /* 0: none yet */
    uint32_t synack_us;      /* with SYN_RCVD: when the SYN-ACK left, CLOCK_MONOTONIC us (wrapping) */
    uint64_t rx_off;
    uint64_t tx_off;
    uint32_t rx_size;
    uint32_t tx_size;
};

/* tas_flow_params.flags */
#define TAS_FLOW_PARAM_SYN_RCVD 1 /* passive open, SYN-ACK sent: the flow starts in TAS_FLOW_SYN_RCVD */

#define TAS_FLOW_CMD_RST 1
#define TAS_CTX_NONE 0xffffffff /* MOVE: notify nobody (a connection no process uses now) */
#define TAS_MOVE_STATE 1        /* MOVE: tell the new context the buffers' state (TAS_QE_FLOW_STATE) */
enum tas_probe_kind { TAS_PROBE_ZERO_WINDOW = 1, TAS_PROBE_KEEPALIVE = 2 };

/* TAS_MSG_FLOW_REMOVE, _RETRANSMIT, _PROBE */
struct tas_flow_cmd {
    uint32_t index;
    uint32_t gen;
    uint32_t flags;          /* REMOVE: TAS_FLOW_CMD_RST; PROBE: enum tas_probe_kind; MOVE: context */
    uint32_t timeout_us;     /* RETRANSMIT: the RTO to arm; PROBE: when to report again; MOVE: TAS_MOVE_STATE */
};

enum tas_flow_event_kind {
    TAS_FEV_FIN_RECEIVED = 1,
    TAS_FEV_FIN_SENT = 2,
    TAS_FEV_FIN_ACKED = 3,
    TAS_FEV_RESET = 4,        /* an acceptable RST arrived; the flow is dead */
    TAS_FEV_RTO = 5,          /* the retransmission timer fired */
    TAS_FEV_PERSIST = 6,      /* the peer's window is zero and data waits */
    TAS_FEV_ACK_PROGRESS = 7, /* new data acknowledged after a timeout */
    TAS_FEV_REMOVED = 8,      /* answer to FLOW_REMOVE, with the final state */
    TAS_FEV_KEEPALIVE = 9,    /* a keepalive probe's timer: the last activity is in last_rx_ns */
    TAS_FEV_ESTABLISHED = 10, /* a TAS_FLOW_PARAM_SYN_RCVD flow took the handshake's ACK */
};

/* TAS_MSG_FLOW_EVENT */
struct tas_flow_event {
    uint32_t index;
    uint32_t gen;
    uint32_t kind;           /* enum tas_flow_event_kind */
    uint32_t fl;             /* the flow's flags at the time */
    uint32_t snd_una;
    uint32_t snd_nxt;
    uint32_t rcv_nxt;
    uint32_t ts_recent;
    uint32_t srtt_us;
    uint32_t rttvar_us;
    uint64_t last_rx_ns;
};

/* ------------------------------------------------------------------------
 * Capture (tasctl capture): the slowpath hands every worker the same pcap
 * file (opened O_APPEND, its global header written) and a classic BPF
 * filter compiled by libpcap; each worker appends whole records, each batch
 * with one write(), so records of several workers never interleave.
 * ---------------------------------------------------------------------- */
#define TAS_CAPTURE_INSNS_MAX 250

/* One classic BPF instruction, as struct bpf_insn (<pcap/bpf.h>, <linux/filter.h>). */
struct tas_bpf_insn {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
};

/* TAS_MSG_CAPTURE_START */
struct tas_capture_cmd {
    uint32_t id;             /* nonzero; named by STOP and the answers */
    uint32_t snaplen;        /* bytes kept of each frame, at least 1 */
    uint32_t limit;          /* write at most this many frames; 0: no limit */
    uint32_t ninsns;         /* filter length; 0: every frame */
    struct tas_bpf_insn insns[TAS_CAPTURE_INSNS_MAX];
};

/* TAS_MSG_CAPTURE_STARTED, _STOPPED */
struct tas_capture_report {
    uint32_t id;
    int32_t status;          /* STARTED: 0, or a positive errno (the capture did not start) */
    uint64_t frames;         /* frames written */
    uint64_t filtered;       /* frames the filter left out */
    uint64_t lost;           /* frames lost to failed writes */
    uint64_t bytes;          /* bytes written, record headers included */
};

/* TAS_MSG_APP_ADD, _APP_REMOVE, _CTX_ADD */
struct tas_app_cmd {
    uint32_t app_id;
    uint32_t ctx;
    uint64_t size;           /* APP_ADD: bytes of the region */
};

/* ------------------------------------------------------------------------
 * Application regions.  One per application, created by tasd and passed to
 * the app over the app socket (SCM_RIGHTS); mapped by the app, the slowpath
 * and every worker.  Layout:
 *   struct tas_app_hdr | rings | flow buffers
 * The rings of context c start at rings_off + c * ring_stride; in order:
 * app2sp, sp2app, then app2fp and fp2app for each worker (tas_app_ring_off).
 * Their entries are struct tas_qe.  Nothing the app writes is trusted.
 * ---------------------------------------------------------------------- */
#define TAS_QE_SIZE 64

enum tas_qe_type {
    TAS_QE_NONE = 0,
    /* app -> fastpath (app2fp) */
    TAS_QE_TX = 1,           /* flow, gen, bump.len: bytes appended to the TX buffer */
    TAS_QE_RX_FREED = 2,     /* flow, gen, bump.len: bytes consumed from the RX buffer */
    TAS_QE_SHUT_WR = 3,      /* flow, gen: send FIN after the data */
    /* fastpath -> app (fp2app) */
    TAS_QE_FLOW_UPDATE = 16, /* flow, gen, update: bytes received and acknowledged; flags */
    TAS_QE_FLOW_STATE = 17,  /* flow, gen, state: the buffers as they are (answers TAKE); flags
                              * (also from the slowpath: TAS_QF_STALE, or an error in state.status) */
    /* app -> slowpath (app2sp) */
    TAS_QE_LISTEN = 32,      /* req: cookie, port, n = backlog; flags: TAS_QF_REUSEPORT */
    TAS_QE_UNLISTEN = 33,    /* flow = listener id */
    TAS_QE_ACCEPT = 34,      /* flow = listener id; req.n = connections the app can take */
    TAS_QE_CONNECT = 35,     /* req: cookie, ip, port, lport (0: ephemeral) */
    TAS_QE_CLOSE = 36,       /* flow, gen: the app is done with the flow */
    TAS_QE_ABORT = 37,       /* flow, gen: reset it */
    TAS_QE_SETOPT = 38,      /* flow, gen, opt: keepalive and user timeout */
    TAS_QE_TAKE = 39,        /* flow, gen: a connection inherited across fork is this context's now */
    TAS_QE_INFO = 40,        /* flow, gen: how is the connection doing (TCP_INFO)? */
    /* slowpath -> app (sp2app) */
    TAS_QE_LISTENED = 48,    /* res: cookie, status, listener */
    TAS_QE_ACCEPTED = 49,    /* flow, gen, res: listener, conn */
    TAS_QE_CONNECTED = 50,   /* flow, gen, res: cookie, status, conn */
    TAS_QE_CONN_ERROR = 51,  /* flow, gen, res.status: the connection failed (errno) */
    TAS_QE_CLOSED = 52,      /* flow, gen: gone for good; the handle may be reused */
    TAS_QE_INFO_ANSWER = 53, /* flow, gen, info: the answer to INFO */
};

/* tas_qe.flags */
enum tas_qe_flag {
    TAS_QF_FIN = 1,          /* FLOW_UPDATE: the peer closed its side (after rx bytes) */
    TAS_QF_REUSEPORT = 2,    /* LISTEN */
    TAS_QF_STALE = 4,        /* FLOW_STATE: no worker holds the flow now: keep the state you have */
};

struct tas_conn_info {
    uint64_t rx_off;         /* the flow's buffers in the app region */
    uint64_t tx_off;
    uint32_t rx_size;
    uint32_t tx_size;
    uint32_t remote_ip;      /* network byte order */
    uint16_t remote_port;    /* host byte order */
    uint16_t local_port;
};

struct tas_qe_bump {
    uint32_t len;
    uint32_t _pad0;
};

struct tas_qe_update {
    uint32_t rx_bytes;       /* arrived in the RX buffer since the last update */
    uint32_t tx_acked;       /* freed in the TX buffer since the last update */
};

struct tas_qe_req {
    uint64_t cookie;         /* echoed in the answer */
    uint32_t ip;             /* CONNECT: network byte order */
    uint16_t port;
    uint16_t lport;
    uint32_t n;              /* LISTEN: backlog; ACCEPT: connections */
    uint32_t _pad0;
};

struct tas_qe_opt {
    uint32_t keepalive;      /* SO_KEEPALIVE: 0 or 1 */
    uint32_t keepidle_s;     /* TCP_KEEPIDLE, TCP_KEEPINTVL (seconds), TCP_KEEPCNT; 0: tasd's default */
    uint32_t keepintvl_s;
    uint32_t keepcnt;
    uint32_t user_timeout_ms; /* TCP_USER_TIMEOUT; 0: count retries instead */
    uint32_t _pad0;
};

struct tas_qe_state {
    uint32_t rx_pos;         /* the next byte to read, as a buffer position */
    uint32_t rx_ready;       /* bytes ready from there on */
    uint32_t tx_pos;         /* the next byte to write */
    uint32_t tx_used;        /* bytes written and not yet acknowledged */
    int32_t status;          /* 0, or a positive errno: the connection cannot be taken */
    uint32_t _pad0;
};

struct tas_qe_info {
    uint32_t rtt_us;         /* smoothed; 0: no sample yet */
    uint32_t rttvar_us;
    uint32_t rto_us;
    uint32_t cwnd;           /* bytes */
    uint32_t ssthresh;       /* bytes */
    uint32_t mss;
    uint32_t retrans;        /* segments sent again, in all */
    uint32_t snd_wnd;        /* the peer's window, bytes */
    uint64_t bytes_acked;
    uint64_t bytes_received;
};

struct tas_qe_res {
    uint64_t cookie;
    int32_t status;          /* 0 or a positive errno */
    uint32_t listener;
    struct tas_conn_info conn;
};

struct tas_qe {
    uint32_t owner;          /* enum tas_slot_owner, written last / read first */
    uint16_t type;           /* enum tas_qe_type */
    uint16_t flags;          /* enum tas_qe_flag */
    uint32_t flow;           /* flow id (tas_flow_id) or listener id */
    uint32_t gen;
    union {
        struct tas_qe_bump bump;
        struct tas_qe_update update;
        struct tas_qe_req req;
        struct tas_qe_res res;
        struct tas_qe_opt opt;
        struct tas_qe_state state;
        struct tas_qe_info info;
        uint8_t raw[48];
    } u;
};

enum tas_app_ring {
    TAS_RING_APP2SP = 0,
    TAS_RING_SP2APP = 1,
    TAS_RING_APP2FP = 2,     /* + worker */
};

struct tas_app_hdr {
    uint32_t magic;          /* TAS_ABI_MAGIC */
    uint32_t abi_version;
    uint64_t size;           /* bytes in the region */
    uint32_t app_id;
    uint32_t nworkers;
    uint32_t nctx;           /* context slots */
    uint32_t ring_entries;   /* entries per ring, a power of two */
    uint64_t rings_off;
    uint64_t ring_bytes;     /* bytes per ring, header included */
    uint64_t ring_stride;    /* bytes of one context's rings */
    uint64_t buf_off;        /* flow buffers */
    uint64_t buf_size;
    uint64_t join_secret;    /* what a forked child shows to register as this app's process */
    uint8_t _pad0[48];
};

/* Offset of a context's ring: which = TAS_RING_APP2SP, TAS_RING_SP2APP,
 * TAS_RING_APP2FP + w for app2fp of worker w, TAS_RING_APP2FP + nworkers + w
 * for fp2app of worker w. */
static inline uint64_t tas_app_ring_off(const struct tas_app_hdr *h, uint32_t ctx, uint32_t which)
{
    return h->rings_off + (uint64_t)ctx * h->ring_stride + (uint64_t)which * h->ring_bytes;
}

/* ------------------------------------------------------------------------
 * Registration: an application talks to tasd's app socket (a Unix
 * SOCK_SEQPACKET socket) once to register and once per context; the socket
 * stays open for the app's lifetime, and its closing is how tasd learns the
 * app is gone.  Descriptors travel with SCM_RIGHTS:
 *   HELLO ->        <- WELCOME + [region memfd, slowpath doorbell, worker doorbells...]
 *   CTX_OPEN + [the context's eventfd] ->        <- CTX_OPENED
 *   anything refused                              <- REFUSED (status, error)
 * A process that forks hands its child what it holds: on a new socket it
 * sends HOLD messages (struct tas_reg_hold) then HELLO with the join secret;
 * after WELCOME the child owns that socket (its registration) and the
 * connections and listeners named live on while any holder does.  A holder
 * lets one go with RELEASE (a struct tas_reg_hold) or by closing it.
 * ---------------------------------------------------------------------- */
#define TAS_APP_SOCKET_PATH "/run/tasd/app.sock"

enum tas_reg_type {
    TAS_REG_HELLO = 1,
    TAS_REG_WELCOME = 2,
    TAS_REG_CTX_OPEN = 3,
    TAS_REG_CTX_OPENED = 4,
    TAS_REG_REFUSED = 5,
    TAS_REG_HOLD = 6,        /* struct tas_reg_hold: the forking process holds these (before HELLO) */
    TAS_REG_RELEASE = 7,     /* struct tas_reg_hold: this process lets these go */
};

struct tas_reg_msg {
    uint32_t magic;          /* TAS_ABI_MAGIC */
    uint32_t abi_version;    /* TAS_ABI_VERSION */
    uint32_t type;           /* enum tas_reg_type */
    int32_t status;          /* REFUSED: a positive errno */
    uint32_t app_id;
    uint32_t ctx;            /* CTX_OPEN, CTX_OPENED */
    uint32_t nctx;           /* WELCOME: context slots in the region */
    uint32_t nworkers;       /* WELCOME: worker doorbells that follow */
    uint64_t region_size;    /* WELCOME */
    uint32_t max_conns;      /* WELCOME: this app's connection limit */
    uint32_t ip;             /* WELCOME: tasd's address (network byte order) */
    uint32_t gateway;        /* WELCOME: its gateway (network byte order), 0 if none */
    uint32_t prefix_len;     /* WELCOME: its network's prefix length */
    char name[64];           /* HELLO: the app's name, for operators */
    char error[120];         /* REFUSED: one line */
    int32_t pid;             /* CTX_OPEN: the sender's pid (a forked child registered by its parent) */
    uint32_t flags;          /* HELLO: enum tas_reg_flag */
    uint64_t secret;         /* HELLO: nonzero to join app_id (a forked child): its join_secret */
};

enum tas_reg_flag {
    TAS_REG_F_POSIX = 1,     /* a process that ends closes its connections as close(2) would (FIN,
                              * or RST if data was left unread), instead of resetting them */
};

enum tas_hold_kind { TAS_HOLD_CONN = 1, TAS_HOLD_LISTENER = 2 };

struct tas_hold {
    uint32_t kind;           /* enum tas_hold_kind */
    uint32_t id;             /* flow id, or listener id */
    uint32_t gen;            /* CONN: the flow's generation */
    uint32_t _pad0;
};

#define TAS_REG_HOLD_MAX 255
struct tas_reg_hold {
    uint32_t magic;          /* TAS_ABI_MAGIC */
    uint32_t abi_version;
    uint32_t type;           /* TAS_REG_HOLD or TAS_REG_RELEASE */
    uint32_t n;              /* entries used */
    struct tas_hold e[TAS_REG_HOLD_MAX];
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
_Static_assert(offsetof(struct tas_worker_shm, stop) == TAS_CACHELINE, "stop on its own line");
_Static_assert(offsetof(struct tas_worker_shm, state) == 2 * TAS_CACHELINE, "status line");
_Static_assert(offsetof(struct tas_worker_shm, stats) == 4 * TAS_CACHELINE, "counters");
_Static_assert(sizeof(struct tas_qe) == TAS_QE_SIZE, "app queue entry size");
_Static_assert(sizeof(struct tas_qe_res) == 48, "app queue entry payload");
_Static_assert(sizeof(struct tas_app_hdr) % TAS_CACHELINE == 0, "app header size");
_Static_assert(sizeof(struct tas_flow) % 8 == 0, "flow alignment");
_Static_assert(sizeof(struct tas_flow_params) <= TAS_RING_DATA_MAX, "flow params fit a message");
_Static_assert(sizeof(struct tas_capture_cmd) <= TAS_RING_DATA_MAX, "capture command fits a message");
_Static_assert(sizeof(struct tas_bpf_insn) == 8, "classic BPF instruction");
_Static_assert(TAS_MAX_WORKERS <= 64 && TAS_FLOW_INDEX_BITS == 24, "flow ids");
_Static_assert(sizeof(struct tas_reg_msg) == 256, "registration message");
_Static_assert(sizeof(struct tas_reg_hold) == 4096, "hold message");
_Static_assert(sizeof(struct tas_qe_state) <= 48, "state entry payload");
_Static_assert(sizeof(struct tas_qe_info) <= 48, "info entry payload");
#endif

#endif /* TASD_ABI_H */
