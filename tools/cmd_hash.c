/* osprey hash: train a learned binary hash (src/hash) on labelled vectors,
 * apply it to get packed codes for the binary index, show a hash file.
 * Vectors come from a .npy (N x D, any number type) with a .npy of integer
 * labels, or from an output folder of 'osprey embed' with labels from its
 * catalogue: each image's parent folder name, or a list file of
 * path<TAB>label lines. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "commands.h"
#include "osprey/hash.h"
#include "osprey/io.h"
#include "osprey/model.h"
#include "osprey/pipeline.h"

static const char *const CMD = "hash";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey hash train --vectors DIR|X.npy [--labels L] --bits K --out HASH.osh|MODEL.osp [options]\n"
            "       osprey hash apply --hash HASH.osh|MODEL.osp --vectors DIR|X.npy --out CODES.npy [--ids-out IDS.npy]\n"
            "       osprey hash info  HASH.osh|MODEL.osp [--json]\n"
            "\n"
            "A learned hash maps each vector to K bits (sign of W x + b), trained so that\n"
            "vectors of the same label get nearby codes (Deep Supervised Hashing). The codes\n"
            "go to 'osprey index build --type binary --input CODES.npy'. Stored in a copy of\n"
            "the model (--out NAME.osp), 'osprey embed --binary' writes them from images.\n"
            "'osprey hash SUBCOMMAND --help' lists a subcommand's options.\n");
}

static void train_usage(FILE *out) {
    fprintf(out,
            "usage: osprey hash train --vectors DIR|X.npy [--labels L] --bits K --out HASH.osh|MODEL.osp [options]\n"
            "\n"
            "With --out NAME.osp the hash head is stored in a copy of the model the vectors\n"
            "came from (--model, or the model file DIR records), with the layer it reads and\n"
            "whether its vectors are L2-normalised: 'osprey embed --model NAME.osp --binary'\n"
            "then writes codes, and 'osprey info NAME.osp' shows the head.\n"
            "\n"
            "  --vectors DIR|X.npy   an output folder of 'osprey embed' (or 'osprey merge'),\n"
            "                        or a .npy of N x D vectors (any number type)\n"
            "  --labels L            with X.npy: a .npy of N integer labels (required);\n"
            "                        with DIR: a list file of path<TAB>label lines, paths as\n"
            "                        the catalogue records them, or a .npy of labels row\n"
            "                        by row (default: each image's parent folder name)\n"
            "  --bits K              code length: a multiple of 8 from 8 to 1024\n"
            "  --out HASH.osh        the hash file to write, or\n"
            "  --out MODEL.osp       a copy of the model with the hash head in it\n"
            "  --model MODEL         with --out MODEL.osp: the model the vectors came from\n"
            "                        (default: the model file DIR records; its content hash\n"
            "                        must be the folder's)\n"
            "  --normalize 0|1       with X.npy: whether the vectors were L2-normalised,\n"
            "                        recorded (a folder records it itself)\n"
            "  --epochs E            passes over the vectors (default 40)\n"
            "  --batch B             vectors a step; all pairs in it count (default 256)\n"
            "  --lr LR               Adam step size (default 0.03)\n"
            "  --quant A             weight of the quantisation penalty (default 0.1)\n"
            "  --margin M            dissimilar pairs pushed to squared distance M*K (default 1)\n"
            "  --balance 0|1         1: similar and dissimilar pairs weigh the same in total\n"
            "                        (default); 0: every pair alike, as DSH's paper\n"
            "  --layer NAME          the layer the vectors came from, recorded in the file\n"
            "                        (default: the folder's layer setting; required with\n"
            "                        X.npy and --out MODEL.osp)\n"
            "  --seed S              initial hyperplanes and batch order (default 1234)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --quiet               print nothing on success\n"
            "  --json                print the figures as one JSON object\n");
}

static void apply_usage(FILE *out) {
    fprintf(out,
            "usage: osprey hash apply --hash HASH.osh|MODEL.osp --vectors DIR|X.npy --out CODES.npy [--ids-out IDS.npy]\n"
            "\n"
            "Codes the vectors with a hash file or the hash head a model holds. Writes packed codes, uint8 N x K/8 (bit k is bit k%%8 of byte k/8), which\n"
            "'osprey index build --type binary --input CODES.npy' takes.\n"
            "  --ids-out IDS.npy     with DIR: also write the image ids (int64 N), for\n"
            "                        'osprey index build --ids IDS.npy'\n"
            "  --threads T           threads (default: all cores)\n");
}

static int has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), e = strlen(ext);
    return n > e && !strcmp(path + n - e, ext);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- reading vectors and labels ------------------------------------------ */

typedef struct vecs {
    float *x;
    int64_t *ids; /* from a folder only */
    int64_t n;
    int d;
    char layer[256];
    int normalize;          /* from a folder: 0 or 1; -1 not known */
    char model[4096];       /* from a folder: the model file it records */
    char model_sha256[65];  /* and the content hash of its vectors' model */
} vecs;

static void vecs_free(vecs *v) {
    osp_free(v->x);
    osp_free(v->ids);
    memset(v, 0, sizeof *v);
}

static int read_vecs(const char *path, vecs *v) {
    memset(v, 0, sizeof *v);
    v->normalize = -1;
    osp_array a = {0};
    if (is_dir(path)) {
        osp_array id = {0};
        if (osp_pipeline_load_vectors(path, &a, &id)) return cli_fail_lib(CMD, NULL);
        v->ids = id.data;
        osp_catalog *c;
        if (!osp_catalog_open(path, &c)) {
            const char *layer = osp_catalog_setting(c, "layer");
            snprintf(v->layer, sizeof v->layer, "%s", layer ? layer : "");
            const char *norm = osp_catalog_setting(c, "normalize");
            v->normalize = norm ? !strcmp(norm, "1") : -1;
            const char *model = osp_catalog_setting(c, "model");
            snprintf(v->model, sizeof v->model, "%s", model ? model : "");
            const char *sha = osp_catalog_setting(c, "embed_model_sha256");
            if (!sha) sha = osp_catalog_setting(c, "model_sha256");
            snprintf(v->model_sha256, sizeof v->model_sha256, "%s", sha ? sha : "");
            osp_catalog_close(c);
        }
    } else {
        if (!has_ext(path, ".npy"))
            return cli_fail(CMD, "%s: give an output folder of 'osprey embed' or a .npy of vectors", path);
        if (osp_npy_read(path, &a)) return cli_fail_lib(CMD, NULL);
        if (a.shape.ndim != 2) {
            osp_array_free(&a);
            return cli_fail(CMD, "%s: expected N x D vectors", path);
        }
    }
    if (a.shape.dim[0] < 1 || a.shape.dim[1] < 1 || a.shape.dim[1] > OSP_HASH_MAX_DIM) {
        int64_t rows = a.shape.dim[0];
        osp_array_free(&a);
        vecs_free(v);
        if (rows < 1) return cli_fail(CMD, "%s holds no vectors", path);
        return cli_fail(CMD, "%s: vectors of 1 to %d values expected", path, OSP_HASH_MAX_DIM);
    }
    if (osp_array_to_f32(&a)) {
        osp_array_free(&a);
        vecs_free(v);
        return cli_fail_lib(CMD, path);
    }
    v->x = a.data;
    v->n = a.shape.dim[0];
    v->d = (int)a.shape.dim[1];
    return 0;
}

/* Integer labels from a .npy of N (or N x 1) int32/int64. */
static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int read_npy_labels(const char *path, int64_t n, int32_t **out, int *n_labels) {
    osp_array a = {0};
    if (osp_npy_read(path, &a)) return cli_fail_lib(CMD, NULL);
    int64_t count = osp_array_numel(&a);
    int ok_shape = (a.shape.ndim == 1 || (a.shape.ndim == 2 && a.shape.dim[1] == 1)) && count == n;
    if (!ok_shape || (a.dtype != OSP_DTYPE_I32 && a.dtype != OSP_DTYPE_I64 && a.dtype != OSP_DTYPE_U8)) {
        osp_array_free(&a);
        return cli_fail(CMD, "%s: expected %lld integer labels (int32 or int64 .npy of N)", path, (long long)n);
    }
    int32_t *lab = malloc((size_t)n * sizeof *lab);
    if (!lab) {
        osp_array_free(&a);
        return cli_fail(CMD, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t v = a.dtype == OSP_DTYPE_I64   ? ((const int64_t *)a.data)[i]
                    : a.dtype == OSP_DTYPE_I32 ? ((const int32_t *)a.data)[i]
                                               : ((const uint8_t *)a.data)[i];
        if (v < INT32_MIN || v > INT32_MAX) {
            osp_array_free(&a);
            free(lab);
            return cli_fail(CMD, "%s: label %lld of row %lld is out of the int32 range", path, (long long)v,
                            (long long)i);
        }
        lab[i] = (int32_t)v;
    }
    osp_array_free(&a);
    int32_t *sorted = malloc((size_t)n * sizeof *sorted);
    if (sorted) {
        memcpy(sorted, lab, (size_t)n * sizeof *sorted);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_i32);
        int distinct = 0;
        for (int64_t i = 0; i < n; i++) distinct += i == 0 || sorted[i] != sorted[i - 1];
        *n_labels = distinct;
        free(sorted);
    }
    *out = lab;
    return 0;
}

typedef struct named {
    char *key;   /* a path (list file) or a label name */
    char *value; /* the label (list file) */
    int64_t row;
} named;

static int cmp_key(const void *a, const void *b) {
    return strcmp(((const named *)a)->key, ((const named *)b)->key);
}

/* Lines path<TAB>label of a list file, sorted by path. */
static int read_label_list(const char *path, named **out, int64_t *count) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_fail(CMD, "--labels %s: cannot open it", path);
    named *e = NULL;
    int64_t n = 0, cap = 0, line_no = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        line_no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0 || line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab || tab == line || !tab[1]) {
            rc = cli_fail(CMD, "--labels %s: line %lld is not path<TAB>label", path, (long long)line_no);
            break;
        }
        *tab = 0;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            named *g = realloc(e, (size_t)cap * sizeof *e);
            if (!g) {
                rc = cli_fail(CMD, "out of memory");
                break;
            }
            e = g;
        }
        e[n].key = strdup(line);
        e[n].value = strdup(tab + 1);
        e[n].row = line_no;
        if (!e[n].key || !e[n].value) {
            free(e[n].key);
            free(e[n].value);
            rc = cli_fail(CMD, "out of memory");
            break;
        }
        n++;
    }
    free(line);
    fclose(f);
    if (!rc) qsort(e, (size_t)n, sizeof *e, cmp_key);
    for (int64_t i = 1; !rc && i < n; i++)
        if (!strcmp(e[i].key, e[i - 1].key) && strcmp(e[i].value, e[i - 1].value))
            rc = cli_fail(CMD, "--labels %s: %s is given two labels (%s, %s)", path, e[i].key, e[i - 1].value,
                          e[i].value);
    if (rc) {
        for (int64_t i = 0; i < n; i++) {
            free(e[i].key);
            free(e[i].value);
        }
        free(e);
        return rc;
    }
    *out = e;
    *count = n;
    return 0;
}

/* Labels of a folder's rows: from the list file, or parent folder names;
 * label names are numbered in sorted order. */
static int folder_labels(const char *dir, const vecs *v, const char *list, int32_t **out, int *n_labels) {
    named *ls = NULL, *names = NULL;
    int64_t nls = 0;
    int rc = 0;
    if (list && read_label_list(list, &ls, &nls)) return 1;
    osp_catalog *c = NULL;
    names = calloc((size_t)v->n, sizeof *names);
    int32_t *lab = malloc((size_t)v->n * sizeof *lab);
    if (!names || !lab) {
        rc = cli_fail(CMD, "out of memory");
        goto done;
    }
    if (osp_catalog_open(dir, &c)) {
        rc = cli_fail_lib(CMD, NULL);
        goto done;
    }
    char path[4096];
    for (int64_t i = 0; i < v->n && !rc; i++) {
        if (osp_catalog_by_id(c, v->ids[i], path, sizeof path, NULL)) {
            rc = cli_fail_lib(CMD, dir);
            break;
        }
        const char *label;
        char parent[4096];
        if (ls) {
            named key = {.key = path};
            named *hit = bsearch(&key, ls, (size_t)nls, sizeof *ls, cmp_key);
            if (!hit) {
                rc = cli_fail(CMD, "--labels %s gives no label for %s", list, path);
                break;
            }
            label = hit->value;
        } else {
            char *slash = strrchr(path, '/');
            if (!slash || slash == path) {
                rc = cli_fail(CMD, "%s: image %s has no parent folder to name its label: give --labels", dir, path);
                break;
            }
            *slash = 0;
            const char *p = strrchr(path, '/');
            snprintf(parent, sizeof parent, "%s", p ? p + 1 : path);
            if (!*parent || !strcmp(parent, ".") || !strcmp(parent, "..")) {
                rc = cli_fail(CMD, "%s: image %s/%s has no parent folder name to use as its label: give --labels",
                              dir, path, slash + 1);
                break;
            }
            label = parent;
        }
        names[i].key = strdup(label);
        names[i].row = i;
        if (!names[i].key) rc = cli_fail(CMD, "out of memory");
    }
    if (!rc) {
        qsort(names, (size_t)v->n, sizeof *names, cmp_key);
        int32_t next = -1;
        for (int64_t i = 0; i < v->n; i++) {
            if (i == 0 || strcmp(names[i].key, names[i - 1].key)) next++;
            lab[names[i].row] = next;
        }
        *n_labels = next + 1;
    }
done:
    if (c) osp_catalog_close(c);
    if (names)
        for (int64_t i = 0; i < v->n; i++) free(names[i].key);
    free(names);
    for (int64_t i = 0; i < nls; i++) {
        free(ls[i].key);
        free(ls[i].value);
    }
    free(ls);
    if (rc) free(lab);
    else *out = lab;
    return rc;
}

/* ---- subcommands ------------------------------------------------------------ */

static int set_threads(const char *s) {
    int t = 0;
    if (s && cli_int(CMD, "--threads", s, 1, 4096, &t)) return 1;
    osp_threads_set(t);
    return 0;
}

/* --out MODEL.osp: the model the vectors came from (--model, or the one
 * the folder records), which must be the folder's model and have the
 * layer; the head goes into it. */
static int open_model(const char *model, const char *vpath, const vecs *v, const osp_hash_params *p,
                      osp_net **net) {
    if (!model) model = v->model[0] ? v->model : NULL;
    if (!model)
        return cli_fail(CMD, "--out %s.osp stores the head in a model: give the model the vectors came from "
                        "with --model MODEL", "NAME");
    if (!p->layer || !*p->layer)
        return cli_fail(CMD, "a hash head in a model names the layer it reads: give --layer NAME");
    if (osp_model_load(model, net)) return cli_fail_lib(CMD, NULL);
    char sha[65];
    if (v->model_sha256[0] && (osp_model_content_hash(*net, sha) || strcmp(sha, v->model_sha256)))
        return cli_fail(CMD, "%s is not the model the vectors of %s came from (content hash %.16s..., the "
                        "folder's %.16s...): give that model with --model", model, vpath, sha, v->model_sha256);
    int64_t channels, plane;
    if (osp_net_embedding_size(*net, p->layer, &channels, &plane)) return cli_fail_lib(CMD, model);
    if (channels != v->d)
        return cli_fail(CMD, "%s: layer '%s' gives vectors of %lld values, but %s holds %d", model, p->layer,
                        (long long)channels, vpath, v->d);
    if (osp_net_get_hash(*net)) osp_log(OSP_LOG_WARN, "the hash head %s holds is replaced", model);
    return 0;
}

static int do_train(int argc, char **argv) {
    static const struct option opts[] = {
        {"vectors", required_argument, 0, 'v'}, {"labels", required_argument, 0, 'l'},
        {"bits", required_argument, 0, 'b'},    {"out", required_argument, 0, 'o'},
        {"epochs", required_argument, 0, 'e'},  {"batch", required_argument, 0, 'B'},
        {"lr", required_argument, 0, 'r'},      {"quant", required_argument, 0, 'a'},
        {"margin", required_argument, 0, 'm'},  {"layer", required_argument, 0, 'L'},
        {"seed", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'},
        {"balance", required_argument, 0, 'W'}, {"model", required_argument, 0, 'M'},
        {"normalize", required_argument, 0, 'N'},
        {"quiet", no_argument, 0, 'q'},         {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    const char *vpath = NULL, *lpath = NULL, *out = NULL, *layer = NULL, *threads = NULL, *model = NULL;
    osp_hash_params p;
    osp_hash_params_init(&p, 0);
    int bits_set = 0, quiet = 0, json = 0, normalize = -1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'v': vpath = optarg; break;
        case 'l': lpath = optarg; break;
        case 'o': out = optarg; break;
        case 'L': layer = optarg; break;
        case 't': threads = optarg; break;
        case 'b':
            if (cli_int(CMD, "--bits", optarg, OSP_HASH_MIN_BITS, OSP_HASH_MAX_BITS, &p.bits)) return 1;
            if (p.bits % 8) return cli_fail(CMD, "--bits must be a multiple of 8 from 8 to 1024, not %s", optarg);
            bits_set = 1;
            break;
        case 'e': if (cli_int(CMD, "--epochs", optarg, 1, 100000, &p.epochs)) return 1; break;
        case 'B': if (cli_int(CMD, "--batch", optarg, 2, 8192, &p.batch)) return 1; break;
        case 'r': if (cli_float(CMD, "--lr", optarg, 1e-7, 10, &p.lr)) return 1; break;
        case 'a': if (cli_float(CMD, "--quant", optarg, 0, 100, &p.quant)) return 1; break;
        case 'm': if (cli_float(CMD, "--margin", optarg, 1e-3, 4, &p.margin)) return 1; break;
        case 's': if (cli_u64(CMD, "--seed", optarg, &p.seed)) return 1; break;
        case 'W': if (cli_int(CMD, "--balance", optarg, 0, 1, &p.balance)) return 1; break;
        case 'M': model = optarg; break;
        case 'N': if (cli_int(CMD, "--normalize", optarg, 0, 1, &normalize)) return 1; break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'h': train_usage(stdout); return 0;
        default: train_usage(stderr); return 1;
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!vpath || !bits_set || !out)
        return cli_fail(CMD, "train needs --vectors, --bits and --out (see 'osprey hash train --help')");
    int folder = is_dir(vpath);
    if (!folder && !lpath)
        return cli_fail(CMD, "--vectors %s is a .npy: give its integer labels with --labels LABELS.npy", vpath);
    if (!folder && !has_ext(lpath, ".npy"))
        return cli_fail(CMD, "--labels %s: with a .npy of vectors, give a .npy of integer labels", lpath);
    const int into_model = has_ext(out, ".osp");
    if (model && !into_model)
        return cli_fail(CMD, "--model stores the hash head in a copy of the model: give --out NAME.osp");
    if (cli_check_output(CMD, "--out", out)) return 1;
    if (set_threads(threads)) return 1;

    vecs v;
    if (read_vecs(vpath, &v)) return 1;
    osp_net *net = NULL;
    int32_t *lab = NULL;
    int n_labels = -1, rc = 1;
    int npy_labels = lpath && has_ext(lpath, ".npy"); /* row by row, for a folder too */
    if (npy_labels ? read_npy_labels(lpath, v.n, &lab, &n_labels) : folder_labels(vpath, &v, lpath, &lab, &n_labels))
        goto done;
    p.layer = layer ? layer : v.layer;
    if (folder && normalize >= 0 && v.normalize >= 0 && normalize != v.normalize) {
        cli_fail(CMD, "--normalize %d, but the vectors of %s are %sL2-normalised", normalize, vpath,
                 v.normalize ? "" : "not ");
        goto done;
    }
    p.normalize = folder && v.normalize >= 0 ? v.normalize : normalize;
    if (into_model && open_model(model, vpath, &v, &p, &net)) goto done;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    osp_hash *h;
    osp_hash_report rep;
    if (osp_hash_train(&p, v.x, lab, v.n, v.d, &h, &rep)) {
        cli_fail_lib(CMD, vpath);
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (into_model ? osp_hash_to_net(h, net) || osp_model_save(net, out) : osp_hash_save(h, out)) {
        osp_hash_free(h);
        cli_fail_lib(CMD, out);
        goto done;
    }
    osp_hash_free(h);
    if (json)
        printf("{\"bits\": %d, \"dim\": %d, \"vectors\": %lld, \"labels\": %d, \"epochs\": %d, \"steps\": %d, "
               "\"initial_loss\": %.6f, \"final_loss\": %.6f, \"seconds\": %.3f}\n",
               p.bits, v.d, (long long)v.n, n_labels, rep.epochs, rep.steps, rep.initial_loss, rep.final_loss,
               secs);
    else if (!quiet)
        printf("%s: %d-bit hash%s of %d-d vectors%s%s, trained on %lld vectors in %.1f s (loss %.4f -> %.4f)\n",
               out, p.bits, into_model ? " head" : "", v.d, into_model ? " of layer " : "", into_model ? p.layer : "",
               (long long)v.n, secs, rep.initial_loss, rep.final_loss);
    rc = 0;
done:
    osp_net_free(net);
    free(lab);
    vecs_free(&v);
    return rc;
}

/* A hash file, or a model's hash head (a NAME.osp). */
static int load_hash(const char *path, osp_hash **h) {
    if (!has_ext(path, ".osp")) return osp_hash_load(path, h) ? cli_fail_lib(CMD, NULL) : 0;
    osp_net *net;
    if (osp_model_load(path, &net)) return cli_fail_lib(CMD, NULL);
    int rc = osp_hash_from_net(net, path, h) ? cli_fail_lib(CMD, NULL) : 0;
    osp_net_free(net);
    return rc;
}

static int do_apply(int argc, char **argv) {
    static const struct option opts[] = {
        {"hash", required_argument, 0, 'H'},    {"vectors", required_argument, 0, 'v'},
        {"out", required_argument, 0, 'o'},     {"ids-out", required_argument, 0, 'i'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *hpath = NULL, *vpath = NULL, *out = NULL, *ids_out = NULL, *threads = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': hpath = optarg; break;
        case 'v': vpath = optarg; break;
        case 'o': out = optarg; break;
        case 'i': ids_out = optarg; break;
        case 't': threads = optarg; break;
        case 'h': apply_usage(stdout); return 0;
        default: apply_usage(stderr); return 1;
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!hpath || !vpath || !out)
        return cli_fail(CMD, "apply needs --hash, --vectors and --out (see 'osprey hash apply --help')");
    if (ids_out && !is_dir(vpath))
        return cli_fail(CMD, "--ids-out takes the image ids of an output folder: --vectors %s is a file", vpath);
    if (cli_check_output(CMD, "--out", out)) return 1;
    if (ids_out && cli_check_output(CMD, "--ids-out", ids_out)) return 1;
    if (set_threads(threads)) return 1;
    osp_hash *h;
    if (load_hash(hpath, &h)) return 1;
    vecs v;
    if (read_vecs(vpath, &v)) {
        osp_hash_free(h);
        return 1;
    }
    int rc = 1;
    osp_array codes = {.dtype = OSP_DTYPE_U8, .shape = {.ndim = 2, .dim = {v.n, osp_hash_bits(h) / 8}}};
    if (v.d != osp_hash_dim(h)) {
        cli_fail(CMD, "%s: vectors of %d values, but %s takes %d", vpath, v.d, hpath, osp_hash_dim(h));
        goto done;
    }
    codes.data = osp_alloc((size_t)v.n * (size_t)(osp_hash_bits(h) / 8));
    if (!codes.data) {
        cli_fail(CMD, "out of memory for %lld codes", (long long)v.n);
        goto done;
    }
    if (osp_hash_codes(h, v.x, v.n, codes.data)) {
        cli_fail_lib(CMD, vpath);
        goto done;
    }
    if (osp_npy_write(out, &codes)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    if (ids_out) {
        osp_array ia = {.dtype = OSP_DTYPE_I64, .shape = {.ndim = 1, .dim = {v.n}}, .data = v.ids};
        if (osp_npy_write(ids_out, &ia)) {
            cli_fail_lib(CMD, NULL);
            goto done;
        }
    }
    rc = 0;
done:
    osp_free(codes.data);
    vecs_free(&v);
    osp_hash_free(h);
    return rc;
}

static int do_info(int argc, char **argv) {
    int json = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: osprey hash info HASH.osh|MODEL.osp [--json]\n");
            return 0;
        } else if (argv[i][0] == '-') return cli_fail(CMD, "unknown option '%s'", argv[i]);
        else if (path) return cli_fail(CMD, "info takes one hash file");
        else path = argv[i];
    }
    if (!path) return cli_fail(CMD, "info needs a hash file");
    osp_hash *h;
    if (load_hash(path, &h)) return 1;
    if (json) {
        printf("{\"bits\": %d, \"dim\": %d, \"layer\": \"", osp_hash_bits(h), osp_hash_dim(h));
        for (const unsigned char *s = (const unsigned char *)osp_hash_layer(h); *s; s++) {
            if (*s == '"' || *s == '\\') printf("\\%c", *s);
            else if (*s < 0x20) printf("\\u%04x", *s);
            else putchar(*s);
        }
        printf("\", \"method\": \"dsh\"");
        if (osp_hash_normalize(h) >= 0) printf(", \"normalize\": %s", osp_hash_normalize(h) ? "true" : "false");
        printf("}\n");
    } else {
        printf("%s: learned hash (Deep Supervised Hashing), %d bits from %d-d vectors", path, osp_hash_bits(h),
               osp_hash_dim(h));
        if (*osp_hash_layer(h)) printf(" of layer %s", osp_hash_layer(h));
        printf("\n");
    }
    osp_hash_free(h);
    return 0;
}

int cmd_hash(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "train")) return do_train(argc - 1, argv + 1);
    if (!strcmp(sub, "apply")) return do_apply(argc - 1, argv + 1);
    if (!strcmp(sub, "info")) return do_info(argc - 1, argv + 1);
    return cli_fail(CMD, "unknown subcommand '%s' (train, apply, info)", sub);
}
