/* osprey dataset: look at a dataset before training on it (check), and
 * time its input pipeline (bench). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "dataset";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey dataset check DATA [--max-pixels N] [--threads T] [--json]\n"
            "       osprey dataset bench DATA [--input CxHxW] [--batch B] [--passes N]\n"
            "                                 [--threads T] [image options of 'osprey train']\n"
            "\n"
            "check   decodes every image of DATA (a folder of class folders, a list file,\n"
            "        or MNIST IDX files) and reports the samples per class, the image sizes\n"
            "        and formats, each unreadable file with the reason, and the files of the\n"
            "        folder left out (names without an image extension, dangling links).\n"
            "        --json adds them as unreadable_files and left_out_files, [{path, reason}].\n"
            "bench   reads DATA through the training loader (decode, resize, normalise on\n"
            "        T worker threads) and reports images per second; the first of N\n"
            "        passes (default 3) warms the page cache and is not counted.\n"
            "\n"
            "  --input CxHxW         sample shape for bench (default 3x224x224)\n"
            "  --batch B             bench batch size (default 64)\n"
            "  --passes N            bench passes over DATA (default 3)\n"
            "  --max-pixels N        larger images are unreadable (default 64M)\n"
            "  --threads T           decoding threads (default: all cores)\n"
            "  --json                one JSON object on stdout\n");
}

typedef struct options {
    const char *path;
    cli_image_options images;
    int64_t dims[3];
    int batch, passes, threads, json;
} options;

static int parse_shape(const char *s, int64_t *dims) {
    int c, h, w;
    char tail;
    if (sscanf(s, "%dx%dx%d%c", &c, &h, &w, &tail) != 3 || c < 1 || h < 1 || w < 1 || h > 16384 ||
        w > 16384)
        return cli_fail(CMD, "--input must be CxHxW like 3x224x224, not '%s'", s);
    dims[0] = c;
    dims[1] = h;
    dims[2] = w;
    return 0;
}

static int parse(int argc, char **argv, options *o) {
    static const struct option opts[] = {
        {"input", required_argument, 0, 'I'},  {"batch", required_argument, 0, 'b'},
        {"passes", required_argument, 0, 'p'}, {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
        {"augment", required_argument, 0, 'i'}, {"crop-scale", required_argument, 0, 'i'},
        {"crop-ratio", required_argument, 0, 'i'}, {"multiscale", required_argument, 0, 'i'},
        {"jitter", required_argument, 0, 'i'}, {"resize", required_argument, 0, 'i'},
        {"crop-fraction", required_argument, 0, 'i'}, {"max-pixels", required_argument, 0, 'i'},
        {"prefetch", required_argument, 0, 'i'}, {0, 0, 0, 0}};
    int c, which = 0;
    optind = 2; /* argv[1] is the action */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &which)) != -1) {
        switch (c) {
        case 'I': if (parse_shape(optarg, o->dims)) return 1; break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 65536, &o->batch)) return 1; break;
        case 'p': if (cli_int(CMD, "--passes", optarg, 1, 1000, &o->passes)) return 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &o->threads)) return 1; break;
        case 'j': o->json = 1; break;
        case 'h': usage(stdout); return -1;
        case 'i': if (cli_image_option(CMD, opts[which].name, optarg, &o->images)) return 1; break;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey dataset --help')",
                            argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_fail(CMD, "give one DATA path (see 'osprey dataset --help')");
    o->path = argv[optind];
    return 0;
}

static int open_data(const options *o, osp_dataset **ds) {
    osp_net shape = {0}; /* cli_open_dataset only reads the input shape */
    shape.input = osp_shape_make(3, o->dims);
    return cli_open_dataset(CMD, o->path, OSP_SPLIT_TRAIN, &shape, &o->images, NULL, 0, ds);
}

/* ---- check ---------------------------------------------------------------- */

typedef struct probe {
    int width, height;
    osp_image_format format;
    int bad;
    char *error; /* why it is unreadable (NULL if out of memory for it) */
} probe;

static int by_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void size_range(const probe *p, int64_t n, int height, int *lo, int *mid, int *hi) {
    int *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    int64_t m = 0;
    for (int64_t i = 0; v && i < n; i++)
        if (!p[i].bad) v[m++] = height ? p[i].height : p[i].width;
    *lo = *mid = *hi = 0;
    if (v && m > 0) {
        qsort(v, (size_t)m, sizeof *v, by_int);
        *lo = v[0];
        *mid = v[m / 2];
        *hi = v[m - 1];
    }
    free(v);
}

/* The reason without the path that starts the message ("a.jpg: truncated
 * JPEG at byte 9" -> "truncated JPEG at byte 9"). */
static const char *reason_of(const char *message, const char *path) {
    size_t n = path ? strlen(path) : 0;
    if (n && !strncmp(message, path, n) && message[n] == ':' && message[n + 1] == ' ')
        return message + n + 2;
    return message;
}

static cJSON *file_entry(const char *path, const char *reason) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "path", path);
    cJSON_AddStringToObject(e, "reason", reason);
    return e;
}

static int print_json(const options *o, osp_dataset *ds, const probe *p, const int64_t *per_class,
                      int64_t bad, const int64_t *formats, const int *sizes, int64_t no_labels) {
    const int k = ds->n_classes > 0 ? ds->n_classes : 1;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", o->path);
    cJSON_AddNumberToObject(j, "samples", (double)ds->count);
    cJSON_AddNumberToObject(j, "classes", ds->n_classes);
    cJSON_AddNumberToObject(j, "unreadable", (double)bad);
    if (ds->multi_label) { /* per_class then counts the samples that have each label */
        cJSON_AddBoolToObject(j, "multi_label", 1);
        cJSON_AddNumberToObject(j, "no_labels", (double)no_labels);
    }
    cJSON *pc = cJSON_AddObjectToObject(j, "per_class");
    for (int c = 0; c < k; c++)
        cJSON_AddNumberToObject(pc, ds->class_names ? ds->class_names[c] : "0", (double)per_class[c]);
    cJSON_AddNumberToObject(j, "jpeg", (double)formats[OSP_IMAGE_JPEG]);
    cJSON_AddNumberToObject(j, "png", (double)formats[OSP_IMAGE_PNG]);
    cJSON_AddNumberToObject(j, "webp", (double)formats[OSP_IMAGE_WEBP]);
    cJSON_AddItemToObject(j, "width", cJSON_CreateIntArray(sizes, 3));
    cJSON_AddItemToObject(j, "height", cJSON_CreateIntArray(sizes + 3, 3));
    /* Each unreadable sample with the decoder's reason. */
    cJSON *files = cJSON_AddArrayToObject(j, "unreadable_files");
    for (int64_t i = 0; i < ds->count; i++) {
        if (!p[i].bad) continue;
        const char *path = ds->name ? ds->name(ds, i) : NULL;
        const char *why = p[i].error ? reason_of(p[i].error, path) : "(no memory for the reason)";
        cJSON *e = file_entry(path ? path : "", why);
        if (!path) cJSON_AddNumberToObject(e, "sample", (double)i);
        cJSON_AddItemToArray(files, e);
    }
    /* Files of the folder that are not samples: all counted, the first
     * OSP_DATASET_LEFT_OUT_KEPT named. */
    cJSON_AddNumberToObject(j, "left_out", (double)ds->n_left_out);
    cJSON *left = cJSON_AddArrayToObject(j, "left_out_files");
    for (int i = 0; i < ds->n_left_out_kept; i++)
        cJSON_AddItemToArray(left, file_entry(ds->left_out[i].path, ds->left_out[i].reason));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return cli_fail(CMD, "out of memory printing the report");
    printf("%s\n", text);
    free(text);
    return 0;
}

static int check(const options *o) {
    osp_dataset *ds;
    if (open_data(o, &ds)) return 1;
    const int64_t n = ds->count;
    const int k = ds->n_classes > 0 ? ds->n_classes : 1;
    probe *p = calloc((size_t)n, sizeof *p);
    int32_t *label = calloc((size_t)n, sizeof *label);
    int64_t *per_class = calloc((size_t)k, sizeof *per_class), *bad_class = calloc((size_t)k, sizeof *bad_class);
    float *scratch = NULL;
    if (!ds->name) scratch = osp_alloc((size_t)osp_shape_numel(&ds->sample_shape) * sizeof(float));
    if (!p || !label || !per_class || !bad_class || (!ds->name && !scratch)) {
        osp_dataset_free(ds);
        return cli_fail(CMD, "out of memory for %lld samples", (long long)n);
    }
    osp_decode_options dec = {.max_pixels = o->images.max_pixels};
    /* Each sample is one file: decode whole files on all threads. */
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        if (ds->name) {
            if (ds->label) ds->label(ds, i, &label[i]);
            osp_image img;
            osp_image_info info;
            if (osp_image_load(ds->name(ds, i), &dec, &img, &info) == OSP_OK) {
                p[i].width = info.width;
                p[i].height = info.height;
                p[i].format = info.format;
                osp_image_free(&img);
            } else {
                p[i].bad = 1;
                p[i].error = strdup(osp_last_error());
            }
        }
    }
    /* Unnamed samples (IDX) are in memory already: only their labels. */
    for (int64_t i = 0; !ds->name && i < n; i++)
        if (ds->get(ds, i, scratch, &label[i]) != OSP_OK) {
            p[i].bad = 1;
            p[i].error = strdup(osp_last_error());
        }
    int64_t bad = 0, formats[4] = {0}, no_labels = 0, bad_none = 0;
    /* Multi-label data: a sample counts for each of its labels. */
    uint8_t *hot = ds->multi_label && ds->labels_multi ? calloc((size_t)k, 1) : NULL;
    for (int64_t i = 0; i < n; i++) {
        if (hot) {
            int any = 0;
            if (ds->labels_multi(ds, i, hot) != OSP_OK) memset(hot, 0, (size_t)k);
            for (int c = 0; c < k; c++)
                if (hot[c]) {
                    any = 1;
                    per_class[c]++;
                    bad_class[c] += p[i].bad;
                }
            no_labels += !any;
            bad_none += !any && p[i].bad;
        } else {
            int c = label[i] >= 0 && label[i] < k ? label[i] : 0;
            per_class[c]++;
            bad_class[c] += p[i].bad;
        }
        if (p[i].bad) bad++;
        else formats[p[i].format & 3]++;
    }
    free(hot);
    int wlo, wmid, whi, hlo, hmid, hhi;
    size_range(p, ds->name ? n : 0, 0, &wlo, &wmid, &whi);
    size_range(p, ds->name ? n : 0, 1, &hlo, &hmid, &hhi);
    int status = 0;
    if (o->json) {
        status = print_json(o, ds, p, per_class, bad, formats, (int[6]){wlo, wmid, whi, hlo, hmid, hhi},
                            no_labels);
    } else {
        if (ds->multi_label)
            printf("%s: %lld sample%s with %d label%s (multi-label), %lld unreadable\n", o->path,
                   (long long)n, cli_s(n), ds->n_classes, ds->n_classes == 1 ? "" : "s", (long long)bad);
        else
            printf("%s: %lld sample%s in %d class%s, %lld unreadable\n", o->path, (long long)n,
                   cli_s(n), ds->n_classes, ds->n_classes == 1 ? "" : "es", (long long)bad);
        printf("  %-24s %10s %10s\n", ds->multi_label ? "label" : "class", "samples", "unreadable");
        for (int c = 0; c < k; c++)
            printf("  %-24.24s %10lld %10lld\n", ds->class_names ? ds->class_names[c] : "-",
                   (long long)per_class[c], (long long)bad_class[c]);
        if (ds->multi_label)
            printf("  %-24s %10lld %10lld\n", "(no labels)", (long long)no_labels, (long long)bad_none);
        if (ds->name) {
            printf("formats: %lld JPEG, %lld PNG, %lld WebP\n", (long long)formats[OSP_IMAGE_JPEG],
                   (long long)formats[OSP_IMAGE_PNG], (long long)formats[OSP_IMAGE_WEBP]);
            printf("width %d..%d (median %d), height %d..%d (median %d)\n", wlo, whi, wmid, hlo,
                   hhi, hmid);
        }
        for (int64_t i = 0; i < n; i++)
            if (p[i].bad) printf("unreadable: %s\n", p[i].error ? p[i].error : "(no memory for the reason)");
        for (int i = 0; i < ds->n_left_out_kept; i++)
            printf("left out: %s: %s\n", ds->left_out[i].path, ds->left_out[i].reason);
        if (ds->n_left_out > ds->n_left_out_kept)
            printf("left out: %lld more file%s\n", (long long)(ds->n_left_out - ds->n_left_out_kept),
                   ds->n_left_out - ds->n_left_out_kept == 1 ? "" : "s");
    }
    for (int64_t i = 0; i < n; i++) free(p[i].error);
    free(p);
    free(label);
    free(per_class);
    free(bad_class);
    osp_free(scratch);
    osp_dataset_free(ds);
    return status;
}

/* ---- bench ---------------------------------------------------------------- */

static int bench(const options *o) {
    osp_dataset *ds;
    if (open_data(o, &ds)) return 1;
    osp_loader_config lc = osp_loader_defaults(ds);
    lc.batch = o->batch;
    lc.workers = osp_threads_get();
    lc.augment = o->images.augment_set;
    lc.normalize = 1;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int c = 0; c < 3; c++) {
        lc.mean[c] = mean[c];
        lc.std[c] = std[c];
    }
    osp_loader *l;
    size_t floats = (size_t)o->batch * (size_t)osp_shape_numel(&ds->sample_shape);
    float *x = osp_alloc(floats * sizeof(float));
    int32_t *labels = osp_alloc((size_t)o->batch * sizeof(int32_t));
    if (!x || !labels || osp_loader_new(ds, &lc, &l)) {
        osp_free(x);
        osp_free(labels);
        osp_dataset_free(ds);
        return cli_fail_lib(CMD, NULL);
    }
    double start = 0, timed = 0;
    int64_t images = 0;
    int rc = 0;
    for (int pass = 0; !rc && pass < o->passes; pass++) {
        if (pass == (o->passes > 1 ? 1 : 0)) start = osp_now();
        rc = osp_loader_start(l, pass, NULL, ds->count, 0);
        for (int n = 1; !rc && n > 0;) {
            rc = osp_loader_next(l, x, labels, &n);
            if (pass >= (o->passes > 1 ? 1 : 0)) images += n;
        }
    }
    timed = osp_now() - start;
    osp_loader_free(l);
    osp_free(x);
    osp_free(labels);
    int64_t skipped = osp_dataset_skipped(ds);
    osp_dataset_free(ds);
    if (rc) return cli_fail_lib(CMD, NULL);
    double rate = images / (timed > 0 ? timed : 1e-9);
    if (o->json)
        printf("{\"images\": %lld, \"seconds\": %.4f, \"images_per_s\": %.2f, \"threads\": %d, "
               "\"skipped\": %lld}\n", (long long)images, timed, rate, osp_threads_get(),
               (long long)skipped);
    else
        printf("%lld image%s in %.2f s: %.1f images/s on %d decoding thread%s%s\n", (long long)images,
               cli_s(images), timed, rate, osp_threads_get(), cli_s(osp_threads_get()),
               skipped ? " (unreadable files skipped)" : "");
    return 0;
}

int cmd_dataset(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    options o = {.images = cli_image_defaults(), .dims = {3, 224, 224}, .batch = 64, .passes = 3};
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    osp_threads_set(o.threads);
    if (!strcmp(argv[1], "check")) return check(&o);
    if (!strcmp(argv[1], "bench")) return bench(&o);
    return cli_fail(CMD, "unknown action '%s': check or bench (see 'osprey dataset --help')", argv[1]);
}
