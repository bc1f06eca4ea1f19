/*
 * The receive path of the fastpath: validate a frame layer by layer and
 * decide its fate.  Every frame ends as a reply, an exception for the
 * slowpath, or a drop with a named reason (enum tas_drop); nothing is read
 * before the length that covers it has been checked.
 *
 * For now the fastpath answers ICMP echo itself and hands ARP, other ICMP
 * and all TCP to the slowpath.
 */
#include <string.h>

#include "rx.h"
#include "tasd/abi.h"
#include "wire.h"

static const uint8_t bcast_mac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static enum fp_verdict drop(uint32_t *reason, enum tas_drop r)
{
    *reason = r;
    return FP_DROP;
}

static enum fp_verdict exception(uint32_t *reason, enum tas_exc r)
{
    *reason = r;
    return FP_EXCEPTION;
}

static enum fp_verdict rx_arp(const struct fp_iface *ifc, const uint8_t *arp, uint32_t len, uint32_t *reason)
{
    if (len < ARP_LEN)
        return drop(reason, TAS_DROP_ARP_MALFORMED);
    uint16_t oper = rd16(arp + 6);
    if (rd16(arp) != 1 || rd16(arp + 2) != ETHERTYPE_IPV4 || arp[4] != 6 || arp[5] != 4 ||
        (oper != 1 && oper != 2))
        return drop(reason, TAS_DROP_ARP_MALFORMED);
    /* about our address: for us (target), or a claim on it (sender) that
     * the slowpath must see to detect an address conflict */
    if (rd_addr(arp + 24) != ifc->ip && rd_addr(arp + 14) != ifc->ip)
        return drop(reason, TAS_DROP_ARP_NOT_OURS);
    return exception(reason, TAS_EXC_ARP);
}

/* Is this IPv4 source address impossible for a peer? (RFC 1122 3.2.1.3) */
static int bad_source(const struct fp_iface *ifc, uint32_t saddr_be)
{
    uint8_t a0 = (uint8_t)(saddr_be & 0xff); /* first octet: address is in network order */
    return saddr_be == 0 || saddr_be == 0xffffffffu || saddr_be == ifc->ip || a0 == 127 || a0 >= 224;
}

/* Turn an echo request into its reply in place (RFC 792): swap the
 * addresses, type 0, fresh checksums. The payload is echoed unchanged. */
static enum fp_verdict icmp_echo_reply(const struct fp_iface *ifc, struct fp_buf *b, uint8_t *ip, uint32_t hlen,
                                       uint32_t tot)
{
    uint8_t *eth = b->data, *icmp = ip + hlen;
    memcpy(eth, eth + 6, 6);
    memcpy(eth + 6, ifc->mac, 6);
    uint32_t src = rd_addr(ip + 12);
    wr_addr(ip + 12, ifc->ip);
    wr_addr(ip + 16, src);
    ip[8] = 64;                       /* TTL */
    wr16(ip + 6, rd16(ip + 6) & 0x4000); /* keep DF only */
    wr16(ip + 10, 0);
    wr16(ip + 10, fp_csum_fold(fp_csum_partial(ip, hlen, 0)));
    icmp[0] = ICMP_ECHO_REPLY;
    icmp[1] = 0;
    wr16(icmp + 2, 0);
    wr16(icmp + 2, fp_csum_fold(fp_csum_partial(icmp, tot - hlen, 0)));
    b->len = ETH_HLEN_ + tot; /* drop any Ethernet padding */
    return FP_REPLY;
}

static enum fp_verdict rx_ipv4(const struct fp_iface *ifc, struct fp_buf *b, uint32_t *reason)
{
    uint8_t *ip = b->data + ETH_HLEN_;
    uint32_t avail = b->len - ETH_HLEN_;
    if (avail < IPV4_MIN_HLEN)
        return drop(reason, TAS_DROP_IP_TRUNCATED);
    uint32_t hlen = (uint32_t)(ip[0] & 0x0f) * 4, tot = rd16(ip + 2);
    if ((ip[0] >> 4) != 4 || hlen < IPV4_MIN_HLEN)
        return drop(reason, TAS_DROP_IP_MALFORMED);
    if (hlen > avail)
        return drop(reason, TAS_DROP_IP_TRUNCATED);
    if (tot < hlen)
        return drop(reason, TAS_DROP_IP_MALFORMED);
    if (tot > avail)
        return drop(reason, TAS_DROP_IP_TRUNCATED);
    if (fp_csum_fold(fp_csum_partial(ip, hlen, 0)) != 0)
        return drop(reason, TAS_DROP_IP_CHECKSUM);
    if (rd_addr(ip + 16) != ifc->ip)
        return drop(reason, TAS_DROP_IP_NOT_OURS);
    if (bad_source(ifc, rd_addr(ip + 12)))
        return drop(reason, TAS_DROP_IP_BAD_SOURCE);
    if (rd16(ip + 6) & 0x3fff) /* MF or a fragment offset */
        return drop(reason, TAS_DROP_IP_FRAGMENT);

    uint8_t *l4 = ip + hlen;
    uint32_t l4len = tot - hlen;
    switch (ip[9]) {
    case IPPROTO_ICMP_:
        if (l4len < ICMP_HLEN)
            return drop(reason, TAS_DROP_ICMP_TRUNCATED);
        if (fp_csum_fold(fp_csum_partial(l4, l4len, 0)) != 0)
            return drop(reason, TAS_DROP_ICMP_CHECKSUM);
        if (l4[0] == ICMP_ECHO_REQUEST && l4[1] == 0)
            return icmp_echo_reply(ifc, b, ip, hlen, tot);
        return exception(reason, TAS_EXC_ICMP);
    case IPPROTO_TCP_: {
        if (l4len < TCP_MIN_HLEN)
            return drop(reason, TAS_DROP_TCP_TRUNCATED);
        uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
        if (doff < TCP_MIN_HLEN || doff > l4len)
            return drop(reason, TAS_DROP_TCP_MALFORMED);
        uint32_t sum = fp_csum_pseudo(rd_addr(ip + 12), rd_addr(ip + 16), IPPROTO_TCP_, l4len);
        if (fp_csum_fold(fp_csum_partial(l4, l4len, sum)) != 0)
            return drop(reason, TAS_DROP_TCP_CHECKSUM);
        return exception(reason, TAS_EXC_TCP_NOFLOW);
    }
    default:
        return drop(reason, TAS_DROP_IP_PROTOCOL);
    }
}

enum fp_verdict fp_rx_frame(const struct fp_iface *ifc, struct fp_buf *b, uint32_t *reason)
{
    const uint8_t *eth = b->data;
    if (b->len < ETH_HLEN_)
        return drop(reason, TAS_DROP_RUNT);
    if (b->len > ifc->max_frame)
        return drop(reason, TAS_DROP_TOO_BIG);
    if (eth[6] & 1)
        return drop(reason, TAS_DROP_MAC_BAD_SOURCE);
    if (memcmp(eth, ifc->mac, 6) != 0 && memcmp(eth, bcast_mac, 6) != 0)
        return drop(reason, TAS_DROP_MAC_NOT_OURS);
    switch (rd16(eth + 12)) {
    case ETHERTYPE_ARP:
        return rx_arp(ifc, eth + ETH_HLEN_, b->len - ETH_HLEN_, reason);
    case ETHERTYPE_IPV4:
        if (eth[0] & 1) /* IPv4 in a broadcast frame is not for a unicast stack */
            return drop(reason, TAS_DROP_MAC_NOT_OURS);
        return rx_ipv4(ifc, b, reason);
    default:
        return drop(reason, TAS_DROP_ETHERTYPE);
    }
}
