/* Helpers shared by the io readers and writers. */
#ifndef OSPREY_IO_IMPL_H
#define OSPREY_IO_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/io.h"

/* Tensor bytes are copied to and from files as they lie in memory: the
 * formats are little-endian, and so must the host be. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "osprey io assumes a little-endian host");

struct osp_net;
/* The network's label names as a JSON array (free with free), or NULL. */
char *osp__json_labels(const struct osp_net *net);

/* 1 if t is one of the osp_dtype values. */
int osp__dtype_valid(int t);

/* The byte size of an array of dtype and shape: 0 and *out set, or
 * OSP_ERANGE (with a message naming `name`) for a negative dimension, a rank
 * outside 0..OSP_MAX_DIMS, or a size that overflows. */
int osp__array_nbytes(osp_dtype dtype, const osp_shape *shape, const char *name, size_t *out);

/* Little-endian loads from unaligned bytes. */
static inline uint32_t osp__load_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t osp__load_le64(const unsigned char *p) {
    return (uint64_t)osp__load_le32(p) | (uint64_t)osp__load_le32(p + 4) << 32;
}

#endif
