#include "wire.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fp_csum_partial assumes a little-endian host"
#endif

uint32_t fp_csum_partial(const uint8_t *p, uint32_t len, uint32_t sum)
{
    /* 64-bit accumulator over 32-bit words, big-endian 16-bit semantics are
     * kept by summing the bytes as they are and swapping at the end. */
    uint64_t acc = 0;
    while (len >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        acc += w;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t h;
        memcpy(&h, p, 2);
        acc += h;
        p += 2;
        len -= 2;
    }
    if (len)
        acc += *p; /* little-endian host: a lone last byte is the high byte of its word */
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    uint32_t s = (uint32_t)acc;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    /* byte-swap the 16-bit host-order sum into network order semantics */
    s = ((s & 0xff) << 8) | (s >> 8);
    return sum + s;
}
