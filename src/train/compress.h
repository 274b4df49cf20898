/* Lossy gradient compression with error feedback, for any exchange of
 * gradients (the MPI reducer, a parameter server): a sender packs its
 * floats into a smaller wire format and keeps what the packing lost (the
 * residual), which it adds to the next step's values before packing them
 * (Seide et al. 2014, "1-bit SGD"; Karimireddy et al. 2019, "EF-SGD"). So
 * the running sum of what was sent never strays from the running sum of
 * the true values by more than one step's rounding error: nothing is lost,
 * only delayed.
 *
 * Wire formats for a chunk of n floats (little-endian, as the hosts are):
 *   OSP__COMPRESS_FP16: n IEEE binary16 values (2n bytes), round to nearest
 *     even; values past 65504 become infinities.
 *   OSP__COMPRESS_INT8: one float scale s, then n signed bytes q in
 *     [-127, 127] (4 + n bytes); the value is q * s, s = max |x| / 127 over
 *     the chunk, q rounded to nearest (deterministic: error feedback carries
 *     the rounding error forward, so stochastic rounding's unbiasedness is
 *     not needed and its extra noise is avoided). */
#ifndef OSPREY_TRAIN_COMPRESS_H
#define OSPREY_TRAIN_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

typedef enum osp__compress_kind {
    OSP__COMPRESS_NONE = 0, /* plain float32 (4n bytes) */
    OSP__COMPRESS_FP16 = 1,
    OSP__COMPRESS_INT8 = 2,
} osp__compress_kind;

/* "none", "fp16", "int8"; parse returns 0, or OSP_EINVAL (message set). */
const char *osp__compress_name(osp__compress_kind kind);
int osp__compress_parse(const char *name, osp__compress_kind *kind);

/* Bytes of one packed chunk of n floats. */
size_t osp__compress_size(osp__compress_kind kind, int64_t n);

/* Packs x[0..n) plus resid[0..n) into out (osp__compress_size bytes) and
 * leaves in resid what the packing lost: resid = (x + resid) - unpack(out).
 * resid may be NULL: no feedback, x alone is packed. x and out are not
 * changed otherwise; resid is the sender's state from step to step. */
void osp__compress(osp__compress_kind kind, const float *x, float *resid, int64_t n, void *out);

/* acc[0..n) += the values packed in in (osp__compress_size bytes; any bytes
 * are accepted: a damaged chunk gives wrong numbers, never a bad access). */
void osp__decompress_add(osp__compress_kind kind, const void *in, int64_t n, float *acc);

#endif
