/* Packed gradient chunks (src/train/compress.c), as another rank sends
 * them: the first byte picks the format, the rest is the chunk; every
 * value count that fits is unpacked. A chunk of any bytes must unpack
 * without a bad access (its numbers may be wrong, never its reads). */
#include <stddef.h>
#include <stdint.h>

#include "train/compress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const osp__compress_kind kind = (osp__compress_kind)(data[0] % 3);
    data++;
    size--;
    float acc[1024] = {0};
    for (int64_t n = 0; n <= 1024; n = n ? 2 * n : 1)
        if (osp__compress_size(kind, n) <= size) osp__decompress_add(kind, data, n, acc);
    return 0;
}
