/* .npy parser on arbitrary bytes; whatever it accepts must hold exactly the
 * bytes its shape says. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "osprey/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads of every byte from being optimised away. */
static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_array a;
    if (osp_npy_parse(data, size, "fuzz.npy", &a) != OSP_OK) return 0;
    /* Touch every byte so that a wrong size shows up under ASan. */
    size_t bytes = (size_t)osp_array_numel(&a) * osp_dtype_size(a.dtype);
    unsigned sum = 0;
    for (size_t i = 0; i < bytes; i++) sum ^= ((const unsigned char *)a.data)[i];
    sink = sum;
    osp_array_free(&a);
    return 0;
}
