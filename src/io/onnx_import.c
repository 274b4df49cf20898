/* ONNX import: checks the model, orders the nodes the output needs, folds
 * the constant ones, maps the rest onto layers (onnx_ops.c), and builds the
 * network from the spec it wrote, with the model's weights. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define MIN_OPSET ONNX_MIN_OPSET
#define MAX_OPSET ONNX_MAX_OPSET
#define DEFAULT_MAX_BYTES ((size_t)2 << 30)
/* External data has no protobuf limit: 16 GiB covers the largest image
 * models (ViT-H/14 and RegNetY-128GF hold about 2.6 GB of float32). */
#define DEFAULT_MAX_EXTERNAL_BYTES ((size_t)16 << 30)

/* ---- the value table: names to values, open addressing ---- */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static onnx_value *slot_for(onnx_value *table, int64_t cap, const char *name) {
    int64_t i = (int64_t)(hash_name(name) & (uint64_t)(cap - 1));
    while (table[i].name && strcmp(table[i].name, name)) i = (i + 1) & (cap - 1);
    return &table[i];
}

onnx_value *osp__onnx_value_find(onnx_importer *im, const char *name) {
    if (!name || !*name || !im->cap_values) return NULL;
    onnx_value *v = slot_for(im->values, im->cap_values, name);
    return v->name ? v : NULL;
}

onnx_value *osp__onnx_value_add(onnx_importer *im, const char *name) {
    if (2 * (im->n_values + 1) > im->cap_values) {
        int64_t cap = im->cap_values ? 2 * im->cap_values : 256;
        onnx_value *t = osp_calloc((size_t)cap, sizeof *t);
        if (!t) return NULL;
        for (int64_t i = 0; i < im->cap_values; i++)
            if (im->values[i].name) *slot_for(t, cap, im->values[i].name) = im->values[i];
        osp_free(im->values);
        im->values = t;
        im->cap_values = cap;
    }
    onnx_value *v = slot_for(im->values, im->cap_values, name);
    if (!v->name) {
        v->name = name;
        v->producer = -1;
        v->reader = -1;
        im->n_values++;
    }
    return v;
}

onnx_value *osp__onnx_input(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t i) {
    return i < n->n_input ? osp__onnx_value_find(im, n->input[i]) : NULL;
}

const onnx_const *osp__onnx_const_input(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                                        size_t i) {
    onnx_value *v = osp__onnx_input(im, n, i);
    return v && v->kind == ONNX_VAL_CONST ? &v->c : NULL;
}

int osp__onnx_node_error(onnx_importer *im, const Osp__Onnx__NodeProto *n, int code,
                         const char *fmt, ...) {
    char msg[512], desc[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return osp_error(code, "%s: %s: %s", im->file, osp__onnx_node_desc(n, desc, sizeof desc), msg);
}

/* ---- the network being written ---- */

const osp_node *osp__onnx_layer(const onnx_importer *im, int node) {
    return osp_graph_node_const(im->shapes, node);
}

/* A layer name from the ONNX node: "/layer1/layer1.0/conv1/Conv" becomes
 * "layer1.layer1.0.conv1.Conv"; other characters a spec name cannot hold
 * become '_'; a name already taken gets "_2", "_3"... */
static void layer_name(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *suffix,
                       char *out) {
    const char *src = n->name && *n->name ? n->name : n->n_output && n->output[0] ? n->output[0] : "";
    while (*src == '/') src++;
    char base[OSP_NAME_MAX];
    size_t len = 0, room = OSP_NAME_MAX - 1 - (suffix ? strlen(suffix) : 0) - 6;
    for (; *src && len < room; src++) {
        char c = *src;
        base[len++] = c == '/' ? '.' : (isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.') ? c : '_';
    }
    if (!len) {
        for (const char *t = n->op_type; *t && len < 20; t++) base[len++] = (char)tolower((unsigned char)*t);
        int id = osp_graph_node_count(im->shapes) % 1000000;
        len += (size_t)snprintf(base + len, sizeof base - len, "%d", id);
    }
    base[len] = '\0';
    /* base leaves room for the suffix and "_99999". */
    char full[3 * OSP_NAME_MAX];
    snprintf(full, sizeof full, "%s%s", base, suffix ? suffix : "");
    for (int k = 2; osp_graph_find(im->shapes, full) && k < 100000; k++)
        snprintf(full, sizeof full, "%s%s_%d", base, suffix ? suffix : "", k);
    full[OSP_NAME_MAX - 1] = '\0';
    memcpy(out, full, OSP_NAME_MAX);
}

static int push_section(onnx_importer *im, char *text) {
    if (im->n_sections == im->cap_sections) {
        int cap = im->cap_sections ? 2 * im->cap_sections : 64;
        char **s = osp_calloc((size_t)cap, sizeof *s);
        if (!s) return OSP_ENOMEM;
        if (im->n_sections) memcpy(s, im->sections, sizeof *s * (size_t)im->n_sections);
        osp_free(im->sections);
        im->sections = s;
        im->cap_sections = cap;
    }
    im->sections[im->n_sections++] = text;
    return OSP_OK;
}

/* Adds the layer to the shape graph: the section is parsed as the spec
 * would parse it, so the shapes are the ones the built network will have. */
static int add_to_shapes(onnx_importer *im, const char *section, const char *name,
                         const int *inputs, int n_inputs) {
    static const char header[] = "[net]\ninput = 1\n";
    size_t len = sizeof header - 1 + strlen(section);
    char *text = osp_alloc(len + 1);
    if (!text) return OSP_ENOMEM;
    snprintf(text, len + 1, "%s%s", header, section);
    osp_spec *sp;
    int rc = osp_spec_parse(text, len, im->file, &sp);
    osp_free(text);
    if (rc) return rc;
    const osp_layer_type *type = osp_layer_type_find(sp->sections[1].type);
    void *attrs = NULL;
    if (!type) rc = osp_error(OSP_ENOTSUP, "no layer type [%s]", sp->sections[1].type);
    else if (!(rc = type->parse(&sp->sections[1], &attrs)))
        rc = osp_graph_add(im->shapes, type->op, name, inputs, n_inputs, attrs);
    osp_spec_free(sp);
    return rc < 0 ? rc : OSP_OK;
}

int osp__onnx_emit(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *suffix,
                   const char *type, const int *inputs, int n_inputs, const char *keys) {
    char name[OSP_NAME_MAX], desc[200];
    layer_name(im, n, suffix, name);
    size_t cap = 256 + strlen(keys) + (size_t)n_inputs * OSP_NAME_MAX;
    char *text = osp_alloc(cap);
    if (!text) return OSP_ENOMEM;
    int len = snprintf(text, cap, "[%s]\nname = %s\n", type, name);
    for (int i = 0; i < n_inputs; i++)
        len += snprintf(text + len, cap - (size_t)len, "%s%s", i ? ", " : "input = ",
                        osp_graph_node_const(im->shapes, inputs[i])->name);
    if (n_inputs) len += snprintf(text + len, cap - (size_t)len, "\n");
    snprintf(text + len, cap - (size_t)len, "%s", keys);
    int rc = add_to_shapes(im, text, name, inputs, n_inputs);
    if (rc) {
        osp_free(text);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        return osp_error(rc, "%s: %s: as [%s]: %s", im->file,
                         osp__onnx_node_desc(n, desc, sizeof desc), type, msg);
    }
    if ((rc = push_section(im, text))) {
        osp_free(text);
        return rc;
    }
    return osp_graph_node_count(im->shapes) - 1;
}

int osp__onnx_reemit(onnx_importer *im, int node, const char *old_text, const char *new_text) {
    char *s = im->sections[node], *at = strstr(s, old_text);
    if (!at) return osp_error(OSP_EINVAL, "internal: '%s' not in layer %d", old_text, node);
    size_t len = strlen(s) - strlen(old_text) + strlen(new_text);
    char *t = osp_alloc(len + 1);
    if (!t) return OSP_ENOMEM;
    snprintf(t, len + 1, "%.*s%s%s", (int)(at - s), s, new_text, at + strlen(old_text));
    osp_free(s);
    im->sections[node] = t;
    return OSP_OK;
}

int osp__onnx_weight_add(onnx_importer *im, int node, const char *what, float *data,
                         int64_t numel) {
    if (im->n_weights == im->cap_weights) {
        int cap = im->cap_weights ? 2 * im->cap_weights : 64;
        onnx_weight *w = osp_calloc((size_t)cap, sizeof *w);
        if (!w) {
            osp_free(data);
            return OSP_ENOMEM;
        }
        if (im->n_weights) memcpy(w, im->weights, sizeof *w * (size_t)im->n_weights);
        osp_free(im->weights);
        im->weights = w;
        im->cap_weights = cap;
    }
    onnx_weight *w = &im->weights[im->n_weights++];
    snprintf(w->name, sizeof w->name, "%s.%s", osp__onnx_layer(im, node)->name, what);
    w->data = data;
    w->numel = numel;
    return OSP_OK;
}

onnx_weight *osp__onnx_weight_find(onnx_importer *im, int node, const char *what) {
    char name[2 * OSP_NAME_MAX];
    snprintf(name, sizeof name, "%s.%s", osp__onnx_layer(im, node)->name, what);
    for (int i = 0; i < im->n_weights; i++)
        if (!strcmp(im->weights[i].name, name)) return &im->weights[i];
    return NULL;
}

int osp__onnx_set_layer(onnx_importer *im, const Osp__Onnx__NodeProto *n, int node) {
    char desc[200];
    if (n->n_output < 1 || !n->output[0] || !*n->output[0])
        return osp_error(OSP_EFORMAT, "%s: %s has no output", im->file,
                         osp__onnx_node_desc(n, desc, sizeof desc));
    onnx_value *v = osp__onnx_value_add(im, n->output[0]);
    if (!v) return OSP_ENOMEM;
    v->kind = ONNX_VAL_LAYER;
    v->node = node;
    v->layout = im->cur_layout; /* an alias keeps the layout of the value it reads */
    return OSP_OK;
}

/* ---- reading the model ---- */

static int check_opset(onnx_importer *im) {
    im->opset = -1;
    for (size_t i = 0; i < im->model->n_opset_import; i++) {
        const Osp__Onnx__OperatorSetIdProto *o = im->model->opset_import[i];
        if (!o->domain || !*o->domain || !strcmp(o->domain, "ai.onnx"))
            im->opset = o->has_version ? (int)o->version : -1;
    }
    if (im->opset < 0)
        return osp_error(OSP_EFORMAT, "%s: the model names no version of the ONNX operator set",
                         im->file);
    if (im->opset < MIN_OPSET || im->opset > MAX_OPSET)
        return osp_error(OSP_ENOTSUP, "%s: operator set %d; osprey imports opsets %d to %d "
                         "(re-export the model with one of them)", im->file, im->opset,
                         MIN_OPSET, MAX_OPSET);
    return OSP_OK;
}

static int register_initializers(onnx_importer *im) {
    const Osp__Onnx__GraphProto *g = im->graph;
    if (g->n_sparse_initializer)
        return osp_error(OSP_ENOTSUP, "%s: sparse initializers are not supported", im->file);
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Osp__Onnx__TensorProto *t = g->initializer[i];
        if (!t->name || !*t->name)
            return osp_error(OSP_EFORMAT, "%s: initializer %zu has no name", im->file, i);
        if (osp__onnx_value_find(im, t->name))
            return osp_error(OSP_EFORMAT, "%s: initializer '%s' is defined twice", im->file, t->name);
        onnx_value *v = osp__onnx_value_add(im, t->name);
        if (!v) return OSP_ENOMEM;
        int rc = osp__onnx_const_from_tensor(im, t, &v->c);
        if (rc) return rc;
        v->kind = ONNX_VAL_CONST;
    }
    return OSP_OK;
}

static int dim_of(const Osp__Onnx__TensorShapeProto *s, int k, int64_t *out) {
    const Osp__Onnx__TensorShapeProto__Dimension *d = s->dim[k];
    const int known = d->value_case == OSP__ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    *out = known ? d->dim_value : 0;
    return *out > 0;
}

/* The one graph input that is not an initializer becomes the network's
 * input: N x C x H x W, N x D, N x T x D ... (rank 2 to 6) with the batch N
 * fixed or symbolic. */
static int read_input(onnx_importer *im, osp_shape *shape) {
    const Osp__Onnx__GraphProto *g = im->graph;
    const Osp__Onnx__ValueInfoProto *in = NULL;
    for (size_t i = 0; i < g->n_input; i++) {
        if (!g->input[i]->name || !*g->input[i]->name)
            return osp_error(OSP_EFORMAT, "%s: graph input %zu has no name", im->file, i);
        if (osp__onnx_value_find(im, g->input[i]->name)) continue; /* an initializer */
        if (in)
            return osp_error(OSP_ENOTSUP, "%s: the model has several inputs ('%s', '%s'); "
                             "osprey networks have one", im->file, in->name, g->input[i]->name);
        in = g->input[i];
    }
    if (!in) return osp_error(OSP_EFORMAT, "%s: the model has no input", im->file);
    const Osp__Onnx__TypeProto *t = in->type;
    if (!t || t->value_case != OSP__ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type->shape)
        return osp_error(OSP_EFORMAT, "%s: input '%s' is not a tensor of known rank", im->file,
                         in->name);
    if (t->tensor_type->has_elem_type &&
        t->tensor_type->elem_type != OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return osp_error(OSP_ENOTSUP, "%s: input '%s' has element type %d; osprey runs float32",
                         im->file, in->name, (int)t->tensor_type->elem_type);
    const Osp__Onnx__TensorShapeProto *s = t->tensor_type->shape;
    int rank = (int)s->n_dim;
    if (rank < 2 || rank > OSP_NET_MAX_RANK + 1)
        return osp_error(OSP_ENOTSUP, "%s: input '%s' has rank %d; osprey takes a batch of "
                         "tensors of rank 2 to %d (N x C x H x W images, N x D vectors, N x T x D "
                         "tokens)", im->file, in->name, rank, OSP_NET_MAX_RANK + 1);
    /* --input-size and per-channel --mean/--std are about images. */
    if (rank != 4 && (im->opt->input_h > 0 || im->opt->input_w > 0))
        return osp_error(OSP_EINVAL, "%s: --input-size is for N x C x H x W images; input '%s' "
                         "has rank %d", im->file, in->name, rank);
    int normalises = 0; /* identity values (an exported token model's) change nothing */
    for (int c = 0; c < im->opt->n_mean; c++) normalises |= im->opt->mean[c] != 0.0f;
    for (int c = 0; c < im->opt->n_std; c++) normalises |= im->opt->std[c] != 1.0f;
    if (rank != 4 && rank != 2 && normalises)
        return osp_error(OSP_EINVAL, "%s: --mean and --std are for images (N x C x H x W) and "
                         "vectors (N x D); input '%s' has rank %d", im->file, in->name, rank);
    int64_t d[OSP_NET_MAX_RANK + 1];
    shape->ndim = rank - 1;
    for (int k = 1; k < rank; k++)
        if (!dim_of(s, k, &d[k])) d[k] = 0;
    /* --input-size HxW: one warning for the sides it changes. */
    if (rank == 4 && (im->opt->input_h > 0 || im->opt->input_w > 0)) {
        int64_t h = im->opt->input_h > 0 ? im->opt->input_h : d[2];
        int64_t w = im->opt->input_w > 0 ? im->opt->input_w : d[3];
        if ((d[2] > 0 && d[2] != h) || (d[3] > 0 && d[3] != w)) {
            char was_h[24] = "?", was_w[24] = "?"; /* a symbolic side */
            if (d[2] > 0) snprintf(was_h, sizeof was_h, "%lld", (long long)d[2]);
            if (d[3] > 0) snprintf(was_w, sizeof was_w, "%lld", (long long)d[3]);
            osp_log(OSP_LOG_WARN, "%s: input size %lldx%lld replaces the model's %sx%s", im->file,
                    (long long)h, (long long)w, was_h, was_w);
        }
        d[2] = h;
        d[3] = w;
    }
    for (int k = 1; k < rank; k++) {
        if (d[k] <= 0)
            return osp_error(OSP_EINVAL, "%s: input '%s' has no fixed size on axis %d%s", im->file,
                             in->name, k, rank == 4 ? "; give it with --input-size HxW" : "");
        if (d[k] > 65536)
            return osp_error(OSP_ERANGE, "%s: input '%s' has size %lld on axis %d", im->file,
                             in->name, (long long)d[k], k);
        shape->dim[k - 1] = d[k];
    }
    if (rank == 4 && shape->dim[0] > OSP_MAX_CHANNELS && (im->opt->n_mean > 1 || im->opt->n_std > 1))
        return osp_error(OSP_EINVAL, "%s: per-channel --mean/--std take at most %d channels; the "
                         "model has %lld (give one value for all)", im->file, OSP_MAX_CHANNELS,
                         (long long)shape->dim[0]);
    /* One value for every channel, or one per channel. */
    const int64_t channels = rank == 4 ? shape->dim[0] : 1;
    for (int which = 0; which < 2; which++) {
        int n = which ? im->opt->n_std : im->opt->n_mean;
        if (n <= 1 || n == channels) continue;
        const char *opt = which ? "--std" : "--mean";
        if (channels == 1)
            return osp_error(OSP_EINVAL, "%s: %s needs 1 value (the model has 1 channel), not %d",
                             im->file, opt, n);
        return osp_error(OSP_EINVAL, "%s: %s needs 1 value or %lld, one per channel (the model "
                         "has %lld channels), not %d", im->file, opt, (long long)channels,
                         (long long)channels, n);
    }
    onnx_value *v = osp__onnx_value_add(im, in->name);
    if (!v) return OSP_ENOMEM;
    v->kind = ONNX_VAL_LAYER;
    v->node = 0;
    return OSP_OK;
}

/* Which nodes the output needs, in an order where each comes after the
 * nodes it reads; cycles and dangling names are errors. */
static int order_nodes(onnx_importer *im, const char *output, int **order_out, int *n_order) {
    const Osp__Onnx__GraphProto *g = im->graph;
    size_t nn = g->n_node;
    char desc[200];
    int *need = osp_calloc(nn + 1, sizeof *need), *stack = osp_calloc(nn + 1, sizeof *stack);
    int *indeg = osp_calloc(nn + 1, sizeof *indeg), *order = osp_calloc(nn + 1, sizeof *order);
    int64_t *first = osp_calloc(nn + 2, sizeof *first);
    int *fill = osp_calloc(nn + 1, sizeof *fill), *readers = NULL;
    int rc = OSP_OK, top = 0, count = 0;
    if (!need || !stack || !indeg || !order || !first || !fill) {
        rc = OSP_ENOMEM;
        goto done;
    }
    /* Producers. */
    for (size_t i = 0; i < nn && !rc; i++) {
        const Osp__Onnx__NodeProto *n = g->node[i];
        if (!n->op_type) {
            rc = osp_error(OSP_EFORMAT, "%s: node %zu has no operator", im->file, i);
            break;
        }
        for (size_t o = 0; o < n->n_output; o++) {
            if (!n->output[o] || !*n->output[o]) continue;
            onnx_value *v = osp__onnx_value_find(im, n->output[o]);
            if (v && (v->producer >= 0 || v->kind != ONNX_VAL_UNKNOWN)) {
                rc = osp_error(OSP_EFORMAT, "%s: value '%s' is defined twice (by %s)", im->file,
                               n->output[o], osp__onnx_node_desc(n, desc, sizeof desc));
                break;
            }
            if (!(v = osp__onnx_value_add(im, n->output[o]))) {
                rc = OSP_ENOMEM;
                break;
            }
            v->producer = (int)i;
        }
    }
    if (rc) goto done;
    onnx_value *out = osp__onnx_value_find(im, output);
    if (!out || (out->producer < 0 && out->kind != ONNX_VAL_LAYER)) {
        rc = osp_error(OSP_EFORMAT, "%s: output '%s' is computed by no node", im->file, output);
        goto done;
    }
    out->uses++;
    /* Walk back from the output. */
    if (out->producer >= 0) {
        need[out->producer] = 1;
        stack[top++] = out->producer;
    }
    while (top) {
        const int at = stack[--top];
        const Osp__Onnx__NodeProto *n = g->node[at];
        for (size_t i = 0; i < n->n_input; i++) {
            if (!n->input[i] || !*n->input[i]) continue;
            onnx_value *v = osp__onnx_value_find(im, n->input[i]);
            if (!v) {
                rc = osp_error(OSP_EFORMAT, "%s: %s reads '%s', which nothing defines", im->file,
                               osp__onnx_node_desc(n, desc, sizeof desc), n->input[i]);
                goto done;
            }
            v->uses++;
            v->reader = at;
            if (v->producer >= 0 && !need[v->producer]) {
                need[v->producer] = 1;
                stack[top++] = v->producer;
            }
        }
    }
    /* Kahn's algorithm over the needed nodes, with each node's readers
     * listed once (CSR) so that hostile graphs stay linear. */
    int64_t n_edges = 0;
    for (size_t i = 0; i < nn; i++) {
        if (!need[i]) continue;
        const Osp__Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_input; k++) {
            onnx_value *v = n->input[k] && *n->input[k] ? osp__onnx_value_find(im, n->input[k])
                                                        : NULL;
            if (v && v->producer >= 0) {
                indeg[i]++;
                first[v->producer + 1]++;
                n_edges++;
            }
        }
        if (!indeg[i]) stack[top++] = (int)i;
    }
    for (size_t i = 0; i < nn; i++) first[i + 1] += first[i];
    if (!(readers = osp_calloc((size_t)n_edges + 1, sizeof *readers))) {
        rc = OSP_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nn; i++) {
        if (!need[i]) continue;
        const Osp__Onnx__NodeProto *n = g->node[i];
        for (size_t k = 0; k < n->n_input; k++) {
            onnx_value *v = n->input[k] && *n->input[k] ? osp__onnx_value_find(im, n->input[k])
                                                        : NULL;
            if (v && v->producer >= 0) readers[first[v->producer] + fill[v->producer]++] = (int)i;
        }
    }
    while (top) {
        int i = stack[--top];
        order[count++] = i;
        for (int64_t e = first[i]; e < first[i + 1]; e++)
            if (--indeg[readers[e]] == 0) stack[top++] = readers[e];
    }
    int needed = 0;
    for (size_t i = 0; i < nn; i++) needed += need[i];
    if (count != needed) {
        rc = osp_error(OSP_EFORMAT, "%s: the graph has a cycle", im->file);
        goto done;
    }
    *order_out = order;
    *n_order = count;
    order = NULL;
done:
    osp_free(need);
    osp_free(stack);
    osp_free(indeg);
    osp_free(order);
    osp_free(first);
    osp_free(fill);
    osp_free(readers);
    return rc;
}

static int net_section(onnx_importer *im, const osp_shape *in) {
    char shape[64], text[512];
    osp_shape_format(in, shape, sizeof shape);
    int len = snprintf(text, sizeof text, "# imported from %s\n[net]\ninput = %s\n", im->file, shape);
    for (int which = 0; which < 2; which++) {
        int n = which ? im->opt->n_std : im->opt->n_mean;
        const float *v = which ? im->opt->std : im->opt->mean;
        if (!n) continue;
        len += snprintf(text + len, sizeof text - (size_t)len, "%s = ", which ? "std" : "mean");
        for (int c = 0; c < n; c++)
            len += snprintf(text + len, sizeof text - (size_t)len, "%s%.9g", c ? ", " : "", v[c]);
        len += snprintf(text + len, sizeof text - (size_t)len, "\n");
    }
    char *copy = osp_alloc((size_t)len + 1);
    if (!copy) return OSP_ENOMEM;
    memcpy(copy, text, (size_t)len + 1);
    return push_section(im, copy);
}

/* The spec text, then the network with the model's weights in place. */
static int build_net(onnx_importer *im, osp_net **out) {
    size_t len = 0;
    for (int i = 0; i < im->n_sections; i++) len += strlen(im->sections[i]) + 1;
    char *text = osp_alloc(len + 1), *p = text;
    if (!text) return OSP_ENOMEM;
    for (int i = 0; i < im->n_sections; i++) p += sprintf(p, "%s%s", i > 1 ? "\n" : "", im->sections[i]);
    osp_net *net;
    int rc = osp_net_from_spec(text, (size_t)(p - text), im->file, 0, &net);
    osp_free(text);
    if (rc) return rc;
    int set = 0;
    for (int i = 0; i < im->n_weights; i++) {
        const onnx_weight *w = &im->weights[i];
        int k = osp_graph_find_param(net->graph, w->name);
        if (k < 0 || osp_graph_param(net->graph, k)->numel != w->numel) {
            osp_net_free(net);
            return osp_error(OSP_ESHAPE, "%s: internal: weight '%s' does not fit its layer",
                             im->file, w->name);
        }
        memcpy(osp_graph_param_data(net->graph, k), w->data, sizeof(float) * (size_t)w->numel);
        set++;
    }
    if (set != osp_graph_param_count(net->graph)) {
        osp_net_free(net);
        return osp_error(OSP_ESTATE, "%s: internal: %d of %d parameters set", im->file, set,
                         osp_graph_param_count(net->graph));
    }
    osp_graph_weights_changed(net->graph);
    *out = net;
    return OSP_OK;
}

static void importer_free(onnx_importer *im) {
    for (int64_t i = 0; i < im->cap_values; i++)
        if (im->values[i].name) osp__onnx_const_free(&im->values[i].c);
    osp_free(im->values);
    for (int i = 0; i < im->n_sections; i++) osp_free(im->sections[i]);
    osp_free(im->sections);
    for (int i = 0; i < im->n_weights; i++) osp_free(im->weights[i].data);
    osp_free(im->weights);
    osp_graph_free(im->shapes);
}

static int import_model(onnx_importer *im, osp_net **out) {
    int rc;
    if (!im->graph) return osp_error(OSP_EFORMAT, "%s: the model has no graph", im->file);
    if ((rc = check_opset(im)) || (rc = register_initializers(im))) return rc;
    osp_shape in;
    if ((rc = read_input(im, &in))) return rc;
    if ((rc = osp_graph_new(&in, &im->shapes))) return rc;
    if ((rc = net_section(im, &in))) return rc;
    if (im->graph->n_output < 1 || !im->graph->output[0]->name)
        return osp_error(OSP_EFORMAT, "%s: the model has no output", im->file);
    if (im->graph->n_output > 1)
        osp_log(OSP_LOG_WARN, "%s: the model has %zu outputs; osprey keeps the first, '%s'",
                im->file, im->graph->n_output, im->graph->output[0]->name);
    const char *output = im->graph->output[0]->name;
    int *order = NULL, n_order = 0;
    if ((rc = order_nodes(im, output, &order, &n_order))) return rc;
    for (int k = 0; k < n_order && !rc; k++) {
        const Osp__Onnx__NodeProto *n = im->graph->node[order[k]];
        char desc[200];
        if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx")) {
            rc = osp_error(OSP_ENOTSUP, "%s: %s is from operator domain '%s', which osprey does "
                           "not implement", im->file, osp__onnx_node_desc(n, desc, sizeof desc),
                           n->domain);
            break;
        }
        if ((rc = osp__onnx_check_version(im, n))) break;
        int all_const = osp__onnx_is_foldable(n->op_type);
        for (size_t i = 0; i < n->n_input && all_const; i++) {
            onnx_value *v = osp__onnx_input(im, n, i);
            if (v && v->kind != ONNX_VAL_CONST && !(i == 0 && !strcmp(n->op_type, "Shape")))
                all_const = 0;
        }
        rc = all_const ? osp__onnx_fold(im, n) : osp__onnx_map_node(im, n);
    }
    osp_free(order);
    if (rc) return rc;
    onnx_value *v = osp__onnx_value_find(im, output);
    if (!v || v->kind != ONNX_VAL_LAYER || v->node == 0)
        return osp_error(OSP_ENOTSUP, "%s: output '%s' is a constant or the input itself; "
                         "nothing to compute", im->file, output);
    if (!osp__onnx_layout_plain(&v->layout))
        return osp_error(OSP_ENOTSUP, "%s: output '%s' has its batch in axis %d, not first",
                         im->file, output, v->layout.b);
    if (v->node != osp_graph_node_count(im->shapes) - 1)
        return osp_error(OSP_ESTATE, "%s: internal: the output is not the last layer", im->file);
    return build_net(im, out);
}

/* metadata_props[key] of the model, or NULL. */
static const char *model_meta(const Osp__Onnx__ModelProto *m, const char *key) {
    for (size_t i = 0; i < m->n_metadata_props; i++)
        if (m->metadata_props[i]->key && m->metadata_props[i]->value &&
            !strcmp(m->metadata_props[i]->key, key))
            return m->metadata_props[i]->value;
    return NULL;
}

/* "osprey.mean" / "osprey.std" (a JSON array of 1 to OSP_MAX_CHANNELS
 * finite numbers, std positive) into v; 0 if absent or unusable. */
static int meta_floats(const Osp__Onnx__ModelProto *m, const char *key, int positive, float *v) {
    const char *s = model_meta(m, key);
    cJSON *a = s ? cJSON_Parse(s) : NULL;
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
    if (n > OSP_MAX_CHANNELS) n = 0;
    for (int i = 0; i < n; i++) {
        cJSON *x = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || (positive && !(x->valuedouble > 0))) {
            n = 0;
            break;
        }
        v[i] = (float)x->valuedouble;
    }
    cJSON_Delete(a);
    if (s && !n) osp_log(OSP_LOG_WARN, "ignoring the model's unusable metadata %s", key);
    return n;
}

/* "osprey.labels": a JSON array of strings, one per output, kept when it
 * fits the network (an exported osprey model's class names). */
static int meta_labels(const Osp__Onnx__ModelProto *m, const char *name, osp_net *net) {
    const char *s = model_meta(m, "osprey.labels");
    if (!s || net->labels) return OSP_OK;
    cJSON *a = cJSON_Parse(s);
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1, rc = OSP_OK;
    if (n == 0) { /* the exporting model had none */
        cJSON_Delete(a);
        return OSP_OK;
    }
    const char **names = n == net->n_classes ? osp_calloc((size_t)n, sizeof *names) : NULL;
    for (int i = 0; names && i < n; i++) {
        cJSON *x = cJSON_GetArrayItem(a, i);
        names[i] = cJSON_IsString(x) ? x->valuestring : NULL;
        if (!names[i]) {
            osp_free(names);
            names = NULL;
        }
    }
    if (names) rc = osp_net_set_labels(net, names, n);
    else
        osp_log(OSP_LOG_WARN, "%s: ignoring metadata osprey.labels: not one name for each of the %d outputs",
                name, net->n_classes);
    osp_free(names);
    cJSON_Delete(a);
    return rc;
}

/* "osprey.multi_label" ("1") and "osprey.thresholds" (a JSON array of one
 * threshold in (0, 1) per output): an exported multi-label model's way of
 * reading its logits. Like the labels they are kept when they fit the
 * network, and ignored with a warning when they do not. */
static void meta_multi_label(const Osp__Onnx__ModelProto *m, const char *name, osp_net *net) {
    const char *flag = model_meta(m, "osprey.multi_label"), *t = model_meta(m, "osprey.thresholds");
    if (!flag || strcmp(flag, "1")) {
        if (flag && strcmp(flag, "0"))
            osp_log(OSP_LOG_WARN, "%s: ignoring metadata osprey.multi_label: not \"0\" or \"1\"", name);
        if (t) osp_log(OSP_LOG_WARN, "%s: ignoring metadata osprey.thresholds: the model is not multi-label", name);
        return;
    }
    osp_net_set_multi_label(net, 1);
    if (!t) return;
    cJSON *a = cJSON_Parse(t);
    const int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    float *v = n == net->n_classes && n > 0 ? osp_alloc((size_t)n * sizeof *v) : NULL;
    int ok = v != NULL;
    for (int i = 0; ok && i < n; i++) {
        cJSON *x = cJSON_GetArrayItem(a, i);
        ok = cJSON_IsNumber(x) && isfinite(x->valuedouble);
        if (ok) v[i] = (float)x->valuedouble;
    }
    if (!ok || osp_net_set_thresholds(net, v, n))
        osp_log(OSP_LOG_WARN, "%s: ignoring metadata osprey.thresholds: not one threshold in (0, 1) for each of "
                "the %d outputs", name, net->n_classes);
    osp_free(v);
    cJSON_Delete(a);
}

/* The model in data; dir: the folder its external data lies in (NULL:
 * none may be read). */
static int import_from(const void *data, size_t size, const char *name, const char *dir,
                       const osp_onnx_import_options *opt, osp_net **out) {
    *out = NULL;
    osp_onnx_import_options defaults = {0};
    if (!opt) opt = &defaults;
    size_t max = opt->max_bytes ? opt->max_bytes : DEFAULT_MAX_BYTES;
    if (size > max)
        return osp_error(OSP_ERANGE, "%s: %zu bytes, more than the %zu allowed", name, size, max);
    Osp__Onnx__ModelProto *model = osp__onnx__model_proto__unpack(NULL, size, data);
    if (!model)
        return osp_error(OSP_EFORMAT, "%s: not an ONNX model (the protobuf does not parse: "
                         "truncated or another format)", name);
    /* A model osprey exported says how its input is normalised and names
     * its classes: kept unless the caller says otherwise. */
    osp_onnx_import_options o = *opt;
    if (!o.n_mean) o.n_mean = meta_floats(model, "osprey.mean", 0, o.mean);
    if (!o.n_std) o.n_std = meta_floats(model, "osprey.std", 1, o.std);
    size_t external_read = 0;
    onnx_importer im = {.file = name,
                        .dir = dir,
                        .external_read = &external_read,
                        .external_max = opt->max_bytes ? opt->max_bytes : DEFAULT_MAX_EXTERNAL_BYTES,
                        .model = model,
                        .graph = model->graph,
                        .opt = &o};
    int rc = import_model(&im, out);
    if (!rc && (rc = meta_labels(model, name, *out))) {
        osp_net_free(*out);
        *out = NULL;
    }
    if (!rc) meta_multi_label(model, name, *out);
    importer_free(&im);
    osp__onnx__model_proto__free_unpacked(model, NULL);
    return rc;
}

int osp_onnx_import(const void *data, size_t size, const char *name,
                    const osp_onnx_import_options *opt, osp_net **out) {
    return import_from(data, size, name, NULL, opt, out);
}

int osp_onnx_import_file(const char *path, const osp_onnx_import_options *opt, osp_net **out) {
    osp_mapped_file m;
    *out = NULL;
    /* the folder of the file, where ONNX puts a large model's weights */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir)
        return osp_error(OSP_ERANGE, "%s: the path is too long", path);
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int rc = osp_file_map(path, &m);
    if (rc) return rc;
    rc = import_from(m.data, m.len, path, dir, opt, out);
    osp_file_unmap(&m);
    return rc;
}
