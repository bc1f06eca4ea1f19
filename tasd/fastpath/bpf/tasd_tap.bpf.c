/*
 * Steering for a multi-queue TAP device (TUNSETSTEERINGEBPF): the queue, so
 * the worker, of a frame is chosen with the same flow hash as the XDP
 * program, so the slowpath knows which worker owns each connection whatever
 * the backend.  (The kernel keeps only 16 bits of the result, so the worker
 * index itself is returned, not the hash.)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "tasd_cfg.bpf.h"

SEC("socket")
int tasd_tap_steer(struct __sk_buff *skb)
{
    __u8 h[ETH_HLEN + 20];
    struct tas_xdp_cfg *cfg = tasd_config();
    if (cfg == NULL || cfg->nworkers <= 1)
        return 0;
    if (bpf_skb_load_bytes(skb, 0, h, ETH_HLEN + 20) < 0)
        return 0;
    if (h[12] != 0x08 || h[13] != 0x00)
        return 0; /* ARP and the rest: worker 0 */
    __u8 *ip = h + ETH_HLEN;
    __u32 ihl = (ip[0] & 0xf) * 4;
    __u32 saddr = (__u32)ip[12] << 24 | (__u32)ip[13] << 16 | (__u32)ip[14] << 8 | ip[15];
    __u32 daddr = (__u32)ip[16] << 24 | (__u32)ip[17] << 16 | (__u32)ip[18] << 8 | ip[19];
    __u32 sport = 0, dport = 0;
    if (ip[9] == IPPROTO_TCP && (ip[6] & 0x3f) == 0 && ip[7] == 0 && ihl >= 20 && ihl <= 60) {
        __u8 p[4];
        if (bpf_skb_load_bytes(skb, ETH_HLEN + ihl, p, 4) == 0) {
            sport = (__u32)p[0] << 8 | p[1];
            dport = (__u32)p[2] << 8 | p[3];
        }
    }
    return (int)tas_flow_worker(saddr, daddr, sport, dport, cfg->nworkers);
}

char _license[] SEC("license") = "Dual BSD/GPL";
