/* Upsample (opsets 7-9) and Resize (10-18) onto [resize]. The versions
 * differ in where the scales come from and in how coordinates map; the
 * table below holds each version's form, and every attribute that would
 * change the result is checked: what [resize] does not compute (cubic,
 * tf_crop_and_resize, antialiased downscaling, a keep_aspect_ratio_policy
 * other than stretch) is refused with the node and the attribute named. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

typedef struct resize_form {
    const char *op;
    int since;
    int scales_input; /* -1: the scales attribute */
    int sizes_input;  /* -1: none */
    /* 11+: coordinate_transformation_mode and nearest_mode; before, the
     * coordinates are asymmetric and nearest floors when enlarging and
     * takes the ceiling when shrinking (as ONNX Runtime does) */
    int modern;
    int v18; /* antialias, axes, keep_aspect_ratio_policy */
} resize_form;

static const resize_form forms[] = {
    {"Upsample", 7, -1, -1, 0, 0}, {"Upsample", 9, 1, -1, 0, 0}, {"Resize", 10, 1, -1, 0, 0},
    {"Resize", 11, 2, 3, 1, 0},    {"Resize", 18, 2, 3, 1, 1},
};

static const resize_form *form_of(const char *op, int opset) {
    const resize_form *f = NULL;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(forms[i].op, op) && forms[i].since <= opset) f = &forms[i];
    return f;
}

/* The batch size the model's input declares, or -1 when symbolic. */
static int64_t declared_batch(onnx_importer *im) {
    for (size_t i = 0; i < im->graph->n_input; i++) {
        const Osp__Onnx__ValueInfoProto *in = im->graph->input[i];
        onnx_value *v = osp__onnx_value_find(im, in->name);
        if (v && v->kind == ONNX_VAL_CONST) continue;
        const Osp__Onnx__TypeProto *t = in->type;
        if (!t || t->value_case != OSP__ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
            !t->tensor_type->shape || t->tensor_type->shape->n_dim < 1)
            return -1;
        const Osp__Onnx__TensorShapeProto__Dimension *d = t->tensor_type->shape->dim[0];
        return d->value_case == OSP__ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                   ? d->dim_value
                   : -1;
    }
    return -1;
}

/* What the node asks for, on the four axes N, C, H, W. */
typedef struct resize_request {
    int has_scales, has_sizes;
    double scale[4];
    int64_t size[4];
    int size_given[4];
} resize_request;

/* Spreads `count` values given for `axes` (18) over the four axes. */
static int read_axes(onnx_importer *im, const Osp__Onnx__NodeProto *n, int count, int *axis) {
    size_t na;
    const int64_t *a = osp__onnx_attr_ints(n, "axes", &na);
    if (!a) {
        if (count != 4) FAIL(OSP_ENOTSUP, "%d scales or sizes for a rank-4 input", count);
        for (int k = 0; k < 4; k++) axis[k] = k;
        return OSP_OK;
    }
    if ((int)na != count) FAIL(OSP_EFORMAT, "attribute 'axes' has %zu values for %d scales or "
                               "sizes", na, count);
    int seen[4] = {0};
    for (int k = 0; k < count; k++) {
        int64_t x = a[k] < 0 ? a[k] + 4 : a[k];
        if (x < 0 || x > 3 || seen[x]) FAIL(OSP_EFORMAT, "attribute 'axes': bad or repeated axis "
                                            "%lld", (long long)a[k]);
        seen[x] = 1;
        axis[k] = (int)x;
    }
    return OSP_OK;
}

static int read_request(onnx_importer *im, const Osp__Onnx__NodeProto *n, const resize_form *f,
                        resize_request *r) {
    r->has_scales = r->has_sizes = 0;
    for (int k = 0; k < 4; k++) r->scale[k] = 1.0, r->size[k] = 0, r->size_given[k] = 0;
    onnx_const sc = {0}, sz = {0};
    int own_sc = 0, rc;
    if (f->scales_input < 0) {
        const Osp__Onnx__AttributeProto *a = osp__onnx_attr(n, "scales");
        if (!a || a->n_floats == 0) FAIL(OSP_EFORMAT, "attribute 'scales' is missing");
        int64_t len = (int64_t)a->n_floats;
        if ((rc = osp__onnx_const_alloc(&sc, 1, &len, 0))) return rc;
        memcpy(sc.f, a->floats, sizeof(float) * (size_t)len);
        own_sc = 1;
    } else {
        if (osp__onnx_attr(n, "scales"))
            FAIL(OSP_EFORMAT, "attribute 'scales' belongs to Upsample before opset 9; here it is "
                 "input %d", f->scales_input);
        onnx_value *v = osp__onnx_input(im, n, (size_t)f->scales_input);
        if (v && v->kind != ONNX_VAL_CONST)
            FAIL(OSP_ENOTSUP, "input %d (scales) must be a constant", f->scales_input);
        if (v) sc = v->c;
    }
    if (f->sizes_input >= 0) {
        onnx_value *v = osp__onnx_input(im, n, (size_t)f->sizes_input);
        if (v && v->kind != ONNX_VAL_CONST) {
            if (own_sc) osp__onnx_const_free(&sc);
            FAIL(OSP_ENOTSUP, "input %d (sizes) must be a constant", f->sizes_input);
        }
        if (v) sz = v->c;
    }
    int axis[4];
    rc = OSP_OK;
    if (sc.numel > 0) {
        if (sc.is_int) rc = osp__onnx_node_error(im, n, OSP_EFORMAT, "scales must be floats");
        else if (!(rc = read_axes(im, n, (int)sc.numel, axis))) {
            r->has_scales = 1;
            for (int k = 0; k < sc.numel; k++) r->scale[axis[k]] = sc.f[k];
        }
    }
    if (own_sc) osp__onnx_const_free(&sc);
    if (rc) return rc;
    if (sz.numel > 0) {
        if (!sz.is_int) FAIL(OSP_EFORMAT, "sizes must be integers");
        if ((rc = read_axes(im, n, (int)sz.numel, axis))) return rc;
        r->has_sizes = 1;
        for (int k = 0; k < sz.numel; k++) {
            r->size[axis[k]] = sz.i[k];
            r->size_given[axis[k]] = 1;
        }
    }
    if (r->has_scales == r->has_sizes)
        FAIL(OSP_EFORMAT, "needs %s scales or sizes", r->has_scales ? "either, not both," : "its");
    return OSP_OK;
}

/* The batch and channel axes must stay as they are. */
static int check_kept_axes(onnx_importer *im, const Osp__Onnx__NodeProto *n, const osp_shape *xs,
                           const resize_request *r) {
    if (r->has_scales && (r->scale[0] != 1.0 || r->scale[1] != 1.0))
        FAIL(OSP_ENOTSUP, "scales %g, %g on the batch and channel axes (osprey resizes height and "
             "width only)", r->scale[0], r->scale[1]);
    if (r->has_sizes) {
        int64_t batch = declared_batch(im);
        int batch_kept = !r->size_given[0] || r->size[0] == ONNX_BATCH ||
                         (batch > 0 && r->size[0] == batch);
        if (!batch_kept || (r->size_given[1] && r->size[1] != xs->dim[0]))
            FAIL(OSP_ENOTSUP, "sizes that change the batch or channel axes (osprey resizes height "
                 "and width only)");
        for (int k = 2; k < 4; k++)
            if (r->size[k] == ONNX_BATCH) FAIL(OSP_ENOTSUP, "a size taken from the batch size");
    }
    return OSP_OK;
}

static int index_of(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

/* The attributes of 11+ (and 18) as [resize] keys. */
static int modern_keys(onnx_importer *im, const Osp__Onnx__NodeProto *n, const resize_form *f,
                       const osp_shape *xs, const resize_request *r, int linear, char *keys,
                       size_t len) {
    static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                         "asymmetric", "tf_half_pixel_for_nn", NULL};
    static const char *const nearests[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                           "ceil", NULL};
    char cb[48], nb[48], kb[48];
    const char *coord = osp__onnx_attr_string(n, "coordinate_transformation_mode", "half_pixel",
                                              cb, sizeof cb);
    const char *nearest = osp__onnx_attr_string(n, "nearest_mode", "round_prefer_floor", nb,
                                                sizeof nb);
    if (index_of(coords, coord) < 0)
        FAIL(OSP_ENOTSUP, "attribute 'coordinate_transformation_mode' = '%s' (osprey has "
             "half_pixel, pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel_for_nn)",
             coord);
    if (index_of(nearests, nearest) < 0)
        FAIL(OSP_ENOTSUP, "attribute 'nearest_mode' = '%s'", nearest);
    /* align_corners divides by the output's length less 1, and
     * pytorch_half_pixel tests it against 1: with scales that do not give
     * whole lengths, ONNX's reference takes input x scale and ONNX Runtime
     * (and [resize]) the floored output. Refused where they differ. */
    int lengths_matter = !strcmp(coord, "align_corners") || !strcmp(coord, "pytorch_half_pixel");
    for (int k = 2; k < 4 && r->has_scales && lengths_matter; k++) {
        /* in float, as both compute the output's length */
        double exact = (double)((float)xs->dim[k - 1] * (float)r->scale[k]);
        if (exact != floor(exact) && (coord[0] == 'a' || floor(exact) <= 1.0))
            FAIL(OSP_ENOTSUP, "attribute 'coordinate_transformation_mode' = '%s' with a scale of "
                 "%g for a side of %lld (%g is not a whole length, and runtimes differ on it)",
                 coord, r->scale[k], (long long)xs->dim[k - 1], exact);
    }
    if (f->v18) {
        const char *policy = osp__onnx_attr_string(n, "keep_aspect_ratio_policy", "stretch", kb,
                                                   sizeof kb);
        if (strcmp(policy, "stretch") && r->has_sizes)
            FAIL(OSP_ENOTSUP, "attribute 'keep_aspect_ratio_policy' = '%s' (stretch only)", policy);
        if (osp__onnx_attr_int(n, "antialias", 0) && linear &&
            (r->has_sizes || r->scale[2] < 1.0 || r->scale[3] < 1.0))
            FAIL(OSP_ENOTSUP, "attribute 'antialias' = 1 when shrinking");
    } else {
        static const char *const later[] = {"antialias", "axes", "keep_aspect_ratio_policy"};
        for (int k = 0; k < 3; k++)
            if (osp__onnx_attr(n, later[k]))
                FAIL(OSP_EFORMAT, "attribute '%s' is from opset 18; the model's is %d", later[k],
                     im->opset);
    }
    snprintf(keys, len, "coord = %s\n%s%s%s", coord, linear ? "" : "nearest = ",
             linear ? "" : nearest, linear ? "" : "\n");
    return OSP_OK;
}

/* Before 11: asymmetric coordinates; nearest floors an enlarged axis and
 * takes the ceiling of a shrunk one. */
static int old_keys(onnx_importer *im, const Osp__Onnx__NodeProto *n, const resize_request *r,
                    int linear, char *keys, size_t len) {
    const char *nearest = "floor";
    if (!linear) {
        int up_h = r->scale[2] >= 1.0, up_w = r->scale[3] >= 1.0;
        if (up_h != up_w)
            FAIL(OSP_ENOTSUP, "scales that enlarge one axis and shrink the other (nearest mode "
                 "of opsets before 11)");
        nearest = up_h ? "floor" : "ceil";
    }
    if (!strcmp(n->op_type, "Upsample") && (r->scale[2] < 1.0 || r->scale[3] < 1.0))
        FAIL(OSP_EFORMAT, "Upsample scales below 1");
    snprintf(keys, len, "coord = asymmetric\n%s%s%s", linear ? "" : "nearest = ",
             linear ? "" : nearest, linear ? "" : "\n");
    return OSP_OK;
}

int osp__onnx_map_resize(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    const resize_form *f = form_of(n->op_type, im->opset);
    if (!f) FAIL(OSP_EFORMAT, "%s is not defined at opset %d", n->op_type, im->opset);
    onnx_value *xv = osp__onnx_input(im, n, 0);
    if (!xv || xv->kind != ONNX_VAL_LAYER)
        FAIL(OSP_ENOTSUP, "the input must be computed by a layer");
    const osp_shape *xs = &osp__onnx_layer(im, xv->node)->shape;
    if (xs->ndim != 3) FAIL(OSP_ENOTSUP, "resizing of N x C x H x W data only");
    resize_request r;
    int rc;
    if ((rc = read_request(im, n, f, &r)) || (rc = check_kept_axes(im, n, xs, &r))) return rc;
    char mb[32];
    const char *mode = osp__onnx_attr_string(n, "mode", "nearest", mb, sizeof mb);
    int linear = !strcmp(mode, "linear") || (!f->modern && !strcmp(mode, "bilinear"));
    if (!linear && strcmp(mode, "nearest"))
        FAIL(OSP_ENOTSUP, "attribute 'mode' = '%s' (osprey has nearest and linear)", mode);
    char how[160];
    if ((rc = f->modern ? modern_keys(im, n, f, xs, &r, linear, how, sizeof how)
                        : old_keys(im, n, &r, linear, how, sizeof how)))
        return rc;
    char keys[320];
    if (r.has_scales) {
        for (int k = 2; k < 4; k++)
            if (!(r.scale[k] > 0.0) || r.scale[k] > 1024.0)
                FAIL(OSP_ERANGE, "scale %g (0 to 1024)", r.scale[k]);
        snprintf(keys, sizeof keys, "scale = %.9gx%.9g\nmode = %s\n%s", r.scale[2], r.scale[3],
                 linear ? "linear" : "nearest", how);
    } else {
        int64_t h = r.size_given[2] ? r.size[2] : xs->dim[1];
        int64_t w = r.size_given[3] ? r.size[3] : xs->dim[2];
        if (h < 1 || w < 1 || h > 65536 || w > 65536)
            FAIL(OSP_ERANGE, "output size %lldx%lld", (long long)h, (long long)w);
        snprintf(keys, sizeof keys, "size = %lldx%lld\nmode = %s\n%s", (long long)h, (long long)w,
                 linear ? "linear" : "nearest", how);
    }
    int x = xv->node;
    int id = osp__onnx_emit(im, n, NULL, "resize", &x, 1, keys);
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}
