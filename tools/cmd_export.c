/* osprey export: a model as an ONNX file. */
#include <getopt.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "export";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey export MODEL --out MODEL.onnx\n"
            "\n"
            "Writes MODEL (a model or checkpoint) as an ONNX model (opset 13) that ONNX\n"
            "Runtime and other ONNX tools load. The graph's input is \"input\" (batch x the\n"
            "model's input shape, the batch dimension symbolic), its output \"output\";\n"
            "ONNX nodes and values are named after the layers, initializers after the\n"
            "parameters (conv1.weight). The graph takes normalised input, as osprey's\n"
            "does: the model's mean, std and labels are in the metadata (osprey.mean,\n"
            "osprey.std, osprey.labels, JSON). The file is written atomically.\n"
            "\n"
            "  --out PATH            the ONNX file to write (required)\n");
}

int cmd_export(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey export --help')",
                            argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return cli_fail(CMD, "give exactly one MODEL (see 'osprey export --help')");
    if (!out) return cli_fail(CMD, "--out is required (see 'osprey export --help')");
    const char *path = argv[optind];
    osp_net *net;
    if (osp_model_load(path, &net)) return cli_fail_lib(CMD, NULL);
    if (net->quantization)
        fprintf(stderr, "osprey export: note: %s is an int8 model; the ONNX file holds its "
                        "float32 network (docs/quantization.md)\n", path);
    void *buf = NULL;
    size_t len = 0;
    int status = 0;
    if (osp_onnx_export_buffer(net, &buf, &len)) {
        status = cli_fail_lib(CMD, path);
    } else {
        osp_atomic_file f;
        if (osp_atomic_open(&f, out)) {
            status = cli_fail_lib(CMD, NULL);
        } else if (osp_atomic_write(&f, buf, len)) {
            osp_atomic_abort(&f);
            status = cli_fail_lib(CMD, NULL);
        } else if (osp_atomic_commit(&f)) {
            status = cli_fail_lib(CMD, NULL);
        } else {
            printf("wrote %s (%zu bytes, ONNX opset 13)\n", out, len);
        }
    }
    osp_free(buf);
    osp_net_free(net);
    return status;
}
