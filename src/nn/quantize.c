/* Int8 quantisation of a network's convolutions: calibration of each
 * layer's input range, and the "quantization" record a model keeps
 * (docs/quantization.md).
 *
 * Weights need no calibration: the backend quantises the filters the
 * forward uses (batch norm folded in) per output channel when it plans.
 * Inputs are quantised per tensor with a scale and a zero point, so that
 * the layer's range [lo, hi] (which always holds 0, so that padding is
 * exact) maps onto 0..255. Calibration runs the float32 network twice
 * over the same data: the first pass finds each input's minimum and
 * maximum, the second fills a histogram over that range, from which the
 * percentile method takes the values below which p% (and above which
 * 100 - p%) of the inputs lie: a few outliers then do not stretch the
 * scale for all the rest. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "quantize.h"

#define CALIB_BINS 4096

struct osp_calib_stats {
    int pass; /* 0: range, 1: histogram */
    double lo, hi;
    int64_t count;
    int64_t bins[CALIB_BINS];
};

void osp__calib_stats_free(struct osp_calib_stats *s) { osp_free(s); }

void osp__calib_observe(struct osp_calib_stats *s, const float *x, int64_t n) {
    if (s->pass == 0) {
        double lo = s->lo, hi = s->hi;
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(x[i])) continue;
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
        }
        s->lo = lo;
        s->hi = hi;
        s->count += n;
        return;
    }
    const double width = (s->hi - s->lo) / CALIB_BINS;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        int b = width > 0 ? (int)((x[i] - s->lo) / width) : 0;
        b = b < 0 ? 0 : b >= CALIB_BINS ? CALIB_BINS - 1 : b;
        s->bins[b]++;
    }
}

static int is_conv(const osp_node *n) { return n->op && !strcmp(n->op->name, "conv"); }

/* Ungrouped convolutions: the layers an int8 kernel takes. */
static int quantizable(const osp_node *n) {
    return is_conv(n) && ((const conv_attrs *)n->attrs)->groups == 1;
}

static void drop_stats(osp_net *net) {
    osp_graph *g = net->graph;
    for (int i = 0; i < osp_graph_node_count(g); i++) {
        osp_node *n = osp_graph_node(g, i);
        if (!is_conv(n)) continue;
        conv_attrs *a = n->attrs;
        osp__calib_stats_free(a->calib);
        a->calib = NULL;
        a->qout_for = NULL; /* a layer being calibrated reads float32 */
    }
}

int osp_net_calibrate_begin(osp_net *net) {
    osp_graph *g = net->graph;
    int layers = 0;
    drop_stats(net);
    for (int i = 0; i < osp_graph_node_count(g); i++) {
        osp_node *n = osp_graph_node(g, i);
        if (!quantizable(n)) continue;
        conv_attrs *a = n->attrs;
        a->calib = osp_calloc(1, sizeof *a->calib);
        if (!a->calib) {
            drop_stats(net);
            return OSP_ENOMEM;
        }
        a->calib->lo = 0; /* the range always holds 0 */
        a->calib->hi = 0;
        layers++;
    }
    return layers;
}

int osp_net_calibrate_pass(osp_net *net) {
    osp_graph *g = net->graph;
    for (int i = 0; i < osp_graph_node_count(g); i++) {
        osp_node *n = osp_graph_node(g, i);
        if (!is_conv(n) || !((conv_attrs *)n->attrs)->calib) continue;
        struct osp_calib_stats *s = ((conv_attrs *)n->attrs)->calib;
        if (s->pass != 0)
            return osp_error(OSP_EINVAL, "calibration: the histogram pass has begun already");
        s->pass = 1;
    }
    return OSP_OK;
}

/* The value below which a fraction q of the histogram's mass lies. */
static double quantile(const struct osp_calib_stats *s, int64_t total, double q) {
    const double width = (s->hi - s->lo) / CALIB_BINS;
    const double want = q * (double)total;
    double seen = 0;
    for (int b = 0; b < CALIB_BINS; b++) {
        if (seen + (double)s->bins[b] >= want && s->bins[b] > 0) {
            const double within = (want - seen) / (double)s->bins[b];
            return s->lo + width * (b + within);
        }
        seen += (double)s->bins[b];
    }
    return s->hi;
}

/* Scale and zero point for an input range [lo, hi] holding 0. */
static void scale_of(double lo, double hi, float *scale, int *zero) {
    if (lo > 0) lo = 0;
    if (hi < 0) hi = 0;
    if (!(hi - lo > 1e-30)) {
        *scale = 1.0f;
        *zero = 0;
        return;
    }
    const double s = (hi - lo) / 255.0;
    int z = (int)lrint(-lo / s);
    *zero = z < 0 ? 0 : z > 255 ? 255 : z;
    *scale = (float)s;
}

static void clear_quant(osp_net *net) {
    osp_graph *g = net->graph;
    for (int i = 0; i < osp_graph_node_count(g); i++) {
        osp_node *n = osp_graph_node(g, i);
        if (!is_conv(n)) continue;
        conv_attrs *a = n->attrs;
        a->quant = 0;
        a->qprepared_for = NULL;
        a->qout_for = NULL;
    }
    osp_free(net->quantization);
    net->quantization = NULL;
}

static char *copy_text(const char *s) {
    const size_t len = strlen(s) + 1;
    char *c = osp_alloc(len);
    if (c) memcpy(c, s, len);
    return c;
}

int osp_net_calibrate_end(osp_net *net, osp_calib_method method, double percentile,
                          int64_t images) {
    if (method == OSP_CALIB_PERCENTILE && !(percentile > 50 && percentile <= 100))
        return osp_error(OSP_EINVAL, "calibration: percentile %g is not in (50, 100]", percentile);
    osp_graph *g = net->graph;
    clear_quant(net);
    cJSON *root = cJSON_CreateObject(), *layers = cJSON_CreateObject();
    if (!root || !layers) {
        cJSON_Delete(root);
        cJSON_Delete(layers);
        return OSP_ENOMEM;
    }
    char how[64];
    if (method == OSP_CALIB_MINMAX) snprintf(how, sizeof how, "minmax");
    else snprintf(how, sizeof how, "percentile %g", percentile);
    cJSON_AddStringToObject(root, "scheme", "int8");
    cJSON_AddStringToObject(root, "weights", "per-channel symmetric int8");
    cJSON_AddStringToObject(root, "inputs", "per-tensor asymmetric uint8");
    cJSON_AddStringToObject(root, "calibration", how);
    cJSON_AddNumberToObject(root, "images", (double)images);
    int rc = OSP_OK, done = 0;
    for (int i = 0; !rc && i < osp_graph_node_count(g); i++) {
        osp_node *n = osp_graph_node(g, i);
        if (!is_conv(n)) continue;
        conv_attrs *a = n->attrs;
        struct osp_calib_stats *s = a->calib;
        if (!s) continue;
        if (s->count == 0) {
            rc = osp_error(OSP_EINVAL, "calibration: layer '%s' saw no input", n->name);
            break;
        }
        if (method == OSP_CALIB_PERCENTILE && s->pass != 1) {
            rc = osp_error(OSP_EINVAL, "calibration: the percentile method needs the second pass");
            break;
        }
        double lo = s->lo, hi = s->hi;
        if (method == OSP_CALIB_PERCENTILE) {
            int64_t total = 0;
            for (int b = 0; b < CALIB_BINS; b++) total += s->bins[b];
            if (total > 0) {
                const double q = percentile / 100.0;
                if (s->lo < 0) lo = quantile(s, total, 1.0 - q);
                if (s->hi > 0) hi = quantile(s, total, q);
            }
        }
        float scale;
        int zero;
        scale_of(lo, hi, &scale, &zero);
        cJSON *pair = cJSON_CreateArray();
        if (!pair) {
            rc = OSP_ENOMEM;
            break;
        }
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(scale));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber(zero));
        cJSON_AddItemToObject(layers, n->name, pair);
        done++;
    }
    cJSON_AddItemToObject(root, "layers", layers);
    drop_stats(net);
    char *text = rc ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!rc && !text) rc = OSP_ENOMEM;
    if (!rc && !done) rc = osp_error(OSP_EINVAL, "calibration: no layer to quantise");
    if (!rc) rc = osp_net_set_quantization(net, text, "calibration");
    cJSON_free(text);
    return rc;
}

int osp_net_set_quantization(osp_net *net, const char *json, const char *name) {
    clear_quant(net);
    if (!json) return OSP_OK;
    cJSON *root = cJSON_Parse(json);
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(root, "scheme");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    int rc = OSP_OK;
    if (!cJSON_IsObject(root) || !cJSON_IsString(scheme) || !cJSON_IsObject(layers))
        rc = osp_error(OSP_EFORMAT, "%s: 'quantization' must be an object with 'scheme' and 'layers'",
                       name);
    else if (strcmp(scheme->valuestring, "int8") != 0)
        rc = osp_error(OSP_EFORMAT, "%s: quantization scheme '%s' is not one osprey runs (int8)",
                       name, scheme->valuestring);
    const cJSON *item;
    int count = 0;
    if (!rc) cJSON_ArrayForEach(item, layers) {
            osp_node *n = item->string ? osp_graph_find(net->graph, item->string) : NULL;
            if (!n || !quantizable(n)) {
                rc = osp_error(OSP_EFORMAT, "%s: quantization names '%s', which is not an ungrouped "
                               "convolution of this network", name, item->string ? item->string : "");
                break;
            }
            const cJSON *s = cJSON_GetArrayItem(item, 0), *z = cJSON_GetArrayItem(item, 1);
            if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2 || !cJSON_IsNumber(s) ||
                !cJSON_IsNumber(z) || !(s->valuedouble > 1e-30 && s->valuedouble < 1e30) ||
                z->valuedouble != floor(z->valuedouble) || z->valuedouble < 0 || z->valuedouble > 255) {
                rc = osp_error(OSP_EFORMAT, "%s: quantization of '%s' must be [scale > 0, zero point "
                               "0..255]", name, item->string);
                break;
            }
            conv_attrs *a = n->attrs;
            a->quant = 1;
            a->in_scale = (float)s->valuedouble;
            a->in_zero = (int)z->valuedouble;
            a->qprepared_for = NULL;
            count++;
        }
    if (!rc && count == 0) rc = osp_error(OSP_EFORMAT, "%s: quantization lists no layer", name);
    cJSON_Delete(root);
    if (!rc) {
        net->quantization = copy_text(json);
        if (!net->quantization) rc = OSP_ENOMEM;
    }
    if (rc) clear_quant(net);
    return rc;
}

int osp_net_quantized_layers(const osp_net *net) {
    int count = 0;
    for (int i = 0; net && i < osp_graph_node_count(net->graph); i++) {
        const osp_node *n = osp_graph_node_const(net->graph, i);
        if (is_conv(n) && ((const conv_attrs *)n->attrs)->quant) count++;
    }
    return count;
}
