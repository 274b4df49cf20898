/* osp_pipeline_merge and the readers of an output folder
 * (osp_pipeline_load_vectors, osp_catalog_read_vectors), on shard
 * folders built by hand with the pipeline's own writers: rows and ids in
 * source order, the catalogue rebuilt, duplicates kept once, mismatched
 * or conflicting sources refused, an earlier merge replaced, and the
 * uncommitted tail of a killed run ignored. */
#define _GNU_SOURCE /* nftw's FTW_DEPTH */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "osprey/pipeline.h"
#include "pipeline/catalog.h"
#include "pipeline/outputs.h"

#include "tmpdir.h"

/* ---- scratch folders with sub-folders -------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void scratch_remove(void) { nftw(tmpdir_name, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(merge, .init = tmpdir_make, .fini = scratch_remove);

static char *dir_of(const char *name) {
    char *p = malloc(600);
    snprintf(p, 600, "%s/%s", tmpdir_name, name);
    return p;
}

/* ---- a shard folder, written as the pipeline writes one -------------------------------- */

typedef struct shard_spec {
    const char *shard;       /* "i/N" */
    int64_t dim;             /* 0: tags only */
    osp_dtype dtype;
    int tags;
    const char *layer;       /* default "pool" (or "" without vectors) */
    const char *sha;         /* model_sha256, default "abc" */
    int garbage;             /* leave an uncommitted batch past the ends */
    int pad;                 /* bytes of padding in each tags line */
} shard_spec;

/* The vector of an image: a function of its id, exact in float16. */
static float value_of(int64_t id, int64_t j) { return (float)((id >> 3) % 97) * 0.25f + (float)j; }

/* Writes dir with paths[i] (ids[i] if ids, else osp_image_id), in batches
 * of two; a path starting with "bad" is an error row. */
static void make_shard(const char *dir, const shard_spec *sp, const char *const *paths, const int64_t *ids_in,
                       int n) {
    cr_assert_eq(mkdir(dir, 0755), 0);
    char dim_s[24];
    snprintf(dim_s, sizeof dim_s, "%lld", (long long)sp->dim);
    const osp__setting settings[] = {
        {"format", OSP__CATALOG_FORMAT}, {"version", OSP__CATALOG_VERSION},
        {"model", "nets/tiny.osp"}, {"model_name", "tiny"},
        {"model_sha256", sp->sha ? sp->sha : "abc"},
        {"layer", sp->layer ? sp->layer : sp->dim ? "pool" : ""},
        {"dim", dim_s}, {"dtype", sp->dtype == OSP_DTYPE_F16 ? "float16" : "float32"},
        {"normalize", "0"}, {"sigmoid", "0"}, {"top_k", "2"}, {"threshold", "0"},
        {"tags", sp->tags ? "1" : "0"}, {"shard", sp->shard}, {"merged", "0"},
    };
    osp_catalog *cat;
    cr_assert_eq(osp__catalog_open_rw(dir, settings, (int)(sizeof settings / sizeof settings[0]), NULL, &cat), 0,
                 "%s", osp_last_error());
    int64_t tags_bytes, rows;
    cr_assert_eq(osp__catalog_state(cat, &tags_bytes, &rows), 0);
    osp__outputs o;
    cr_assert_eq(osp__outputs_open(&o, dir, sp->tags, sp->dim, sp->dtype, tags_bytes, rows), 0, "%s",
                 osp_last_error());
    int64_t run;
    cr_assert_eq(osp__catalog_run_begin(cat, "osprey embed test", "{}", &run), 0);
    const size_t esz = osp_dtype_size(sp->dtype);
    for (int b = 0; b < n + (sp->garbage ? 2 : 0); b += 2) {
        const int last = b >= n; /* the garbage batch: written, never committed */
        const size_t cap = 2048 + 2 * (size_t)sp->pad;
        char *tags = malloc(cap), *pad = malloc((size_t)sp->pad + 1);
        cr_assert(tags && pad);
        memset(pad, 'p', (size_t)sp->pad);
        pad[sp->pad] = '\0';
        size_t len = 0;
        char vecs[2 * 64 * 4];
        int64_t ids[2];
        int64_t k = 0;
        for (int i = b; i < b + 2 && (last || i < n); i++) {
            const char *path = last ? (i == b ? "garbage/x.jpg" : "garbage/y.jpg") : paths[i];
            const int64_t id = !last && ids_in ? ids_in[i] : osp_image_id(path);
            if (!strncmp(path, "bad", 3))
                len += (size_t)snprintf(tags + len, cap - len,
                                        "{\"id\": %lld, \"path\": \"%s\", \"error\": {\"code\": \"decode\", "
                                        "\"message\": \"not an image%s\"}}\n",
                                        (long long)id, path, pad);
            else
                len += (size_t)snprintf(tags + len, cap - len,
                                        "{\"id\": %lld, \"path\": \"%s\", \"labels\": [{\"description\": "
                                        "\"cat\", \"score\": 0.75}], \"model\": \"tiny@abc%s\"}\n",
                                        (long long)id, path, pad);
            if (sp->dim && strncmp(path, "bad", 3)) {
                float v[64];
                for (int64_t j = 0; j < sp->dim; j++) v[j] = value_of(id, j);
                char *dst = vecs + (size_t)k * (size_t)sp->dim * esz;
                if (sp->dtype == OSP_DTYPE_F16) osp_half_from_float(v, (uint16_t *)(void *)dst, sp->dim);
                else memcpy(dst, v, (size_t)sp->dim * sizeof(float));
                ids[k++] = id;
            }
        }
        cr_assert_eq(osp__outputs_write(&o, sp->tags ? tags : NULL, sp->tags ? len : 0, vecs, ids, k), 0, "%s",
                     osp_last_error());
        free(tags);
        free(pad);
        if (last) {
            /* killed after the files and a header rewrite, before the catalogue */
            if (sp->dim) cr_assert_eq(osp__outputs_committed(&o, o.tags_bytes, o.rows + k), 0);
            break;
        }
        cr_assert_eq(osp__catalog_begin(cat), 0);
        int64_t row = o.rows;
        for (int i = b; i < b + 2 && i < n; i++) {
            const int bad = !strncmp(paths[i], "bad", 3);
            const int64_t id = ids_in ? ids_in[i] : osp_image_id(paths[i]);
            osp__image_row r = {.id = id, .path = paths[i], .bytes = 100 + i, .sha256 = "00ff",
                                .width = 8, .height = 6, .row = -1, .run = run};
            if (bad) {
                r.error_code = "decode";
                r.error = "not an image";
            } else if (sp->dim) {
                r.row = row++;
            }
            cr_assert_eq(osp__catalog_add_image(cat, &r), 0, "%s", osp_last_error());
            if (!bad && sp->tags) cr_assert_eq(osp__catalog_add_label(cat, id, 0, "cat", 0.75), 0);
        }
        cr_assert_eq(osp__catalog_commit(cat, o.tags_bytes + (int64_t)(sp->tags ? len : 0), row), 0, "%s",
                     osp_last_error());
        cr_assert_eq(osp__outputs_committed(&o, o.tags_bytes + (int64_t)(sp->tags ? len : 0), row), 0);
    }
    cr_assert_eq(osp__catalog_run_end(cat, run, n, 0), 0);
    osp__outputs_close(&o);
    osp_catalog_close(cat);
}

static const shard_spec F32_TAGS = {.shard = "0/2", .dim = 4, .dtype = OSP_DTYPE_F32, .tags = 1};

static int count_lines(const char *path, int64_t *ids, int cap) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t line_cap = 0;
    int n = 0;
    while (getline(&line, &line_cap, f) > 0) {
        long long id = -1;
        cr_assert_eq(sscanf(line, "{\"id\": %lld,", &id), 1, "%.200s", line);
        if (n < cap) ids[n] = id;
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

static int has_file(const char *dir, const char *name) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

/* No temporary folder, old catalogue or SQLite side file left in dir. */
static void expect_clean(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        cr_assert(strncmp(e->d_name, ".merge", 6), "%s left in %s", e->d_name, dir);
        cr_assert(!strstr(e->d_name, "-wal") && !strstr(e->d_name, "-shm") && !strstr(e->d_name, "-journal"),
                  "%s left in %s", e->d_name, dir);
    }
    closedir(d);
}

static int64_t catalog_count(osp_catalog *c, const char *sql) {
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(c->db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c->db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- merging -------------------------------------------------------------------------- */

Test(merge, two_shards_in_order) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    const char *pa[] = {"img/a0.jpg", "bad/a1.jpg", "img/a2.jpg", "img/a3.jpg", "img/a4.jpg"};
    const char *pb[] = {"img/b0.jpg", "img/b1.jpg", "bad/b2.jpg"};
    make_shard(a, &F32_TAGS, pa, NULL, 5);
    shard_spec sb = F32_TAGS;
    sb.shard = "1/2";
    make_shard(b, &sb, pb, NULL, 3);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), 0, "%s", osp_last_error());
    expect_clean(out);

    /* vectors: a's ok images then b's, ids unchanged */
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    const char *want[] = {"img/a0.jpg", "img/a2.jpg", "img/a3.jpg", "img/a4.jpg", "img/b0.jpg", "img/b1.jpg"};
    cr_assert_eq(v.shape.dim[0], 6);
    cr_assert_eq(v.shape.dim[1], 4);
    cr_assert_eq(ids.shape.dim[0], 6);
    for (int i = 0; i < 6; i++) {
        const int64_t id = ((int64_t *)ids.data)[i];
        cr_assert_eq(id, osp_image_id(want[i]), "row %d", i);
        for (int j = 0; j < 4; j++) cr_assert_eq(((float *)v.data)[i * 4 + j], value_of(id, j));
    }
    osp_array_free(&v);
    osp_array_free(&ids);

    /* the catalogue: every image, rows renumbered, labels, both runs */
    osp_catalog *c;
    cr_assert_eq(osp_catalog_open(out, &c), 0, "%s", osp_last_error());
    cr_assert_str_eq(osp_catalog_setting(c, "merged"), "1");
    cr_assert_str_eq(osp_catalog_setting(c, "shard"), "0/1");
    cr_assert_str_eq(osp_catalog_setting(c, "model_sha256"), "abc");
    cr_assert_str_eq(osp_catalog_setting(c, "layer"), "pool");
    cr_assert_str_eq(osp_catalog_setting(c, "dtype"), "float32");
    cr_assert_str_eq(osp_catalog_setting(c, "model"), "nets/tiny.osp");
    int64_t ok = 0, errors = 0;
    cr_assert_eq(osp_catalog_counts(c, &ok, &errors), 0);
    cr_assert_eq(ok, 6);
    cr_assert_eq(errors, 2);
    for (int i = 0; i < 6; i++) {
        int64_t id, row;
        cr_assert_eq(osp_catalog_by_path(c, want[i], &id, &row), 0, "%s", osp_last_error());
        cr_assert_eq(row, i, "%s", want[i]);
        char path[256];
        cr_assert_eq(osp_catalog_by_id(c, id, path, sizeof path, &row), 0);
        cr_assert_str_eq(path, want[i]);
    }
    int64_t id, row;
    cr_assert_eq(osp_catalog_by_path(c, "bad/b2.jpg", &id, &row), 0);
    cr_assert_eq(row, -1);
    int64_t tags_bytes = 0, rows = 0;
    cr_assert_eq(osp__catalog_state(c, &tags_bytes, &rows), 0);
    cr_assert_eq(rows, 6);
    cr_assert_eq(catalog_count(c, "SELECT count(*) FROM labels"), 6);
    cr_assert_eq(catalog_count(c, "SELECT count(*) FROM runs WHERE command = 'osprey embed test'"), 2);
    cr_assert_eq(catalog_count(c, "SELECT count(DISTINCT run) FROM images"), 2);
    cr_assert_eq(catalog_count(c, "SELECT count(*) FROM images WHERE run NOT IN (SELECT id FROM runs)"), 0);
    cr_assert_eq(catalog_count(c, "SELECT count(*) FROM images WHERE error_code = 'decode' AND error IS NOT NULL"), 2);

    /* one vector by row, without loading them all */
    float one[4];
    const int64_t r4 = 4;
    cr_assert_eq(osp_catalog_read_vectors(c, &r4, 1, one), 0, "%s", osp_last_error());
    for (int j = 0; j < 4; j++) cr_assert_eq(one[j], value_of(osp_image_id("img/b0.jpg"), j));
    const int64_t r6 = 6;
    cr_assert_eq(osp_catalog_read_vectors(c, &r6, 1, one), OSP_ERANGE);
    osp_catalog_close(c);

    /* tags.jsonl: every image's line, in source order, exactly the committed bytes */
    int64_t lid[16];
    char tp[700];
    snprintf(tp, sizeof tp, "%s/tags.jsonl", out);
    cr_assert_eq(count_lines(tp, lid, 16), 8);
    cr_assert_eq(lid[0], osp_image_id("img/a0.jpg"));
    cr_assert_eq(lid[1], osp_image_id("bad/a1.jpg"));
    cr_assert_eq(lid[5], osp_image_id("img/b0.jpg"));
    cr_assert_eq(lid[7], osp_image_id("bad/b2.jpg"));
    struct stat st;
    cr_assert_eq(stat(tp, &st), 0);
    cr_assert_eq(st.st_size, tags_bytes);
    /* a whole .npy that NumPy (and osp_npy_read) reads */
    char vp[700];
    snprintf(vp, sizeof vp, "%s/vectors.npy", out);
    osp_array whole;
    cr_assert_eq(osp_npy_read(vp, &whole), 0, "%s", osp_last_error());
    cr_assert_eq(whole.shape.dim[0], 6);
    osp_array_free(&whole);
    free(a);
    free(b);
    free(out);
}

Test(merge, same_path_in_two_shards_kept_once) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg", "img/y.jpg", "bad/e.jpg"};
    const char *pb[] = {"img/z.jpg", "img/y.jpg", "bad/e.jpg", "img/w.jpg"};
    make_shard(a, &F32_TAGS, pa, NULL, 3);
    make_shard(b, &F32_TAGS, pb, NULL, 4);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), 0, "%s", osp_last_error());
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    const char *want[] = {"img/x.jpg", "img/y.jpg", "img/z.jpg", "img/w.jpg"};
    cr_assert_eq(ids.shape.dim[0], 4);
    for (int i = 0; i < 4; i++) cr_assert_eq(((int64_t *)ids.data)[i], osp_image_id(want[i]), "row %d", i);
    osp_array_free(&v);
    osp_array_free(&ids);
    osp_catalog *c;
    cr_assert_eq(osp_catalog_open(out, &c), 0);
    int64_t ok, errors, id, row;
    cr_assert_eq(osp_catalog_counts(c, &ok, &errors), 0);
    cr_assert_eq(ok, 4);
    cr_assert_eq(errors, 1);
    cr_assert_eq(osp_catalog_by_path(c, "img/y.jpg", &id, &row), 0);
    cr_assert_eq(row, 1); /* the first source's */
    cr_assert_eq(catalog_count(c, "SELECT count(*) FROM labels"), 4);
    osp_catalog_close(c);
    int64_t lid[16];
    char tp[700];
    snprintf(tp, sizeof tp, "%s/tags.jsonl", out);
    cr_assert_eq(count_lines(tp, lid, 16), 5);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < i; j++) cr_assert_neq(lid[i], lid[j], "line %d repeats line %d", i, j);
    free(a);
    free(b);
    free(out);
}

Test(merge, one_id_two_paths_refused) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg", "img/y.jpg"};
    const char *pb[] = {"img/other.jpg"};
    const int64_t ib[] = {osp_image_id("img/y.jpg")};
    make_shard(a, &F32_TAGS, pa, NULL, 2);
    make_shard(b, &F32_TAGS, pb, ib, 1);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), OSP_ESTATE);
    const char *msg = osp_last_error();
    cr_assert(strstr(msg, "img/y.jpg") && strstr(msg, "img/other.jpg") && strstr(msg, b) && strstr(msg, a), "%s",
              msg);
    cr_assert(!has_file(out, "catalog.db") && !has_file(out, "vectors.npy"));
    expect_clean(out);
    free(a);
    free(b);
    free(out);
}

Test(merge, mismatched_settings_refused) {
    static const char *const keys[] = {"dtype", "layer", "model_sha256", "tags"};
    for (int k = 0; k < 4; k++) {
        char na[16], nb[16], no[16];
        snprintf(na, sizeof na, "a%d", k);
        snprintf(nb, sizeof nb, "b%d", k);
        snprintf(no, sizeof no, "out%d", k);
        char *a = dir_of(na), *b = dir_of(nb), *c = dir_of("c0"), *out = dir_of(no);
        const char *pa[] = {"img/x.jpg"}, *pb[] = {"img/y.jpg"};
        make_shard(a, &F32_TAGS, pa, NULL, 1);
        if (k == 0) make_shard(c, &F32_TAGS, pb, NULL, 1); /* a third that agrees, before the odd one */
        shard_spec sb = F32_TAGS;
        if (k == 0) sb.dtype = OSP_DTYPE_F16;
        if (k == 1) sb.layer = "fc1";
        if (k == 2) sb.sha = "def";
        if (k == 3) sb.tags = 0;
        make_shard(b, &sb, pb, NULL, 1);
        const char *srcs[] = {a, c, b};
        const char *const *s = k == 0 ? srcs : (const char *const[]){a, b};
        cr_assert_eq(osp_pipeline_merge(out, s, k == 0 ? 3 : 2, 0), OSP_ESTATE, "%s", keys[k]);
        const char *msg = osp_last_error();
        cr_assert(strstr(msg, b) && strstr(msg, keys[k]), "%s lacks %s or %s", msg, b, keys[k]);
        cr_assert(!has_file(out, "catalog.db"));
        free(a);
        free(b);
        free(c);
        free(out);
    }
}

/* Lets go of the lock held on *fd after 0.3 s, as an exiting process would. */
static void *unlock_later(void *arg) {
    struct timespec pause = {0, 300000000};
    nanosleep(&pause, NULL);
    close(*(int *)arg);
    return NULL;
}

Test(merge, replaces_an_earlier_merge_only) {
    char *a = dir_of("a"), *b = dir_of("b"), *t = dir_of("t"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg", "img/y.jpg"}, *pb[] = {"img/z.jpg"};
    make_shard(a, &F32_TAGS, pa, NULL, 2);
    make_shard(b, &F32_TAGS, pb, NULL, 1);
    shard_spec st = F32_TAGS;
    st.dim = 0;
    make_shard(t, &st, pa, NULL, 2);
    const char *ab[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, ab, 2, 0), 0, "%s", osp_last_error());
    /* again, from b alone: only b's rows are left */
    const char *just_b[] = {b};
    cr_assert_eq(osp_pipeline_merge(out, just_b, 1, 0), 0, "%s", osp_last_error());
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(ids.shape.dim[0], 1);
    cr_assert_eq(((int64_t *)ids.data)[0], osp_image_id("img/z.jpg"));
    osp_array_free(&v);
    osp_array_free(&ids);
    expect_clean(out);
    /* a tags-only merge in its place: the old vectors go */
    const char *just_t[] = {t};
    cr_assert_eq(osp_pipeline_merge(out, just_t, 1, 0), 0, "%s", osp_last_error());
    cr_assert(!has_file(out, "vectors.npy") && !has_file(out, "ids.npy") && has_file(out, "tags.jsonl"));
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "no vectors"), "%s", osp_last_error());
    /* a run's own folder is never replaced, nor a source */
    cr_assert_eq(osp_pipeline_merge(t, just_b, 1, 0), OSP_ESTATE);
    cr_assert_not_null(strstr(osp_last_error(), "not a merge"), "%s", osp_last_error());
    cr_assert(has_file(t, "tags.jsonl"));
    const char *self[] = {a, out};
    cr_assert_eq(osp_pipeline_merge(out, self, 2, 0), OSP_EINVAL);
    cr_assert_not_null(strstr(osp_last_error(), "itself"), "%s", osp_last_error());
    /* one writer at a time into a folder: refused at once, or after the
     * timeout while the other holds on, or done once it lets go */
    int fd = open(out, O_RDONLY | O_DIRECTORY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    cr_assert_eq(osp_pipeline_merge(out, just_b, 1, 0), OSP_ESTATE);
    cr_assert_not_null(strstr(osp_last_error(), "another run or merge"), "%s", osp_last_error());
    double t0 = osp_now();
    cr_assert_eq(osp_pipeline_merge(out, just_b, 1, 0.3), OSP_ESTATE);
    cr_assert_geq(osp_now() - t0, 0.3);
    cr_assert_not_null(strstr(osp_last_error(), "still running after 0.3 s"), "%s", osp_last_error());
    pthread_t holder;
    cr_assert_eq(pthread_create(&holder, NULL, unlock_later, &fd), 0);
    t0 = osp_now();
    cr_assert_eq(osp_pipeline_merge(out, just_b, 1, 30), 0, "%s", osp_last_error());
    cr_assert_geq(osp_now() - t0, 0.2, "the merge did not wait for the lock");
    pthread_join(holder, NULL);
    const char *twice[] = {a, a};
    char *o2 = dir_of("o2");
    cr_assert_eq(osp_pipeline_merge(o2, twice, 2, 0), OSP_EINVAL);
    cr_assert_not_null(strstr(osp_last_error(), "twice"), "%s", osp_last_error());
    free(o2);
    free(a);
    free(b);
    free(t);
    free(out);
}

Test(merge, finishes_an_interrupted_merge) {
    char *a = dir_of("a"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg"};
    make_shard(a, &F32_TAGS, pa, NULL, 1);
    const char *srcs[] = {a};
    /* files without a catalogue: refused... */
    cr_assert_eq(mkdir(out, 0755), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/vectors.npy", out);
    tmpdir_write(p, "junk", 4);
    cr_assert_eq(osp_pipeline_merge(out, srcs, 1, 0), OSP_ESTATE);
    cr_assert_not_null(strstr(osp_last_error(), "vectors.npy"), "%s", osp_last_error());
    /* ...unless a merge was putting them in place when it was killed */
    snprintf(p, sizeof p, "%s/.merge-tmp-abc123", out);
    cr_assert_eq(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/.merge-tmp-abc123/catalog.db", out);
    tmpdir_write(p, "x", 1);
    cr_assert_eq(osp_pipeline_merge(out, srcs, 1, 0), 0, "%s", osp_last_error());
    expect_clean(out);
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(ids.shape.dim[0], 1);
    osp_array_free(&v);
    osp_array_free(&ids);
    free(a);
    free(out);
}

Test(merge, uncommitted_tail_ignored) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg", "img/y.jpg", "img/z.jpg"}, *pb[] = {"img/w.jpg"};
    shard_spec sa = F32_TAGS;
    sa.garbage = 1;
    make_shard(a, &sa, pa, NULL, 3);
    make_shard(b, &sa, pb, NULL, 1);
    /* the killed run's header claims 5 rows; 3 are committed */
    char vp[700];
    snprintf(vp, sizeof vp, "%s/vectors.npy", a);
    osp_array whole;
    cr_assert_eq(osp_npy_read(vp, &whole), 0, "%s", osp_last_error());
    cr_assert_eq(whole.shape.dim[0], 5);
    osp_array_free(&whole);
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(a, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(v.shape.dim[0], 3);
    cr_assert_eq(ids.shape.dim[0], 3);
    osp_array_free(&v);
    osp_array_free(&ids);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), 0, "%s", osp_last_error());
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(ids.shape.dim[0], 4);
    for (int i = 0; i < 4; i++)
        cr_assert_neq(((int64_t *)ids.data)[i], osp_image_id("garbage/x.jpg"));
    cr_assert_eq(((int64_t *)ids.data)[3], osp_image_id("img/w.jpg"));
    osp_array_free(&v);
    osp_array_free(&ids);
    int64_t lid[16];
    char tp[700];
    snprintf(tp, sizeof tp, "%s/tags.jsonl", out);
    cr_assert_eq(count_lines(tp, lid, 16), 4);
    cr_assert_eq(lid[3], osp_image_id("img/w.jpg"));
    free(a);
    free(b);
    free(out);
}

Test(merge, damaged_source_refused) {
    char *a = dir_of("a"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg", "img/y.jpg"};
    make_shard(a, &F32_TAGS, pa, NULL, 2);
    const char *srcs[] = {a};
    /* ids.npy row 1 rewritten to another id */
    char p[700];
    snprintf(p, sizeof p, "%s/ids.npy", a);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    int64_t other = 12345, was = 0;
    fseek(f, OSP__NPY_HEADER + 8, SEEK_SET);
    cr_assert_eq(fread(&was, 8, 1, f), 1);
    fseek(f, OSP__NPY_HEADER + 8, SEEK_SET);
    fwrite(&other, 8, 1, f);
    fflush(f);
    cr_assert_eq(osp_pipeline_merge(out, srcs, 1, 0), OSP_ECORRUPT);
    cr_assert(strstr(osp_last_error(), "img/y.jpg") && strstr(osp_last_error(), "12345"), "%s", osp_last_error());
    cr_assert(!has_file(out, "catalog.db"));
    expect_clean(out);
    fseek(f, OSP__NPY_HEADER + 8, SEEK_SET);
    fwrite(&was, 8, 1, f);
    fclose(f);
    cr_assert_eq(osp_pipeline_merge(out, srcs, 1, 0), 0, "%s", osp_last_error());
    /* a tags.jsonl cut short */
    snprintf(p, sizeof p, "%s/tags.jsonl", a);
    cr_assert_eq(truncate(p, 10), 0);
    char *out2 = dir_of("out2");
    cr_assert_eq(osp_pipeline_merge(out2, srcs, 1, 0), OSP_ECORRUPT);
    cr_assert_not_null(strstr(osp_last_error(), "tags.jsonl"), "%s", osp_last_error());
    cr_assert(!has_file(out2, "catalog.db"));
    /* the earlier merge in out is left as it was */
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_merge(out, srcs, 1, 0), OSP_ECORRUPT);
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(ids.shape.dim[0], 2);
    osp_array_free(&v);
    osp_array_free(&ids);
    free(out2);
    free(a);
    free(out);
}

/* ---- reading vectors --------------------------------------------------------------------- */

Test(merge, load_vectors_float16) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg", "bad/q.jpg", "img/y.jpg"}, *pb[] = {"img/z.jpg"};
    shard_spec sp = {.shard = "0/2", .dim = 3, .dtype = OSP_DTYPE_F16, .tags = 0, .garbage = 1};
    make_shard(a, &sp, pa, NULL, 3);
    make_shard(b, &sp, pb, NULL, 1);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), 0, "%s", osp_last_error());
    cr_assert(!has_file(out, "tags.jsonl"));
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(v.dtype, OSP_DTYPE_F32);
    cr_assert_eq(v.shape.dim[0], 3);
    cr_assert_eq(v.shape.dim[1], 3);
    const char *want[] = {"img/x.jpg", "img/y.jpg", "img/z.jpg"};
    for (int i = 0; i < 3; i++) {
        const int64_t id = ((int64_t *)ids.data)[i];
        cr_assert_eq(id, osp_image_id(want[i]));
        for (int j = 0; j < 3; j++) cr_assert_eq(((float *)v.data)[i * 3 + j], value_of(id, j));
    }
    osp_array_free(&v);
    osp_array_free(&ids);
    /* the merged file stays float16: raw rows copied */
    char vp[700];
    snprintf(vp, sizeof vp, "%s/vectors.npy", out);
    osp_array raw;
    cr_assert_eq(osp_npy_read(vp, &raw), 0, "%s", osp_last_error());
    cr_assert_eq(raw.dtype, OSP_DTYPE_F16);
    osp_array_free(&raw);

    /* fewer rows than committed: refused; a header of another dtype: refused */
    snprintf(vp, sizeof vp, "%s/vectors.npy", out);
    cr_assert_eq(truncate(vp, OSP__NPY_HEADER + 2 * 3 * 2 + 1), 0);
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), OSP_ECORRUPT);
    cr_assert_not_null(strstr(osp_last_error(), vp), "%s", osp_last_error());
    char h[OSP__NPY_HEADER];
    osp__npy_header(h, OSP_DTYPE_F32, 3, 3);
    FILE *f = fopen(vp, "r+b");
    cr_assert_not_null(f);
    fwrite(h, 1, sizeof h, f);
    fclose(f);
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), OSP_EFORMAT);
    cr_assert(strstr(osp_last_error(), vp) && strstr(osp_last_error(), "float16"), "%s", osp_last_error());
    cr_assert_null(v.data);
    cr_assert_null(ids.data);
    /* not an output folder at all */
    cr_assert_eq(osp_pipeline_load_vectors(tmpdir_name, &v, &ids), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), tmpdir_name), "%s", osp_last_error());
    free(a);
    free(b);
    free(out);
}

/* tags.jsonl longer than the merge reads at once, lines across the reads */
Test(merge, long_tags_file) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    enum { N = 45 };
    char *names[N];
    const char *pa[N];
    for (int i = 0; i < N; i++) {
        names[i] = malloc(32);
        snprintf(names[i], 32, "%s/%03d.jpg", i % 7 == 3 ? "bad" : "img", i);
        pa[i] = names[i];
    }
    shard_spec sp = F32_TAGS;
    sp.pad = 200001; /* 45 lines of 200 kB: over 8 MiB */
    sp.garbage = 1;
    make_shard(a, &sp, pa, NULL, N);
    const char *pb[] = {pa[0], pa[44], "img/new.jpg"}; /* two already in a */
    make_shard(b, &sp, pb, NULL, 3);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), 0, "%s", osp_last_error());
    int64_t lid[64];
    char tp[700];
    snprintf(tp, sizeof tp, "%s/tags.jsonl", out);
    cr_assert_eq(count_lines(tp, lid, 64), N + 1);
    for (int i = 0; i < N; i++) cr_assert_eq(lid[i], osp_image_id(pa[i]), "line %d", i);
    cr_assert_eq(lid[N], osp_image_id("img/new.jpg"));
    osp_catalog *c;
    cr_assert_eq(osp_catalog_open(out, &c), 0);
    int64_t tags_bytes, rows;
    cr_assert_eq(osp__catalog_state(c, &tags_bytes, &rows), 0);
    struct stat st;
    cr_assert_eq(stat(tp, &st), 0);
    cr_assert_eq(st.st_size, tags_bytes);
    cr_assert_gt(tags_bytes, 8 << 20);
    cr_assert_eq(rows, N - 6 + 1);
    osp_catalog_close(c);
    for (int i = 0; i < N; i++) free(names[i]);
    free(a);
    free(b);
    free(out);
}

Test(merge, empty_shard) {
    char *a = dir_of("a"), *b = dir_of("b"), *out = dir_of("out");
    const char *pa[] = {"img/x.jpg"};
    make_shard(a, &F32_TAGS, NULL, NULL, 0);
    make_shard(b, &F32_TAGS, pa, NULL, 1);
    const char *srcs[] = {a, b};
    cr_assert_eq(osp_pipeline_merge(out, srcs, 2, 0), 0, "%s", osp_last_error());
    osp_array v, ids;
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(ids.shape.dim[0], 1);
    osp_array_free(&v);
    osp_array_free(&ids);
    const char *just_a[] = {a};
    cr_assert_eq(osp_pipeline_merge(out, just_a, 1, 0), 0, "%s", osp_last_error());
    cr_assert_eq(osp_pipeline_load_vectors(out, &v, &ids), 0, "%s", osp_last_error());
    cr_assert_eq(v.shape.dim[0], 0);
    cr_assert_eq(v.shape.dim[1], 4);
    osp_array_free(&v);
    osp_array_free(&ids);
    free(a);
    free(b);
    free(out);
}

/* ---- the model's content hash -------------------------------------------------------------- */

Test(merge, model_content_hash) {
    static const char spec[] = "[net]\ninput = 1x4x4\n\n[fc]\nname = fc1\noutputs = 3\n";
    osp_net *n1, *n2;
    cr_assert_eq(osp_net_from_spec(spec, sizeof spec - 1, "tiny", 1, &n1), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_from_spec(spec, sizeof spec - 1, "tiny", 1, &n2), 0, "%s", osp_last_error());
    char h1[65], h2[65];
    cr_assert_eq(osp_model_content_hash(n1, h1), 0, "%s", osp_last_error());
    cr_assert_eq(osp_model_content_hash(n2, h2), 0);
    cr_assert_eq(strlen(h1), 64);
    cr_assert_str_eq(h1, h2);
    for (int i = 0; i < 64; i++) cr_assert(strchr("0123456789abcdef", h1[i]));
    /* the weights count... */
    int64_t nw;
    float *w = osp_graph_weights(n2->graph, &nw);
    cr_assert_gt(nw, 0);
    w[nw - 1] += 1.0f;
    cr_assert_eq(osp_model_content_hash(n2, h2), 0);
    cr_assert_str_neq(h1, h2);
    w[nw - 1] -= 1.0f;
    cr_assert_eq(osp_model_content_hash(n2, h2), 0);
    cr_assert_str_eq(h1, h2);
    /* ...and so do the labels */
    const char *labels[] = {"cat", "dog", "owl"};
    cr_assert_eq(osp_net_set_labels(n2, labels, 3), 0, "%s", osp_last_error());
    cr_assert_eq(osp_model_content_hash(n2, h2), 0);
    cr_assert_str_neq(h1, h2);
    osp_net_free(n1);
    osp_net_free(n2);
}
