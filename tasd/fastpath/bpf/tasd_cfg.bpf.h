/* The configuration map every tasd BPF program reads: one struct
 * tas_xdp_cfg, written by the slowpath after loading. */
#ifndef TASD_CFG_BPF_H
#define TASD_CFG_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "tasd/abi.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct tas_xdp_cfg);
} tasd_cfg SEC(".maps");

static __always_inline struct tas_xdp_cfg *tasd_config(void)
{
    __u32 key = 0;
    return bpf_map_lookup_elem(&tasd_cfg, &key);
}

#endif
