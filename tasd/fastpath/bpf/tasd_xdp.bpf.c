/*
 * tasd's XDP program: frames for tasd's address (ARP about it, and IPv4
 * to it) go to the AF_XDP socket of the worker that
 * owns the flow; everything else passes to the kernel untouched, so the
 * host's own traffic on the interface keeps working.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tasd_cfg.bpf.h"

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, TAS_MAX_WORKERS);
    __type(key, __u32);
    __type(value, __u32);
} tasd_xsks SEC(".maps");

/* Ethernet/IPv4 ARP body: htype ptype hlen plen oper sha spa tha tpa */
#define ARP_SPA_OFF 14
#define ARP_TPA_OFF 24

SEC("xdp")
int tasd_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    struct tas_xdp_cfg *cfg = tasd_config();
    if (cfg == NULL || cfg->ip == 0 || cfg->nworkers == 0)
        return XDP_PASS;

    if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
        __u8 *arp = (__u8 *)(eth + 1);
        if ((void *)(arp + ARP_TPA_OFF + 4) > end)
            return XDP_PASS;
        __u32 spa, tpa;
        __builtin_memcpy(&spa, arp + ARP_SPA_OFF, 4);
        __builtin_memcpy(&tpa, arp + ARP_TPA_OFF, 4);
        /* about our address: asking for it, answering us, or (spa) another
         * host claiming it, which tasd must see to detect the conflict */
        if (tpa != cfg->ip && spa != cfg->ip)
            return XDP_PASS;
        return bpf_redirect_map(&tasd_xsks, 0, XDP_PASS);
    }
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;

    struct iphdr *ip = (struct iphdr *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->daddr != cfg->ip)
        return XDP_PASS;
    __u32 sport = 0, dport = 0;
    /* TCP, not a fragment: hash the ports too */
    if (ip->protocol == IPPROTO_TCP && (ip->frag_off & bpf_htons(0x3fff)) == 0) {
        __u32 ihl = (ip->ihl & 0xf) * 4;
        struct tcphdr *tcp = (struct tcphdr *)((__u8 *)ip + ihl);
        if (ihl >= sizeof(*ip) && (void *)(tcp + 1) <= end) {
            sport = bpf_ntohs(tcp->source);
            dport = bpf_ntohs(tcp->dest);
        }
    }
    __u32 w = tas_flow_worker(bpf_ntohl(ip->saddr), bpf_ntohl(ip->daddr), sport, dport, cfg->nworkers);
    return bpf_redirect_map(&tasd_xsks, w, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
