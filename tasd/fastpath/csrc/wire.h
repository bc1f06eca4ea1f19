/*
 * Wire formats as the fastpath reads and writes them: byte offsets into a
 * frame, read and written with explicit byte order.  No struct overlays on
 * packet bytes (frames carry no alignment promise); every read is preceded
 * by a length check in the caller.
 */
#ifndef FP_WIRE_H
#define FP_WIRE_H

#include <stdint.h>
#include <string.h>

#define ETH_HLEN_ 14
#define ETH_ALEN_ 6
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806

#define ARP_LEN 28      /* Ethernet/IPv4 ARP body */
#define IPV4_MIN_HLEN 20
#define ICMP_HLEN 8
#define TCP_MIN_HLEN 20

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
/* IPv4 addresses stay in network byte order as the frame holds them. */
static inline uint32_t rd_addr(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void wr_addr(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Internet checksum (RFC 1071). fp_csum_partial returns a 32-bit running sum
 * to be folded; fp_csum_fold returns the one's complement of the folded sum,
 * so that a region with a correct checksum folds to 0. */
uint32_t fp_csum_partial(const uint8_t *p, uint32_t len, uint32_t sum);
static inline uint16_t fp_csum_fold(uint32_t sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}
/* Sum of the IPv4 pseudo-header (RFC 9293 3.1) for a transport checksum. */
static inline uint32_t fp_csum_pseudo(uint32_t saddr, uint32_t daddr, uint8_t proto, uint32_t len)
{
    uint8_t ph[12];
    wr_addr(ph, saddr);
    wr_addr(ph + 4, daddr);
    ph[8] = 0;
    ph[9] = proto;
    wr16(ph + 10, (uint16_t)len);
    return fp_csum_partial(ph, sizeof ph, 0);
}

#endif /* FP_WIRE_H */
