/* .fvecs/.ivecs/.bvecs parser on arbitrary bytes, with the dtype taken from
 * the first byte. */
#include <stddef.h>
#include <stdint.h>

#include "osprey/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads of every byte from being optimised away. */
static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const osp_dtype types[3] = {OSP_DTYPE_F32, OSP_DTYPE_I32, OSP_DTYPE_U8};
    if (size < 1) return 0;
    osp_array a;
    if (osp_vecs_parse(data + 1, size - 1, "fuzz.fvecs", types[data[0] % 3], &a) != OSP_OK)
        return 0;
    size_t bytes = (size_t)osp_array_numel(&a) * osp_dtype_size(a.dtype);
    unsigned sum = 0;
    for (size_t i = 0; i < bytes; i++) sum ^= ((const unsigned char *)a.data)[i];
    sink = sum;
    osp_array_free(&a);
    return 0;
}
