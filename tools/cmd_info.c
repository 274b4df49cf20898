/* osprey info: what a model holds. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "info";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey info MODEL [--json]\n"
            "\n"
            "Prints a model's (or checkpoint's) input, normalisation, labels, and every\n"
            "layer with its type, inputs, output shape and parameter count; and the learned\n"
            "hash head, if the model holds one ('osprey hash train --out MODEL.osp').\n"
            "\n"
            "  --json                one JSON object: model, input, mean, std, classes,\n"
            "                        (multi_label, thresholds,) (hash: bits, dim, layer,\n"
            "                        normalize, method,) labels, parameters, layers (name,\n"
            "                        type, inputs, shape, params) and the file's metadata\n");
}

/* Weights (not statistics such as batch norm's running means) of a layer. */
static int64_t layer_params(const osp_graph *g, const osp_node *n) {
    int64_t params = 0;
    for (int j = 0; j < n->n_params; j++) {
        const osp_param *p = osp_graph_param(g, n->params[j]);
        if (p->kind == OSP_PARAM_WEIGHT) params += p->numel;
    }
    return params;
}

static cJSON *shape_json(const osp_shape *s) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < s->ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)s->dim[i]));
    return a;
}

/* A metadata value: JSON where it holds JSON (labels, mean, config...),
 * else the string (the network spec). */
static cJSON *meta_json(const char *value) {
    cJSON *v = cJSON_Parse(value);
    if (v && (cJSON_IsArray(v) || cJSON_IsObject(v) || cJSON_IsNumber(v))) return v;
    cJSON_Delete(v);
    return cJSON_CreateString(value);
}

/* A float as the shortest decimal that reads back as it (0.1307, not
 * 0.1307000070810318). */
static double float_value(float f) {
    char s[32];
    snprintf(s, sizeof s, "%.9g", f);
    for (int digits = 1; digits < 9; digits++) {
        char t[32];
        snprintf(t, sizeof t, "%.*g", digits, f);
        if (strtof(t, NULL) == f) return strtod(t, NULL);
    }
    return strtod(s, NULL);
}

static int print_json(const char *path, const osp_net *net) {
    osp_graph *g = net->graph;
    int channels = net->input.ndim == 3 ? (int)net->input.dim[0] : 1;
    if (channels > OSP_MAX_CHANNELS) channels = 1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", path);
    cJSON_AddItemToObject(o, "input", shape_json(&net->input));
    cJSON *mean = cJSON_AddArrayToObject(o, "mean"), *std = cJSON_AddArrayToObject(o, "std");
    for (int i = 0; i < channels; i++) {
        cJSON_AddItemToArray(mean, cJSON_CreateNumber(float_value(net->mean[i])));
        cJSON_AddItemToArray(std, cJSON_CreateNumber(float_value(net->std[i])));
    }
    cJSON_AddNumberToObject(o, "classes", net->n_classes);
    if (osp_net_multi_label(net)) {
        cJSON_AddBoolToObject(o, "multi_label", 1);
        cJSON *t = cJSON_AddArrayToObject(o, "thresholds");
        for (int i = 0; t && i < net->n_classes; i++)
            cJSON_AddItemToArray(t, cJSON_CreateNumber(osp_net_threshold(net, i)));
    }
    if (net->quantization) /* as the model records it (docs/quantization.md) */
        cJSON_AddItemToObject(o, "quantization", cJSON_Parse(net->quantization));
    const osp_net_hash *h = osp_net_get_hash(net);
    if (h) {
        cJSON *hj = cJSON_AddObjectToObject(o, "hash");
        cJSON_AddNumberToObject(hj, "bits", h->bits);
        cJSON_AddNumberToObject(hj, "dim", h->dim);
        cJSON_AddStringToObject(hj, "layer", h->layer);
        cJSON_AddBoolToObject(hj, "normalize", h->normalize);
        cJSON_AddStringToObject(hj, "method", h->method);
    }
    cJSON *labels = cJSON_AddArrayToObject(o, "labels");
    for (int i = 0; net->labels && i < net->n_classes; i++)
        cJSON_AddItemToArray(labels, cJSON_CreateString(net->labels[i]));
    cJSON_AddNumberToObject(o, "parameters", (double)osp_net_param_count(net));
    cJSON *layers = cJSON_AddArrayToObject(o, "layers");
    for (int i = 1; i < osp_graph_node_count(g); i++) {
        const osp_node *n = osp_graph_node(g, i);
        cJSON *l = cJSON_CreateObject(), *inputs = cJSON_CreateArray();
        cJSON_AddStringToObject(l, "name", n->name);
        cJSON_AddStringToObject(l, "type", n->op->name);
        for (int j = 0; j < n->n_inputs; j++)
            cJSON_AddItemToArray(inputs, cJSON_CreateString(osp_graph_node(g, n->inputs[j])->name));
        cJSON_AddItemToObject(l, "inputs", inputs);
        cJSON_AddItemToObject(l, "shape", shape_json(&n->shape));
        cJSON_AddNumberToObject(l, "params", (double)layer_params(g, n));
        cJSON_AddItemToArray(layers, l);
    }
    /* The file's metadata as written (format, version, kind, spec; for a
     * checkpoint also step, seed, optimizer and the run's settings). */
    osp_safetensors *st;
    if (osp_st_load(path, &st)) {
        cJSON_Delete(o);
        return cli_fail_lib(CMD, NULL);
    }
    cJSON *meta = cJSON_AddObjectToObject(o, "metadata");
    for (int i = 0; i < osp_st_meta_count(st); i++) {
        const char *key = osp_st_meta_key(st, i);
        cJSON_AddItemToObject(meta, key, meta_json(osp_st_meta(st, key)));
    }
    osp_st_free(st);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return cli_fail(CMD, "out of memory printing %s as JSON", path);
    printf("%s\n", text);
    free(text);
    return 0;
}

static void print_text(const char *path, const osp_net *net) {
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
    if (osp_net_multi_label(net)) {
        printf("\nscores     multi-label (a sigmoid per label), thresholds");
        for (int i = 0; i < net->n_classes && i < 20; i++)
            printf("%s%.3g", i ? ", " : " ", (double)osp_net_threshold(net, i));
        if (net->n_classes > 20) printf(", ...");
        if (!net->thresholds) printf(" (default)");
    }
    if (net->quantization) {
        cJSON *q = cJSON_Parse(net->quantization);
        const cJSON *how = cJSON_GetObjectItemCaseSensitive(q, "calibration");
        const cJSON *images = cJSON_GetObjectItemCaseSensitive(q, "images");
        const int layers = osp_net_quantized_layers(net);
        printf("\nprecision  int8: %d convolution%s (inputs calibrated: %s, %.0f images)", layers,
               layers == 1 ? "" : "s", cJSON_IsString(how) ? how->valuestring : "?",
               cJSON_IsNumber(images) ? images->valuedouble : 0.0);
        cJSON_Delete(q);
    }
    const osp_net_hash *h = osp_net_get_hash(net);
    if (h)
        printf("\nhash       %d bits from layer %s (%d values%s), learned (%s)", h->bits, h->layer, h->dim,
               h->normalize ? ", L2-normalised" : "", !strcmp(h->method, "dsh") ? "Deep Supervised Hashing" : h->method);
    printf("\nparameters %lld\n\n", (long long)osp_net_param_count(net));
    printf("%-20s %-14s %-24s %-16s %s\n", "layer", "type", "input", "output", "params");
    for (int i = 1; i < osp_graph_node_count(g); i++) {
        const osp_node *n = osp_graph_node(g, i);
        char inputs[128] = "";
        for (int j = 0; j < n->n_inputs; j++) {
            size_t used = strlen(inputs);
            snprintf(inputs + used, sizeof inputs - used, "%s%s", j ? "," : "", osp_graph_node(g, n->inputs[j])->name);
        }
        osp_shape_format(&n->shape, shape, sizeof shape);
        printf("%-20s %-14s %-24s %-16s %lld\n", n->name, n->op->name, inputs, shape,
               (long long)layer_params(g, n));
    }
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, json = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown option '%s' (see 'osprey info --help')", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_fail(CMD, "give exactly one MODEL (see 'osprey info --help')");
    const char *path = argv[optind];
    /* A spec is what a model is made from, so it is the likeliest mix-up:
     * say what to do with one. (Other files are named by the loader.) */
    if (osp_file_sniff_path(path) == OSP_FILE_NETSPEC)
        return cli_fail(CMD, "%s is a network spec: 'osprey info' reads models (.osp); train one "
                        "with 'osprey train --net %s', or check the spec with 'osprey bench "
                        "--net %s'", path, path, path);
    osp_net *net;
    if (osp_model_load(path, &net)) return cli_fail_lib(CMD, NULL);
    int status = 0;
    if (json) status = print_json(path, net);
    else print_text(path, net);
    osp_net_free(net);
    return status;
}
