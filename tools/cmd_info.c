/* osprey info: what a model holds. */
#include <getopt.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "info";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey info MODEL\n"
            "\n"
            "Prints a model's (or checkpoint's) input, normalisation, labels, and every\n"
            "layer with its type, inputs, output shape and parameter count.\n");
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        return cli_fail(CMD, "unknown option '%s' (see 'osprey info --help')", argv[optind - 1]);
    }
    if (optind != argc - 1) return cli_fail(CMD, "give exactly one MODEL (see 'osprey info --help')");
    const char *path = argv[optind];
    osp_net *net;
    if (osp_model_load(path, &net)) return cli_fail_lib(CMD, NULL);
    osp_graph *g = net->graph;
    char shape[96];
    osp_shape_format(&net->input, shape, sizeof shape);
    int channels = net->input.ndim == 3 ? (int)net->input.dim[0] : 1;
    if (channels > OSP_MAX_CHANNELS) channels = 1;
    printf("model      %s\ninput      %s\n", path, shape);
    printf("mean/std  ");
    for (int i = 0; i < channels; i++) printf(" %g/%g", net->mean[i], net->std[i]);
    printf("\nclasses    %d", net->n_classes);
    for (int i = 0; net->labels && i < net->n_classes && i < 20; i++) printf("%s%s", i ? ", " : ": ", net->labels[i]);
    if (net->labels && net->n_classes > 20) printf(", ...");
    printf("\nparameters %lld\n\n", (long long)osp_net_param_count(net));
    printf("%-20s %-14s %-24s %-16s %s\n", "layer", "type", "input", "output", "params");
    for (int i = 1; i < osp_graph_node_count(g); i++) {
        const osp_node *n = osp_graph_node(g, i);
        char inputs[128] = "";
        for (int j = 0; j < n->n_inputs; j++) {
            size_t used = strlen(inputs);
            snprintf(inputs + used, sizeof inputs - used, "%s%s", j ? "," : "", osp_graph_node(g, n->inputs[j])->name);
        }
        int64_t params = 0;
        for (int j = 0; j < n->n_params; j++) {
            const osp_param *p = osp_graph_param(g, n->params[j]);
            if (p->kind == OSP_PARAM_WEIGHT) params += p->numel;
        }
        osp_shape_format(&n->shape, shape, sizeof shape);
        printf("%-20s %-14s %-24s %-16s %lld\n", n->name, n->op->name, inputs, shape, (long long)params);
    }
    osp_net_free(net);
    return 0;
}
