/* Memory planning: one arena per (batch size, mode).
 *
 * Training keeps every activation (the backward pass reads them) and gives
 * each node that a gradient flows into a gradient buffer, live only from the
 * backward step that first writes it to the node's own backward: gradients
 * whose lives do not overlap share memory (place_grads). Inference keeps an
 * activation only until its last reader has run: buffers are recycled
 * best-fit, so a deep network needs a few activations' worth of memory.
 *
 * Inference also fuses chains (see osp_op.fuse): a node whose output only
 * one single-input node reads offers it that node, then the next, while it
 * accepts; accepted nodes are skipped and share the chain head's buffer. */
#include <string.h>

#include "graph_impl.h"

#define ALIGN_UP(x) (((x) + OSP_ALIGN - 1) / OSP_ALIGN * OSP_ALIGN)

/* A region of the arena that inference reuses once its owner is dead. */
typedef struct slot {
    size_t offset, bytes;
    int free;
} slot;

typedef struct layout {
    size_t *out, *dout, *saved; /* offsets per node; SIZE_MAX = none */
    size_t workspace;           /* offset of the shared workspace */
    size_t total;
} layout;

static int checked_bytes(int64_t elems, int batch, size_t elem_size, size_t *out) {
    size_t n;
    if (osp_mul_size((size_t)elems, (size_t)batch, &n) || osp_mul_size(n, elem_size, &n) ||
        n > SIZE_MAX / 2)
        return osp_error(OSP_ERANGE, "activations for batch %d are too large", batch);
    *out = ALIGN_UP(n);
    return OSP_OK;
}

/* The free slot of at least bytes that fits best, or a new one at *at;
 * taken (not free) on return. */
static int take_slot(slot *slots, int *n_slots, size_t bytes, size_t *at) {
    int best = -1;
    for (int s = 0; s < *n_slots; s++)
        if (slots[s].free && slots[s].bytes >= bytes &&
            (best < 0 || slots[s].bytes < slots[best].bytes))
            best = s;
    if (best < 0) {
        best = (*n_slots)++;
        slots[best] = (slot){.offset = *at, .bytes = bytes};
        *at += bytes;
    }
    slots[best].free = 0;
    return best;
}

static size_t max_workspace(const osp_graph *g, int batch) {
    size_t ws = 0;
    for (int i = 1; i < g->n_nodes; i++) {
        const osp_node *n = &g->nodes[i];
        if (n->op->workspace_bytes) {
            size_t b = n->op->workspace_bytes(g, n, batch);
            if (b > ws) ws = b;
        }
    }
    return ALIGN_UP(ws);
}

/* For each node with a gradient, the latest node whose backward adds into
 * it: backward runs from the last node down, so that is where the
 * gradient's life begins (the node itself when nothing writes it). */
static void grad_writers(const osp_graph *g, int *from) {
    for (int i = 0; i < g->n_nodes; i++) from[i] = i;
    for (int i = 1; i < g->n_nodes; i++) {
        const osp_node *n = &g->nodes[i];
        if (!n->needs_grad) continue;
        for (int j = 0; j < n->n_inputs; j++)
            if (g->nodes[n->inputs[j]].needs_grad && from[n->inputs[j]] < i) from[n->inputs[j]] = i;
    }
}

/* Gradient buffers, placed from *at on: node j's is live while backward
 * runs nodes from[j] down to j (the input's, node 0's, to the end), and
 * buffers are recycled best-fit as in inference. A chain keeps a few
 * gradients live at once instead of one per node. */
static int place_grads(const osp_graph *g, int batch, const int *from, layout *l, size_t *at) {
    slot *slots = osp_calloc((size_t)g->n_nodes, sizeof *slots);
    int *slot_of = osp_calloc((size_t)g->n_nodes, sizeof *slot_of);
    int rc = slots && slot_of ? OSP_OK : OSP_ENOMEM;
    int n_slots = 0;
    for (int t = g->n_nodes - 1; t >= 0 && !rc; t--) {
        for (int j = 0; j <= t; j++) {
            const osp_node *n = &g->nodes[j];
            if (!n->needs_grad || from[j] != t) continue;
            size_t bytes = 0;
            if ((rc = checked_bytes(n->size, batch, sizeof(float), &bytes))) break;
            const int best = take_slot(slots, &n_slots, bytes, at);
            slot_of[j] = best;
            l->dout[j] = slots[best].offset;
        }
        /* node t's backward is done with its own gradient */
        if (t > 0 && g->nodes[t].needs_grad) slots[slot_of[t]].free = 1;
    }
    osp_free(slots);
    osp_free(slot_of);
    return rc;
}

static int layout_train(const osp_graph *g, int batch, const int *grad_from, layout *l) {
    size_t at = 0, bytes = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const osp_node *n = &g->nodes[i];
        if (checked_bytes(n->size, batch, sizeof(float), &bytes)) return OSP_ERANGE;
        l->out[i] = at;
        at += bytes;
        if (i > 0 && n->op->saved_bytes) {
            size_t s = ALIGN_UP(n->op->saved_bytes(g, n, batch));
            l->saved[i] = at;
            at += s;
        }
    }
    int rc = place_grads(g, batch, grad_from, l, &at);
    if (rc) return rc;
    l->workspace = at;
    l->total = at + max_workspace(g, batch);
    return OSP_OK;
}

/* Resets every fusion; in inference mode, fuses the chains the ops accept. */
static void fuse_chains(osp_graph *g, osp_mode mode) {
    for (int i = 1; i < g->n_nodes; i++) {
        osp_node *n = &g->nodes[i];
        n->fused_into = 0;
        if (n->op->fuse) n->op->fuse(g, n, NULL);
    }
    if (mode != OSP_MODE_INFER) return;
    int *readers = osp_calloc((size_t)g->n_nodes, sizeof *readers);
    if (!readers) return; /* unfused is correct too */
    for (int i = 1; i < g->n_nodes; i++)
        for (int j = 0; j < g->nodes[i].n_inputs; j++) readers[g->nodes[i].inputs[j]]++;
    int *reader = osp_calloc((size_t)g->n_nodes, sizeof *reader);
    if (reader) {
        for (int i = 1; i < g->n_nodes; i++)
            for (int j = 0; j < g->nodes[i].n_inputs; j++) reader[g->nodes[i].inputs[j]] = i;
        for (int i = 1; i < g->n_nodes; i++) {
            osp_node *head = &g->nodes[i];
            if (!head->op->fuse || head->fused_into) continue;
            /* cur's value is replaced by the fused one: nobody else may see it */
            for (int cur = i; readers[cur] == 1 && !g->nodes[cur].keep && cur != g->n_nodes - 1;) {
                osp_node *next = &g->nodes[reader[cur]];
                if (!head->op->fuse(g, head, next)) break;
                next->fused_into = head->id;
                cur = next->id;
            }
        }
    }
    osp_free(reader);
    osp_free(readers);
}

/* The node whose buffer n's output lives in. */
static int buffer_of(const osp_graph *g, int i) {
    return g->nodes[i].fused_into ? g->nodes[i].fused_into : i;
}

static int layout_infer(const osp_graph *g, int batch, layout *l) {
    int rc = OSP_OK;
    int *last_use = osp_calloc((size_t)g->n_nodes, sizeof *last_use);
    int *slot_of = osp_calloc((size_t)g->n_nodes, sizeof *slot_of);
    slot *slots = osp_calloc((size_t)g->n_nodes, sizeof *slots);
    if (!last_use || !slot_of || !slots) {
        rc = OSP_ENOMEM;
        goto done;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const osp_node *n = &g->nodes[i];
        last_use[i] = (n->keep || i == g->n_nodes - 1) ? g->n_nodes : i;
        for (int j = 0; j < n->n_inputs; j++)
            if (last_use[n->inputs[j]] < i) last_use[n->inputs[j]] = i;
    }
    /* A fused chain's buffer lives until the last reader of any member. */
    for (int i = g->n_nodes - 1; i > 0; i--) {
        int b = buffer_of(g, i);
        if (last_use[b] < last_use[i]) last_use[b] = last_use[i];
    }
    for (int i = 1; i < g->n_nodes; i++) last_use[i] = last_use[buffer_of(g, i)];
    int n_slots = 0;
    size_t at = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (buffer_of(g, i) != i) {
            slot_of[i] = slot_of[buffer_of(g, i)];
            l->out[i] = l->out[buffer_of(g, i)];
            /* its slot is freed with the chain head's; what it alone read
             * last (a fused residual add's other input) is freed here */
            for (int j = 0; j < i; j++)
                if (last_use[j] == i && buffer_of(g, j) == j) slots[slot_of[j]].free = 1;
            continue;
        }
        size_t bytes = 0;
        if ((rc = checked_bytes(g->nodes[i].size, batch, sizeof(float), &bytes))) goto done;
        /* The output never shares a slot with its inputs: they are freed
         * only after it is placed. */
        const int best = take_slot(slots, &n_slots, bytes, &at);
        slot_of[i] = best;
        l->out[i] = slots[best].offset;
        for (int j = 0; j <= i; j++)
            if (last_use[j] == i) slots[slot_of[j]].free = 1;
    }
    l->workspace = at;
    l->total = at + max_workspace(g, batch);
done:
    osp_free(last_use);
    osp_free(slot_of);
    osp_free(slots);
    return rc;
}

int osp_graph_plan(osp_graph *g, int batch, osp_mode mode) {
    if (batch <= 0) return osp_error(OSP_EINVAL, "batch size must be positive, not %d", batch);
    /* The same plan again costs nothing: no allocation, no refolding (see
     * osp_graph_weights_changed). */
    if (g->planned_batch == batch && g->planned_mode == mode) return OSP_OK;
    fuse_chains(g, mode);
    layout l = {0};
    l.out = osp_alloc(3 * (size_t)g->n_nodes * sizeof(size_t));
    if (!l.out) return OSP_ENOMEM;
    l.dout = l.out + g->n_nodes;
    l.saved = l.dout + g->n_nodes;
    for (int i = 0; i < 3 * g->n_nodes; i++) l.out[i] = SIZE_MAX;
    if (mode == OSP_MODE_TRAIN && !g->grad_from &&
        !(g->grad_from = osp_alloc((size_t)g->n_nodes * sizeof *g->grad_from))) {
        osp_free(l.out);
        return OSP_ENOMEM;
    }
    if (mode == OSP_MODE_TRAIN) grad_writers(g, g->grad_from);
    int rc = mode == OSP_MODE_TRAIN ? layout_train(g, batch, g->grad_from, &l) : layout_infer(g, batch, &l);
    if (rc == OSP_OK && l.total > g->arena_bytes) {
        osp__graph_mem_free(g, g->arena);
        g->arena_bytes = 0;
        g->arena = g->be->mem_alloc(g->be->ctx, l.total);
        if (!g->arena) rc = osp_error(OSP_ENOMEM, "out of memory planning %zu bytes of activations for batch %d", l.total, batch);
        else g->arena_bytes = l.total;
    }
    if (rc == OSP_OK) {
        char *base = g->arena;
        for (int i = 0; i < g->n_nodes; i++) {
            osp_node *n = &g->nodes[i];
            n->out = (float *)(base + l.out[i]);
            n->dout = l.dout[i] == SIZE_MAX ? NULL : (float *)(base + l.dout[i]);
            n->saved = l.saved[i] == SIZE_MAX ? NULL : base + l.saved[i];
        }
        g->workspace = base + l.workspace;
        g->workspace_bytes = l.total - l.workspace;
        g->planned_batch = batch;
        g->planned_mode = mode;
    } else {
        g->planned_batch = 0;
    }
    osp_free(l.out);
    return rc;
}

int osp_graph_train_bytes(const osp_graph *g, int batch, size_t *out) {
    if (!g || !out || batch <= 0) return osp_error(OSP_EINVAL, "osp_graph_train_bytes: bad arguments");
    layout l = {0};
    l.out = osp_alloc(3 * (size_t)g->n_nodes * sizeof(size_t));
    if (!l.out) return OSP_ENOMEM;
    l.dout = l.out + g->n_nodes;
    l.saved = l.dout + g->n_nodes;
    int *from = osp_alloc((size_t)g->n_nodes * sizeof *from);
    int rc = from ? OSP_OK : OSP_ENOMEM;
    if (!rc) grad_writers(g, from);
    if (!rc) rc = layout_train(g, batch, from, &l);
    if (rc == OSP_OK) *out = l.total;
    osp_free(from);
    osp_free(l.out);
    return rc;
}

void osp_graph_weights_changed(osp_graph *g) { g->planned_batch = 0; }

size_t osp_graph_arena_bytes(const osp_graph *g) { return g->arena_bytes; }

int osp_graph_planned_batch(const osp_graph *g) { return g->planned_batch; }

osp_mode osp_graph_planned_mode(const osp_graph *g) { return g->planned_mode; }
