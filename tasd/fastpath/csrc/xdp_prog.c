/*
 * Loading, configuring and removing tasd's BPF programs (slowpath side):
 * the XDP program through libxdp, which uses its multi-program dispatcher
 * where the kernel allows and else attaches the program alone; and the TAP
 * steering program through libbpf.
 */
#include <errno.h>
#include <stdarg.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include "fastpath.h"
#include "tasd/abi.h"

#define PROG_NAME "tasd_xdp"

struct fp_xdp_prog {
    struct xdp_program *prog;
    int ifindex;
    enum xdp_attach_mode mode;
};

/* libbpf and libxdp print warnings on stderr by themselves (for example
 * when the dispatcher cannot load here and they fall back to a single
 * program).  Failures reach the caller through err; the chatter is shown
 * only with TASD_BPF_DEBUG set in the environment. */
static int quiet_bpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    (void)level;
    return getenv("TASD_BPF_DEBUG") ? vfprintf(stderr, fmt, ap) : 0;
}

static int quiet_xdp(enum libxdp_print_level level, const char *fmt, va_list ap)
{
    (void)level;
    return getenv("TASD_BPF_DEBUG") ? vfprintf(stderr, fmt, ap) : 0;
}

static void quiet(void)
{
    libbpf_set_print(quiet_bpf);
    libxdp_set_print(quiet_xdp);
}

static int map_fd(struct bpf_object *obj, const char *name)
{
    struct bpf_map *m = bpf_object__find_map_by_name(obj, name);
    return m ? bpf_map__fd(m) : -1;
}

struct fp_xdp_prog *fp_xdp_prog_attach(const char *obj_path, int ifindex, int mode, uint32_t ip_be,
                                       const int *xsk_fds, uint32_t nsockets, char *err, size_t errlen)
{
    quiet();
    if (nsockets == 0 || nsockets > TAS_MAX_WORKERS) {
        snprintf(err, errlen, "bad socket count %u", nsockets);
        return NULL;
    }
    struct fp_xdp_prog *p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->ifindex = ifindex;
    p->prog = xdp_program__open_file(obj_path, "xdp", NULL);
    long e = libxdp_get_error(p->prog);
    if (e) {
        snprintf(err, errlen, "open XDP program %s: %s", obj_path, strerror((int)-e));
        free(p);
        return NULL;
    }
    enum xdp_attach_mode modes[2];
    int nmodes = 0;
    if (mode != FP_XDP_SKB)
        modes[nmodes++] = XDP_MODE_NATIVE;
    if (mode != FP_XDP_NATIVE)
        modes[nmodes++] = XDP_MODE_SKB;
    int rc = -1;
    for (int i = 0; i < nmodes && rc != 0; i++) {
        rc = xdp_program__attach(p->prog, ifindex, modes[i], 0);
        if (rc == 0)
            p->mode = modes[i];
    }
    if (rc != 0) {
        snprintf(err, errlen, "attach XDP program (%s mode): %s%s",
                 modes[nmodes - 1] == XDP_MODE_NATIVE ? "native" : "skb", strerror(-rc),
                 rc == -EEXIST || rc == -EBUSY ? " (another XDP program is attached)" : "");
        xdp_program__close(p->prog);
        free(p);
        return NULL;
    }
    struct bpf_object *obj = xdp_program__bpf_obj(p->prog);
    int cfg_fd = map_fd(obj, "tasd_cfg"), xsks_fd = map_fd(obj, "tasd_xsks");
    if (cfg_fd < 0 || xsks_fd < 0) {
        snprintf(err, errlen, "XDP program %s lacks its maps", obj_path);
        goto fail;
    }
    for (uint32_t i = 0; i < nsockets; i++) {
        uint32_t fd = (uint32_t)xsk_fds[i];
        if (bpf_map_update_elem(xsks_fd, &i, &fd, BPF_ANY) != 0) {
            snprintf(err, errlen, "XDP socket map: %s", strerror(errno));
            goto fail;
        }
    }
    uint32_t key = 0;
    struct tas_xdp_cfg cfg = {.ip = ip_be, .nworkers = nsockets};
    if (bpf_map_update_elem(cfg_fd, &key, &cfg, BPF_ANY) != 0) {
        snprintf(err, errlen, "XDP config map: %s", strerror(errno));
        goto fail;
    }
    return p;
fail:
    xdp_program__detach(p->prog, ifindex, p->mode, 0);
    xdp_program__close(p->prog);
    free(p);
    return NULL;
}

int fp_xdp_prog_mode(struct fp_xdp_prog *p) { return p->mode == XDP_MODE_NATIVE ? FP_XDP_NATIVE : FP_XDP_SKB; }

int fp_xdp_prog_dispatcher(struct fp_xdp_prog *p)
{
    struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(p->ifindex);
    if (libxdp_get_error(mp) || mp == NULL)
        return 0;
    int legacy = xdp_multiprog__is_legacy(mp);
    xdp_multiprog__close(mp);
    return !legacy;
}

int fp_xdp_prog_detach(struct fp_xdp_prog *p, char *err, size_t errlen)
{
    int rc = xdp_program__detach(p->prog, p->ifindex, p->mode, 0);
    if (rc != 0)
        snprintf(err, errlen, "detach XDP program: %s", strerror(-rc));
    xdp_program__close(p->prog);
    free(p);
    return rc ? -1 : 0;
}

/* Visit tasd programs on ifindex; with remove set, detach them. */
static int tasd_progs(int ifindex, int remove, char *err, size_t errlen)
{
    quiet();
    struct xdp_multiprog *mp = xdp_multiprog__get_from_ifindex(ifindex);
    long e = libxdp_get_error(mp);
    if (e || mp == NULL) {
        if (e == -ENOENT || mp == NULL)
            return 0;
        snprintf(err, errlen, "query XDP programs: %s", strerror((int)-e));
        return -1;
    }
    int found = 0, rc = 0;
    if (xdp_multiprog__is_legacy(mp)) {
        struct xdp_program *main = xdp_multiprog__main_prog(mp);
        if (main && strcmp(xdp_program__name(main), PROG_NAME) == 0) {
            found = 1;
            if (remove)
                rc = xdp_multiprog__detach(mp);
        }
    } else {
        enum xdp_attach_mode mode = xdp_multiprog__attach_mode(mp);
        for (struct xdp_program *q = xdp_multiprog__next_prog(NULL, mp); q; q = xdp_multiprog__next_prog(q, mp)) {
            if (strcmp(xdp_program__name(q), PROG_NAME) != 0)
                continue;
            found++;
            if (remove && rc == 0)
                rc = xdp_program__detach(q, ifindex, mode, 0);
        }
    }
    xdp_multiprog__close(mp);
    if (rc != 0) {
        snprintf(err, errlen, "remove stale XDP program: %s", strerror(-rc));
        return -1;
    }
    return found;
}

int fp_xdp_prog_remove_stale(int ifindex, char *err, size_t errlen) { return tasd_progs(ifindex, 1, err, errlen); }

int fp_xdp_prog_count(int ifindex)
{
    char err[128];
    return tasd_progs(ifindex, 0, err, sizeof err);
}

int fp_tap_set_steering(int tap_fd, const char *obj_path, uint32_t ip_be, uint32_t nqueues, char *err,
                        size_t errlen)
{
    quiet();
    struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
    if (libbpf_get_error(obj)) {
        snprintf(err, errlen, "open %s: %s", obj_path, strerror(errno));
        return -1;
    }
    int rc = -1;
    if (bpf_object__load(obj) != 0) {
        snprintf(err, errlen, "load TAP steering program: %s", strerror(errno));
        goto out;
    }
    struct bpf_program *prog = bpf_object__find_program_by_name(obj, "tasd_tap_steer");
    int cfg_fd = map_fd(obj, "tasd_cfg");
    uint32_t key = 0;
    struct tas_xdp_cfg cfg = {.ip = ip_be, .nworkers = nqueues};
    if (prog == NULL || cfg_fd < 0 || bpf_map_update_elem(cfg_fd, &key, &cfg, BPF_ANY) != 0) {
        snprintf(err, errlen, "TAP steering program %s is incomplete", obj_path);
        goto out;
    }
    int pfd = bpf_program__fd(prog);
    if (ioctl(tap_fd, TUNSETSTEERINGEBPF, &pfd) < 0) {
        snprintf(err, errlen, "TUNSETSTEERINGEBPF: %s", strerror(errno));
        goto out;
    }
    rc = 0; /* the device holds its own reference to the program */
out:
    bpf_object__close(obj);
    return rc;
}
