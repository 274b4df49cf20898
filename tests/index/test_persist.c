/* Save / load round trips for every type, copy-on-write of mapped files, and
 * damaged files: truncated, flipped bits, a newer version, and structural
 * damage behind valid checksums must all be refused, never crash. */
#include <criterion/criterion.h>

#include "index_testutil.h"

#define N 2000
#define D 16
#define NQ 20
#define K 5

static osp_index *make(osp_index_type type, float *x) {
    osp_index_params p;
    osp_index_metric m = type == OSP_INDEX_LSH ? OSP_INDEX_METRIC_COSINE
                         : type == OSP_INDEX_BINARY ? OSP_INDEX_METRIC_HAMMING
                                                    : OSP_INDEX_METRIC_L2;
    osp_index_params_init(&p, type, m, type == OSP_INDEX_BINARY ? 128 : D);
    p.nlist = 16;
    p.pq_m = 4;
    p.pq_nbits = type == OSP_INDEX_IVF_PQ ? 6 : 8;
    p.hnsw_m = 8;
    p.hnsw_ef_construction = 40;
    osp_index *ix;
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    int64_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = 3 * i + 1;
    if (type == OSP_INDEX_BINARY) {
        cr_assert_eq(osp_index_add_codes(ix, (const uint8_t *)x, ids, N), 0);
    } else {
        cr_assert_eq(osp_index_train(ix, x, N), 0, "%s", osp_last_error());
        cr_assert_eq(osp_index_add(ix, x, ids, N), 0, "%s", osp_last_error());
    }
    /* leave free slots and moved entries behind */
    int64_t rm[N / 10];
    for (int i = 0; i < N / 10; i++) rm[i] = 3 * (7 * i) + 1;
    cr_assert_eq(osp_index_remove(ix, rm, N / 10, NULL), 0);
    return ix;
}

static void search(const osp_index *ix, const float *q, int64_t *ids, float *dist) {
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    sp.ef_search = 32;
    sp.nprobe = 4;
    int rc;
    osp_index_info info;
    osp_index_info_get(ix, &info);
    if (info.params.type == OSP_INDEX_BINARY)
        rc = osp_index_search_codes(ix, (const uint8_t *)q, NQ, &sp, ids, dist);
    else
        rc = osp_index_search(ix, q, NQ, &sp, ids, dist);
    cr_assert_eq(rc, 0, "%s", osp_last_error());
}

static const osp_index_type all_types[] = {OSP_INDEX_FLAT, OSP_INDEX_IVF_FLAT, OSP_INDEX_IVF_PQ,
                                           OSP_INDEX_LSH,  OSP_INDEX_BINARY,   OSP_INDEX_HNSW};

Test(persist, round_trip_every_type) {
    float *x = tu_clustered(N, D, 10, 0.5f, 51);
    float *q = tu_clustered(NQ, D, 10, 0.5f, 52);
    for (size_t t = 0; t < sizeof all_types / sizeof all_types[0]; t++) {
        osp_index *ix = make(all_types[t], x);
        char path[256], path2[256];
        tu_tmpname(path, sizeof path, "rt");
        tu_tmpname(path2, sizeof path2, "rt2");
        cr_assert_eq(osp_index_save(ix, path), 0, "%s", osp_last_error());
        osp_index *back;
        cr_assert_eq(osp_index_load(path, &back), 0, "%s: %s", osp_index_type_name(all_types[t]),
                     osp_last_error());
        int64_t a[NQ * K], b[NQ * K];
        float da[NQ * K], db[NQ * K];
        search(ix, q, a, da);
        search(back, q, b, db);
        for (int i = 0; i < NQ * K; i++) {
            cr_assert_eq(a[i], b[i], "%s: result %d differs", osp_index_type_name(all_types[t]), i);
            cr_assert(da[i] == db[i] || (isinf(da[i]) && isinf(db[i])));
        }
        osp_index_info ia, ib;
        osp_index_info_get(ix, &ia);
        osp_index_info_get(back, &ib);
        cr_assert_eq(ia.count, ib.count);
        cr_assert_eq(ia.removed, ib.removed);
        cr_assert_eq(ia.next_id, ib.next_id);
        cr_assert_eq(ia.free_slots, ib.free_slots);
        cr_assert(ib.mapped);
        /* changing a mapped index copies it: the file stays as it was */
        size_t len0, len1;
        unsigned char *before = tu_read_file(path, &len0);
        int64_t more[10];
        for (int i = 0; i < 10; i++) more[i] = 100000 + i;
        int rc = all_types[t] == OSP_INDEX_BINARY
                     ? osp_index_add_codes(back, (const uint8_t *)x, more, 10)
                     : osp_index_add(back, x, more, 10);
        cr_assert_eq(rc, 0, "%s", osp_last_error());
        cr_assert_eq(osp_index_remove(back, more, 5, NULL), 0);
        cr_assert_eq(osp_index_count(back), ia.count + 5);
        unsigned char *after = tu_read_file(path, &len1);
        cr_assert(len0 == len1 && !memcmp(before, after, len0));
        /* and the changed index saves and loads again, from memory too */
        cr_assert_eq(osp_index_save(back, path2), 0);
        osp_index *again;
        size_t len2;
        unsigned char *bytes = tu_read_file(path2, &len2);
        cr_assert_eq(osp_index_load_memory(bytes, len2, "mem", &again), 0, "%s", osp_last_error());
        cr_assert_eq(osp_index_count(again), ia.count + 5);
        cr_assert(osp_index_contains(again, 100009));
        free(before);
        free(after);
        free(bytes);
        osp_index_free(ix);
        osp_index_free(back);
        osp_index_free(again);
        unlink(path);
        unlink(path2);
    }
    osp_free(x);
    osp_free(q);
}

Test(persist, untrained_and_empty_indexes_round_trip) {
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_IVF_PQ, OSP_INDEX_METRIC_L2, D);
    osp_index *ix, *back;
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    char path[256];
    tu_tmpname(path, sizeof path, "empty");
    cr_assert_eq(osp_index_save(ix, path), 0);
    cr_assert_eq(osp_index_load(path, &back), 0, "%s", osp_last_error());
    cr_assert(!osp_index_is_trained(back));
    osp_index_free(back);
    osp_index_free(ix);
    osp_index_params_init(&p, OSP_INDEX_HNSW, OSP_INDEX_METRIC_L2, D);
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    cr_assert_eq(osp_index_save(ix, path), 0);
    cr_assert_eq(osp_index_load(path, &back), 0, "%s", osp_last_error());
    float v[D] = {1};
    cr_assert_eq(osp_index_add(back, v, NULL, 1), 0);
    osp_index_free(back);
    osp_index_free(ix);
    unlink(path);
}

/* ---- damage ------------------------------------------------------------------- */

static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void wr32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }

/* Recomputes both checksums, so structural checks are what must catch it. */
static void reseal(unsigned char *b, size_t len) {
    wr32(b + 44, osp_crc32c(0, b + 64, len - 64));
    wr32(b + 60, osp_crc32c(0, b, 60));
}

/* Offset and size of a section by its four-character tag, or 0. */
static size_t find_section(const unsigned char *b, const char tag[4], uint64_t *bytes) {
    uint32_t n = rd32(b + 40), want;
    memcpy(&want, tag, 4);
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *t = b + 64 + 24 * i;
        if (rd32(t) == want) {
            uint64_t off;
            memcpy(&off, t + 8, 8);
            memcpy(bytes, t + 16, 8);
            return (size_t)off;
        }
    }
    return 0;
}

static int load_fails(const unsigned char *b, size_t len, const char *what) {
    osp_index *ix = NULL;
    osp_error_clear();
    int rc = osp_index_load_memory(b, len, what, &ix);
    if (rc == 0) {
        osp_index_free(ix);
        return 0;
    }
    cr_assert(rc == OSP_EFORMAT || rc == OSP_ECORRUPT || rc == OSP_ENOTSUP, "%s: code %d", what, rc);
    cr_assert(strlen(osp_last_error()) > 0, "%s: no message", what);
    cr_assert_null(ix);
    return 1;
}

Test(persist, damaged_files_are_refused) {
    float *x = tu_clustered(N, D, 10, 0.5f, 53);
    for (size_t t = 0; t < sizeof all_types / sizeof all_types[0]; t++) {
        osp_index *ix = make(all_types[t], x);
        char path[256];
        tu_tmpname(path, sizeof path, "dmg");
        cr_assert_eq(osp_index_save(ix, path), 0);
        size_t len;
        unsigned char *good = tu_read_file(path, &len);
        unsigned char *b = malloc(len);
        const char *name = osp_index_type_name(all_types[t]);
        /* truncated anywhere */
        size_t cuts[] = {0, 1, 7, 8, 63, 64, 65, 100, len / 3, len / 2, len - 64, len - 1};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++)
            cr_assert(load_fails(good, cuts[c], name), "%s cut at %zu loaded", name, cuts[c]);
        /* trailing garbage */
        unsigned char *longer = malloc(len + 3);
        memcpy(longer, good, len);
        cr_assert(load_fails(longer, len + 3, name));
        free(longer);
        /* one flipped bit anywhere: the checksums catch it */
        for (size_t pos = 0; pos < len; pos += len / 97 + 1) {
            memcpy(b, good, len);
            b[pos] ^= 0x10;
            cr_assert(load_fails(b, len, name), "%s: bit flip at %zu loaded", name, pos);
        }
        /* a newer version */
        memcpy(b, good, len);
        wr32(b + 8, 99);
        reseal(b, len);
        cr_assert(load_fails(b, len, name));
        cr_assert(strstr(osp_last_error(), "version"), "%s", osp_last_error());
        /* header and body disagree on the count */
        memcpy(b, good, len);
        b[24] ^= 1;
        reseal(b, len);
        cr_assert(load_fails(b, len, name), "%s: count mismatch loaded", name);
        /* a repeated id */
        uint64_t sb = 0;
        size_t off = find_section(good, "IDS ", &sb);
        if (!off) off = find_section(good, "LIDS", &sb);
        cr_assert(off && sb >= 16);
        memcpy(b, good, len);
        int64_t prev = -1;
        for (size_t i = 0; i + 8 <= sb; i += 8) {
            int64_t id;
            memcpy(&id, b + off + i, 8);
            if (id < 0) continue;
            if (prev < 0) {
                prev = id;
                continue;
            }
            memcpy(b + off + i, &prev, 8);
            break;
        }
        reseal(b, len);
        cr_assert(load_fails(b, len, name), "%s: repeated id loaded", name);
        /* random bytes behind valid checksums: refused or loaded, and a
         * loaded one answers searches (the sanitizer run checks the reads) */
        osp_rng r;
        osp_rng_seed(&r, 1000 + t);
        for (int it = 0; it < 300; it++) {
            memcpy(b, good, len);
            int flips = 1 + (int)osp_rng_below(&r, 4);
            for (int f = 0; f < flips; f++) {
                size_t pos = 64 + (size_t)osp_rng_below(&r, len - 64);
                b[pos] = (uint8_t)osp_rng_u64(&r);
            }
            reseal(b, len);
            osp_index *bad = NULL;
            if (osp_index_load_memory(b, len, name, &bad) == 0) {
                int64_t ids[NQ * K];
                float dist[NQ * K];
                search(bad, x, ids, dist);
                osp_index_free(bad);
            }
        }
        free(good);
        free(b);
        osp_index_free(ix);
        unlink(path);
    }
    osp_free(x);
}

Test(persist, hnsw_bad_links_are_refused) {
    float *x = tu_clustered(N, D, 10, 0.5f, 54);
    osp_index *ix = make(OSP_INDEX_HNSW, x);
    char path[256];
    tu_tmpname(path, sizeof path, "links");
    cr_assert_eq(osp_index_save(ix, path), 0);
    size_t len;
    unsigned char *b = tu_read_file(path, &len);
    uint64_t bytes;
    size_t off = find_section(b, "LVL0", &bytes);
    cr_assert(off);
    /* block: 16 floats, count, M0 = 16 links, padded to 192 bytes */
    size_t elem = 192, links = 16 * 4;
    size_t node = 5;
    unsigned char *p = b + off + node * elem + links;
    cr_assert(rd32(p) > 0, "node 5 has links");
    uint32_t saved = rd32(p + 4);
    wr32(p + 4, 1u << 30); /* past the slots */
    reseal(b, len);
    cr_assert(load_fails(b, len, "links"));
    cr_assert(strstr(osp_last_error(), "link"), "%s", osp_last_error());
    wr32(p + 4, saved);
    wr32(p, 1000); /* more links than fit */
    reseal(b, len);
    cr_assert(load_fails(b, len, "count"));
    free(b);
    osp_index_free(ix);
    unlink(path);
    osp_free(x);
}

Test(persist, missing_file_and_not_an_index) {
    osp_index *ix;
    cr_assert_neq(osp_index_load("/nonexistent/osprey.idx", &ix), 0);
    cr_assert(strstr(osp_last_error(), "/nonexistent/osprey.idx"), "%s", osp_last_error());
    const char text[] = "this is not an index file at all, it is just some text";
    cr_assert_eq(osp_index_load_memory(text, sizeof text, "text", &ix), OSP_EFORMAT);
    cr_assert(strstr(osp_last_error(), "not an osprey index"), "%s", osp_last_error());
}
