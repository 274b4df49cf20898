/* The prefetching loader: the same batches whatever the number of workers
 * and the depth of the queue; unreadable samples replaced (training) or
 * left out (evaluation) the same way every time, counted and reported
 * once; augmentation drawn from (seed, epoch, sample index). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/data.h"

#define N 37
#define SIZE 6 /* floats per sample: 1 x 2 x 3 */

typedef struct fake {
    osp_dataset ds;
    int bad[N];
    int64_t bad_label_at; /* this sample's label is beyond the outputs */
} fake;

static int fill(osp_dataset *ds, int64_t i, osp_rng *rng, float *out, int32_t *label) {
    fake *f = (fake *)ds;
    if (f->bad[i]) return osp_error(OSP_EFORMAT, "fake/%lld.jpg: broken on purpose", (long long)i);
    for (int k = 0; k < SIZE; k++) out[k] = (float)i + 0.01f * (float)k;
    if (rng) out[0] += osp_rng_uniform(rng);
    *label = i == f->bad_label_at ? 9 : (int32_t)(i % 4);
    return OSP_OK;
}

static int fake_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    return fill(ds, i, NULL, out, label);
}

static int fake_aug(osp_dataset *ds, int64_t i, osp_rng *rng, float *out, int32_t *label) {
    return fill(ds, i, rng, out, label);
}

static fake *make_fake(void) {
    fake *f = calloc(1, sizeof *f);
    f->ds.count = N;
    f->ds.sample_shape = osp_shape_make(3, (int64_t[]){1, 2, 3});
    f->ds.n_classes = 4;
    f->ds.source = "fake";
    f->ds.get = fake_get;
    f->ds.get_augmented = fake_aug;
    f->bad_label_at = -1;
    return f;
}

static osp_loader_config config(int workers, int prefetch) {
    osp_loader_config c = osp_loader_defaults(NULL);
    c.batch = 5;
    c.workers = workers;
    c.prefetch = prefetch;
    c.seed = 42;
    c.augment = 1;
    c.n_classes = 4;
    return c;
}

/* Every batch of `epochs` shuffled passes, concatenated. */
static int collect(osp_dataset *ds, const osp_loader_config *c, int epochs, float *x, int32_t *y,
                   int *sizes) {
    osp_loader *l;
    cr_assert_eq(osp_loader_new(ds, c, &l), OSP_OK, "%s", osp_last_error());
    int total = 0, batches = 0;
    for (int e = 0; e < epochs; e++) {
        int64_t order[N];
        for (int i = 0; i < N; i++) order[i] = i;
        osp_rng r;
        osp_rng_derive(&r, 7, 1, (uint64_t)e);
        osp_rng_shuffle(&r, order, N);
        cr_assert_eq(osp_loader_start(l, e, order, N, 0), OSP_OK);
        for (;;) {
            int n;
            cr_assert_eq(osp_loader_next(l, x + (size_t)total * SIZE, y + total, &n), OSP_OK,
                         "%s", osp_last_error());
            if (n == 0) break;
            sizes[batches++] = n;
            total += n;
        }
    }
    osp_loader_free(l);
    return total;
}

Test(loader, same_batches_for_any_workers_and_depth) {
    fake *f = make_fake();
    f->bad[3] = f->bad[4] = f->bad[20] = f->bad[36] = 1; /* 36 wraps round to 0 */
    static float ref_x[3 * N * SIZE], x[3 * N * SIZE];
    int32_t ref_y[3 * N], y[3 * N];
    int ref_sizes[64], sizes[64];
    osp_loader_config c = config(0, 1);
    int ref = collect(&f->ds, &c, 3, ref_x, ref_y, ref_sizes);
    cr_assert_eq(ref, 3 * N);
    const int workers[] = {1, 2, 3, 8}, depths[] = {1, 2, 5};
    for (int w = 0; w < 4; w++)
        for (int d = 0; d < 3; d++) {
            c = config(workers[w], depths[d]);
            memset(x, 0, sizeof x);
            int got = collect(&f->ds, &c, 3, x, y, sizes);
            cr_assert_eq(got, ref);
            cr_assert(!memcmp(x, ref_x, sizeof x), "workers %d depth %d", workers[w], depths[d]);
            cr_assert(!memcmp(y, ref_y, sizeof y));
            cr_assert(!memcmp(sizes, ref_sizes, 8 * sizeof(int)));
        }
    osp_dataset_free(&f->ds);
}

Test(loader, replaces_unreadable_samples_with_the_next_readable) {
    fake *f = make_fake();
    f->bad[3] = f->bad[4] = f->bad[9] = 1;
    osp_loader_config c = config(2, 2);
    osp_loader *l;
    cr_assert_eq(osp_loader_new(&f->ds, &c, &l), OSP_OK);
    cr_assert_eq(osp_loader_start(l, 2, NULL, N, 0), OSP_OK);
    float x[5 * SIZE];
    int32_t y[5];
    int n;
    cr_assert_eq(osp_loader_next(l, x, y, &n), OSP_OK);
    cr_assert_eq(n, 5);
    /* position 3 held sample 3, unreadable, as was 4: sample 5 took its
     * place, augmented as sample 3 would have been */
    osp_rng r;
    osp_rng_derive(&r, 42, (uint64_t)0x61756774u << 32 | 2, 3);
    float want = 5 + osp_rng_uniform(&r);
    cr_assert_float_eq(x[3 * SIZE], want, 1e-6);
    cr_assert_eq(y[3], 5 % 4);
    cr_assert_float_eq(x[4 * SIZE + 1], 5.01f, 1e-6); /* position 4: sample 4 -> 5 too */
    int total = 5;
    while (osp_loader_next(l, x, y, &n) == OSP_OK && n > 0) total += n;
    cr_assert_eq(total, N);
    cr_assert_eq(osp_loader_skipped(l), 3);
    cr_assert_eq(osp_dataset_skipped(&f->ds), 3);
    cr_assert_eq(osp_dataset_report_skipped(&f->ds), 3);
    cr_assert_eq(osp_dataset_report_skipped(&f->ds), 0); /* each file named once */
    /* the next pass meets them again: counted, not named again */
    cr_assert_eq(osp_loader_start(l, 3, NULL, N, 0), OSP_OK);
    while (osp_loader_next(l, x, y, &n) == OSP_OK && n > 0) {}
    cr_assert_eq(osp_loader_skipped(l), 3);
    cr_assert_eq(osp_dataset_report_skipped(&f->ds), 0);
    osp_loader_free(l);
    osp_dataset_free(&f->ds);
}

Test(loader, evaluation_leaves_unreadable_samples_out) {
    fake *f = make_fake();
    f->bad[0] = f->bad[6] = f->bad[7] = 1;
    for (int workers = 0; workers < 3; workers++) {
        osp_loader_config c = config(workers, 2);
        c.augment = 0;
        c.drop_unreadable = 1;
        osp_loader *l;
        cr_assert_eq(osp_loader_new(&f->ds, &c, &l), OSP_OK);
        cr_assert_eq(osp_loader_start(l, 0, NULL, N, 0), OSP_OK);
        float x[5 * SIZE];
        int32_t y[5];
        int n, sizes[8] = {0}, b = 0, total = 0;
        while (osp_loader_next(l, x, y, &n) == OSP_OK && n > 0) {
            if (b == 0) cr_assert_float_eq(x[0], 1.0f, 1e-6); /* sample 0 left out */
            sizes[b++] = n;
            total += n;
        }
        cr_assert_eq(total, N - 3);
        cr_assert_eq(sizes[0], 4);
        cr_assert_eq(sizes[1], 3);
        cr_assert_eq(osp_loader_skipped(l), 3);
        osp_loader_free(l);
    }
    osp_dataset_free(&f->ds);
}

Test(loader, augmentation_follows_the_sample_not_the_position) {
    fake *f = make_fake();
    osp_loader_config c = config(2, 3);
    osp_loader *l;
    cr_assert_eq(osp_loader_new(&f->ds, &c, &l), OSP_OK);
    float a[N], b[N], d[N];
    int64_t fwd[N], rev[N];
    for (int i = 0; i < N; i++) {
        fwd[i] = i;
        rev[i] = N - 1 - i;
    }
    float x[5 * SIZE];
    int32_t y[5];
    const int64_t *orders[3] = {fwd, rev, fwd};
    float *firsts[3] = {a, b, d};
    const int epochs[3] = {4, 4, 5};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(osp_loader_start(l, epochs[k], orders[k], N, 0), OSP_OK);
        int pos = 0, n;
        while (osp_loader_next(l, x, y, &n) == OSP_OK && n > 0)
            for (int j = 0; j < n; j++, pos++) firsts[k][orders[k][pos]] = x[j * SIZE];
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(a[i], b[i], "sample %d: the order changed its augmentation", i);
        cr_assert_neq(a[i], d[i], "sample %d: the epoch did not change its augmentation", i);
    }
    osp_loader_free(l);
    osp_dataset_free(&f->ds);
}

Test(loader, hard_errors) {
    fake *f = make_fake();
    for (int i = 0; i < N; i++) f->bad[i] = 1;
    osp_loader_config c = config(2, 2);
    osp_loader *l;
    cr_assert_eq(osp_loader_new(&f->ds, &c, &l), OSP_OK);
    cr_assert_eq(osp_loader_start(l, 0, NULL, N, 0), OSP_OK);
    float x[5 * SIZE];
    int32_t y[5];
    int n;
    cr_assert_eq(osp_loader_next(l, x, y, &n), OSP_ENOENT);
    cr_assert(strstr(osp_last_error(), "no sample"), "%s", osp_last_error());
    osp_loader_free(l);
    osp_dataset_free(&f->ds); /* its skip log holds every sample now */
    f = make_fake();
    f->bad_label_at = 11; /* the network has 4 outputs */
    for (int workers = 0; workers < 2; workers++) {
        c = config(workers, 2);
        cr_assert_eq(osp_loader_new(&f->ds, &c, &l), OSP_OK);
        cr_assert_eq(osp_loader_start(l, 0, NULL, N, 0), OSP_OK);
        int rc = OSP_OK;
        while ((rc = osp_loader_next(l, x, y, &n)) == OSP_OK && n > 0) {}
        cr_assert_eq(rc, OSP_ERANGE);
        cr_assert(strstr(osp_last_error(), "sample 11 has label 9"), "%s", osp_last_error());
        osp_loader_free(l);
    }
    osp_dataset_free(&f->ds);
    cr_assert_eq(osp_loader_new(NULL, &c, &l), OSP_EINVAL);
}

Test(loader, restart_and_free_mid_pass) {
    fake *f = make_fake();
    osp_loader_config c = config(3, 4);
    c.normalize = 1;
    c.mean[0] = 1;
    c.std[0] = 2;
    c.augment = 0;
    for (int round = 0; round < 20; round++) {
        osp_loader *l;
        cr_assert_eq(osp_loader_new(&f->ds, &c, &l), OSP_OK);
        float x[5 * SIZE];
        int32_t y[5];
        int n;
        cr_assert_eq(osp_loader_start(l, 0, NULL, N, 10), OSP_OK); /* from position 10 */
        cr_assert_eq(osp_loader_next(l, x, y, &n), OSP_OK);
        cr_assert_float_eq(x[0], (10 - 1) / 2.0f, 1e-6);
        cr_assert_eq(osp_loader_start(l, 1, NULL, N, 35), OSP_OK);
        cr_assert_eq(osp_loader_next(l, x, y, &n), OSP_OK);
        cr_assert_eq(n, 2);
        cr_assert_float_eq(x[SIZE], (36 - 1) / 2.0f, 1e-6);
        cr_assert_eq(osp_loader_next(l, x, y, &n), OSP_OK);
        cr_assert_eq(n, 0);
        cr_assert_eq(osp_loader_start(l, 2, NULL, N, 0), OSP_OK);
        osp_loader_free(l); /* with batches decoded ahead and workers busy */
    }
    osp_dataset_free(&f->ds);
}
