/* [resize]: 2-D spatial resizing of C x H x W, as ONNX's Resize (and
 * Upsample) and PyTorch's F.interpolate: by scale factors (`scale = 2`,
 * `scale = 1.5x2`, output = floor(input x scale)) or to a size
 * (`size = 14x14`, the scales then output / input), in mode nearest or
 * linear (bilinear), with ONNX's coordinate_transformation_mode (`coord`)
 * and nearest_mode (`nearest`). The arithmetic is the backend's
 * (resize_forward, resize_backward; src/kernels/resize.c). */
#include <math.h>
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

/* Outputs up to this many rows or columns, scales up to this factor. */
#define RESIZE_MAX_SIDE (1 << 16)
#define RESIZE_MAX_SCALE 1024.0f

typedef struct resize_attrs {
    int has_scale; /* else a size */
    float scale_h, scale_w;
    int out_h, out_w;
    osp_interp_mode mode;
    osp_resize_coord coord;
    osp_resize_nearest nearest;
} resize_attrs;

static const char *const mode_names[] = {"nearest", "linear", NULL};
/* ONNX's spellings, in the order of osp_resize_coord and osp_resize_nearest. */
static const char *const coord_names[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                          "asymmetric", "tf_half_pixel_for_nn", NULL};
static const char *const nearest_names[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                            "ceil", NULL};

/* The output side for an input side and a scale: floor(in x scale), the
 * product in float as ONNX computes it (7 x 2.142857f is 15 there,
 * 14.999999 in double). */
static int64_t scaled_side(int64_t in, float scale) {
    return (int64_t)floorf((float)in * scale);
}

static int resize_desc(const osp_graph *g, const osp_node *n, int batch, osp_resize_desc *d) {
    const osp_shape *in = &osp_node_input((osp_graph *)g, n, 0)->shape;
    const resize_attrs *a = n->attrs;
    d->planes = (int64_t)batch * in->dim[0];
    d->in_h = (int)in->dim[1];
    d->in_w = (int)in->dim[2];
    d->out_h = (int)n->shape.dim[1];
    d->out_w = (int)n->shape.dim[2];
    d->scale_h = a->has_scale ? a->scale_h : (float)d->out_h / (float)d->in_h;
    d->scale_w = a->has_scale ? a->scale_w : (float)d->out_w / (float)d->in_w;
    d->mode = a->mode;
    d->coord = a->coord;
    d->nearest = a->nearest;
    return OSP_OK;
}

static int resize_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': resize takes one input, not %d", n->name,
                         n->n_inputs);
    const resize_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': resize has no scale or size", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (in->ndim != 3) {
        char s[64];
        osp_shape_format(in, s, sizeof s);
        return osp_error(OSP_ESHAPE, "layer '%s': resize needs a C x H x W input, not %s", n->name,
                         s);
    }
    int64_t h = a->has_scale ? scaled_side(in->dim[1], a->scale_h) : a->out_h;
    int64_t w = a->has_scale ? scaled_side(in->dim[2], a->scale_w) : a->out_w;
    if (h < 1 || w < 1 || h > RESIZE_MAX_SIDE || w > RESIZE_MAX_SIDE || in->dim[1] > RESIZE_MAX_SIDE ||
        in->dim[2] > RESIZE_MAX_SIDE)
        return osp_error(OSP_ESHAPE, "layer '%s': resizing %lldx%lld gives %lldx%lld (each side "
                         "1 to %d)", n->name, (long long)in->dim[1], (long long)in->dim[2],
                         (long long)h, (long long)w, RESIZE_MAX_SIDE);
    if (in->dim[0] * h * w > ((int64_t)1 << 31))
        return osp_error(OSP_ESHAPE, "layer '%s': an output of %lld x %lld x %lld values is too "
                         "large", n->name, (long long)in->dim[0], (long long)h, (long long)w);
    n->shape = osp_shape_make(3, (int64_t[]){in->dim[0], h, w});
    return OSP_OK;
}

static void resize_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_resize_desc d;
    resize_desc(g, n, ex->batch, &d);
    ex->be->resize_forward(&d, osp_node_input(g, n, 0)->out, n->out);
}

static void resize_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    osp_resize_desc d;
    resize_desc(g, n, ex->batch, &d);
    ex->be->resize_backward(&d, n->dout, in->dout);
}

/* ONNX: Resize at the exported opset (13): by the scales [1, 1, h, w]
 * when the layer has them (ONNX then maps coordinates with them, as here),
 * else to the sizes [batch, C, H, W], the batch read from the input. */
static int resize_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                       char *out) {
    int rc = osp__export_needs_attrs(n);
    if (rc) return rc;
    const resize_attrs *a = n->attrs;
    char *args[4] = {in[0], "", "", ""};
    if (a->has_scale) {
        const float scales[4] = {1.0f, 1.0f, a->scale_h, a->scale_w};
        const int64_t dims[1] = {4};
        args[2] = w->init_floats(w, w->name(w, "%s/scales", n->name), dims, 1, scales);
    } else {
        const int64_t chw[3] = {n->shape.dim[0], n->shape.dim[1], n->shape.dim[2]};
        char *parts[2] = {w->batch(w), w->init_ints(w, w->name(w, "%s/chw", n->name), chw, 3)};
        args[3] = w->name(w, "%s/sizes", n->name);
        w->attr_int(w, w->node(w, "Concat", args[3], 2, parts, args[3]), "axis", 0);
    }
    osp_onnx_node *r = w->node(w, "Resize", n->name, 4, args, out);
    w->attr_string(w, r, "mode", mode_names[a->mode]);
    w->attr_string(w, r, "coordinate_transformation_mode", coord_names[a->coord]);
    if (a->mode == OSP_INTERP_NEAREST) w->attr_string(w, r, "nearest_mode", nearest_names[a->nearest]);
    (void)g;
    return OSP_OK;
}

static const osp_op resize_op = {
    .name = "resize",
    .setup = resize_setup,
    .forward = resize_forward,
    .backward = resize_backward,
    .onnx_export = resize_onnx,
};

static int resize_parse(osp_spec_section *s, void **attrs) {
    float scale[2];
    int size[2], ns, nz, mode, coord, nearest, rc;
    if ((rc = osp_spec_floats(s, "scale", scale, 2, &ns))) return rc;
    if ((rc = osp_spec_ints(s, "size", size, 2, &nz, 1, RESIZE_MAX_SIDE))) return rc;
    if ((ns > 0) == (nz > 0))
        return osp_spec_error(s, NULL, "give either 'scale' (e.g. 2, or 1.5x2) or 'size' (e.g. "
                              "14x14), not %s", ns ? "both" : "neither");
    if (ns == 1) scale[1] = scale[0];
    if (nz == 1) size[1] = size[0];
    for (int i = 0; i < ns; i++)
        if (!(scale[i] > 0.0f) || scale[i] > RESIZE_MAX_SCALE)
            return osp_spec_error(s, "scale", "'scale' must lie in (0, %g], not %g",
                                  (double)RESIZE_MAX_SCALE, (double)scale[i]);
    if ((rc = osp_spec_choice(s, "mode", mode_names, OSP_INTERP_NEAREST, &mode))) return rc;
    if ((rc = osp_spec_choice(s, "coord", coord_names, OSP_COORD_HALF_PIXEL, &coord))) return rc;
    if ((rc = osp_spec_choice(s, "nearest", nearest_names, OSP_NEAREST_ROUND_PREFER_FLOOR,
                              &nearest)))
        return rc;
    if (mode != OSP_INTERP_NEAREST && osp_spec_str(s, "nearest", NULL))
        return osp_spec_error(s, "nearest", "'nearest' is only for mode = nearest");
    resize_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->has_scale = ns > 0;
    a->scale_h = ns ? scale[0] : 0.0f;
    a->scale_w = ns ? scale[1] : 0.0f;
    a->out_h = nz ? size[0] : 0;
    a->out_w = nz ? size[1] : 0;
    a->mode = (osp_interp_mode)mode;
    a->coord = (osp_resize_coord)coord;
    a->nearest = (osp_resize_nearest)nearest;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_resize = {&resize_op, resize_parse};
