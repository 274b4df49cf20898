/* osprey quantize: an int8 copy of a model, its convolutions' input ranges
 * calibrated on sample images (docs/quantization.md), and with --check
 * the accuracy of both on labelled data and how often they agree. */
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "quantize";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey quantize MODEL --calibrate DATA --out OUT [options]\n"
            "\n"
            "Writes OUT, a copy of MODEL whose convolutions run in int8 (AVX-512 VNNI;\n"
            "float32 on CPUs without it): weights per output channel (symmetric), inputs\n"
            "per tensor with ranges measured on images of DATA. OUT runs wherever MODEL\n"
            "runs: eval, run, tag, embed, serve.\n"
            "\n"
            "  --calibrate DATA      calibration images: an image, a folder (any depth,\n"
            "                        labelled or not), a list file, or MNIST IDX files\n"
            "                        (required)\n"
            "  --out OUT             the int8 model to write (required)\n"
            "  --images N            calibrate on N images of DATA, chosen evenly (the\n"
            "                        same ones every run; default 512)\n"
            "  --method M            percentile (default) or minmax\n"
            "  --percentile P        keep P%% of each input range's values (default 99.99)\n"
            "  --split train|test    which IDX files of --calibrate (default train)\n"
            "  --check DATA          labelled data: top-1 of MODEL and OUT, and their top-1\n"
            "                        agreement (IDX: its test files)\n"
            "  --batch B             inference batch size (default 64)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --json                print one JSON object (layers, and the --check figures)\n"
            "  --resize, --crop-fraction, --max-pixels, --workers: as for 'osprey eval'\n");
}

/* Runs net over samples idx[0..n) of data in batches; with top, writes each
 * sample's best class, and labels into labels. */
static int run_samples(osp_net *net, osp_dataset *data, const int64_t *idx, int64_t n, int batch,
                       int32_t *top, int32_t *labels) {
    const int64_t size = osp_shape_numel(&net->input);
    int64_t classes;
    int rc = osp_net_find_layer(net, NULL, NULL, &classes);
    if (rc) return rc;
    float *x = osp_alloc((size_t)batch * (size_t)size * sizeof(float));
    float *y = osp_alloc((size_t)batch * (size_t)classes * sizeof(float));
    int32_t *lab = osp_alloc((size_t)batch * sizeof(int32_t));
    if (!x || !y || !lab) rc = OSP_ENOMEM;
    for (int64_t at = 0; !rc && at < n; at += batch) {
        const int b = (int)(n - at < batch ? n - at : batch);
        if ((rc = osp_train_load_batch(net, data, idx + at, b, x, lab))) break;
        float *outs[1] = {y};
        if ((rc = osp_net_run(net, x, b, batch, NULL, 0, outs))) break;
        for (int i = 0; top && i < b; i++) {
            const float *v = y + (int64_t)i * classes;
            int best = 0;
            for (int c = 1; c < classes; c++)
                if (v[c] > v[best]) best = c;
            top[at + i] = best;
            labels[at + i] = lab[i];
        }
    }
    osp_free(x);
    osp_free(y);
    osp_free(lab);
    return rc;
}

/* A directory of MNIST IDX files, or one IDX file: read as a dataset; any
 * other source is images (files, folders at any depth, lists). */
static int is_idx(const char *path) {
    if (strstr(path, "-ubyte")) return 1;
    DIR *d = opendir(path);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) found = strstr(e->d_name, "-ubyte") != NULL;
    closedir(d);
    return found;
}

typedef struct sample {
    char **paths;
    int64_t n, seen;
} sample;

static void sample_free(sample *s) {
    for (int64_t i = 0; s->paths && i < s->n; i++) free(s->paths[i]);
    free(s->paths);
}

/* want images of src chosen evenly at random (reservoir sampling, a fixed
 * seed: the same images every run), streamed: no list of all paths. */
static int sample_images(const char *src, int want, sample *s) {
    osp_inputs *in;
    int rc = osp_inputs_new(&src, 1, &in);
    if (rc) return rc;
    s->paths = calloc((size_t)want, sizeof *s->paths);
    if (!s->paths) rc = OSP_ENOMEM;
    osp_rng rng;
    osp_rng_seed(&rng, 20261207);
    const char *path;
    while (!rc && !(rc = osp_inputs_next(in, &path)) && path) {
        int64_t slot = s->seen < want ? s->seen : (int64_t)osp_rng_below(&rng, (uint64_t)s->seen + 1);
        s->seen++;
        if (slot >= want) continue;
        char *copy = strdup(path);
        if (!copy) {
            rc = OSP_ENOMEM;
            break;
        }
        if (slot < s->n) free(s->paths[slot]);
        else s->n++;
        s->paths[slot] = copy;
    }
    osp_inputs_free(in);
    return rc;
}

/* Unreadable calibration images named on stderr; the rest counted. */
#define MAX_NAMED 5
static int64_t named;

/* Runs net over the sampled images in batches (decoded in parallel);
 * unreadable ones are counted in *bad (first pass only: pass 0). */
static int run_images(osp_net *net, const sample *s, int batch, int pass, int64_t *bad) {
    const int64_t size = osp_shape_numel(&net->input);
    int64_t classes;
    int rc = osp_net_find_layer(net, NULL, NULL, &classes);
    if (rc) return rc;
    float *x = osp_alloc((size_t)batch * (size_t)size * sizeof(float));
    float *y = osp_alloc((size_t)batch * (size_t)classes * sizeof(float));
    char *ok = osp_alloc((size_t)batch);
    if (!x || !y || !ok) rc = OSP_ENOMEM;
    for (int64_t at = 0; !rc && at < s->n; at += batch) {
        const int b = (int)(s->n - at < batch ? s->n - at : batch);
#pragma omp parallel for schedule(dynamic)
        for (int i = 0; i < b; i++) {
            ok[i] = osp_net_load_image(net, s->paths[at + i], NULL, x + (int64_t)i * size) == OSP_OK;
            /* the reason is in this thread's last error: said here, once */
            if (!ok[i] && pass == 0)
#pragma omp critical(osp_quantize_warn)
                if (named++ < MAX_NAMED) fprintf(stderr, "osprey quantize: left out: %s\n", osp_last_error());
        }
        int m = 0; /* readable ones moved to the front */
        for (int i = 0; i < b; i++) {
            if (!ok[i]) {
                if (pass == 0) ++*bad;
                continue;
            }
            if (m != i) memcpy(x + (int64_t)m * size, x + (int64_t)i * size, (size_t)size * sizeof(float));
            m++;
        }
        float *outs[1] = {y};
        if (m > 0) rc = osp_net_run(net, x, m, batch, NULL, 0, outs);
    }
    osp_free(x);
    osp_free(y);
    osp_free(ok);
    return rc;
}

typedef struct check_result {
    int64_t count;
    double top1_float, top1_int8, agreement;
} check_result;

/* OSP_OK, an error code, or 1 when cli_open_dataset has said why. */
static int check(const char *model, const char *out, const char *data_path,
                 const cli_image_options *images, int batch, check_result *r) {
    osp_net *f32 = NULL, *i8 = NULL;
    osp_dataset *data = NULL;
    int rc = osp_model_load(model, &f32);
    if (!rc) rc = osp_model_load(out, &i8);
    if (rc) goto done;
    if (cli_open_dataset(CMD, data_path, OSP_SPLIT_TEST, f32, images,
                         (const char *const *)f32->labels, f32->labels ? f32->n_classes : 0, &data)) {
        rc = 1; /* said why already */
        goto done;
    }
    if ((rc = osp_train_check_data(f32, data))) goto done;
    if (data->multi_label) {
        rc = osp_error(OSP_EINVAL, "%s: --check compares top-1 on single-label data", data_path);
        goto done;
    }
    const int64_t n = data->count;
    int64_t *idx = osp_alloc((size_t)n * sizeof *idx);
    int32_t *a = osp_alloc((size_t)n * 4), *b = osp_alloc((size_t)n * 4), *lab = osp_alloc((size_t)n * 4);
    if (!idx || !a || !b || !lab) rc = OSP_ENOMEM;
    for (int64_t i = 0; !rc && i < n; i++) idx[i] = i;
    if (!rc) rc = run_samples(f32, data, idx, n, batch, a, lab);
    if (!rc) rc = run_samples(i8, data, idx, n, batch, b, lab);
    if (!rc) {
        int64_t ra = 0, rb = 0, same = 0;
        for (int64_t i = 0; i < n; i++) {
            ra += a[i] == lab[i];
            rb += b[i] == lab[i];
            same += a[i] == b[i];
        }
        r->count = n;
        r->top1_float = (double)ra / (double)n;
        r->top1_int8 = (double)rb / (double)n;
        r->agreement = (double)same / (double)n;
    }
    osp_free(idx), osp_free(a), osp_free(b), osp_free(lab);
done:
    osp_dataset_free(data);
    osp_net_free(f32);
    osp_net_free(i8);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    static const struct option opts[] = {
        {"calibrate", required_argument, 0, 'c'}, {"out", required_argument, 0, 'o'},
        {"images", required_argument, 0, 'n'},    {"method", required_argument, 0, 'M'},
        {"percentile", required_argument, 0, 'p'}, {"split", required_argument, 0, 's'},
        {"check", required_argument, 0, 'C'},     {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},   {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},            {"resize", required_argument, 0, 'i'},
        {"crop-fraction", required_argument, 0, 'i'}, {"max-pixels", required_argument, 0, 'i'},
        {"workers", required_argument, 0, 'i'},   {0, 0, 0, 0}};
    const char *model = NULL, *calib = NULL, *out = NULL, *check_data = NULL;
    int images_n = 512, batch = 64, threads = 0, json = 0, c, which = 0;
    osp_calib_method method = OSP_CALIB_PERCENTILE;
    float percentile = 99.99f;
    osp_split split = OSP_SPLIT_TRAIN;
    cli_image_options images = cli_image_defaults();
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &which)) != -1) {
        switch (c) {
        case 'c': calib = optarg; break;
        case 'o': out = optarg; break;
        case 'n': if (cli_int(CMD, "--images", optarg, 1, 1 << 24, &images_n)) return 1; break;
        case 'M':
            if (!strcmp(optarg, "percentile")) method = OSP_CALIB_PERCENTILE;
            else if (!strcmp(optarg, "minmax")) method = OSP_CALIB_MINMAX;
            else return cli_fail(CMD, "--method must be percentile or minmax, not '%s'", optarg);
            break;
        case 'p': if (cli_float(CMD, "--percentile", optarg, 50.0001, 100, &percentile)) return 1; break;
        case 's':
            if (strcmp(optarg, "train") && strcmp(optarg, "test"))
                return cli_fail(CMD, "--split must be train or test");
            split = strcmp(optarg, "train") ? OSP_SPLIT_TEST : OSP_SPLIT_TRAIN;
            break;
        case 'C': check_data = optarg; break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 65536, &batch)) return 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'j': json = 1; break;
        case 'i': if (cli_image_option(CMD, opts[which].name, optarg, &images)) return 1; break;
        case 'h': usage(stdout); return 0;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey quantize --help')",
                            argv[optind - 1]);
        }
    }
    if (optind < argc) model = argv[optind++];
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!model || !calib || !out)
        return cli_fail(CMD, "MODEL, --calibrate and --out are required (see 'osprey quantize --help')");
    if (cli_check_output(CMD, "--out", out)) return 1;
    osp_threads_set(threads);
    osp_net *net;
    if (osp_model_load(model, &net)) return cli_fail_lib(CMD, NULL);
    if (net->quantization) {
        osp_net_free(net);
        return cli_fail(CMD, "%s is quantised already: start from the float32 model", model);
    }
    int64_t n = 0, bad = 0;
    int layers = osp_net_calibrate_begin(net);
    int rc = layers < 0 ? layers : OSP_OK;
    if (!rc && layers == 0)
        rc = osp_error(OSP_EINVAL, "%s has no convolution that runs int8 (ungrouped)", model);
    if (!rc && is_idx(calib)) {
        osp_dataset *data;
        if (cli_open_dataset(CMD, calib, split, net, &images, NULL, 0, &data)) {
            osp_net_free(net);
            return 1;
        }
        /* samples spread evenly over the dataset, whatever its order */
        n = data->count < images_n ? data->count : images_n;
        int64_t *idx = osp_alloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
        if (!idx) rc = OSP_ENOMEM;
        for (int64_t i = 0; !rc && i < n; i++) idx[i] = i * data->count / n;
        if (!rc && n == 0) rc = osp_error(OSP_ENOENT, "%s: no samples to calibrate on", calib);
        if (!rc) rc = run_samples(net, data, idx, n, batch, NULL, NULL);
        if (!rc) rc = osp_net_calibrate_pass(net);
        if (!rc) rc = run_samples(net, data, idx, n, batch, NULL, NULL);
        osp_free(idx);
        osp_dataset_report_skipped(data);
        osp_dataset_free(data);
    } else if (!rc) {
        sample s = {0};
        rc = sample_images(calib, images_n, &s);
        if (!rc && s.n == 0) rc = osp_error(OSP_ENOENT, "%s: no images to calibrate on", calib);
        if (!rc) rc = run_images(net, &s, batch, 0, &bad);
        if (!rc && bad == s.n) rc = osp_error(OSP_ENOENT, "%s: none of its %lld image%s could be read", calib,
                           (long long)s.n, cli_s(s.n));
        if (!rc) rc = osp_net_calibrate_pass(net);
        if (!rc) rc = run_images(net, &s, batch, 1, &bad);
        n = s.n - bad;
        if (bad > MAX_NAMED)
            fprintf(stderr, "osprey quantize: left out %lld unreadable images in all\n", (long long)bad);
        sample_free(&s);
    }
    if (!rc) rc = osp_net_calibrate_end(net, method, percentile, n);
    if (!rc) rc = osp_model_save(net, out);
    osp_net_free(net);
    if (rc) return cli_fail_lib(CMD, NULL);
    check_result r = {0};
    if (check_data) {
        rc = check(model, out, check_data, &images, batch, &r);
        if (rc == 1) return 1;
        if (rc) return cli_fail_lib(CMD, NULL);
    }
    if (json) {
        printf("{\"out\": \"%s\", \"layers\": %d, \"images\": %lld", out, layers, (long long)n);
        if (check_data)
            printf(", \"count\": %lld, \"top1_float32\": %.6f, \"top1_int8\": %.6f, "
                   "\"agreement\": %.6f", (long long)r.count, r.top1_float, r.top1_int8,
                   r.agreement);
        printf("}\n");
        return 0;
    }
    printf("quantised %d convolution%s to int8 (calibrated on %lld image%s): %s\n", layers,
           cli_s(layers), (long long)n, cli_s(n), out);
    if (check_data)
        printf("top-1 float32 %.2f%%  int8 %.2f%% (%+.2f points)  agreement %.2f%%  (%lld sample%s)\n",
               100 * r.top1_float, 100 * r.top1_int8, 100 * (r.top1_int8 - r.top1_float),
               100 * r.agreement, (long long)r.count, cli_s(r.count));
    return 0;
}
