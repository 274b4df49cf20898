/* Models and checkpoints as safetensors files (see include/osprey/model.h). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "osprey/io.h"
#include "osprey/model.h"

/* ---- writing --------------------------------------------------------------- */

static char *json_floats(const float *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

char *osp__json_labels(const osp_net *net) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && net->labels && i < net->n_classes; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(net->labels[i]));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

static char *json_optim(const osp_optim *opt) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", osp_optim_name(opt->cfg.kind));
    cJSON_AddNumberToObject(o, "momentum", opt->cfg.momentum);
    cJSON_AddBoolToObject(o, "nesterov", opt->cfg.nesterov);
    cJSON_AddNumberToObject(o, "weight_decay", opt->cfg.weight_decay);
    cJSON_AddNumberToObject(o, "beta1", opt->cfg.beta1);
    cJSON_AddNumberToObject(o, "beta2", opt->cfg.beta2);
    cJSON_AddNumberToObject(o, "eps", opt->cfg.eps);
    cJSON_AddNumberToObject(o, "t", (double)opt->t);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* The hash head: tensors "hash.weight" (K x D) and "hash.bias" (K), and
 * the metadata "hash", a JSON object {"bits", "dim", "layer", "normalize",
 * "method"}. */
static int save_hash(osp_st_writer *w, const osp_net_hash *h) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return OSP_ENOMEM;
    cJSON_AddNumberToObject(o, "bits", h->bits);
    cJSON_AddNumberToObject(o, "dim", h->dim);
    cJSON_AddStringToObject(o, "layer", h->layer);
    cJSON_AddNumberToObject(o, "normalize", h->normalize);
    cJSON_AddStringToObject(o, "method", h->method);
    char *meta = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!meta) return OSP_ENOMEM;
    osp_shape ws = {.ndim = 2, .dim = {h->bits, h->dim}}, bs = {.ndim = 1, .dim = {h->bits}};
    int rc = osp_st_writer_meta(w, "hash", meta);
    if (!rc) rc = osp_st_writer_add(w, "hash.weight", OSP_DTYPE_F32, &ws, h->weight);
    if (!rc) rc = osp_st_writer_add(w, "hash.bias", OSP_DTYPE_F32, &bs, h->bias);
    cJSON_free(meta);
    return rc;
}

static int save(const osp_net *net, const osp_optim *opt, const osp_train_state *state,
                const char *path) {
    osp_graph *g = net->graph;
    osp_st_writer *w;
    if (osp_st_writer_new(&w)) return OSP_ENOMEM;
    char *mean = json_floats(net->mean, OSP_MAX_CHANNELS);
    char *std = json_floats(net->std, OSP_MAX_CHANNELS);
    char *labels = osp__json_labels(net);
    char *optim = opt ? json_optim(opt) : NULL;
    char input[96], num[32], seed[32], version[16];
    osp_shape_format(&net->input, input, sizeof input);
    snprintf(version, sizeof version, "%d", OSP_MODEL_FORMAT_VERSION);
    int rc = (!mean || !std || !labels || (opt && !optim)) ? OSP_ENOMEM : OSP_OK;
    if (!rc) rc = osp_st_writer_meta(w, "format", "osprey");
    if (!rc) rc = osp_st_writer_meta(w, "version", version);
    if (!rc) rc = osp_st_writer_meta(w, "kind", opt ? "checkpoint" : "model");
    if (!rc) rc = osp_st_writer_meta(w, "spec", net->spec_text);
    if (!rc) rc = osp_st_writer_meta(w, "input", input);
    if (!rc) rc = osp_st_writer_meta(w, "mean", mean);
    if (!rc) rc = osp_st_writer_meta(w, "std", std);
    if (!rc) rc = osp_st_writer_meta(w, "labels", labels);
    /* Only multi-label models carry these: single-label files are as before. */
    if (!rc && net->multi_label) rc = osp_st_writer_meta(w, "multi_label", "1");
    if (!rc && net->multi_label && net->thresholds) {
        char *t = json_floats(net->thresholds, net->n_classes);
        rc = t ? osp_st_writer_meta(w, "thresholds", t) : OSP_ENOMEM;
        cJSON_free(t);
    }
    /* Only int8 models carry it (docs/quantization.md). */
    if (!rc && net->quantization) rc = osp_st_writer_meta(w, "quantization", net->quantization);
    /* Only models with a hash head carry it: other files are as before. */
    if (!rc && net->hash) rc = save_hash(w, net->hash);
    for (int i = 0; !rc && i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        rc = osp_st_writer_add(w, p->name, OSP_DTYPE_F32, &p->shape, osp_graph_param_data(g, i));
    }
    if (opt && !rc) {
        int64_t n;
        osp_graph_weights(g, &n);
        if (n != opt->n) rc = osp_error(OSP_EINVAL, "optimizer state does not match the network");
        osp_shape flat = osp_shape_make(1, &n);
        snprintf(num, sizeof num, "%" PRId64, state->step);
        snprintf(seed, sizeof seed, "%" PRIu64, state->seed);
        if (!rc) rc = osp_st_writer_meta(w, "optimizer", optim);
        if (!rc) rc = osp_st_writer_meta(w, "step", num);
        if (!rc) rc = osp_st_writer_meta(w, "seed", seed);
        if (!rc && state->config) rc = osp_st_writer_meta(w, "config", state->config);
        if (!rc) rc = osp_st_writer_add(w, "optim.m", OSP_DTYPE_F32, &flat, opt->m);
        if (!rc && opt->v) rc = osp_st_writer_add(w, "optim.v", OSP_DTYPE_F32, &flat, opt->v);
    }
    if (!rc) rc = osp_st_writer_save(w, path);
    osp_st_writer_free(w);
    cJSON_free(mean);
    cJSON_free(std);
    cJSON_free(labels);
    cJSON_free(optim);
    return rc;
}

int osp_model_save(const osp_net *net, const char *path) { return save(net, NULL, NULL, path); }

int osp_checkpoint_save(const osp_net *net, const osp_optim *opt, const osp_train_state *state,
                        const char *path) {
    if (!opt || !state) return osp_error(OSP_EINVAL, "a checkpoint needs the optimizer and state");
    return save(net, opt, state, path);
}

/* ---- reading --------------------------------------------------------------- */

static const char *required_meta(const osp_safetensors *st, const char *name, const char *key,
                                 int *rc) {
    const char *v = osp_st_meta(st, key);
    if (!v && !*rc)
        *rc = osp_error(OSP_EFORMAT, "%s: not an osprey model: no '%s' in its metadata", name, key);
    return v;
}

static int read_floats(const char *json, const char *name, const char *key, float *out, int n) {
    cJSON *a = cJSON_Parse(json);
    int rc = OSP_OK;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
        rc = osp_error(OSP_EFORMAT, "%s: metadata '%s' must be an array of %d numbers", name, key, n);
    } else {
        for (int i = 0; i < n; i++) {
            cJSON *v = cJSON_GetArrayItem(a, i);
            if (!cJSON_IsNumber(v)) {
                rc = osp_error(OSP_EFORMAT, "%s: metadata '%s' must hold numbers", name, key);
                break;
            }
            out[i] = (float)v->valuedouble;
        }
    }
    cJSON_Delete(a);
    return rc;
}

static int read_labels(const char *json, const char *name, osp_net *net) {
    cJSON *a = cJSON_Parse(json);
    int rc = OSP_OK, n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (n < 0) rc = osp_error(OSP_EFORMAT, "%s: metadata 'labels' must be a JSON array", name);
    else if (n > 0 && n != net->n_classes)
        rc = osp_error(OSP_EFORMAT, "%s: %d labels for a network with %d outputs", name, n,
                       net->n_classes);
    if (!rc && n > 0) {
        const char **names = osp_calloc((size_t)n, sizeof *names);
        if (!names) rc = OSP_ENOMEM;
        for (int i = 0; !rc && i < n; i++) {
            cJSON *v = cJSON_GetArrayItem(a, i);
            if (!cJSON_IsString(v)) rc = osp_error(OSP_EFORMAT, "%s: labels must be strings", name);
            else names[i] = v->valuestring;
        }
        if (!rc) rc = osp_net_set_labels(net, names, n);
        osp_free((void *)names);
    }
    cJSON_Delete(a);
    return rc;
}

static int copy_tensor(const osp_safetensors *st, const char *name, const char *tensor,
                       const osp_shape *shape, float *dst) {
    const osp_st_tensor *t = osp_st_find(st, tensor);
    if (!t) return osp_error(OSP_EFORMAT, "%s: tensor '%s' is missing", name, tensor);
    if (t->dtype != OSP_DTYPE_F32 || !osp_shape_equal(&t->shape, shape)) {
        char want[96], got[96];
        osp_shape_format(shape, want, sizeof want);
        osp_shape_format(&t->shape, got, sizeof got);
        return osp_error(OSP_EFORMAT, "%s: tensor '%s' is %s %s, expected F32 %s", name, tensor,
                         osp_dtype_name(t->dtype), got, want);
    }
    memcpy(dst, t->data, t->nbytes);
    return OSP_OK;
}

static int read_optimizer(const osp_safetensors *st, const char *name, osp_net *net,
                          osp_optim **out) {
    int rc = OSP_OK;
    const char *json = required_meta(st, name, "optimizer", &rc);
    if (rc) return rc;
    cJSON *o = cJSON_Parse(json);
    cJSON *kind = cJSON_GetObjectItem(o, "kind");
    osp_optim_kind k;
    if (!cJSON_IsString(kind) || osp_optim_parse(kind->valuestring, &k)) {
        cJSON_Delete(o);
        return osp_error(OSP_EFORMAT, "%s: metadata 'optimizer' is malformed", name);
    }
    osp_optim_config cfg = osp_optim_defaults(k);
    const char *fields[] = {"momentum", "weight_decay", "beta1", "beta2", "eps", "t"};
    double value[6] = {0};
    for (int i = 0; i < 6; i++) {
        cJSON *v = cJSON_GetObjectItem(o, fields[i]);
        if (!cJSON_IsNumber(v)) {
            rc = osp_error(OSP_EFORMAT, "%s: optimizer field '%s' is missing", name, fields[i]);
            break;
        }
        value[i] = v->valuedouble;
    }
    cfg.momentum = (float)value[0];
    cfg.weight_decay = (float)value[1];
    cfg.beta1 = value[2];
    cfg.beta2 = value[3];
    cfg.eps = (float)value[4];
    double t = value[5];
    cfg.nesterov = cJSON_IsTrue(cJSON_GetObjectItem(o, "nesterov"));
    cJSON_Delete(o);
    if (!rc && !(t >= 0 && t <= 1e15))
        rc = osp_error(OSP_EFORMAT, "%s: optimizer step out of range", name);
    if (rc) return rc;
    int64_t n;
    osp_graph_weights(net->graph, &n);
    osp_optim *opt;
    if (osp_optim_new(&cfg, n, &opt)) return osp_error(OSP_EFORMAT, "%s: %s", name, osp_last_error());
    opt->t = (int64_t)t;
    osp_shape flat = osp_shape_make(1, &n);
    rc = copy_tensor(st, name, "optim.m", &flat, opt->m);
    if (!rc && opt->v) rc = copy_tensor(st, name, "optim.v", &flat, opt->v);
    if (rc) osp_optim_free(opt);
    else *out = opt;
    return rc;
}

static int read_state(const osp_safetensors *st, const char *name, osp_train_state *state) {
    int rc = OSP_OK;
    const char *step = required_meta(st, name, "step", &rc);
    const char *seed = required_meta(st, name, "seed", &rc);
    if (rc) return rc;
    char *end;
    long long s = strtoll(step, &end, 10);
    if (*end || *step == '\0' || s < 0)
        return osp_error(OSP_EFORMAT, "%s: metadata 'step' is not a count", name);
    unsigned long long sd = strtoull(seed, &end, 10);
    if (*end || *seed == '\0') return osp_error(OSP_EFORMAT, "%s: metadata 'seed' is not a number", name);
    state->step = s;
    state->seed = sd;
    state->config = NULL;
    const char *config = osp_st_meta(st, "config");
    if (config) {
        size_t len = strlen(config);
        state->config = osp_alloc(len + 1);
        if (!state->config) return OSP_ENOMEM;
        memcpy(state->config, config, len + 1);
    }
    return OSP_OK;
}

/* Optional: "multi_label": "1" and "thresholds": [n_classes floats]. */
static int read_multi_label(const osp_safetensors *st, const char *name, osp_net *net) {
    const char *m = osp_st_meta(st, "multi_label"), *t = osp_st_meta(st, "thresholds");
    if (!m) {
        if (t) return osp_error(OSP_EFORMAT, "%s: 'thresholds' in a model that is not multi-label", name);
        return OSP_OK;
    }
    if (strcmp(m, "1") && strcmp(m, "0"))
        return osp_error(OSP_EFORMAT, "%s: metadata 'multi_label' must be \"0\" or \"1\"", name);
    osp_net_set_multi_label(net, m[0] == '1');
    if (!t) return OSP_OK;
    if (net->n_classes <= 0 || net->n_classes > (1 << 20))
        return osp_error(OSP_EFORMAT, "%s: thresholds for %d outputs", name, net->n_classes);
    float *v = osp_alloc((size_t)net->n_classes * sizeof *v);
    if (!v) return OSP_ENOMEM;
    int rc = read_floats(t, name, "thresholds", v, net->n_classes);
    if (!rc && osp_net_set_thresholds(net, v, net->n_classes))
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'thresholds': %s", name, osp_last_error());
    osp_free(v);
    return rc;
}

/* An integer-valued JSON number in [lo, hi]. */
static int json_int(const cJSON *o, const char *key, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return 0;
    *out = (int)v->valuedouble;
    return 1;
}

/* Optional: the hash head (see save_hash). Its metadata and its tensors
 * come together, agree with each other and with the network's layer. */
static int read_hash(const osp_safetensors *st, const char *name, osp_net *net) {
    const char *meta = osp_st_meta(st, "hash");
    const osp_st_tensor *w = osp_st_find(st, "hash.weight"), *b = osp_st_find(st, "hash.bias");
    if (!meta) {
        if (w || b)
            return osp_error(OSP_EFORMAT, "%s: tensor '%s' without the 'hash' metadata that describes it", name,
                             w ? "hash.weight" : "hash.bias");
        return OSP_OK;
    }
    cJSON *o = cJSON_Parse(meta);
    const cJSON *layer = cJSON_GetObjectItemCaseSensitive(o, "layer");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(o, "method");
    osp_net_hash h = {0};
    int rc = OSP_OK;
    if (!cJSON_IsObject(o))
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash' must be a JSON object", name);
    else if (!json_int(o, "bits", 8, 1024, &h.bits) || h.bits % 8)
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash': bits must be a multiple of 8 from 8 to 1024", name);
    else if (!json_int(o, "dim", 1, 65536, &h.dim))
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash': dim must be from 1 to 65536", name);
    else if (!json_int(o, "normalize", 0, 1, &h.normalize))
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash': normalize must be 0 or 1", name);
    else if (!cJSON_IsString(layer) || !*layer->valuestring)
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash': no layer", name);
    else if (!cJSON_IsString(method) || strlen(method->valuestring) >= sizeof h.method)
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash': no method", name);
    else if (!w || !b)
        rc = osp_error(OSP_EFORMAT, "%s: metadata 'hash' without the tensor '%s'", name,
                       w ? "hash.bias" : "hash.weight");
    if (!rc) {
        osp_shape ws = {.ndim = 2, .dim = {h.bits, h.dim}}, bs = {.ndim = 1, .dim = {h.bits}};
        h.weight = osp_alloc((size_t)h.bits * (size_t)h.dim * sizeof *h.weight);
        h.bias = osp_alloc((size_t)h.bits * sizeof *h.bias);
        if (!h.weight || !h.bias) rc = OSP_ENOMEM;
        if (!rc) rc = copy_tensor(st, name, "hash.weight", &ws, h.weight);
        if (!rc) rc = copy_tensor(st, name, "hash.bias", &bs, h.bias);
    }
    if (!rc) {
        h.layer = layer->valuestring;
        strcpy(h.method, method->valuestring);
        if (osp_net_set_hash(net, &h)) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", osp_last_error());
            rc = osp_error(OSP_EFORMAT, "%s: %s", name, msg);
        }
    }
    osp_free(h.weight);
    osp_free(h.bias);
    cJSON_Delete(o);
    return rc;
}

static int from_safetensors(const osp_safetensors *st, const char *name, osp_net **out,
                            osp_optim **opt, osp_train_state *state) {
    int rc = OSP_OK;
    const char *format = required_meta(st, name, "format", &rc);
    const char *version = required_meta(st, name, "version", &rc);
    const char *kind = required_meta(st, name, "kind", &rc);
    const char *spec = required_meta(st, name, "spec", &rc);
    const char *mean = required_meta(st, name, "mean", &rc);
    const char *std = required_meta(st, name, "std", &rc);
    const char *labels = required_meta(st, name, "labels", &rc);
    if (rc) return rc;
    if (strcmp(format, "osprey")) return osp_error(OSP_EFORMAT, "%s: not an osprey model", name);
    if (atoi(version) != OSP_MODEL_FORMAT_VERSION)
        return osp_error(OSP_ENOTSUP, "%s: model format version %s; this osprey reads version %d",
                         name, version, OSP_MODEL_FORMAT_VERSION);
    if (opt && strcmp(kind, "checkpoint"))
        return osp_error(OSP_EFORMAT,
                         "%s: a model, not a checkpoint: it holds no optimizer state to resume", name);
    osp_net *net;
    char where[300];
    snprintf(where, sizeof where, "%s (spec)", name);
    if ((rc = osp_net_from_spec(spec, strlen(spec), where, 0, &net))) return rc;
    rc = read_floats(mean, name, "mean", net->mean, OSP_MAX_CHANNELS);
    if (!rc) rc = read_floats(std, name, "std", net->std, OSP_MAX_CHANNELS);
    for (int c = 0; !rc && c < OSP_MAX_CHANNELS; c++)
        if (!(net->std[c] > 0.0f)) rc = osp_error(OSP_EFORMAT, "%s: 'std' must be positive", name);
    if (!rc) rc = read_labels(labels, name, net);
    if (!rc) rc = read_multi_label(st, name, net);
    const char *quant = osp_st_meta(st, "quantization");
    if (!rc && quant) rc = osp_net_set_quantization(net, quant, name);
    if (!rc) rc = read_hash(st, name, net);
    for (int i = 0; !rc && i < osp_graph_param_count(net->graph); i++) {
        const osp_param *p = osp_graph_param(net->graph, i);
        rc = copy_tensor(st, name, p->name, &p->shape, osp_graph_param_data(net->graph, i));
    }
    if (!rc && opt) rc = read_optimizer(st, name, net, opt);
    if (!rc && state) rc = read_state(st, name, state);
    if (rc) {
        if (opt && *opt) {
            osp_optim_free(*opt);
            *opt = NULL;
        }
        osp_net_free(net);
        return rc;
    }
    *out = net;
    return OSP_OK;
}

int osp_checkpoint_parse(const void *buf, size_t len, const char *name, osp_net **net,
                         osp_optim **opt, osp_train_state *state) {
    osp_safetensors *st;
    *net = NULL;
    if (opt) *opt = NULL;
    int rc = osp_st_parse(buf, len, name, &st);
    if (rc) return rc;
    rc = from_safetensors(st, name, net, opt, state);
    osp_st_free(st);
    return rc;
}

int osp_model_load(const char *path, osp_net **out) {
    osp_safetensors *st;
    *out = NULL;
    int rc = osp_st_load(path, &st);
    if (rc) return rc;
    rc = from_safetensors(st, path, out, NULL, NULL);
    osp_st_free(st);
    return rc;
}

int osp_checkpoint_load(const char *path, osp_net **net, osp_optim **opt,
                        osp_train_state *state) {
    osp_safetensors *st;
    *net = NULL;
    *opt = NULL;
    int rc = osp_st_load(path, &st);
    if (rc) return rc;
    rc = from_safetensors(st, path, net, opt, state);
    osp_st_free(st);
    return rc;
}
