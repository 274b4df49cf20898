/* Stress: many threads search while others add and remove, on every vector
 * type. Searches must always see a consistent index: sorted results, no
 * repeated ids, only ids that were added. Run under the sanitizers this is
 * the race check; ThreadSanitizer cannot run Criterion's shared-memory
 * arena, so with -DOSP_STANDALONE the file is its own program (see
 * docs/index.md). Worker threads never assert: Criterion's asserts unwind
 * the test's own thread, so workers record the first failure and the test
 * thread checks it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#ifdef OSP_STANDALONE
#define Test(suite, name) static void suite##_##name(void)
#define cr_assert(c, ...) check_at((c), __FILE__, __LINE__, #c)
#define cr_assert_eq(a, b, ...) check_at((a) == (b), __FILE__, __LINE__, #a " == " #b)
#else
#include <criterion/criterion.h>
#endif

#include "index_testutil.h"

static atomic_int failed;
static char failure[256];

/* Records the first failure (any thread). */
static void check_at(int ok, const char *file, int line, const char *what) {
    if (ok || atomic_exchange(&failed, 1)) return;
    snprintf(failure, sizeof failure, "%s:%d: %s (%s)", file, line, what, osp_last_error());
}
#define CHECK(c) check_at((c), __FILE__, __LINE__, #c)

#define N 3000
#define D 16
#define K 8
#define SEARCHERS 4
#define SECONDS 0.6

typedef struct shared {
    osp_index *ix;
    const float *x;    /* pool of vectors: id i uses row i % N */
    atomic_int stop;
    atomic_long searches;
    atomic_long max_id; /* ids below this may exist */
    int nprobe_or_ef;
} shared;

static void *searcher(void *arg) {
    shared *s = arg;
    osp_rng r;
    osp_rng_seed(&r, (uint64_t)(uintptr_t)&r);
    int64_t ids[4 * K];
    float dist[4 * K];
    while (!atomic_load(&s->stop) && !atomic_load(&failed)) {
        osp_index_search_params sp;
        osp_index_search_params_init(&sp, K);
        /* each thread its own settings: they travel with the call */
        sp.ef_search = 16 + (int)osp_rng_below(&r, 64);
        sp.nprobe = 1 + (int)osp_rng_below(&r, 8);
        int nq = 1 + (int)osp_rng_below(&r, 4);
        const float *q = s->x + (size_t)osp_rng_below(&r, N - 4) * D;
        int rc = osp_index_search(s->ix, q, nq, &sp, ids, dist);
        CHECK(rc == 0);
        long max_id = atomic_load(&s->max_id);
        for (int i = 0; i < nq; i++)
            for (int j = 0; j < K; j++) {
                int64_t id = ids[i * K + j];
                if (id < 0) {
                    CHECK(isinf(dist[i * K + j]));
                    continue;
                }
                CHECK(id < max_id);
                if (j && ids[i * K + j - 1] >= 0) CHECK(dist[i * K + j] >= dist[i * K + j - 1]);
                for (int l = 0; l < j; l++) CHECK(ids[i * K + l] != id);
            }
        atomic_fetch_add(&s->searches, 1);
    }
    return NULL;
}

/* Adds batches of new ids and removes old ones, keeping about N/2 live. */
static void *writer(void *arg) {
    shared *s = arg;
    int64_t next = N / 2, oldest = 0;
    int64_t ids[64];
    float batch[64 * D];
    while (!atomic_load(&s->stop)) {
        int n = 1 + (int)(next % 64);
        for (int i = 0; i < n; i++) {
            ids[i] = next + i;
            memcpy(batch + (size_t)i * D, s->x + (size_t)((next + i) % N) * D, D * sizeof(float));
        }
        atomic_store(&s->max_id, (long)(next + n));
        CHECK(osp_index_add(s->ix, batch, ids, n) == 0);
        next += n;
        for (int i = 0; i < n; i++) ids[i] = oldest + i;
        int64_t removed;
        CHECK(osp_index_remove(s->ix, ids, n, &removed) == 0);
        CHECK(removed == n);
        oldest += n;
    }
    CHECK(osp_index_count(s->ix) == next - oldest);
    return NULL;
}

static void stress(osp_index_type type) {
    float *x = tu_clustered(N, D, 20, 0.5f, 61);
    osp_index_params p;
    osp_index_params_init(&p, type, type == OSP_INDEX_LSH ? OSP_INDEX_METRIC_COSINE : OSP_INDEX_METRIC_L2, D);
    p.nlist = 16;
    p.pq_m = 4;
    p.hnsw_m = 8;
    p.hnsw_ef_construction = 32;
    /* OSP_TEST_THREADS=1 for ThreadSanitizer, which cannot see OpenMP's
     * own synchronisation and would report the parallel build's barriers */
    const char *tt = getenv("OSP_TEST_THREADS");
    p.threads = tt ? atoi(tt) : 2;
    osp_index *ix;
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    cr_assert_eq(osp_index_train(ix, x, N), 0);
    cr_assert_eq(osp_index_add(ix, x, NULL, N / 2), 0);
    shared s = {.ix = ix, .x = x};
    atomic_store(&s.max_id, N / 2);
    pthread_t th[SEARCHERS + 1];
    for (int i = 0; i < SEARCHERS; i++) pthread_create(&th[i], NULL, searcher, &s);
    pthread_create(&th[SEARCHERS], NULL, writer, &s);
    double t0 = osp_now();
    while (osp_now() - t0 < SECONDS) usleep(10000);
    atomic_store(&s.stop, 1);
    for (int i = 0; i <= SEARCHERS; i++) pthread_join(th[i], NULL);
    cr_assert(!atomic_load(&failed), "%s", failure);
    cr_assert(atomic_load(&s.searches) > 10);
    osp_index_free(ix);
    osp_free(x);
}

Test(concurrency, flat) { stress(OSP_INDEX_FLAT); }
Test(concurrency, hnsw) { stress(OSP_INDEX_HNSW); }
Test(concurrency, ivf_flat) { stress(OSP_INDEX_IVF_FLAT); }
Test(concurrency, ivf_pq) { stress(OSP_INDEX_IVF_PQ); }
Test(concurrency, lsh) { stress(OSP_INDEX_LSH); }

/* A batched flat search (sgemm on BLAS's threads) from several threads at
 * once, each checked against the same search done alone. */
static osp_index *flat_ix;
static float *flat_q;
static int64_t flat_ref[32 * K];

static void *batch_searcher(void *arg) {
    (void)arg;
    int64_t ids[32 * K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    for (int it = 0; it < 20; it++) {
        CHECK(osp_index_search(flat_ix, flat_q, 32, &sp, ids, NULL) == 0);
        CHECK(!memcmp(ids, flat_ref, sizeof ids));
    }
    return NULL;
}

Test(concurrency, flat_batches_in_parallel) {
    float *x = tu_clustered(N, D, 20, 0.5f, 62);
    flat_q = tu_clustered(32, D, 20, 0.5f, 63);
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_FLAT, OSP_INDEX_METRIC_L2, D);
    flat_ix = tu_build(&p, x, N);
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    cr_assert_eq(osp_index_search(flat_ix, flat_q, 32, &sp, flat_ref, NULL), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, batch_searcher, NULL);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    cr_assert(!atomic_load(&failed), "%s", failure);
    osp_index_free(flat_ix);
    osp_free(x);
    osp_free(flat_q);
}

#ifdef OSP_STANDALONE
int main(void) {
    concurrency_flat();
    concurrency_hnsw();
    concurrency_ivf_flat();
    concurrency_ivf_pq();
    concurrency_lsh();
    concurrency_flat_batches_in_parallel();
    if (atomic_load(&failed)) {
        fprintf(stderr, "FAIL: %s\n", failure);
        return 1;
    }
    printf("concurrency: ok\n");
    return 0;
}
#endif
