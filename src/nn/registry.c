/* Every layer type a spec can name. Each lives in op_<name>.c. */
#include <string.h>

#include "osprey/nn.h"

#define LAYER_TYPES(X)                                                              \
    X(conv) X(maxpool) X(avgpool) X(globalavgpool) X(fc) X(relu) X(leakyrelu) X(relu6) \
    X(sigmoid) X(tanh) X(swish) X(batchnorm) X(dropout) X(add) X(concat) X(flatten)    \
    X(reshape) X(softmax) X(l2norm) X(hardsigmoid) X(hardswish) X(clip) X(mul) X(sub) X(div)  \
    X(constant) X(pad) X(transpose) X(resize) X(deconv) X(groupnorm) \
    X(gelu) X(erf) X(layernorm) X(matmul) X(attention) \
    X(exp) X(log) X(sqrt) X(abs) X(neg) X(reciprocal) X(softplus) X(softsign) \
    X(slice) X(gather) X(expand) X(reduce)

#define DECLARE(name) extern const osp_layer_type osp__layer_##name;
LAYER_TYPES(DECLARE)
#undef DECLARE

static const osp_layer_type *const all_types[] = {
#define ENTRY(name) &osp__layer_##name,
    LAYER_TYPES(ENTRY)
#undef ENTRY
    NULL};

const osp_layer_type *const *osp_layer_types(void) { return all_types; }

const osp_layer_type *osp_layer_type_find(const char *name) {
    for (size_t i = 0; i + 1 < sizeof all_types / sizeof all_types[0]; i++)
        if (!strcmp(all_types[i]->op->name, name)) return all_types[i];
    return NULL;
}

const osp_op *osp_op_find(const char *name) {
    const osp_layer_type *t = osp_layer_type_find(name);
    return t ? t->op : NULL;
}
