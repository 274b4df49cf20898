/* Learned binary hashes (src/hash): training lowers the loss and makes
 * same-label codes close, codes are deterministic for a seed, the file
 * round trips, hostile files and bad arguments are refused, and the bit
 * order is the one the binary index reads. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/hash.h"
#include "osprey/index.h"
#include "osprey/io.h"

#define D 32
#define N 1200
#define C 12

/* n labelled vectors: C clusters (centres 0.8 N(0, I)) plus unit noise. */
static float *make_set(int64_t n, int32_t *lab, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    float centres[C * D];
    osp_rng rc;
    osp_rng_seed(&rc, 99);
    for (int i = 0; i < C * D; i++) centres[i] = 0.8f * osp_rng_normal(&rc);
    float *x = malloc((size_t)n * D * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)osp_rng_below(&r, C);
        lab[i] = c;
        for (int j = 0; j < D; j++) x[i * D + j] = centres[c * D + j] + osp_rng_normal(&r);
    }
    return x;
}

static osp_hash *train(int bits, uint64_t seed, const float *x, const int32_t *lab, osp_hash_report *rep) {
    osp_hash_params p;
    osp_hash_params_init(&p, bits);
    p.epochs = 15;
    p.seed = seed;
    p.layer = "relu7";
    osp_hash *h;
    int rc = osp_hash_train(&p, x, lab, N, D, &h, rep);
    cr_assert_eq(rc, 0, "%s", osp_last_error());
    return h;
}

/* Share of the 10 Hamming neighbours (binary index) of each of the first
 * nq rows of q that have its label; base rows are x. */
static double same_label_at10(const osp_hash *h, const float *x, const int32_t *lab, const float *q,
                              const int32_t *qlab, int nq) {
    int bits = osp_hash_bits(h), nb = bits / 8;
    uint8_t *cb = malloc((size_t)N * nb), *cq = malloc((size_t)nq * nb);
    cr_assert_eq(osp_hash_codes(h, x, N, cb), 0);
    cr_assert_eq(osp_hash_codes(h, q, nq, cq), 0);
    osp_index_params ip;
    osp_index_params_init(&ip, OSP_INDEX_BINARY, OSP_INDEX_METRIC_HAMMING, bits);
    osp_index *ix;
    cr_assert_eq(osp_index_new(&ip, &ix), 0);
    cr_assert_eq(osp_index_add_codes(ix, cb, NULL, N), 0);
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, 10);
    int64_t *ids = malloc((size_t)nq * 10 * sizeof *ids);
    cr_assert_eq(osp_index_search_codes(ix, cq, nq, &sp, ids, NULL), 0);
    int same = 0;
    for (int i = 0; i < nq * 10; i++) same += ids[i] >= 0 && lab[ids[i]] == qlab[i / 10];
    osp_index_free(ix);
    free(ids);
    free(cb);
    free(cq);
    return same / (10.0 * nq);
}

Test(hash, training_lowers_the_loss_and_groups_labels) {
    int32_t *lab = malloc(N * sizeof *lab), *qlab = malloc(200 * sizeof *qlab);
    float *x = make_set(N, lab, 1), *q = make_set(200, qlab, 2);
    osp_hash_report rep;
    osp_hash *h = train(64, 7, x, lab, &rep);
    cr_assert_lt(rep.final_loss, 0.6 * rep.initial_loss, "loss %g -> %g", rep.initial_loss, rep.final_loss);
    cr_assert_lt(rep.last_epoch_loss, rep.first_epoch_loss);
    cr_assert_gt(rep.steps, 0);

    /* osp_hash_loss of the trained head on the raw vectors agrees */
    osp_hash_params p;
    osp_hash_params_init(&p, 64);
    double loss;
    cr_assert_eq(osp_hash_loss(h, &p, x, lab, N, &loss), 0);
    cr_assert_lt(loss, rep.initial_loss);

    /* held-out queries find same-label neighbours far better than chance (1/C) */
    double same = same_label_at10(h, x, lab, q, qlab, 200);
    cr_assert_gt(same, 0.6, "same-label recall@10 %.3f", same);
    osp_hash_free(h);
    free(x);
    free(q);
    free(lab);
    free(qlab);
}

Test(hash, deterministic_for_a_seed) {
    int32_t *lab = malloc(N * sizeof *lab);
    float *x = make_set(N, lab, 3);
    osp_hash *a = train(32, 11, x, lab, NULL), *b = train(32, 11, x, lab, NULL), *c = train(32, 12, x, lab, NULL);
    cr_assert_eq(memcmp(osp_hash_weight(a), osp_hash_weight(b), 32 * D * sizeof(float)), 0);
    cr_assert_eq(memcmp(osp_hash_bias(a), osp_hash_bias(b), 32 * sizeof(float)), 0);
    uint8_t ca[N * 4], cb[N * 4], cc[N * 4];
    cr_assert_eq(osp_hash_codes(a, x, N, ca), 0);
    cr_assert_eq(osp_hash_codes(b, x, N, cb), 0);
    cr_assert_eq(osp_hash_codes(c, x, N, cc), 0);
    cr_assert_eq(memcmp(ca, cb, sizeof ca), 0);
    cr_assert_neq(memcmp(ca, cc, sizeof ca), 0, "another seed gave the same codes");
    osp_hash_free(a);
    osp_hash_free(b);
    osp_hash_free(c);
    free(x);
    free(lab);
}

static void tmp_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "/tmp/osp_test_hash_%d_%s", (int)getpid(), name);
}

Test(hash, save_load_round_trip) {
    int32_t *lab = malloc(N * sizeof *lab);
    float *x = make_set(N, lab, 4);
    osp_hash *h = train(128, 5, x, lab, NULL);
    char path[256];
    tmp_path(path, sizeof path, "rt.osh");
    cr_assert_eq(osp_hash_save(h, path), 0, "%s", osp_last_error());
    osp_hash *g;
    cr_assert_eq(osp_hash_load(path, &g), 0, "%s", osp_last_error());
    cr_assert_eq(osp_hash_bits(g), 128);
    cr_assert_eq(osp_hash_dim(g), D);
    cr_assert_str_eq(osp_hash_layer(g), "relu7");
    cr_assert_eq(memcmp(osp_hash_weight(g), osp_hash_weight(h), 128 * D * sizeof(float)), 0);
    static uint8_t c1[N * 16], c2[N * 16];
    cr_assert_eq(osp_hash_codes(h, x, N, c1), 0);
    cr_assert_eq(osp_hash_codes(g, x, N, c2), 0);
    cr_assert_eq(memcmp(c1, c2, sizeof c1), 0);
    /* it is a safetensors file with the documented metadata */
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(path, &st), 0);
    cr_assert_str_eq(osp_st_meta(st, "kind"), "hash");
    cr_assert_str_eq(osp_st_meta(st, "bits"), "128");
    cr_assert_str_eq(osp_st_meta(st, "dim"), "32");
    cr_assert_str_eq(osp_st_meta(st, "layer"), "relu7");
    osp_st_free(st);
    unlink(path);
    osp_hash_free(h);
    osp_hash_free(g);
    free(x);
    free(lab);
}

/* Writes a hash-like safetensors file with the given parts; NULL leaves a
 * metadata key out. */
static void write_file(const char *path, const char *kind, const char *version, const char *bits, const char *dim,
                       int wk, int wd, osp_dtype wt, int with_bias, float poison) {
    osp_st_writer *w;
    cr_assert_eq(osp_st_writer_new(&w), 0);
    static float wbuf[64 * 64 * 2], bbuf[64];
    for (int i = 0; i < 64 * 64 * 2; i++) wbuf[i] = 0.01f * (float)(i % 17);
    for (int i = 0; i < 64; i++) bbuf[i] = 0;
    wbuf[3] = poison;
    osp_shape ws = {.ndim = 2, .dim = {wk, wd}}, bs = {.ndim = 1, .dim = {wk}};
    cr_assert_eq(osp_st_writer_add(w, "hash.weight", wt, &ws, wbuf), 0);
    if (with_bias) cr_assert_eq(osp_st_writer_add(w, "hash.bias", OSP_DTYPE_F32, &bs, bbuf), 0);
    if (kind) osp_st_writer_meta(w, "kind", kind);
    if (version) osp_st_writer_meta(w, "version", version);
    if (bits) osp_st_writer_meta(w, "bits", bits);
    if (dim) osp_st_writer_meta(w, "dim", dim);
    cr_assert_eq(osp_st_writer_save(w, path), 0, "%s", osp_last_error());
    osp_st_writer_free(w);
}

static void expect_refused(const char *path, const char *what) {
    osp_hash *h = (osp_hash *)0x1;
    int rc = osp_hash_load(path, &h);
    cr_assert_neq(rc, 0, "%s was accepted", what);
    cr_assert_null(h, "%s: out not cleared", what);
    cr_assert_neq(strstr(osp_last_error(), path), NULL, "%s: message '%s' does not name the file", what,
                  osp_last_error());
}

Test(hash, hostile_files_refused) {
    char path[256];
    tmp_path(path, sizeof path, "bad.osh");
    /* a valid one first, so the cases below differ from it in one thing */
    write_file(path, "hash", "1", "16", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    osp_hash *h;
    cr_assert_eq(osp_hash_load(path, &h), 0, "%s", osp_last_error());
    osp_hash_free(h);

    write_file(path, "model", "1", "16", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "kind model");
    write_file(path, NULL, "1", "16", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "no kind");
    write_file(path, "hash", "99", "16", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "a newer version");
    cr_assert_neq(strstr(osp_last_error(), "upgrade"), NULL);
    write_file(path, "hash", "1", "12", "8", 12, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "12 bits");
    write_file(path, "hash", "1", "2048", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "2048 bits");
    write_file(path, "hash", "1", "-8", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "negative bits");
    write_file(path, "hash", "1", "16", "0", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "dim 0");
    write_file(path, "hash", "1", "16", "9", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "dim disagreeing with the weight");
    write_file(path, "hash", "1", "24", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    expect_refused(path, "bits disagreeing with the weight");
    write_file(path, "hash", "1", "16", "8", 16, 8, OSP_DTYPE_F64, 1, 0.5f);
    expect_refused(path, "F64 weight");
    write_file(path, "hash", "1", "16", "8", 16, 8, OSP_DTYPE_F32, 0, 0.5f);
    expect_refused(path, "no bias");
    write_file(path, "hash", "1", "16", "8", 16, 8, OSP_DTYPE_F32, 1, NAN);
    expect_refused(path, "NaN weight");
    write_file(path, "hash", "1", "16", "8", 16, 8, OSP_DTYPE_F32, 1, INFINITY);
    expect_refused(path, "infinite weight");

    /* not safetensors at all, and a truncated valid file */
    write_file(path, "hash", "1", "16", "8", 16, 8, OSP_DTYPE_F32, 1, 0.5f);
    FILE *f = fopen(path, "rb");
    static unsigned char buf[4096];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t cut = 0; cut < len; cut += 7) {
        h = (osp_hash *)0x1;
        cr_assert_neq(osp_hash_load_memory(buf, cut, "cut.osh", &h), 0, "a file cut at %zu was accepted", cut);
        cr_assert_null(h);
    }
    h = NULL;
    cr_assert_eq(osp_hash_load_memory(buf, len, "whole.osh", &h), 0, "%s", osp_last_error());
    osp_hash_free(h);
    f = fopen(path, "wb");
    fputs("not a hash file at all", f);
    fclose(f);
    expect_refused(path, "text");
    unlink(path);
}

Test(hash, bits_and_inputs_checked) {
    int32_t *lab = malloc(N * sizeof *lab);
    float *x = make_set(N, lab, 6);
    osp_hash_params p;
    osp_hash *h;
    const int bad[] = {0, 4, 12, 1000 + 4, 1032, 2048, -8};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        osp_hash_params_init(&p, bad[i]);
        h = (osp_hash *)0x1;
        cr_assert_eq(osp_hash_train(&p, x, lab, N, D, &h, NULL), OSP_EINVAL, "%d bits accepted", bad[i]);
        cr_assert_null(h);
        cr_assert_neq(strstr(osp_last_error(), "multiple of 8"), NULL, "%s", osp_last_error());
    }
    const int good[] = {8, 1024};
    for (size_t i = 0; i < 2; i++) {
        osp_hash_params_init(&p, good[i]);
        p.epochs = 1;
        cr_assert_eq(osp_hash_train(&p, x, lab, 300, D, &h, NULL), 0, "%d bits: %s", good[i], osp_last_error());
        cr_assert_eq(osp_hash_bits(h), good[i]);
        osp_hash_free(h);
    }
    osp_hash_params_init(&p, 16);
    p.epochs = 1;
    /* one label only */
    int32_t same[N];
    for (int i = 0; i < N; i++) same[i] = 3;
    cr_assert_eq(osp_hash_train(&p, x, same, N, D, &h, NULL), OSP_EINVAL);
    cr_assert_neq(strstr(osp_last_error(), "same label"), NULL);
    /* one vector */
    cr_assert_eq(osp_hash_train(&p, x, lab, 1, D, &h, NULL), OSP_EINVAL);
    /* NaN in the vectors, named by row */
    x[5 * D + 2] = NAN;
    cr_assert_eq(osp_hash_train(&p, x, lab, N, D, &h, NULL), OSP_EINVAL);
    cr_assert_neq(strstr(osp_last_error(), "row 5"), NULL, "%s", osp_last_error());
    free(x);
    free(lab);
}

Test(hash, bit_order_is_the_binary_index_order) {
    /* W = identity (16 x 16), b = 0: bit k of the code is x_k > 0, and must
     * be bit k % 8 of byte k / 8. */
    char path[256];
    tmp_path(path, sizeof path, "eye.osh");
    float w[16 * 16] = {0}, b[16] = {0};
    for (int i = 0; i < 16; i++) w[i * 16 + i] = 1;
    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    osp_shape ws = {.ndim = 2, .dim = {16, 16}}, bs = {.ndim = 1, .dim = {16}};
    osp_st_writer_add(wr, "hash.weight", OSP_DTYPE_F32, &ws, w);
    osp_st_writer_add(wr, "hash.bias", OSP_DTYPE_F32, &bs, b);
    osp_st_writer_meta(wr, "kind", "hash");
    osp_st_writer_meta(wr, "version", "1");
    osp_st_writer_meta(wr, "bits", "16");
    osp_st_writer_meta(wr, "dim", "16");
    cr_assert_eq(osp_st_writer_save(wr, path), 0);
    osp_st_writer_free(wr);
    osp_hash *h;
    cr_assert_eq(osp_hash_load(path, &h), 0, "%s", osp_last_error());
    unlink(path);
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = (i == 0 || i == 3 || i == 9 || i == 15) ? 1.0f : -1.0f;
    uint8_t code[2];
    cr_assert_eq(osp_hash_codes(h, x, 1, code), 0);
    cr_assert_eq(code[0], (1u << 0) | (1u << 3));
    cr_assert_eq(code[1], (1u << 1) | (1u << 7));
    /* a wrong-length set of vectors is the caller's to size; NaN is refused */
    x[4] = NAN;
    cr_assert_eq(osp_hash_codes(h, x, 1, code), OSP_EINVAL);
    osp_hash_free(h);
}
