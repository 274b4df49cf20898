/* A network's classifier (its "head"), and a copy of a network with a new
 * one sized for other classes: what fine-tuning starts from.
 *
 * The head is replaced by rewriting its section of the spec (`outputs` of
 * an [fc], `filters` of a 1x1 [conv]) and building the network again: the
 * spec saved with the model then describes it exactly. Every other
 * parameter and buffer is copied over by name. */
#include <stdio.h>
#include <string.h>

#include "nn/attrs.h"
#include "osprey/nn.h"

/* 1 for a layer that can be a classifier: an [fc], or a [conv] with a 1x1
 * kernel and no groups (a fully convolutional network's). */
static int is_classifier(const osp_node *n) {
    if (!n->op) return 0;
    if (!strcmp(n->op->name, "fc")) return 1;
    if (!strcmp(n->op->name, "conv")) {
        const conv_attrs *a = n->attrs;
        return a && a->kh == 1 && a->kw == 1 && a->groups == 1;
    }
    return 0;
}

static int has_weights(const osp_graph *g, const osp_node *n) {
    for (int i = 0; i < n->n_params; i++)
        if (osp_graph_param(g, n->params[i])->kind == OSP_PARAM_WEIGHT) return 1;
    return 0;
}

/* The layer the logits come from once the layers without weights that
 * merely pass them on (activations, pooling, flatten, dropout) are
 * skipped: the logits' producer. */
static int logits_producer(const osp_net *net) {
    const osp_graph *g = net->graph;
    int id = net->logits_node;
    for (;;) {
        const osp_node *n = osp_graph_node_const(g, id);
        if (id == 0 || has_weights(g, n) || n->n_inputs != 1) return id;
        id = n->inputs[0];
    }
}

int osp_net_find_head(const osp_net *net, const char *layer, int *node) {
    const osp_graph *g = net->graph;
    if (layer) {
        const osp_node *n = NULL;
        for (int i = 1; i < osp_graph_node_count(g) && !n; i++)
            if (!strcmp(osp_graph_node_const(g, i)->name, layer)) n = osp_graph_node_const(g, i);
        if (!n) return osp_error(OSP_ENOENT, "the network has no layer '%s' ('osprey info MODEL' lists them)", layer);
        if (!is_classifier(n))
            return osp_error(OSP_EINVAL, "layer '%s' is a [%s]%s, not a classifier (an [fc], or a "
                             "[conv] with size 1x1)", layer, n->op->name,
                             !strcmp(n->op->name, "conv") ? " larger than 1x1 or grouped" : "");
        *node = n->id;
        return OSP_OK;
    }
    int id = logits_producer(net);
    const osp_node *n = osp_graph_node_const(g, id);
    if (id == 0 || !is_classifier(n))
        return osp_error(OSP_EINVAL, "the network's logits do not come from a classifier (an [fc] or "
                         "a 1x1 [conv]) but from %s%s%s: name one with --head-layer", id ? "layer '" : "its input",
                         id ? n->name : "", id ? "'" : "");
    *node = id;
    return OSP_OK;
}

/* Replaces (or inserts) `key = value` in section `section` of the spec
 * text: a new text (osp_free it). */
static int rewrite_spec(const char *text, const osp_spec *sp, int section, const char *key, int value,
                        char **out) {
    const osp_spec_section *s = &sp->sections[section];
    int line = 0, replace = 0;
    for (int i = 0; i < s->n_kv; i++)
        if (!strcmp(s->kv[i].key, key)) {
            line = s->kv[i].line;
            replace = 1;
        }
    if (!replace) line = s->line; /* insert after the [type] header */
    size_t len = strlen(text);
    char *copy = osp_alloc(len + 64);
    if (!copy) return OSP_ENOMEM;
    /* Find the start and end of line `line` (1-based). */
    const char *p = text;
    for (int l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (!p) {
        osp_free(copy);
        return osp_error(OSP_ESTATE, "internal: spec line %d not found", line);
    }
    const char *end = strchr(p, '\n');
    if (!end) end = text + len;
    size_t head = (size_t)(p - text), used;
    memcpy(copy, text, head);
    if (replace) {
        used = head + (size_t)sprintf(copy + head, "%s = %d", key, value);
        memcpy(copy + used, end, len - (size_t)(end - text) + 1);
    } else {
        size_t upto = (size_t)(end - text);
        memcpy(copy + head, p, upto - head);
        used = upto + (size_t)sprintf(copy + upto, "\n%s = %d", key, value);
        memcpy(copy + used, end, len - upto + 1);
    }
    *out = copy;
    return OSP_OK;
}

int osp_net_resize_head(const osp_net *net, int head, int n_classes, uint64_t seed, osp_net **out) {
    *out = NULL;
    osp_graph *g = net->graph;
    if (head < 1 || head >= osp_graph_node_count(g) || !is_classifier(osp_graph_node_const(g, head)))
        return osp_error(OSP_EINVAL, "node %d is not a classifier", head);
    if (n_classes < 1) return osp_error(OSP_EINVAL, "a classifier needs at least one class");
    const osp_node *h = osp_graph_node_const(g, head);
    if (logits_producer(net) != head)
        return osp_error(OSP_EINVAL, "layer '%s' does not produce the logits (layers with weights "
                         "follow it), so it cannot be resized for the classes", h->name);
    if (!net->spec_text) return osp_error(OSP_ESTATE, "the network has no spec to rebuild it from");
    osp_spec *sp;
    int rc = osp_spec_parse(net->spec_text, strlen(net->spec_text), "spec", &sp);
    if (rc) return rc;
    if (sp->n_sections != osp_graph_node_count(g)) {
        osp_spec_free(sp);
        return osp_error(OSP_ESTATE, "internal: the spec's sections do not match the layers");
    }
    char *text = NULL;
    rc = rewrite_spec(net->spec_text, sp, head, strcmp(h->op->name, "fc") ? "filters" : "outputs",
                      n_classes, &text);
    osp_spec_free(sp);
    if (rc) return rc;
    osp_net *copy = NULL;
    rc = osp_net_from_spec(text, strlen(text), "spec", seed, &copy);
    osp_free(text);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        return osp_error(rc, "resizing layer '%s' to %d outputs: %s", h->name, n_classes, msg);
    }
    if (copy->n_classes != n_classes) {
        int got = copy->n_classes;
        osp_net_free(copy);
        return osp_error(OSP_ESHAPE, "resizing layer '%s' to %d outputs gives a network of %d",
                         h->name, n_classes, got);
    }
    osp_graph *cg = copy->graph;
    for (int i = 0; i < osp_graph_param_count(cg); i++) {
        const osp_param *q = osp_graph_param(cg, i);
        if (q->node == head) continue; /* freshly initialised from seed */
        int k = osp_graph_find_param(g, q->name);
        const osp_param *p = k >= 0 ? osp_graph_param(g, k) : NULL;
        if (!p || !osp_shape_equal(&p->shape, &q->shape)) {
            osp_net_free(copy);
            return osp_error(OSP_ESHAPE, "parameter '%s' changes with the number of classes: only "
                             "the classifier '%s' can be resized", q->name, h->name);
        }
        memcpy(osp_graph_param_data(cg, i), osp_graph_param_data(g, k), (size_t)q->numel * sizeof(float));
    }
    osp_graph_weights_changed(cg);
    copy->input = net->input;
    memcpy(copy->mean, net->mean, sizeof copy->mean);
    memcpy(copy->std, net->std, sizeof copy->std);
    *out = copy;
    return OSP_OK;
}
