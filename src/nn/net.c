/* Networks from specs: the [net] section, then one graph node per layer. */
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"

void osp_net_free(osp_net *net) {
    if (!net) return;
    osp_graph_free(net->graph);
    osp_free(net->spec_text);
    if (net->labels)
        for (int i = 0; i < net->n_classes; i++) osp_free(net->labels[i]);
    osp_free(net->labels);
    osp_free(net->thresholds);
    osp_free(net->quantization);
    osp_net_set_hash(net, NULL);
    osp_free(net);
}

int osp_net_multi_label(const osp_net *net) { return net && net->multi_label ? 1 : 0; }

void osp_net_set_multi_label(osp_net *net, int multi_label) {
    net->multi_label = multi_label ? 1 : 0;
    if (!multi_label) {
        osp_free(net->thresholds);
        net->thresholds = NULL;
    }
}

float osp_net_threshold(const osp_net *net, int c) {
    if (!net || !net->multi_label || !net->thresholds || c < 0 || c >= net->n_classes) return 0.5f;
    return net->thresholds[c];
}

int osp_net_set_thresholds(osp_net *net, const float *thresholds, int n) {
    if (!thresholds) {
        osp_free(net->thresholds);
        net->thresholds = NULL;
        return OSP_OK;
    }
    if (!net->multi_label)
        return osp_error(OSP_EINVAL, "thresholds are for multi-label models; this one is single-label");
    if (n != net->n_classes)
        return osp_error(OSP_EINVAL, "%d thresholds for a network with %d outputs", n, net->n_classes);
    for (int c = 0; c < n; c++)
        if (!(thresholds[c] > 0.0f && thresholds[c] < 1.0f))
            return osp_error(OSP_EINVAL, "threshold %d is %g: thresholds lie in (0, 1)", c,
                             (double)thresholds[c]);
    float *t = net->thresholds ? net->thresholds : osp_alloc((size_t)n * sizeof *t);
    if (!t) return OSP_ENOMEM;
    memcpy(t, thresholds, (size_t)n * sizeof *t);
    net->thresholds = t;
    return OSP_OK;
}

static int unknown_keys(const osp_spec_section *s) {
    for (int k = 0; k < s->n_kv; k++)
        if (!s->kv[k].used)
            return osp_error(OSP_EFORMAT, "%s:%d: [%s] unknown key '%s'", s->file, s->kv[k].line,
                             s->type, s->kv[k].key);
    return OSP_OK;
}

static int parse_net_section(osp_spec_section *s, osp_net *net) {
    if (strcmp(s->type, "net"))
        return osp_error(OSP_EFORMAT, "%s:%d: the spec must start with [net], not [%s]", s->file,
                         s->line, s->type);
    /* Any rank up to OSP_NET_MAX_RANK per sample: C x H x W images, D
     * vectors, T x D token sequences, ... (the batch adds one axis). */
    int dims[OSP_NET_MAX_RANK], n;
    int rc = osp_spec_ints(s, "input", dims, OSP_NET_MAX_RANK, &n, 1, 65536);
    if (rc) return rc;
    if (n == 0)
        return osp_spec_error(s, NULL, "'input' (per sample: C x H x W, e.g. 1x28x28; D; or T x D, "
                              "up to %d axes) is required", OSP_NET_MAX_RANK);
    int64_t d64[OSP_NET_MAX_RANK];
    for (int i = 0; i < n; i++) d64[i] = dims[i];
    net->input = osp_shape_make(n, d64);
    if (osp_shape_numel(&net->input) > ((int64_t)1 << 28))
        return osp_spec_error(s, "input", "input of %lld values per sample is too large",
                              (long long)osp_shape_numel(&net->input));
    int channels = (int)(n == 3 ? dims[0] : 1); /* as osp_net_normalize: C x H x W only */
    float v[OSP_MAX_CHANNELS];
    for (int which = 0; which < 2; which++) {
        const char *key = which ? "std" : "mean";
        float *dst = which ? net->std : net->mean;
        for (int c = 0; c < OSP_MAX_CHANNELS; c++) dst[c] = which ? 1.0f : 0.0f;
        if ((rc = osp_spec_floats(s, key, v, OSP_MAX_CHANNELS, &n))) return rc;
        if (n == 0) continue;
        if (n != 1 && n != channels) {
            if (channels == 1)
                return osp_spec_error(s, key, "'%s' needs 1 value (the input has 1 channel), "
                                      "not %d", key, n);
            return osp_spec_error(s, key, "'%s' needs 1 value or %d, one per channel (the input "
                                  "has %d channels), not %d", key, channels, channels, n);
        }
        if (channels > OSP_MAX_CHANNELS && n != 1)
            return osp_spec_error(s, key, "per-channel '%s' is limited to %d channels", key,
                                  OSP_MAX_CHANNELS);
        for (int c = 0; c < OSP_MAX_CHANNELS; c++) {
            if (n == 1) dst[c] = v[0];
            else if (c < n) dst[c] = v[c];
            if (which && !(dst[c] > 0.0f)) return osp_spec_error(s, key, "'std' must be positive");
        }
    }
    return unknown_keys(s);
}

/* Resolves "a, b" to node ids. A layer that reads nothing ([constant])
 * gets none and may not name any. */
static int parse_inputs(osp_graph *g, const osp_op *op, osp_spec_section *s, int *ids, int *n_ids) {
    const char *value = osp_spec_str(s, "input", NULL);
    if (op->no_inputs) {
        *n_ids = 0;
        if (value)
            return osp_spec_error(s, "input", "takes no input; remove 'input = %s'", value);
        return OSP_OK;
    }
    if (!value) {
        ids[0] = osp_graph_node_count(g) - 1;
        *n_ids = 1;
        return OSP_OK;
    }
    *n_ids = 0;
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
        char name[OSP_NAME_MAX];
        if (t == p || t - p >= OSP_NAME_MAX)
            return osp_spec_error(s, "input", "bad layer name in 'input = %s'", value);
        memcpy(name, p, (size_t)(t - p));
        name[t - p] = '\0';
        osp_node *node = osp_graph_find(g, name);
        if (!node)
            return osp_spec_error(s, "input", "'input' names '%s', which is not an earlier layer", name);
        if (*n_ids == OSP_MAX_INPUTS)
            return osp_spec_error(s, "input", "more than %d inputs", OSP_MAX_INPUTS);
        ids[(*n_ids)++] = node->id;
        p = *e ? e + 1 : e;
    }
    return OSP_OK;
}

static int add_layer(osp_net *net, osp_spec_section *s) {
    const osp_layer_type *type = osp_layer_type_find(s->type);
    if (!type) {
        char known[512] = "";
        const osp_layer_type *const *all = osp_layer_types();
        for (int i = 0; all[i]; i++) {
            size_t used = strlen(known);
            snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", all[i]->op->name);
        }
        return osp_error(OSP_EFORMAT, "%s:%d: unknown layer type [%s] (known: %s)", s->file,
                         s->line, s->type, known);
    }
    const char *name = osp_spec_str(s, "name", NULL);
    int inputs[OSP_MAX_INPUTS], n_inputs;
    int rc = parse_inputs(net->graph, type->op, s, inputs, &n_inputs);
    if (rc) return rc;
    void *attrs = NULL;
    if ((rc = type->parse(s, &attrs))) return rc;
    if ((rc = unknown_keys(s))) {
        if (type->op->free_attrs) type->op->free_attrs(attrs);
        else osp_free(attrs);
        return rc;
    }
    rc = osp_graph_add(net->graph, type->op, name, inputs, n_inputs, attrs);
    if (rc < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        return osp_error(rc, "%s:%d: [%s] %s", s->file, s->line, s->type, msg);
    }
    return OSP_OK;
}

/* Builds a network from spec text; input, if given, replaces the [net]
 * section's input shape. */
static int build(const char *text, size_t len, const char *name, uint64_t seed,
                 const osp_shape *input, osp_net **out) {
    *out = NULL;
    osp_spec *sp;
    int rc = osp_spec_parse(text, len, name, &sp);
    if (rc) return rc;
    osp_net *net = osp_calloc(1, sizeof *net);
    if (!net) {
        osp_spec_free(sp);
        return OSP_ENOMEM;
    }
    net->spec_text = osp_alloc(len + 1);
    if (!net->spec_text) {
        rc = OSP_ENOMEM;
        goto fail;
    }
    memcpy(net->spec_text, text, len);
    net->spec_text[len] = '\0';
    if ((rc = parse_net_section(&sp->sections[0], net))) goto fail;
    if (input) net->input = *input;
    if ((rc = osp_graph_new(&net->input, &net->graph))) goto fail;
    if (sp->n_sections < 2) {
        rc = osp_error(OSP_EFORMAT, "%s: the spec has no layers after [net]", sp->file);
        goto fail;
    }
    for (int i = 1; i < sp->n_sections; i++)
        if ((rc = add_layer(net, &sp->sections[i]))) goto fail;
    osp_node *last = osp_graph_output(net->graph);
    net->logits_node = last->id;
    if (last->op && !strcmp(last->op->name, "softmax")) net->logits_node = last->inputs[0];
    net->n_classes = (int)last->size;
    if ((rc = osp_graph_init_params(net->graph, seed))) goto fail;
    osp_spec_free(sp);
    *out = net;
    return OSP_OK;
fail:
    osp_spec_free(sp);
    osp_net_free(net);
    return rc;
}

int osp_net_from_spec(const char *text, size_t len, const char *name, uint64_t seed, osp_net **out) {
    return build(text, len, name, seed, NULL, out);
}

int osp_net_with_input(const osp_net *net, int height, int width, osp_net **out) {
    *out = NULL;
    if (net->input.ndim != 3 || height < 1 || width < 1 || height > 65536 || width > 65536)
        return osp_error(OSP_EINVAL, "an input of %d x %d is not possible for this network", height, width);
    if (!net->spec_text) return osp_error(OSP_ESTATE, "the network has no spec to rebuild it from");
    int64_t dims[3] = {net->input.dim[0], height, width};
    osp_shape input = osp_shape_make(3, dims);
    osp_net *copy;
    int rc = build(net->spec_text, strlen(net->spec_text), "spec", 0, &input, &copy);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        return osp_error(rc, "the network cannot take %d x %d inputs: %s", height, width, msg);
    }
    /* Convolutions do not care about the size of their input; a layer whose
     * parameters do (a fully connected layer on a flattened map) makes the
     * network one of a fixed size. */
    osp_graph *g = copy->graph, *from = net->graph;
    if (osp_graph_param_count(g) != osp_graph_param_count(from) || copy->n_classes != net->n_classes)
        rc = osp_error(OSP_ESHAPE, "the network cannot take %d x %d inputs: its outputs change", height, width);
    for (int i = 0; !rc && i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i), *q = osp_graph_param(from, i);
        if (strcmp(p->name, q->name) || !osp_shape_equal(&p->shape, &q->shape))
            rc = osp_error(OSP_ESHAPE, "the network cannot take %d x %d inputs: %s depends on the input size",
                           height, width, q->name);
        else
            memcpy(osp_graph_param_data(g, i), osp_graph_param_data(from, i), (size_t)p->numel * sizeof(float));
    }
    if (!rc && net->labels) rc = osp_net_set_labels(copy, (const char *const *)net->labels, net->n_classes);
    copy->multi_label = net->multi_label;
    if (!rc && net->thresholds) rc = osp_net_set_thresholds(copy, net->thresholds, net->n_classes);
    if (!rc && net->quantization) rc = osp_net_set_quantization(copy, net->quantization, "the model");
    if (!rc && net->hash) rc = osp_net_set_hash(copy, net->hash);
    if (rc) {
        osp_net_free(copy);
        return rc;
    }
    memcpy(copy->mean, net->mean, sizeof copy->mean);
    memcpy(copy->std, net->std, sizeof copy->std);
    osp_graph_weights_changed(g);
    *out = copy;
    return OSP_OK;
}

int osp_net_load_spec(const char *path, uint64_t seed, osp_net **out) {
    void *buf;
    size_t len;
    *out = NULL;
    /* A model, an ONNX file, an image...: say so rather than how its bytes
     * fail as text. */
    osp_file_kind kind = osp_file_sniff_path(path);
    if (kind != OSP_FILE_UNKNOWN && kind != OSP_FILE_NETSPEC)
        return osp_error(OSP_EFORMAT, "%s is %s, not a network spec (a text file of [sections], "
                         "see docs/netspec.md)", path, osp_file_kind_phrase(kind));
    int rc = osp_file_read_all(path, 1 << 20, &buf, &len);
    if (rc) return rc;
    rc = osp_net_from_spec(buf, len, path, seed, out);
    osp_free(buf);
    return rc;
}

int osp_net_set_labels(osp_net *net, const char *const *labels, int n) {
    if (n != net->n_classes)
        return osp_error(OSP_EINVAL, "%d label names for a network with %d outputs", n, net->n_classes);
    char **copy = osp_calloc((size_t)n, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(labels[i]);
        copy[i] = osp_alloc(len + 1);
        if (!copy[i]) {
            for (int j = 0; j < i; j++) osp_free(copy[j]);
            osp_free(copy);
            return OSP_ENOMEM;
        }
        memcpy(copy[i], labels[i], len + 1);
    }
    if (net->labels)
        for (int i = 0; i < net->n_classes; i++) osp_free(net->labels[i]);
    osp_free(net->labels);
    net->labels = copy;
    return OSP_OK;
}

void osp_net_normalize(const osp_net *net, float *x, int batch) {
    int channels = net->input.ndim == 3 ? (int)net->input.dim[0] : 1;
    int64_t plane = osp_shape_numel(&net->input) / channels;
    for (int b = 0; b < batch; b++)
        for (int c = 0; c < channels; c++) {
            int k = c < OSP_MAX_CHANNELS ? c : 0;
            float mean = net->mean[k], inv = 1.0f / net->std[k];
            float *p = x + ((int64_t)b * channels + c) * plane;
            for (int64_t i = 0; i < plane; i++) p[i] = (p[i] - mean) * inv;
        }
}

int64_t osp_net_param_count(const osp_net *net) {
    int64_t total = 0;
    for (int i = 0; i < osp_graph_param_count(net->graph); i++) {
        const osp_param *p = osp_graph_param(net->graph, i);
        if (p->kind == OSP_PARAM_WEIGHT) total += p->numel;
    }
    return total;
}
