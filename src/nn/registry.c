/* Every layer type a spec can name. Each lives in op_<name>.c. */
#include <string.h>

#include "osprey/nn.h"

/* TRANSITIONAL: weak until every op file has landed. */
#define LAYER_TYPES(X)                                                              \
    X(conv) X(maxpool) X(avgpool) X(globalavgpool) X(fc) X(relu) X(leakyrelu) X(relu6) \
    X(sigmoid) X(tanh) X(swish) X(batchnorm) X(dropout) X(add) X(concat) X(flatten)    \
    X(reshape) X(softmax) X(l2norm)

#define DECLARE(name) extern const osp_layer_type osp__layer_##name __attribute__((weak));
LAYER_TYPES(DECLARE)
#undef DECLARE

static const osp_layer_type *const all_types[] = {
#define ENTRY(name) &osp__layer_##name,
    LAYER_TYPES(ENTRY)
#undef ENTRY
    NULL};

static const osp_layer_type *present[sizeof all_types / sizeof all_types[0]];

const osp_layer_type *const *osp_layer_types(void) {
    /* Weak symbols that did not link are NULL: skip them. */
    int n = 0;
    for (size_t i = 0; i + 1 < sizeof all_types / sizeof all_types[0]; i++)
        if (all_types[i]) present[n++] = all_types[i];
    present[n] = NULL;
    return present;
}

const osp_layer_type *osp_layer_type_find(const char *name) {
    for (size_t i = 0; i + 1 < sizeof all_types / sizeof all_types[0]; i++)
        if (all_types[i] && !strcmp(all_types[i]->op->name, name)) return all_types[i];
    return NULL;
}

const osp_op *osp_op_find(const char *name) {
    const osp_layer_type *t = osp_layer_type_find(name);
    return t ? t->op : NULL;
}
