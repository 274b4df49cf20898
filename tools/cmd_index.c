/* osprey index: build, search and edit vector indexes (src/index). Vectors
 * come from .npy (float32, or any number type, converted) or the ANN
 * benchmark formats (.fvecs, .bvecs); ids from int64 (or int32) .npy; or
 * both from the output folder of 'osprey embed' (--from). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "osprey/index.h"
#include "osprey/io.h"
#include "osprey/pipeline.h"

static const char *const CMD = "index";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey index build  --type T [--metric M] (--input BASE | --from DIR) --out INDEX [options]\n"
            "       osprey index search --index INDEX --queries Q -k K --out IDS.npy [options]\n"
            "       osprey index add    --index INDEX --input X [--ids IDS.npy] [--out NEW]\n"
            "       osprey index remove --index INDEX (--ids IDS.npy | --id N[,N...]) [--out NEW]\n"
            "       osprey index info   INDEX [--json]\n"
            "\n"
            "Vector files: .npy (N x D, float32 or any number type), .fvecs, .bvecs;\n"
            "binary indexes take uint8 .npy codes (N x bytes). Ids: int64 .npy (N).\n"
            "Vectors and queries must be finite: a row holding NaN or an infinity is\n"
            "refused, named by its number (from 0).\n"
            "'osprey index SUBCOMMAND --help' lists a subcommand's options.\n");
}

static void build_usage(FILE *out) {
    fprintf(out,
            "usage: osprey index build --type T [--metric M] (--input BASE | --from DIR) --out INDEX [options]\n"
            "\n"
            "Options that a type does not use are refused.\n"
            "\n"
            "  --type T              flat | ivf | ivfpq | lsh | binary | hnsw\n"
            "  --metric M            l2 | ip | cos (default l2; lsh: cos, the only one it\n"
            "                        takes; binary: hamming, the only one it takes)\n"
            "  --input BASE          vectors to index (.npy, .fvecs, .bvecs)\n"
            "  --ids IDS.npy         their ids (default 0, 1, 2, ...)\n"
            "  --from DIR            instead of --input and --ids: the vectors of an output\n"
            "                        folder of 'osprey embed' (or 'osprey merge'), as far as\n"
            "                        its catalogue committed them (float16 converted), with\n"
            "                        their image ids, so that 'osprey similar --catalog DIR'\n"
            "                        can name the images found\n"
            "  --out INDEX           the index file to write\n"
            "  --nlist N             ivf, ivfpq: k-means lists (default about 4 sqrt(N))\n"
            "  --m M                 ivfpq: sub-quantizers, dividing D (default D/8)\n"
            "  --nbits B             ivfpq: bits per sub-code, 1..8 (default 8);\n"
            "                        lsh: bits per table key (default from N)\n"
            "  --tables L            lsh: hash tables (default 8)\n"
            "  --M M                 hnsw: links per node, 2M on level 0 (default 16)\n"
            "  --ef-construction E   hnsw: candidates while inserting (default 200)\n"
            "  --iters I             ivf, ivfpq: k-means iterations (default 10)\n"
            "  --seed S              ivf, ivfpq, lsh, hnsw: seed for k-means, PQ, LSH planes,\n"
            "                        HNSW levels (default 1234)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --quiet               print nothing on success\n"
            "  --json                print the figures as one JSON object\n");
}

static void search_usage(FILE *out) {
    fprintf(out,
            "usage: osprey index search --index INDEX --queries Q -k K --out IDS.npy [options]\n"
            "\n"
            "Writes the ids of the K nearest vectors of each query as int64 Q x K (-1 where\n"
            "fewer than K) and prints queries/s.\n"
            "\n"
            "  --distances D.npy     also write the distances (float32 Q x K)\n"
            "  --ef N                hnsw only: candidate list size (default max(K, 64))\n"
            "  --nprobe N            ivf, ivfpq only: lists probed (default 8); lsh only:\n"
            "                        buckets per table (default 16)\n"
            "  --batch B             queries per search call (default all; 1 = one at a time)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --repeat R            search R times, report the fastest (default 1)\n"
            "  --truth GT.npy        exact ids (int64 or int32 Q x >= K, or .ivecs): print recall@K\n"
            "  --json                print the figures as one JSON object\n");
}

static void edit_usage(FILE *out, const char *what) {
    if (!strcmp(what, "add"))
        fprintf(out,
                "usage: osprey index add --index INDEX --input X [--ids IDS.npy] [--out NEW]\n"
                "\n"
                "Adds vectors (ids default to one past the largest so far) and writes the\n"
                "index back atomically (to NEW if given).\n"
                "  --threads T           threads (default: all cores)\n");
    else
        fprintf(out,
                "usage: osprey index remove --index INDEX (--ids IDS.npy | --id N[,N...]) [--out NEW]\n"
                "\n"
                "Removes vectors by id (absent ids are skipped) and writes the index back\n"
                "atomically (to NEW if given).\n"
                "  --threads T           threads (default: all cores)\n");
}

/* ---- files ---------------------------------------------------------------- */

static int has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), e = strlen(ext);
    return n > e && !strcmp(path + n - e, ext);
}

/* Reads any 1-D or 2-D array file; 1-D becomes 1 x D. */
static int read_array(const char *path, osp_array *a) {
    int rc;
    if (has_ext(path, ".fvecs") || has_ext(path, ".bvecs") || has_ext(path, ".ivecs"))
        rc = osp_vecs_read(path, a);
    else if (has_ext(path, ".npy"))
        rc = osp_npy_read(path, a);
    else
        return cli_fail(CMD, "%s: unknown vector file type (.npy, .fvecs, .bvecs, .ivecs)", path);
    if (rc) return cli_fail_lib(CMD, NULL);
    if (a->shape.ndim == 1) {
        a->shape.ndim = 2;
        a->shape.dim[1] = a->shape.dim[0];
        a->shape.dim[0] = 1;
    }
    if (a->shape.ndim != 2 || a->shape.dim[0] < 1 || a->shape.dim[1] < 1) {
        char s[96];
        osp_shape_format(&a->shape, s, sizeof s);
        osp_array_free(a);
        return cli_fail(CMD, "%s: expected N x D vectors, got shape %s", path, s);
    }
    return 0;
}

/* Float vectors N x D (converted from any number type). */
static int read_vectors(const char *path, float **x, int64_t *n, int *d) {
    osp_array a = {0};
    if (read_array(path, &a)) return 1;
    const int64_t dim = a.shape.dim[1];
    if (dim > OSP_INDEX_MAX_DIM) {
        osp_array_free(&a);
        return cli_fail(CMD, "%s: vectors of %lld dimensions (an index takes at most %d)", path,
                        (long long)dim, OSP_INDEX_MAX_DIM);
    }
    if (osp_array_to_f32(&a)) {
        osp_array_free(&a);
        return cli_fail_lib(CMD, path);
    }
    *n = a.shape.dim[0];
    *d = (int)dim;
    *x = a.data;
    return 0;
}

/* Packed binary codes N x bytes (uint8). */
static int read_codes(const char *path, uint8_t **codes, int64_t *n, int *bits) {
    osp_array a = {0};
    if (read_array(path, &a)) return 1;
    if (a.dtype != OSP_DTYPE_U8) {
        osp_array_free(&a);
        return cli_fail(CMD, "%s: binary indexes take uint8 codes (N x bytes), not %s", path,
                        osp_dtype_name(a.dtype));
    }
    if (a.shape.dim[1] > OSP_INDEX_MAX_DIM / 8) {
        const int64_t bytes = a.shape.dim[1];
        osp_array_free(&a);
        return cli_fail(CMD, "%s: codes of %lld bytes (a binary index takes at most %d)", path,
                        (long long)bytes, OSP_INDEX_MAX_DIM / 8);
    }
    *n = a.shape.dim[0];
    *bits = (int)a.shape.dim[1] * 8;
    *codes = a.data;
    return 0;
}

/* n ids from int64 or int32 .npy (N or N x 1). */
static int read_ids(const char *path, int64_t want, int64_t **ids, int64_t *n) {
    osp_array a = {0};
    if (has_ext(path, ".npy") ? osp_npy_read(path, &a) : osp_vecs_read(path, &a))
        return cli_fail_lib(CMD, NULL);
    int64_t cnt = osp_array_numel(&a);
    int ok = (a.dtype == OSP_DTYPE_I64 || a.dtype == OSP_DTYPE_I32) &&
             (a.shape.ndim == 1 || (a.shape.ndim == 2 && a.shape.dim[1] == 1));
    if (!ok || (want >= 0 && cnt != want)) {
        osp_array_free(&a);
        if (!ok) return cli_fail(CMD, "%s: ids must be int64 (or int32), N or N x 1", path);
        return cli_fail(CMD, "%s: %lld ids for %lld vectors", path, (long long)cnt, (long long)want);
    }
    int64_t *v = osp_alloc((size_t)(cnt ? cnt : 1) * sizeof *v);
    if (!v) {
        osp_array_free(&a);
        return cli_fail_lib(CMD, path);
    }
    for (int64_t i = 0; i < cnt; i++)
        v[i] = a.dtype == OSP_DTYPE_I64 ? ((int64_t *)a.data)[i] : ((int32_t *)a.data)[i];
    osp_array_free(&a);
    *ids = v;
    *n = cnt;
    return 0;
}

/* The committed vectors of an output folder, float32, with their ids; or
 * its packed codes (a folder embedded with a hash) for a binary index. */
static int read_folder(const char *dir, int binary, float **x, uint8_t **codes, int64_t **ids, int64_t *n,
                       int *d) {
    osp_array v = {0}, id = {0};
    if (osp_pipeline_load_vectors(dir, &v, &id)) return cli_fail_lib(CMD, NULL);
    if ((v.dtype == OSP_DTYPE_U8) != binary) {
        osp_array_free(&v);
        osp_array_free(&id);
        return cli_fail(CMD, binary ? "%s holds float vectors: a binary index takes the codes of 'osprey embed --binary'"
                                    : "%s holds binary codes ('osprey embed --binary'): build --type binary", dir);
    }
    const int64_t rows = v.shape.dim[0], dim = binary ? v.shape.dim[1] * 8 : v.shape.dim[1];
    if (rows < 1 || dim < 1 || dim > OSP_INDEX_MAX_DIM) {
        osp_array_free(&v);
        osp_array_free(&id);
        if (rows < 1) return cli_fail(CMD, "%s has no vectors committed yet: nothing to index", dir);
        return cli_fail(CMD, "%s: vectors of %lld values (an index takes 1 to %d)", dir, (long long)dim,
                        OSP_INDEX_MAX_DIM);
    }
    if (binary) *codes = v.data;
    else *x = v.data;
    *ids = id.data;
    *n = rows;
    *d = (int)dim;
    return 0;
}

/* ---- options that belong to some types ------------------------------------ */

#define TYPE_BIT(t) (1u << (t))
#define IVF_TYPES (TYPE_BIT(OSP_INDEX_IVF_FLAT) | TYPE_BIT(OSP_INDEX_IVF_PQ))

/* 1 (after saying so) if an option that was given does not apply to the
 * index type: which names the types that take it, hint what to use. */
static int not_for_type(const char *opt, int given, osp_index_type type, unsigned types,
                        const char *which, const char *hint) {
    if (!given || (types & TYPE_BIT(type))) return 0;
    return cli_fail(CMD, "%s does not apply to %s indexes: %s%s", opt, osp_index_type_name(type),
                    which, hint ? hint : "");
}

/* ---- progress --------------------------------------------------------------- */

typedef struct progress {
    double t0, last;
} progress;

static void on_progress(int64_t done, int64_t total, void *ctx) {
    progress *p = ctx;
    double now = osp_now();
    if (now - p->last < 0.25 && done < total) return;
    p->last = now;
    double rate = done / (now - p->t0 + 1e-9);
    char eta[32];
    cli_format_duration((double)(total - done) / (rate > 0 ? rate : 1), eta, sizeof eta);
    fprintf(stderr, "\r  adding %lld/%lld vectors, %.0f/s, ETA %s   ", (long long)done, (long long)total,
            rate, eta);
    fflush(stderr);
}

/* ---- build ------------------------------------------------------------------ */

static int cmd_build(int argc, char **argv) {
    static const struct option opts[] = {
        {"type", required_argument, 0, 'T'},   {"metric", required_argument, 0, 'M'},
        {"input", required_argument, 0, 'i'},  {"ids", required_argument, 0, 'I'},
        {"out", required_argument, 0, 'o'},    {"nlist", required_argument, 0, 'n'},
        {"m", required_argument, 0, 'm'},      {"nbits", required_argument, 0, 'b'},
        {"tables", required_argument, 0, 'L'}, {"M", required_argument, 0, 'G'},
        {"ef-construction", required_argument, 0, 'e'}, {"iters", required_argument, 0, 'r'},
        {"seed", required_argument, 0, 's'},   {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},        {"json", no_argument, 0, 'j'},
        {"from", required_argument, 0, 'F'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *type_s = NULL, *metric_s = NULL, *in = NULL, *ids_path = NULL, *out = NULL, *from = NULL;
    int nlist = -1, m = -1, nbits = -1, tables = -1, hm = -1, efc = -1, iters = -1, threads = 0;
    int quiet = 0, json = 0, c;
    uint64_t seed = 0;
    int seed_set = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'T': type_s = optarg; break;
        case 'M': metric_s = optarg; break;
        case 'i': in = optarg; break;
        case 'I': ids_path = optarg; break;
        case 'F': from = optarg; break;
        case 'o': out = optarg; break;
        case 'n': if (cli_int(CMD, "--nlist", optarg, 1, 1 << 20, &nlist)) return 1; break;
        case 'm': if (cli_int(CMD, "--m", optarg, 1, OSP_INDEX_MAX_DIM, &m)) return 1; break;
        case 'b': if (cli_int(CMD, "--nbits", optarg, 1, 20, &nbits)) return 1; break;
        case 'L': if (cli_int(CMD, "--tables", optarg, 1, 64, &tables)) return 1; break;
        case 'G': if (cli_int(CMD, "--M", optarg, 2, 128, &hm)) return 1; break;
        case 'e': if (cli_int(CMD, "--ef-construction", optarg, 1, OSP_INDEX_MAX_K, &efc)) return 1; break;
        case 'r': if (cli_int(CMD, "--iters", optarg, 1, 1000, &iters)) return 1; break;
        case 's': if (cli_u64(CMD, "--seed", optarg, &seed)) return 1; seed_set = 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': build_usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey index build --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (from && (in || ids_path))
        return cli_fail(CMD, "--from DIR gives both the vectors and their ids: not with --input or --ids");
    if (!type_s || !(in || from) || !out)
        return cli_fail(CMD, "build needs --type, --input (or --from) and --out (see 'osprey index build --help')");
    osp_index_type type;
    osp_index_metric metric = OSP_INDEX_METRIC_L2;
    if (osp_index_type_parse(type_s, &type)) return cli_fail_lib(CMD, NULL);
    if (type == OSP_INDEX_BINARY) metric = OSP_INDEX_METRIC_HAMMING;
    else if (type == OSP_INDEX_LSH) metric = OSP_INDEX_METRIC_COSINE;
    if (metric_s && osp_index_metric_parse(metric_s, &metric)) return cli_fail_lib(CMD, NULL);
    if (type == OSP_INDEX_LSH && metric != OSP_INDEX_METRIC_COSINE)
        return cli_fail(CMD, "lsh indexes take the cos metric only (SimHash compares angles), "
                        "not %s: leave --metric out (cos is its default) or use another type "
                        "for %s", osp_index_metric_name(metric), osp_index_metric_name(metric));
    if (not_for_type("--nlist", nlist > 0, type, IVF_TYPES, "ivf and ivfpq take it", NULL) ||
        not_for_type("--iters", iters > 0, type, IVF_TYPES, "ivf and ivfpq take it", NULL) ||
        not_for_type("--m", m > 0, type, TYPE_BIT(OSP_INDEX_IVF_PQ), "ivfpq takes it",
                     "; hnsw's links are --M") ||
        not_for_type("--nbits", nbits > 0, type, TYPE_BIT(OSP_INDEX_IVF_PQ) | TYPE_BIT(OSP_INDEX_LSH),
                     "ivfpq and lsh take it", NULL) ||
        not_for_type("--tables", tables > 0, type, TYPE_BIT(OSP_INDEX_LSH), "lsh takes it", NULL) ||
        not_for_type("--M", hm > 0, type, TYPE_BIT(OSP_INDEX_HNSW), "hnsw takes it",
                     "; ivfpq's sub-quantizers are --m") ||
        not_for_type("--ef-construction", efc > 0, type, TYPE_BIT(OSP_INDEX_HNSW), "hnsw takes it", NULL) ||
        not_for_type("--seed", seed_set, type, IVF_TYPES | TYPE_BIT(OSP_INDEX_LSH) | TYPE_BIT(OSP_INDEX_HNSW),
                     "ivf, ivfpq, lsh and hnsw take it", "; flat and binary indexes draw nothing at random"))
        return 1;
    osp_threads_set(threads);

    float *x = NULL;
    uint8_t *codes = NULL;
    int64_t n = 0, nid = 0, *ids = NULL;
    int d = 0, status = 1;
    osp_index *ix = NULL;
    if (from) {
        if (read_folder(from, type == OSP_INDEX_BINARY, &x, &codes, &ids, &n, &d)) goto done;
        in = from; /* for messages */
    } else if (type == OSP_INDEX_BINARY ? read_codes(in, &codes, &n, &d) : read_vectors(in, &x, &n, &d)) {
        goto done;
    }
    if (ids_path && read_ids(ids_path, n, &ids, &nid)) goto done;
    osp_index_params p;
    osp_index_params_init(&p, type, metric, d);
    if (nlist > 0) p.nlist = nlist;
    if (m > 0) p.pq_m = m;
    if (nbits > 0) {
        if (type == OSP_INDEX_LSH) p.lsh_nbits = nbits;
        else p.pq_nbits = nbits;
    }
    if (tables > 0) p.lsh_tables = tables;
    if (hm > 0) p.hnsw_m = hm;
    if (efc > 0) p.hnsw_ef_construction = efc;
    if (iters > 0) p.kmeans_iters = iters;
    if (seed_set) p.seed = seed;
    p.threads = osp_threads_get();
    if (osp_index_new(&p, &ix)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    progress pr = {osp_now(), 0};
    int show = !quiet && !json && cli_tty();
    if (show) osp_index_set_progress(ix, on_progress, &pr);
    double t0 = osp_now();
    if (osp_index_train(ix, x, n)) {
        cli_fail_lib(CMD, in);
        goto done;
    }
    double t1 = osp_now();
    pr.t0 = t1;
    int rc = codes ? osp_index_add_codes(ix, codes, ids, n) : osp_index_add(ix, x, ids, n);
    if (show) fputc('\n', stderr);
    if (rc) {
        cli_fail_lib(CMD, in);
        goto done;
    }
    double t2 = osp_now();
    if (osp_index_save(ix, out)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    if (!quiet || json) {
        FILE *f = fopen(out, "rb");
        long bytes = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            bytes = ftell(f);
            fclose(f);
        }
        if (json)
            printf("{\"type\": \"%s\", \"metric\": \"%s\", \"count\": %lld, \"dim\": %d, "
                   "\"build_s\": %.3f, \"train_s\": %.3f, \"add_s\": %.3f, \"file_bytes\": %ld, "
                   "\"bytes_per_vector\": %.1f, \"threads\": %d}\n",
                   osp_index_type_name(type), osp_index_metric_name(metric), (long long)n, d, t2 - t0,
                   t1 - t0, t2 - t1, bytes, (double)bytes / (double)n, osp_threads_get());
        else
            printf("built %s index (%s) of %lld x %d in %.2f s (train %.2f s, add %.2f s); "
                   "%s: %ld bytes, %.1f bytes/vector\n",
                   osp_index_type_name(type), osp_index_metric_name(metric), (long long)n, d, t2 - t0,
                   t1 - t0, t2 - t1, out, bytes, (double)bytes / (double)n);
    }
    status = 0;
done:
    osp_index_free(ix);
    osp_free(x);
    osp_free(codes);
    osp_free(ids);
    return status;
}

/* ---- search ------------------------------------------------------------------ */

static int cmd_search(int argc, char **argv) {
    static const struct option opts[] = {
        {"index", required_argument, 0, 'x'},   {"queries", required_argument, 0, 'q'},
        {"out", required_argument, 0, 'o'},     {"distances", required_argument, 0, 'D'},
        {"ef", required_argument, 0, 'e'},      {"nprobe", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'},   {"threads", required_argument, 0, 't'},
        {"repeat", required_argument, 0, 'r'},  {"truth", required_argument, 0, 'g'},
        {"json", no_argument, 0, 'j'},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *ix_path = NULL, *q_path = NULL, *out = NULL, *dist_path = NULL, *truth = NULL;
    int k = 0, ef = 0, nprobe = 0, batch = 0, threads = 0, repeat = 1, json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hk:", opts, NULL)) != -1) {
        switch (c) {
        case 'x': ix_path = optarg; break;
        case 'q': q_path = optarg; break;
        case 'o': out = optarg; break;
        case 'D': dist_path = optarg; break;
        case 'k': if (cli_int(CMD, "-k", optarg, 1, OSP_INDEX_MAX_K, &k)) return 1; break;
        case 'e': if (cli_int(CMD, "--ef", optarg, 1, OSP_INDEX_MAX_K, &ef)) return 1; break;
        case 'p': if (cli_int(CMD, "--nprobe", optarg, 1, 1 << 20, &nprobe)) return 1; break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 1 << 30, &batch)) return 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'r': if (cli_int(CMD, "--repeat", optarg, 1, 1000, &repeat)) return 1; break;
        case 'g': truth = optarg; break;
        case 'j': json = 1; break;
        case 'h': search_usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey index search --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!ix_path || !q_path || !k || !out)
        return cli_fail(CMD, "search needs --index, --queries, -k and --out (see 'osprey index search --help')");
    osp_threads_set(threads);
    osp_index *ix = NULL;
    float *q = NULL;
    uint8_t *qc = NULL;
    int64_t nq = 0, *ids = NULL;
    float *dist = NULL;
    osp_array gt = {0};
    int d = 0, status = 1;
    if (osp_index_load(ix_path, &ix)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_index_info info;
    osp_index_info_get(ix, &info);
    const osp_index_type type = info.params.type;
    if (not_for_type("--ef", ef > 0, type, TYPE_BIT(OSP_INDEX_HNSW), "hnsw takes it",
                     type == OSP_INDEX_IVF_FLAT || type == OSP_INDEX_IVF_PQ || type == OSP_INDEX_LSH
                         ? "; this index takes --nprobe" : NULL) ||
        not_for_type("--nprobe", nprobe > 0, type, IVF_TYPES | TYPE_BIT(OSP_INDEX_LSH),
                     "ivf, ivfpq and lsh take it", type == OSP_INDEX_HNSW ? "; this index takes --ef" : NULL))
        goto done;
    int binary = type == OSP_INDEX_BINARY;
    if (binary ? read_codes(q_path, &qc, &nq, &d) : read_vectors(q_path, &q, &nq, &d)) goto done;
    if (d != info.params.dim) {
        cli_fail(CMD, "%s: queries have %d %s, the index %d", q_path, d, binary ? "bits" : "dimensions",
                 info.params.dim);
        goto done;
    }
    if (truth) {
        int rc = has_ext(truth, ".npy") ? osp_npy_read(truth, &gt) : osp_vecs_read(truth, &gt);
        if (rc) {
            cli_fail_lib(CMD, NULL);
            goto done;
        }
        if ((gt.dtype != OSP_DTYPE_I64 && gt.dtype != OSP_DTYPE_I32) || gt.shape.ndim != 2 ||
            gt.shape.dim[0] != nq || gt.shape.dim[1] < k) {
            cli_fail(CMD, "%s: ground truth must be int64 or int32 %lld x >= %d", truth, (long long)nq, k);
            goto done;
        }
    }
    ids = osp_alloc((size_t)nq * k * sizeof *ids);
    dist = osp_alloc((size_t)nq * k * sizeof *dist);
    if (!ids || !dist) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, k);
    sp.ef_search = ef;
    sp.nprobe = nprobe;
    sp.threads = osp_threads_get();
    /* What the search uses where the options leave it to the defaults. */
    osp_index_search_params used = sp;
    osp_index_search_params_resolve(ix, &used);
    if (batch <= 0 || batch > nq) batch = (int)nq;
    double best = 1e300;
    for (int r = 0; r < repeat; r++) {
        double t0 = osp_now();
        for (int64_t i = 0; i < nq; i += batch) {
            int64_t b = nq - i < batch ? nq - i : batch;
            size_t o = (size_t)i * (size_t)k;
            int rc = binary ? osp_index_search_codes(ix, qc + (size_t)i * (size_t)(d / 8), b, &sp, ids + o, dist + o)
                            : osp_index_search(ix, q + (size_t)i * (size_t)d, b, &sp, ids + o, dist + o);
            if (rc) {
                cli_fail_lib(CMD, q_path);
                goto done;
            }
        }
        double t = osp_now() - t0;
        if (t < best) best = t;
    }
    osp_array ia = {.dtype = OSP_DTYPE_I64, .data = ids};
    ia.shape.ndim = 2;
    ia.shape.dim[0] = nq;
    ia.shape.dim[1] = k;
    if (osp_npy_write(out, &ia)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    if (dist_path && osp_npy_write_f32(dist_path, dist, &ia.shape)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    double recall = -1;
    if (truth) {
        int64_t hit = 0, cols = gt.shape.dim[1];
        for (int64_t i = 0; i < nq; i++)
            for (int j = 0; j < k; j++) {
                int64_t want = gt.dtype == OSP_DTYPE_I64 ? ((int64_t *)gt.data)[i * cols + j]
                                                         : ((int32_t *)gt.data)[i * cols + j];
                for (int l = 0; l < k; l++)
                    if (ids[i * k + l] == want) {
                        hit++;
                        break;
                    }
            }
        recall = (double)hit / ((double)nq * k);
    }
    double qps = (double)nq / best;
    if (json) {
        /* ef and nprobe as the search used them; null for a type without. */
        char ef_s[16] = "null", nprobe_s[16] = "null";
        if (used.ef_search) snprintf(ef_s, sizeof ef_s, "%d", used.ef_search);
        if (used.nprobe) snprintf(nprobe_s, sizeof nprobe_s, "%d", used.nprobe);
        printf("{\"type\": \"%s\", \"queries\": %lld, \"k\": %d, \"seconds\": %.6f, \"qps\": %.1f, "
               "\"threads\": %d, \"batch\": %d, \"ef\": %s, \"nprobe\": %s",
               osp_index_type_name(type), (long long)nq, k, best, qps, used.threads, batch, ef_s, nprobe_s);
        if (recall >= 0) printf(", \"recall\": %.4f", recall);
        printf("}\n");
    } else {
        printf("%lld quer%s in %.3f s: %.0f queries/s (k %d, %d thread%s, batch %d", (long long)nq,
               nq == 1 ? "y" : "ies", best, qps, k, used.threads, used.threads == 1 ? "" : "s", batch);
        if (used.ef_search) printf(", ef %d", used.ef_search);
        if (used.nprobe) printf(", nprobe %d", used.nprobe);
        printf(")");
        if (recall >= 0) printf("; recall@%d %.4f", k, recall);
        printf("\n");
    }
    status = 0;
done:
    osp_index_free(ix);
    osp_free(q);
    osp_free(qc);
    osp_free(ids);
    osp_free(dist);
    osp_array_free(&gt);
    return status;
}

/* ---- add / remove ---------------------------------------------------------------- */

/* "5,7,9" -> ids; an empty item ("5,,9", a trailing comma) is refused:
 * it is a typo more often than not. */
static int parse_id_list(const char *s, int64_t **ids, int64_t *n) {
    int64_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int64_t *v = osp_alloc((size_t)cap * sizeof *v);
    char *copy = strdup(s);
    if (!v || !copy) {
        osp_free(v);
        free(copy);
        return cli_fail(CMD, "--id: out of memory");
    }
    int64_t cnt = 0;
    for (char *tok = copy, *next; tok; tok = next) {
        next = strchr(tok, ',');
        if (next) *next++ = '\0';
        if (!*tok) {
            free(copy);
            osp_free(v);
            return cli_fail(CMD, "--id '%s' has an empty item (item %lld): give ids separated by "
                            "single commas, such as 5,7,9", s, (long long)cnt + 1);
        }
        if (cli_int64(CMD, "--id", tok, 0, INT64_MAX, &v[cnt++])) {
            free(copy);
            osp_free(v);
            return 1;
        }
    }
    free(copy);
    *ids = v;
    *n = cnt;
    return 0;
}

static int cmd_edit(int argc, char **argv, int add) {
    static const struct option opts[] = {
        {"index", required_argument, 0, 'x'}, {"input", required_argument, 0, 'i'},
        {"ids", required_argument, 0, 'I'},   {"id", required_argument, 0, 'N'},
        {"out", required_argument, 0, 'o'},   {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *sub = add ? "add" : "remove";
    const char *ix_path = NULL, *in = NULL, *ids_path = NULL, *id_list = NULL, *out = NULL;
    int threads = 0, quiet = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'x': ix_path = optarg; break;
        case 'i': in = optarg; break;
        case 'I': ids_path = optarg; break;
        case 'N': id_list = optarg; break;
        case 'o': out = optarg; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'q': quiet = 1; break;
        case 'h': edit_usage(stdout, sub); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey index %s --help')", argv[optind - 1], sub);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!ix_path || (add && !in) || (!add && !ids_path == !id_list))
        return cli_fail(CMD, add ? "add needs --index and --input (see 'osprey index add --help')"
                                 : "remove needs --index and one of --ids or --id (see 'osprey index remove --help')");
    osp_threads_set(threads);
    osp_index *ix = NULL;
    float *x = NULL;
    uint8_t *codes = NULL;
    int64_t n = -1, nid = 0, *ids = NULL;
    int d = 0, status = 1;
    if (osp_index_load(ix_path, &ix)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_index_info info;
    osp_index_info_get(ix, &info);
    int binary = info.params.type == OSP_INDEX_BINARY;
    if (add) {
        if (binary ? read_codes(in, &codes, &n, &d) : read_vectors(in, &x, &n, &d)) goto done;
        if (d != info.params.dim) {
            cli_fail(CMD, "%s: vectors have %d %s, the index %d", in, d, binary ? "bits" : "dimensions",
                     info.params.dim);
            goto done;
        }
    }
    if (ids_path ? read_ids(ids_path, n, &ids, &nid) : id_list ? parse_id_list(id_list, &ids, &nid) : 0)
        goto done;
    int64_t removed = 0;
    int rc = add ? (binary ? osp_index_add_codes(ix, codes, ids, n) : osp_index_add(ix, x, ids, n))
                 : osp_index_remove(ix, ids, nid, &removed);
    if (rc) {
        cli_fail_lib(CMD, add ? in : NULL);
        goto done;
    }
    if (osp_index_save(ix, out ? out : ix_path)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    if (!quiet) {
        const int64_t left = osp_index_count(ix);
        if (add)
            printf("added %lld vector%s; %lld in the index\n", (long long)n, n == 1 ? "" : "s",
                   (long long)left);
        else
            printf("removed %lld of %lld id%s; %lld vector%s left\n", (long long)removed,
                   (long long)nid, nid == 1 ? "" : "s", (long long)left, left == 1 ? "" : "s");
    }
    status = 0;
done:
    osp_index_free(ix);
    osp_free(x);
    osp_free(codes);
    osp_free(ids);
    return status;
}

/* ---- info ---------------------------------------------------------------------- */

static int cmd_info_index(int argc, char **argv) {
    static const struct option opts[] = {{"index", required_argument, 0, 'x'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *path = NULL;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'x': path = optarg; break;
        case 'j': json = 1; break;
        case 'h': printf("usage: osprey index info INDEX [--json]\n\nType, metric, sizes and parameters of an index file.\n"); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey index info --help')", argv[optind - 1]);
        }
    }
    if (!path && optind < argc) path = argv[optind++];
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!path) return cli_fail(CMD, "info needs an index file (see 'osprey index info --help')");
    osp_index *ix;
    if (osp_index_load(path, &ix)) return cli_fail_lib(CMD, NULL);
    osp_index_info in;
    osp_index_info_get(ix, &in);
    const osp_index_params *p = &in.params;
    FILE *f = fopen(path, "rb");
    long bytes = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        bytes = ftell(f);
        fclose(f);
    }
    double per = in.count ? (double)bytes / (double)in.count : 0;
    if (json) {
        printf("{\"type\": \"%s\", \"metric\": \"%s\", \"dim\": %d, \"count\": %lld, \"removed\": %lld, "
               "\"free_slots\": %lld, \"next_id\": %lld, \"trained\": %s, \"file_bytes\": %ld, "
               "\"bytes_per_vector\": %.1f, \"memory_bytes\": %zu",
               osp_index_type_name(p->type), osp_index_metric_name(p->metric), p->dim, (long long)in.count,
               (long long)in.removed, (long long)in.free_slots, (long long)in.next_id,
               in.trained ? "true" : "false", bytes, per, in.memory_bytes);
        switch (p->type) {
        case OSP_INDEX_IVF_FLAT: printf(", \"nlist\": %d", p->nlist); break;
        case OSP_INDEX_IVF_PQ: printf(", \"nlist\": %d, \"m\": %d, \"nbits\": %d", p->nlist, p->pq_m, p->pq_nbits); break;
        case OSP_INDEX_LSH: printf(", \"nbits\": %d, \"tables\": %d", p->lsh_nbits, p->lsh_tables); break;
        case OSP_INDEX_HNSW: printf(", \"M\": %d, \"ef_construction\": %d, \"max_level\": %d", p->hnsw_m,
                                   p->hnsw_ef_construction, in.max_level); break;
        default: break;
        }
        printf("}\n");
    } else {
        printf("%s: %s index, metric %s, dim %d\n", path, osp_index_type_name(p->type),
               osp_index_metric_name(p->metric), p->dim);
        printf("  vectors %lld (removed %lld, free slots %lld), next id %lld%s\n", (long long)in.count,
               (long long)in.removed, (long long)in.free_slots, (long long)in.next_id,
               in.trained ? "" : ", not trained");
        printf("  file %ld bytes (%.1f per vector), memory %zu bytes\n", bytes, per, in.memory_bytes);
        switch (p->type) {
        case OSP_INDEX_IVF_FLAT: printf("  nlist %d\n", p->nlist); break;
        case OSP_INDEX_IVF_PQ: printf("  nlist %d, PQ m %d x %d bits\n", p->nlist, p->pq_m, p->pq_nbits); break;
        case OSP_INDEX_LSH: printf("  %d tables x %d bits\n", p->lsh_tables, p->lsh_nbits); break;
        case OSP_INDEX_HNSW: printf("  M %d, efConstruction %d, levels %d\n", p->hnsw_m, p->hnsw_ef_construction,
                                   in.max_level + 1); break;
        default: break;
        }
    }
    osp_index_free(ix);
    return 0;
}

int cmd_index(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "build")) return cmd_build(argc - 1, argv + 1);
    if (!strcmp(sub, "search")) return cmd_search(argc - 1, argv + 1);
    if (!strcmp(sub, "add")) return cmd_edit(argc - 1, argv + 1, 1);
    if (!strcmp(sub, "remove")) return cmd_edit(argc - 1, argv + 1, 0);
    if (!strcmp(sub, "info")) return cmd_info_index(argc - 1, argv + 1);
    return cli_fail(CMD, "unknown subcommand '%s' (build, search, add, remove, info)", sub);
}
