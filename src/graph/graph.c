/* Building a graph: nodes, parameters, their initialisation. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "graph_impl.h"

/* Parameter offsets are rounded to a cache line so that every parameter
 * starts aligned for SIMD kernels. */
#define PARAM_ALIGN_FLOATS (OSP_ALIGN / (int)sizeof(float))
/* Stream tag for osp_rng_derive: parameter initialisation. */
#define RNG_STREAM_INIT 0x696e6974u

int osp_graph_new(const osp_shape *input_shape, osp_graph **out) {
    *out = NULL;
    if (input_shape->ndim < 1 || input_shape->ndim > OSP_MAX_DIMS - 1 ||
        osp_shape_numel(input_shape) <= 0)
        return osp_error(OSP_EINVAL, "graph input shape must have 1 to %d positive dimensions",
                         OSP_MAX_DIMS - 1);
    osp_graph *g = osp_calloc(1, sizeof *g);
    if (!g) return OSP_ENOMEM;
    g->cap_nodes = 16;
    g->nodes = osp_calloc((size_t)g->cap_nodes, sizeof *g->nodes);
    if (!g->nodes) {
        osp_free(g);
        return OSP_ENOMEM;
    }
    g->be = osp_backend_default();
    osp_node *in = &g->nodes[0];
    snprintf(in->name, sizeof in->name, "input");
    in->shape = *input_shape;
    in->size = osp_shape_numel(input_shape);
    g->n_nodes = 1;
    *out = g;
    return OSP_OK;
}

void osp_graph_free(osp_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->n_nodes; i++) {
        osp_node *n = &g->nodes[i];
        if (n->attrs) {
            if (n->op && n->op->free_attrs) n->op->free_attrs(n->attrs);
            else osp_free(n->attrs);
        }
    }
    osp_free(g->nodes);
    osp_free(g->params);
    osp__graph_mem_free(g, g->own_weights ? g->own_weights : g->weights);
    osp__graph_mem_free(g, g->grads);
    osp__graph_mem_free(g, g->own_weights ? g->own_buffers : g->buffers);
    osp__graph_mem_free(g, g->arena);
    osp_free(g->grad_from);
    osp_free(g);
}

const osp_backend *osp_graph_backend(const osp_graph *g) { return g->be; }

int osp_graph_set_backend(osp_graph *g, const osp_backend *be) {
    if (!be || !be->mem_alloc)
        return osp_error(OSP_EINVAL, "osp_graph_set_backend: a backend with memory slots is needed");
    const int same_memory = be->mem_alloc == g->be->mem_alloc && be->ctx == g->be->ctx;
    if (g->weights && !same_memory) {
        if (g->own_weights)
            return osp_error(OSP_ESTATE, "a graph that shares another's parameters cannot move "
                             "to backend %s", be->name);
        /* weights, grads, buffers: all allocated before any is given up */
        float **arrays[3] = {&g->weights, &g->grads, &g->buffers};
        const int64_t counts[3] = {g->n_weights, g->n_weights, g->n_buffers};
        float *moved[3] = {NULL, NULL, NULL};
        const int64_t most = g->n_weights > g->n_buffers ? g->n_weights : g->n_buffers;
        float *host = osp_alloc((size_t)(most ? most : 1) * sizeof(float));
        int ok = host != NULL;
        for (int i = 0; i < 3 && ok; i++) {
            moved[i] = be->mem_alloc(be->ctx, (size_t)(counts[i] ? counts[i] : 1) * sizeof(float));
            ok = moved[i] != NULL;
        }
        if (!ok) {
            for (int i = 0; i < 3; i++)
                if (moved[i]) be->mem_free(be->ctx, moved[i]);
            osp_free(host);
            return osp_error(OSP_ENOMEM, "out of memory moving the parameters to backend %s",
                             be->name);
        }
        for (int i = 0; i < 3; i++) {
            const size_t bytes = (size_t)(counts[i] ? counts[i] : 1) * sizeof(float);
            g->be->copy_d2h(g->be->ctx, host, *arrays[i], bytes);
            be->copy_h2d(be->ctx, moved[i], host, bytes);
            osp__graph_mem_free(g, *arrays[i]);
            *arrays[i] = moved[i];
        }
        osp_free(host);
        osp__graph_mem_free(g, g->arena);
        g->arena = NULL;
        g->arena_bytes = 0;
    }
    g->be = be;
    g->planned_batch = 0;
    return OSP_OK;
}

void osp_graph_read(const osp_graph *g, float *host, const float *src, int64_t count) {
    if (count > 0) g->be->copy_d2h(g->be->ctx, host, src, (size_t)count * sizeof(float));
}

void osp_graph_write(const osp_graph *g, float *dst, const float *host, int64_t count) {
    if (count > 0) g->be->copy_h2d(g->be->ctx, dst, host, (size_t)count * sizeof(float));
}

/* g reads owner's weights, and its buffers too when with_buffers; what g
 * had stays in own_weights and own_buffers, for osp_graph_free (without
 * the buffers shared, own_buffers == buffers: freed as g's own). */
static int share(osp_graph *g, osp_graph *owner, int with_buffers) {
    if (!g->weights || !owner->weights || g->own_weights)
        return osp_error(OSP_ESTATE, "both graphs need their parameters, and only once shared");
    if (g->be->mem_alloc != owner->be->mem_alloc || g->be->ctx != owner->be->ctx)
        return osp_error(OSP_ESTATE, "the graphs' backends do not share memory");
    if (g->n_params != owner->n_params || g->n_weights != owner->n_weights ||
        g->n_buffers != owner->n_buffers)
        return osp_error(OSP_ESHAPE, "the graphs' parameters differ in layout");
    g->own_weights = g->weights;
    g->own_buffers = g->buffers;
    g->weights = owner->weights;
    if (with_buffers) g->buffers = owner->buffers;
    g->planned_batch = 0; /* a plan may have folded the old weights */
    return OSP_OK;
}

int osp_graph_share_params(osp_graph *g, osp_graph *owner) { return share(g, owner, 1); }

int osp_graph_share_weights(osp_graph *g, osp_graph *owner) { return share(g, owner, 0); }

static int grow(void **array, int *cap, size_t elem) {
    int new_cap = *cap ? *cap * 2 : 16;
    void *bigger = osp_calloc((size_t)new_cap, elem);
    if (!bigger) return OSP_ENOMEM;
    if (*array) memcpy(bigger, *array, (size_t)*cap * elem);
    osp_free(*array);
    *array = bigger;
    *cap = new_cap;
    return OSP_OK;
}

static void free_attrs(const osp_op *op, void *attrs) {
    if (!attrs) return;
    if (op && op->free_attrs) op->free_attrs(attrs);
    else osp_free(attrs);
}

int osp_graph_add(osp_graph *g, const osp_op *op, const char *name, const int *inputs,
                  int n_inputs, void *attrs) {
    if (!op || n_inputs < 0 || n_inputs > OSP_MAX_INPUTS) {
        free_attrs(op, attrs);
        return osp_error(OSP_EINVAL, "bad op or input count %d", n_inputs);
    }
    if (g->weights) {
        free_attrs(op, attrs);
        return osp_error(OSP_ESTATE, "cannot add nodes after parameters are initialised");
    }
    char auto_name[OSP_NAME_MAX];
    if (!name || !*name) {
        snprintf(auto_name, sizeof auto_name, "%s%d", op->name, g->n_nodes);
        name = auto_name;
    }
    if (strlen(name) >= OSP_NAME_MAX) {
        free_attrs(op, attrs);
        return osp_error(OSP_EINVAL, "layer name '%.20s...' is longer than %d characters", name,
                         OSP_NAME_MAX - 1);
    }
    if (osp_graph_find(g, name)) {
        free_attrs(op, attrs);
        return osp_error(OSP_EINVAL, "layer name '%s' is used twice", name);
    }
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i] < 0 || inputs[i] >= g->n_nodes) {
            free_attrs(op, attrs);
            return osp_error(OSP_EINVAL, "layer '%s': input %d is not an earlier layer", name, i);
        }
    }
    if (g->n_nodes == g->cap_nodes && grow((void **)&g->nodes, &g->cap_nodes, sizeof *g->nodes)) {
        free_attrs(op, attrs);
        return OSP_ENOMEM;
    }
    osp_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->id = g->n_nodes;
    snprintf(n->name, sizeof n->name, "%s", name);
    n->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) n->inputs[i] = inputs[i];
    n->attrs = attrs;
    g->n_nodes++; /* from here on the graph owns attrs */
    int rc = op->setup(g, n);
    if (rc == OSP_OK && (n->shape.ndim < 1 || osp_shape_numel(&n->shape) <= 0))
        rc = osp_error(OSP_ESHAPE, "layer '%s': empty output shape", n->name);
    if (rc != OSP_OK) {
        /* Drop the node and any parameters it declared. */
        while (g->n_params > 0 && g->params[g->n_params - 1].node == n->id) {
            osp_param *p = &g->params[--g->n_params];
            if (p->kind == OSP_PARAM_WEIGHT) g->n_weights = p->offset;
            else g->n_buffers = p->offset;
        }
        free_attrs(op, n->attrs);
        g->n_nodes--;
        return rc;
    }
    n->size = osp_shape_numel(&n->shape);
    /* A gradient flows into a node with trained parameters or a node that
     * reads one; buffers alone (a [constant]'s value) are not trained. */
    n->needs_grad = 0;
    for (int i = 0; i < n->n_params; i++)
        if (g->params[n->params[i]].kind == OSP_PARAM_WEIGHT) n->needs_grad = 1;
    for (int i = 0; i < n_inputs; i++)
        if (g->nodes[inputs[i]].needs_grad) n->needs_grad = 1;
    g->planned_batch = 0; /* any plan is stale */
    return n->id;
}

int osp_graph_freeze(osp_graph *g, int until) {
    if (until < 0 || until >= g->n_nodes)
        return osp_error(OSP_EINVAL, "cannot freeze up to node %d of %d", until, g->n_nodes);
    for (int i = 1; i < g->n_nodes; i++) {
        osp_node *n = &g->nodes[i];
        n->frozen = i <= until;
        n->needs_grad = 0;
        for (int k = 0; k < n->n_params && !n->frozen; k++)
            if (g->params[n->params[k]].kind == OSP_PARAM_WEIGHT) n->needs_grad = 1;
        for (int j = 0; j < n->n_inputs; j++)
            if (g->nodes[n->inputs[j]].needs_grad) n->needs_grad = 1;
    }
    g->planned_batch = 0; /* where gradients flow changed: replan */
    return OSP_OK;
}

int osp_graph_frozen_until(const osp_graph *g) {
    int until = 0;
    while (until + 1 < g->n_nodes && g->nodes[until + 1].frozen) until++;
    return until;
}

void osp_graph_require_input_grad(osp_graph *g) {
    g->nodes[0].needs_grad = 1;
    for (int i = 1; i < g->n_nodes; i++) {
        osp_node *n = &g->nodes[i];
        for (int j = 0; j < n->n_inputs; j++)
            if (g->nodes[n->inputs[j]].needs_grad) n->needs_grad = 1;
    }
    g->planned_batch = 0;
}

int osp_graph_add_param(osp_graph *g, osp_node *n, const char *what, osp_param_kind kind,
                        const osp_shape *shape, osp_init init, float init_scale) {
    if (n->n_params == OSP_MAX_NODE_PARAMS)
        return osp_error(OSP_EINVAL, "layer '%s': too many parameters", n->name);
    int64_t numel = osp_shape_numel(shape);
    if (shape->ndim < 1 || numel <= 0 || numel > ((int64_t)1 << 34))
        return osp_error(OSP_ERANGE, "layer '%s': parameter '%s' has a bad size", n->name, what);
    if (g->n_params == g->cap_params &&
        grow((void **)&g->params, &g->cap_params, sizeof *g->params))
        return OSP_ENOMEM;
    osp_param *p = &g->params[g->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", n->name, what);
    p->kind = kind;
    p->shape = *shape;
    p->numel = numel;
    p->init = init;
    p->init_scale = init_scale;
    p->node = n->id;
    int64_t *used = kind == OSP_PARAM_WEIGHT ? &g->n_weights : &g->n_buffers;
    p->offset = *used;
    *used += (numel + PARAM_ALIGN_FLOATS - 1) / PARAM_ALIGN_FLOATS * PARAM_ALIGN_FLOATS;
    n->params[n->n_params++] = g->n_params;
    return g->n_params++;
}

static void init_param(const osp_param *p, float *data, uint64_t seed, int index) {
    osp_rng rng;
    osp_rng_derive(&rng, seed, RNG_STREAM_INIT, (uint64_t)index);
    for (int64_t i = 0; i < p->numel; i++) {
        switch (p->init) {
        case OSP_INIT_ZERO: data[i] = 0.0f; break;
        case OSP_INIT_ONE: data[i] = 1.0f; break;
        case OSP_INIT_UNIFORM: data[i] = (2.0f * osp_rng_uniform(&rng) - 1.0f) * p->init_scale; break;
        case OSP_INIT_NORMAL: data[i] = osp_rng_normal(&rng) * p->init_scale; break;
        }
    }
}

/* At least one float, so that an empty array is still a pointer. */
static float *mem_floats(const osp_graph *g, int64_t count) {
    return g->be->mem_alloc(g->be->ctx, (size_t)(count ? count : 1) * sizeof(float));
}

int osp_graph_init_params(osp_graph *g, uint64_t seed) {
    if (!g->weights) {
        g->weights = mem_floats(g, g->n_weights);
        g->grads = mem_floats(g, g->n_weights);
        g->buffers = mem_floats(g, g->n_buffers);
        if (!g->weights || !g->grads || !g->buffers) return OSP_ENOMEM;
        /* The padding between parameters too: whole arrays are summed,
         * exchanged and saved. */
        const size_t wbytes = (size_t)(g->n_weights ? g->n_weights : 1) * sizeof(float);
        const size_t bbytes = (size_t)(g->n_buffers ? g->n_buffers : 1) * sizeof(float);
        g->be->mem_zero(g->be->ctx, g->weights, wbytes);
        g->be->mem_zero(g->be->ctx, g->grads, wbytes);
        g->be->mem_zero(g->be->ctx, g->buffers, bbytes);
    }
    /* Drawn on the host, in one staging array as large as the largest
     * parameter, and copied in. */
    int64_t most = 1;
    for (int i = 0; i < g->n_params; i++)
        if (g->params[i].numel > most) most = g->params[i].numel;
    float *host = osp_alloc((size_t)most * sizeof(float));
    if (!host) return OSP_ENOMEM;
    for (int i = 0; i < g->n_params; i++) {
        init_param(&g->params[i], host, seed, i);
        osp_graph_write(g, osp_graph_param_data(g, i), host, g->params[i].numel);
    }
    osp_free(host);
    return OSP_OK;
}

int osp_graph_node_count(const osp_graph *g) { return g->n_nodes; }

osp_node *osp_graph_node(osp_graph *g, int id) {
    return id >= 0 && id < g->n_nodes ? &g->nodes[id] : NULL;
}

const osp_node *osp_graph_node_const(const osp_graph *g, int id) {
    return id >= 0 && id < g->n_nodes ? &g->nodes[id] : NULL;
}

osp_node *osp_graph_find(osp_graph *g, const char *name) {
    for (int i = 0; i < g->n_nodes; i++)
        if (!strcmp(g->nodes[i].name, name)) return &g->nodes[i];
    return NULL;
}

osp_node *osp_graph_output(osp_graph *g) { return &g->nodes[g->n_nodes - 1]; }

int osp_graph_param_count(const osp_graph *g) { return g->n_params; }

const osp_param *osp_graph_param(const osp_graph *g, int i) {
    return i >= 0 && i < g->n_params ? &g->params[i] : NULL;
}

int osp_graph_find_param(const osp_graph *g, const char *name) {
    for (int i = 0; i < g->n_params; i++)
        if (!strcmp(g->params[i].name, name)) return i;
    return -1;
}

float *osp_graph_weights(osp_graph *g, int64_t *count) {
    if (count) *count = g->n_weights;
    return g->weights;
}

float *osp_graph_grads(osp_graph *g, int64_t *count) {
    if (count) *count = g->n_weights;
    return g->grads;
}

float *osp_graph_buffers(osp_graph *g, int64_t *count) {
    if (count) *count = g->n_buffers;
    return g->buffers;
}

float *osp_graph_param_data(osp_graph *g, int i) {
    const osp_param *p = &g->params[i];
    float *base = p->kind == OSP_PARAM_WEIGHT ? g->weights : g->buffers;
    return base ? base + p->offset : NULL;
}

float *osp_graph_param_grad(osp_graph *g, int i) {
    const osp_param *p = &g->params[i];
    return p->kind == OSP_PARAM_WEIGHT && g->grads ? g->grads + p->offset : NULL;
}

float *osp_node_weight(osp_graph *g, const osp_node *n, int i) {
    return osp_graph_param_data(g, n->params[i]);
}

float *osp_node_grad(osp_graph *g, const osp_node *n, int i) {
    return osp_graph_param_grad(g, n->params[i]);
}
