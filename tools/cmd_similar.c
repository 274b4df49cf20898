/* osprey similar: the images nearest a query, from an index built over an
 * output folder's vectors (osprey index build --from DIR) and the folder's
 * catalogue, which names them. A query is an image id, an image the
 * catalogue holds (its stored vector), or any other image (embedded with
 * the folder's model and layer, as the pipeline does). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "osprey/hash.h"
#include "osprey/index.h"
#include "osprey/model.h"
#include "osprey/pipeline.h"

static const char *const CMD = "similar";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey similar --index INDEX --catalog DIR [options] QUERY...\n"
            "\n"
            "Finds the K images nearest each QUERY in INDEX, an index built from the output\n"
            "folder DIR with 'osprey index build --from DIR', and names them from DIR's\n"
            "catalogue. A QUERY is:\n"
            "  - an image id (all digits), as in DIR's tags.jsonl and ids.npy: its stored vector;\n"
            "  - an image path that DIR's catalogue holds (the path as the run was given it):\n"
            "    its stored vector;\n"
            "  - any other image file: embedded now with DIR's model and layer (averaged over\n"
            "    the layer's height and width, or over its tokens as the run's --pool was,\n"
            "    L2-normalised if the run was), which must be the very model DIR was made\n"
            "    with (its content hash is checked).\n"
            "To query a file whose name is all digits, write it as ./NAME.\n"
            "\n"
            "A folder of binary codes ('osprey embed --binary' or --hash) goes with a binary\n"
            "index ('osprey index build --from DIR --type binary'): other images are coded\n"
            "with the very hash DIR was made with (the model's own head, or the hash file DIR\n"
            "records; its weights are checked).\n"
            "\n"
            "  --index INDEX         the index file\n"
            "  --catalog DIR         the output folder of 'osprey embed' (or 'osprey merge')\n"
            "  --model MODEL         the model to embed new images with (default: the model\n"
            "                        file DIR records)\n"
            "  -k K                  results per query (default 10)\n"
            "  --ef N                hnsw: candidate list size (default max(K, 64))\n"
            "  --nprobe N            ivf, ivfpq: lists probed; lsh: buckets per table\n"
            "  --threads T           threads (default: all cores)\n"
            "  --json                one JSON object per query and line:\n"
            "                        {\"query\", \"metric\", \"results\": [{\"id\", \"path\", \"score\"}]}\n"
            "\n"
            "Output: for each query a line 'query: QUERY', then one line per result, best\n"
            "first: SCORE, a TAB, the image's path. The score depends on the index's metric:\n"
            "  l2    the squared Euclidean distance (smaller is nearer; 0 is the same vector)\n"
            "  ip    the inner product <q, x> (larger is nearer)\n"
            "  cos   the cosine similarity, from -1 to 1 (larger is nearer; 1 is the same\n"
            "        direction)\n"
            "  hamming  the number of bits in which the codes differ (smaller is nearer)\n"
            "A result whose id the catalogue does not know (an index built from another\n"
            "folder) is printed with no path (null in JSON), and a warning.\n");
}

/* s as a JSON string. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static int all_digits(const char *s) { return *s && strspn(s, "0123456789") == strlen(s); }

/* The model, loaded once, and what turns its layer into DIR's vectors. */
typedef struct embedder {
    osp_net *net;
    const char *layer;
    int64_t size, dim;
    osp_embed_shape shape; /* the folder's pooling of the layer */
    int normalize;
    float *x, *feat;
    osp_hash *hash; /* a folder of codes: the hash that made them */
    float *vec;     /* and the vector it codes */
} embedder;

/* A folder of codes: the hash it was made with, the model's own head or
 * the file it records, checked against the weights it records. */
static int open_hash(embedder *e, osp_catalog *cat, const char *dir, const char *model) {
    const char *file = osp_catalog_setting(cat, "hash_file"), *want = osp_catalog_setting(cat, "hash");
    const char *from = file && *file ? file : model;
    if (!(file && *file) && !osp_net_get_hash(e->net))
        return cli_fail(CMD, "%s records no hash file and %s has no hash head: the hash %s was made with is "
                        "unknown, so new images cannot be coded alike (query by id or catalogued path)",
                        dir, model, dir);
    if (file && *file ? osp_hash_load(file, &e->hash) : osp_hash_from_net(e->net, model, &e->hash))
        return cli_fail_lib(CMD, NULL);
    char have[65];
    if (osp_hash_content_hash(e->hash, have)) return cli_fail_lib(CMD, NULL);
    if (!want || strcmp(want, have))
        return cli_fail(CMD, "the hash of %s is not the one %s was made with (weights %.16s..., the folder's "
                        "%.16s...): its codes would not be comparable", from, dir, have, want ? want : "(none)");
    return 0;
}

static int embedder_open(embedder *e, osp_catalog *cat, const char *dir, const char *model, int64_t dim,
                         int binary) {
    const char *recorded = osp_catalog_setting(cat, "model");
    if (!model) model = recorded;
    if (!model || !*model)
        return cli_fail(CMD, "%s does not name its model file: give --model to embed new images", dir);
    if (osp_model_load(model, &e->net)) return cli_fail_lib(CMD, NULL);
    /* the vectors' model: the first of an ensemble */
    const char *want = osp_catalog_setting(cat, "embed_model_sha256");
    if (!want) want = osp_catalog_setting(cat, "model_sha256");
    char hash[65];
    if (osp_model_content_hash(e->net, hash)) return cli_fail_lib(CMD, model);
    if (!want || strcmp(want, hash))
        return cli_fail(CMD,
                        "%s is not the model %s was made with (content hash %.16s..., the folder's %.16s...): "
                        "its vectors would not be comparable; give the right one with --model",
                        model, dir, hash, want ? want : "(none)");
    e->layer = osp_catalog_setting(cat, "layer");
    if (!e->layer || !*e->layer) return cli_fail(CMD, "%s records no embedding layer", dir);
    /* pooled as the folder's vectors were (a folder older than --pool
     * records none: the default) */
    osp_pool pool;
    if (osp_pool_parse(osp_catalog_setting(cat, "pool"), &pool) ||
        osp_net_embed_shape(e->net, e->layer, pool, &e->shape))
        return cli_fail_lib(CMD, model);
    e->size = e->shape.size;
    e->dim = e->shape.dim;
    if (binary && open_hash(e, cat, dir, model)) return 1;
    if (binary && osp_hash_dim(e->hash) != e->dim)
        return cli_fail(CMD, "%s: layer '%s' gives %lld values, but the hash takes %d", model, e->layer,
                        (long long)e->dim, osp_hash_dim(e->hash));
    if (!binary && e->dim != dim)
        return cli_fail(CMD, "%s: layer '%s' gives %lld values, but %s holds vectors of %lld", model, e->layer,
                        (long long)e->dim, dir, (long long)dim);
    const char *norm = osp_catalog_setting(cat, "normalize");
    e->normalize = norm && !strcmp(norm, "1");
    e->x = osp_alloc((size_t)osp_shape_numel(&e->net->input) * sizeof(float));
    e->feat = osp_alloc((size_t)e->size * sizeof(float));
    e->vec = osp_alloc((size_t)e->dim * sizeof(float));
    if (!e->x || !e->feat || !e->vec) return cli_fail_lib(CMD, NULL);
    return 0;
}

/* The vector of one image file, as the pipeline makes it; or its code,
 * into code, for a folder of codes. */
static int embed(embedder *e, const char *path, float *v, uint8_t *code) {
    if (osp_net_load_image(e->net, path, NULL, e->x)) return cli_fail_lib(CMD, NULL);
    const char *layers[] = {e->layer};
    float *outs[] = {e->feat};
    if (osp_net_run(e->net, e->x, 1, 1, layers, 1, outs)) return cli_fail_lib(CMD, path);
    if (!e->hash) {
        osp_embedding_pool(e->feat, &e->shape, e->normalize, v);
        return 0;
    }
    osp_embedding_pool(e->feat, &e->shape, e->normalize, e->vec);
    return osp_hash_codes(e->hash, e->vec, 1, code) ? cli_fail_lib(CMD, path) : 0;
}

static void embedder_close(embedder *e) {
    osp_free(e->x);
    osp_free(e->feat);
    osp_free(e->vec);
    osp_hash_free(e->hash);
    osp_net_free(e->net);
}

int cmd_similar(int argc, char **argv) {
    static const struct option opts[] = {
        {"index", required_argument, 0, 'x'},  {"catalog", required_argument, 0, 'c'},
        {"model", required_argument, 0, 'm'},  {"ef", required_argument, 0, 'e'},
        {"nprobe", required_argument, 0, 'p'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *ix_path = NULL, *dir = NULL, *model = NULL;
    int k = 10, ef = 0, nprobe = 0, threads = 0, json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hk:", opts, NULL)) != -1) {
        switch (c) {
        case 'x': ix_path = optarg; break;
        case 'c': dir = optarg; break;
        case 'm': model = optarg; break;
        case 'k': if (cli_int(CMD, "-k", optarg, 1, OSP_INDEX_MAX_K, &k)) return 1; break;
        case 'e': if (cli_int(CMD, "--ef", optarg, 1, OSP_INDEX_MAX_K, &ef)) return 1; break;
        case 'p': if (cli_int(CMD, "--nprobe", optarg, 1, 1 << 20, &nprobe)) return 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey similar --help')", argv[optind - 1]);
        }
    }
    if (!ix_path || !dir) return cli_fail(CMD, "--index and --catalog are required (see 'osprey similar --help')");
    if (optind >= argc) return cli_fail(CMD, "no query: give image paths or ids (see 'osprey similar --help')");
    osp_threads_set(threads);
    const int nq = argc - optind;
    char **queries = argv + optind;

    osp_index *ix = NULL;
    osp_catalog *cat = NULL;
    embedder emb = {0};
    float *q = NULL, *dist = NULL;
    uint8_t *qc = NULL; /* a binary index: the queries' codes */
    int64_t *ids = NULL;
    int status = 1;
    if (osp_index_load(ix_path, &ix)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_index_info info;
    osp_index_info_get(ix, &info);
    const osp_index_metric metric = info.params.metric;
    const int binary = info.params.type == OSP_INDEX_BINARY;
    if (osp_catalog_open(dir, &cat)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    const char *dim_s = osp_catalog_setting(cat, "dim");
    char *end = NULL;
    errno = 0;
    const long long dim = dim_s ? strtoll(dim_s, &end, 10) : 0;
    if (!dim_s || errno || *end || dim <= 0) {
        cli_fail(CMD, "%s holds no vectors (a run of 'osprey tag' without --embed): nothing to search", dir);
        goto done;
    }
    const char *dtype = osp_catalog_setting(cat, "dtype");
    const int codes = dtype && !strcmp(dtype, "uint8");
    if (codes != binary) {
        if (codes)
            cli_fail(CMD, "%s holds binary codes ('osprey embed --binary'), %s is a %s index: build a binary "
                          "one ('osprey index build --from %s --type binary')",
                     dir, ix_path, osp_index_type_name(info.params.type), dir);
        else
            cli_fail(CMD, "%s is a binary index, %s holds float vectors: build the index from this folder "
                          "('osprey index build --from %s')", ix_path, dir, dir);
        goto done;
    }
    if (binary && dim * 8 != info.params.dim) {
        cli_fail(CMD, "%s has codes of %d bits, %s of %lld: build the index from this folder "
                      "('osprey index build --from %s --type binary')",
                 ix_path, info.params.dim, dir, dim * 8, dir);
        goto done;
    }
    if (!binary && dim != info.params.dim) {
        cli_fail(CMD, "%s has vectors of %d values, %s of %lld: build the index from this folder "
                      "('osprey index build --from %s')",
                 ix_path, info.params.dim, dir, dim, dir);
        goto done;
    }
    q = osp_alloc((size_t)nq * (size_t)dim * sizeof *q);
    ids = osp_alloc((size_t)nq * (size_t)k * sizeof *ids);
    dist = osp_alloc((size_t)nq * (size_t)k * sizeof *dist);
    if (binary) qc = osp_alloc((size_t)nq * (size_t)dim);
    if (!q || !ids || !dist || (binary && !qc)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    /* Every query's vector first: a bad one stops before anything is printed. */
    for (int i = 0; i < nq; i++) {
        const char *s = queries[i];
        float *v = q + (size_t)i * (size_t)dim;
        int64_t id = -1, row = -1;
        if (all_digits(s)) {
            if (cli_int64(CMD, "an image id", s, 0, INT64_MAX, &id)) goto done;
            char path[4096];
            if (osp_catalog_by_id(cat, id, path, sizeof path, &row)) {
                cli_fail_lib(CMD, NULL);
                goto done;
            }
            if (row < 0) {
                cli_fail(CMD, "image %s (%s) has no vector in %s: it could not be read when the folder was made",
                         s, path, dir);
                goto done;
            }
        } else {
            int rc = osp_catalog_by_path(cat, s, &id, &row);
            if (rc && rc != OSP_ENOENT) {
                cli_fail_lib(CMD, NULL);
                goto done;
            }
            if (rc) row = -1;
        }
        uint8_t *code = binary ? qc + (size_t)i * (size_t)dim : NULL;
        if (row >= 0) {
            if (osp_catalog_read_vectors(cat, &row, 1, v)) {
                cli_fail_lib(CMD, NULL);
                goto done;
            }
            /* a folder of codes gives its bytes as floats */
            for (long long b = 0; binary && b < dim; b++) code[b] = (uint8_t)v[b];
            continue;
        }
        if (!emb.net && embedder_open(&emb, cat, dir, model, dim, binary)) goto done;
        if (embed(&emb, s, v, code)) goto done;
    }
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, k);
    sp.ef_search = ef;
    sp.nprobe = nprobe;
    sp.threads = threads > 0 ? threads : osp_threads_get();
    if (binary ? osp_index_search_codes(ix, qc, nq, &sp, ids, dist) : osp_index_search(ix, q, nq, &sp, ids, dist)) {
        cli_fail_lib(CMD, ix_path);
        goto done;
    }
    int warned = 0;
    for (int i = 0; i < nq; i++) {
        if (json) {
            printf("{\"query\": ");
            json_string(stdout, queries[i]);
            printf(", \"metric\": \"%s\", \"results\": [", osp_index_metric_name(metric));
        } else {
            printf("%squery: %s\n", i ? "\n" : "", queries[i]);
        }
        for (int j = 0; j < k; j++) {
            const int64_t id = ids[(size_t)i * (size_t)k + (size_t)j];
            if (id == OSP_INDEX_NO_ID) break;
            const float d = dist[(size_t)i * (size_t)k + (size_t)j];
            /* distances are "smaller is nearer" (osprey/index.h); scores as --help says */
            const double score = metric == OSP_INDEX_METRIC_IP ? -(double)d
                                 : metric == OSP_INDEX_METRIC_COSINE ? 1.0 - (double)d
                                                                     : (double)d;
            char path[4096];
            int64_t row;
            int rc = osp_catalog_by_id(cat, id, path, sizeof path, &row);
            if (rc && rc != OSP_ENOENT) {
                cli_fail_lib(CMD, NULL);
                goto done;
            }
            if (rc && !warned) {
                fprintf(stderr,
                        "osprey similar: warning: %s holds ids that %s does not know (such as %lld): was it built "
                        "from another folder?\n",
                        ix_path, dir, (long long)id);
                warned = 1;
            }
            if (json) {
                printf("%s{\"id\": %lld, \"path\": ", j ? ", " : "", (long long)id);
                if (rc) printf("null");
                else json_string(stdout, path);
                printf(", \"score\": %.9g}", score);
            } else if (rc) {
                printf("%.6g\t(id %lld, not in the catalogue)\n", score, (long long)id);
            } else {
                printf("%.6g\t%s\n", score, path);
            }
        }
        if (json) printf("]}\n");
    }
    if (fflush(stdout) != 0) {
        cli_fail(CMD, "writing the results: %s", strerror(errno));
        goto done;
    }
    status = 0;
done:
    embedder_close(&emb);
    osp_catalog_close(cat);
    osp_index_free(ix);
    osp_free(q);
    osp_free(qc);
    osp_free(ids);
    osp_free(dist);
    return status;
}
