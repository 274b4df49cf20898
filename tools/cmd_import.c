/* osprey import: an ONNX model to an osprey model file. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "import";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey import MODEL.onnx --out MODEL.osp [options]\n"
            "       osprey import MODEL.osp --labels FILE --out NEW.osp\n"
            "\n"
            "Maps an ONNX model (opsets 7 to 18) onto osprey's layers and writes it as an\n"
            "osprey model: the network spec, with one layer per ONNX node that computes,\n"
            "named after the node ('osprey info' lists them, 'osprey run --layer NAME'\n"
            "returns one's activations), and the model's weights. Constant subgraphs are\n"
            "evaluated and batch norms after convolutions folded into them. An operator\n"
            "osprey cannot compute exactly is refused, naming it and its node. A model\n"
            "osprey exported keeps its labels, mean and std (its metadata) unless the\n"
            "options below say otherwise. Given an osprey model, import writes a copy\n"
            "with the labels, mean and std given here.\n"
            "\n"
            "  --out PATH            the osprey model to write (required)\n"
            "  --labels FILE         class names, one per line, one per output\n"
            "  --mean R,G,B          the input normalisation the model expects, saved with\n"
            "  --std R,G,B           it for 'osprey eval' and the image pipeline (values\n"
            "                        for inputs in [0, 1]; ImageNet models: --mean\n"
            "                        0.485,0.456,0.406 --std 0.229,0.224,0.225)\n"
            "  --input-size HxW      the image size, for a model whose size is symbolic (or\n"
            "                        to change a fully convolutional model's)\n");
}

/* "0.485,0.456,0.406" into up to OSP_MAX_CHANNELS floats. */
static int parse_floats(const char *opt, const char *s, float *out, int *n, int positive) {
    *n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == OSP_MAX_CHANNELS)
            return cli_fail(CMD, "%s takes at most %d values", opt, OSP_MAX_CHANNELS);
        if (cli_float(CMD, opt, tok, positive ? 1e-30 : -1e30, 1e30, &out[(*n)++])) return 1;
    }
    if (!*n) return cli_fail(CMD, "%s needs a value", opt);
    return 0;
}

/* One label per line; blank lines at the end are ignored. */
static int read_labels(const char *path, char ***labels, int *count) {
    void *buf;
    size_t len;
    if (osp_file_read_all(path, 64 << 20, &buf, &len)) return cli_fail_lib(CMD, NULL);
    char *text = buf;
    int n = 0, cap = 0;
    char **list = NULL;
    for (size_t start = 0; start < len;) {
        size_t end = start;
        while (end < len && text[end] != '\n') end++;
        size_t stop = end;
        if (stop > start && text[stop - 1] == '\r') stop--;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            char **grown = realloc(list, sizeof *list * (size_t)cap);
            if (!grown) break;
            list = grown;
        }
        list[n] = strndup(text + start, stop - start);
        if (!list[n]) break;
        n++;
        start = end + 1;
    }
    osp_free(buf);
    while (n > 0 && !*list[n - 1]) free(list[--n]);
    *labels = list;
    *count = n;
    return 0;
}

int cmd_import(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},  {"labels", required_argument, 0, 'l'},
        {"mean", required_argument, 0, 'm'}, {"std", required_argument, 0, 's'},
        {"input-size", required_argument, 0, 'i'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *out_path = NULL, *labels_path = NULL;
    osp_onnx_import_options opt = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out_path = optarg; break;
        case 'l': labels_path = optarg; break;
        case 'm': if (parse_floats("--mean", optarg, opt.mean, &opt.n_mean, 0)) return 1; break;
        case 's': if (parse_floats("--std", optarg, opt.std, &opt.n_std, 1)) return 1; break;
        case 'i': {
            char *end;
            long h = strtol(optarg, &end, 10), w = *end == 'x' ? strtol(end + 1, &end, 10) : 0;
            if (*end || h < 1 || w < 1 || h > 65536 || w > 65536)
                return cli_fail(CMD, "--input-size wants HxW such as 224x224, not '%s'", optarg);
            opt.input_h = (int)h;
            opt.input_w = (int)w;
            break;
        }
        case 'h': usage(stdout); return 0;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey import --help')",
                            argv[optind - 1]);
        }
    }
    if (optind != argc - 1 || !out_path)
        return cli_fail(CMD, "give one ONNX file and --out (see 'osprey import --help')");
    const char *in_path = argv[optind];

    osp_net *net = NULL;
    char **labels = NULL;
    int n_labels = 0, status = 1;
    if (labels_path && read_labels(labels_path, &labels, &n_labels)) goto done;
    if (osp_file_sniff_path(in_path) == OSP_FILE_SAFETENSORS) {
        /* an osprey model: relabel (or renormalise) a copy */
        if (opt.input_h) {
            cli_fail(CMD, "--input-size applies to ONNX models only");
            goto done;
        }
        if (osp_model_load(in_path, &net)) {
            cli_fail_lib(CMD, NULL);
            goto done;
        }
        for (int which = 0; which < 2; which++) {
            int n = which ? opt.n_std : opt.n_mean;
            const float *v = which ? opt.std : opt.mean;
            int channels = net->input.ndim == 3 ? (int)net->input.dim[0] : 1;
            if (n && n != 1 && n != channels) {
                cli_fail(CMD, "%s takes 1 or %d values for this model's %d channels",
                         which ? "--std" : "--mean", channels, channels);
                goto done;
            }
            float *to = which ? net->std : net->mean;
            for (int k = 0; n && k < OSP_MAX_CHANNELS; k++) to[k] = v[n == 1 || k >= n ? 0 : k];
        }
        /* New labels keep a hash head; new normalisation changes every
         * layer's values, so the head's codes would no longer match. */
        if ((opt.n_mean || opt.n_std) && osp_net_get_hash(net)) {
            fprintf(stderr, "osprey import: note: %s's hash head is dropped: --mean/--std change the vectors "
                            "it codes (train it again with 'osprey hash train')\n", in_path);
            osp_net_set_hash(net, NULL);
        }
    } else if (osp_onnx_import_file(in_path, &opt, &net)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    if (labels && osp_net_set_labels(net, (const char *const *)labels, n_labels)) {
        cli_fail(CMD, "%s: %s", labels_path, osp_last_error());
        goto done;
    }
    if (osp_model_save(net, out_path)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    char shape[64];
    osp_shape_format(&net->input, shape, sizeof shape);
    const int layers = osp_graph_node_count(net->graph) - 1;
    const int64_t params = osp_net_param_count(net);
    printf("%s: %d layer%s, %lld parameter%s, input %s, %d output%s -> %s\n", in_path, layers,
           cli_s(layers), (long long)params, cli_s(params), shape, net->n_classes,
           cli_s(net->n_classes), out_path);
    status = 0;
done:
    for (int i = 0; i < n_labels; i++) free(labels[i]);
    free(labels);
    osp_net_free(net);
    return status;
}
