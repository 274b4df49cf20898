/* Hash file loader (osp_hash_load_memory) on arbitrary bytes: a file it
 * accepts must give codes for a vector without reading out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "osprey/hash.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_hash *h;
    if (osp_hash_load_memory(data, size, "fuzz.osh", &h) != OSP_OK) return 0;
    const int bits = osp_hash_bits(h), dim = osp_hash_dim(h);
    if (bits < OSP_HASH_MIN_BITS || bits > OSP_HASH_MAX_BITS || bits % 8 || dim < 1 || dim > OSP_HASH_MAX_DIM)
        __builtin_trap();
    float *x = calloc((size_t)dim, sizeof *x);
    uint8_t *code = calloc((size_t)bits / 8, 1);
    if (x && code) {
        for (int j = 0; j < dim; j++) x[j] = (float)(j % 7) - 3.0f;
        if (osp_hash_codes(h, x, 1, code) != OSP_OK) __builtin_trap();
        unsigned s = 0;
        for (int i = 0; i < bits / 8; i++) s ^= code[i];
        sink = s + (unsigned)osp_hash_layer(h)[0];
    }
    free(x);
    free(code);
    osp_hash_free(h);
    return 0;
}
