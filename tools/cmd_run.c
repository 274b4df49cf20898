/* osprey run: raw inference on a .npy batch; any layer's activations. */
#include <getopt.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "run";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey run --model MODEL --input IN.npy --output OUT.npy [options]\n"
            "\n"
            "Runs MODEL on a batch (N x the model's input shape: N x C x H x W images,\n"
            "N x D vectors, N x T x D tokens, up to 6 axes; or N x all of a sample's values;\n"
            "float32, or any number type, converted) and writes the output (or an inner\n"
            "layer's activations) as float32 N x ...\n"
            "\n"
            "  --layer NAME          write this layer's activations (the embedding) instead\n"
            "                        of the output; 'osprey info MODEL' lists the layers\n"
            "  --normalize           apply the model's mean/std to the input first (default:\n"
            "                        the input is fed as it is)\n"
            "  --batch B             images per forward pass (default 64)\n"
            "  --threads T           threads (default: all cores)\n");
}

int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"layer", required_argument, 0, 'l'},
        {"normalize", no_argument, 0, 'n'},   {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *in_path = NULL, *out_path = NULL, *layer = NULL;
    int batch = 64, threads = 0, normalize = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'l': layer = optarg; break;
        case 'n': normalize = 1; break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 65536, &batch)) return 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey run --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!model || !in_path || !out_path)
        return cli_fail(CMD, "--model, --input and --output are required (see 'osprey run --help')");
    osp_threads_set(threads);

    osp_net *net = NULL;
    osp_array in = {0};
    float *result = NULL;
    int status = 1;
    if (osp_model_load(model, &net)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_graph *g = net->graph;
    osp_node *target = layer ? osp_graph_find(g, layer) : osp_graph_output(g);
    if (!target) {
        cli_fail(CMD, "%s has no layer '%s' (see 'osprey info %s')", model, layer, model);
        goto done;
    }
    if (osp_npy_read(in_path, &in)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    int64_t sample = osp_shape_numel(&net->input);
    int64_t n = in.shape.ndim > 0 ? in.shape.dim[0] : 0;
    char want[96], got[96];
    osp_shape_format(&net->input, want, sizeof want);
    osp_shape_format(&in.shape, got, sizeof got);
    if (in.shape.ndim < 2 || n <= 0 || osp_array_numel(&in) != n * sample) {
        cli_fail(CMD, "%s: expected N x %s values, got %s", in_path, want, got);
        goto done;
    }
    if (in.shape.ndim != 2 && !(in.shape.ndim == net->input.ndim + 1 &&
                                !memcmp(in.shape.dim + 1, net->input.dim, sizeof(int64_t) * (size_t)net->input.ndim))) {
        cli_fail(CMD, "%s: samples are %s but the model's input is %s", in_path, got, want);
        goto done;
    }
    /* Any number type, converted as 'osprey index' converts it. */
    if (osp_array_to_f32(&in)) {
        cli_fail_lib(CMD, in_path);
        goto done;
    }
    float *x = in.data;
    if (normalize) osp_net_normalize(net, x, (int)n);
    result = osp_alloc((size_t)n * (size_t)target->size * sizeof(float));
    if (!result) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    const char *layers[] = {layer};
    if (osp_net_run(net, x, n, batch, layers, layer ? 1 : 0, &result)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    int64_t dims[OSP_MAX_DIMS];
    dims[0] = n;
    for (int i = 0; i < target->shape.ndim && i + 1 < OSP_MAX_DIMS; i++) dims[i + 1] = target->shape.dim[i];
    osp_shape out_shape = osp_shape_make(target->shape.ndim + 1, dims);
    if (osp_npy_write_f32(out_path, result, &out_shape)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    status = 0;
done:
    osp_free(result);
    osp_array_free(&in);
    osp_net_free(net);
    return status;
}
