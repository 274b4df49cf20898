/* Index loader past the checksums: the first input byte picks one of six
 * small valid index files (one per type, with removed entries, built once
 * per process); the rest of the input is a list of (offset, byte) patches
 * applied to a copy, whose checksums are then recomputed, so that every
 * patch reaches the structural checks (sizes, ids, links, levels, codes).
 * An index that loads is searched, filtered, added to and removed from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N 64
#define D 8

static uint8_t *files[6];
static size_t lens[6];

static int make_file(int t, osp_index_type type) {
    osp_index_params p;
    osp_index_metric m = type == OSP_INDEX_LSH      ? OSP_INDEX_METRIC_COSINE
                         : type == OSP_INDEX_BINARY ? OSP_INDEX_METRIC_HAMMING
                                                    : OSP_INDEX_METRIC_L2;
    osp_index_params_init(&p, type, m, type == OSP_INDEX_BINARY ? 64 : D);
    p.nlist = 4;
    p.pq_m = 2;
    p.pq_nbits = 4;
    p.lsh_nbits = 3;
    p.lsh_tables = 2;
    p.hnsw_m = 4;
    p.hnsw_ef_construction = 16;
    p.threads = 1;
    osp_index *ix;
    if (osp_index_new(&p, &ix)) return -1;
    float x[N * D];
    osp_rng r;
    osp_rng_seed(&r, 7);
    for (int i = 0; i < N * D; i++) x[i] = osp_rng_normal(&r);
    int rc = type == OSP_INDEX_BINARY ? osp_index_add_codes(ix, (const uint8_t *)x, NULL, N)
                                      : (osp_index_train(ix, x, N) || osp_index_add(ix, x, NULL, N));
    int64_t rm[3] = {0, 17, 40};
    if (!rc) rc = osp_index_remove(ix, rm, 3, NULL);
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz-index-%d-%d.idx", (int)getpid(), t);
    if (!rc) rc = osp_index_save(ix, path);
    osp_index_free(ix);
    if (rc) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    lens[t] = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    files[t] = malloc(lens[t]);
    size_t got = fread(files[t], 1, lens[t], f);
    fclose(f);
    unlink(path);
    return got == lens[t] ? 0 : -1;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const osp_index_type types[6] = {OSP_INDEX_FLAT, OSP_INDEX_IVF_FLAT, OSP_INDEX_IVF_PQ,
                                            OSP_INDEX_LSH,  OSP_INDEX_BINARY,   OSP_INDEX_HNSW};
    if (!files[0])
        for (int t = 0; t < 6; t++)
            if (make_file(t, types[t])) abort(); /* the templates must build */
    if (size < 1) return 0;
    int t = data[0] % 6;
    size_t len = lens[t];
    uint8_t *b = malloc(len);
    memcpy(b, files[t], len);
    /* patches: 3 bytes each, a 16-bit offset past the header and a value */
    for (size_t i = 1; i + 3 <= size; i += 3) {
        size_t off = 64 + ((size_t)data[i] | (size_t)data[i + 1] << 8) % (len - 64);
        b[off] = data[i + 2];
    }
    put32(b + 44, osp_crc32c(0, b + 64, len - 64));
    put32(b + 60, osp_crc32c(0, b, 60));
    osp_index *ix;
    if (osp_index_load_memory(b, len, "fuzz.idx", &ix) == OSP_OK) {
        float q[4 * D] = {0.5f, -1.0f, 2.0f};
        int64_t ids[4 * 5];
        osp_index_search_params sp;
        osp_index_search_params_init(&sp, 5);
        sp.ef_search = 8;
        sp.nprobe = 2;
        uint64_t bits[2] = {0x5555555555555555ull, 0x5555555555555555ull};
        osp_index_filter f = {.bitmap = bits, .bitmap_bits = 128};
        int binary = types[t] == OSP_INDEX_BINARY;
        for (int pass = 0; pass < 2; pass++) {
            sp.filter = pass ? &f : NULL;
            if (binary) osp_index_search_codes(ix, (const uint8_t *)q, 4, &sp, ids, NULL);
            else osp_index_search(ix, q, 4, &sp, ids, NULL);
        }
        int64_t more[2] = {1000, 1001}, gone[3] = {1, 2, 1000};
        if (binary) osp_index_add_codes(ix, (const uint8_t *)q, more, 2);
        else osp_index_add(ix, q, more, 2);
        osp_index_remove(ix, gone, 3, NULL);
        if (binary) osp_index_search_codes(ix, (const uint8_t *)q, 1, &sp, ids, NULL);
        else osp_index_search(ix, q, 1, &sp, ids, NULL);
        osp_index_free(ix);
    }
    free(b);
    return 0;
}
