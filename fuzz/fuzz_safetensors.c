/* safetensors parser on arbitrary bytes; every tensor it accepts must lie
 * inside the buffer and be findable by name. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "osprey/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads of every byte from being optimised away. */
static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_safetensors *st;
    if (osp_st_parse(data, size, "fuzz.safetensors", &st) != OSP_OK) return 0;
    unsigned sum = 0;
    for (int i = 0; i < osp_st_count(st); i++) {
        const osp_st_tensor *t = osp_st_get(st, i);
        for (size_t k = 0; k < t->nbytes; k++) sum ^= ((const unsigned char *)t->data)[k];
        if (osp_st_find(st, t->name) == NULL) __builtin_trap();
    }
    for (int i = 0; i < osp_st_meta_count(st); i++) {
        const char *key = osp_st_meta_key(st, i);
        const char *value = osp_st_meta(st, key);
        if (!value) __builtin_trap();
        sum ^= (unsigned char)strlen(value);
    }
    sink = sum;
    osp_st_free(st);
    return 0;
}
