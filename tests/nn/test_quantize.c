/* Int8 quantisation of a network (src/nn/quantize.c): calibration finds
 * each convolution's input range (min/max, or percentiles that drop
 * outliers), the record survives a model's save and load, a hostile
 * record is refused with a clear error, and an int8 network's outputs
 * stay close to float32's. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/attrs.h"
#include "osprey/model.h"
#include "osprey/nn.h"

static const char SPEC[] = "[net]\ninput = 2x8x8\n"
                           "[conv]\nname = c1\nfilters = 8\nsize = 3\npad = 1\n"
                           "[batchnorm]\n[relu]\n"
                           "[conv]\nname = c2\nfilters = 12\nsize = 3\npad = 1\n"
                           "[conv]\nname = dw\nfilters = 12\nsize = 3\npad = 1\ngroups = 12\n"
                           "[globalavgpool]\n[fc]\nname = head\noutputs = 4\n";

static osp_net *make_net(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "q", 7, &net), 0, "%s", osp_last_error());
    return net;
}

/* n inputs uniform in [lo, hi], and one outlier of 100 in the first. */
static float *inputs(int n, float lo, float hi, int outlier) {
    float *x = malloc(sizeof(float) * n * 128);
    osp_rng r;
    osp_rng_seed(&r, 3);
    for (int i = 0; i < n * 128; i++) x[i] = lo + (hi - lo) * osp_rng_uniform(&r);
    if (outlier) x[5] = 100.0f;
    return x;
}

static void calibrate(osp_net *net, const float *x, int n, osp_calib_method m, double pct) {
    float *y = malloc(sizeof(float) * n * 4);
    float *outs[1] = {y};
    cr_assert_eq(osp_net_calibrate_begin(net), 2, "two ungrouped convolutions");
    cr_assert_eq(osp_net_run(net, x, n, 16, NULL, 0, outs), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_calibrate_pass(net), 0);
    cr_assert_eq(osp_net_run(net, x, n, 16, NULL, 0, outs), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_calibrate_end(net, m, pct, n), 0, "%s", osp_last_error());
    free(y);
}

/* c1's [scale, zero] from the record. */
static void c1_params(const osp_net *net, double *scale, double *zero) {
    const char *at = strstr(net->quantization, "\"c1\":[");
    cr_assert(at, "%s", net->quantization);
    cr_assert_eq(sscanf(at + 6, "%lf,%lf", scale, zero), 2);
}

Test(quantize, minmax_range_holds_zero) {
    osp_net *net = make_net();
    float *x = inputs(64, -1.0f, 3.0f, 0);
    calibrate(net, x, 64, OSP_CALIB_MINMAX, 0);
    double s, z;
    c1_params(net, &s, &z);
    cr_assert(fabs(s - 4.0 / 255) < 1e-3 * 4.0 / 255, "scale %g", s);
    cr_assert_eq(z, 64, "zero point %g", z); /* round(1 / (4 / 255)) */
    cr_assert_eq(osp_net_quantized_layers(net), 2, "the grouped layer stays float32");
    free(x);
    osp_net_free(net);
}

Test(quantize, percentile_drops_outliers) {
    osp_net *a = make_net(), *b = make_net();
    float *x = inputs(64, 0.0f, 2.0f, 1);
    calibrate(a, x, 64, OSP_CALIB_MINMAX, 0);
    calibrate(b, x, 64, OSP_CALIB_PERCENTILE, 99.9);
    double sa, za, sb, zb;
    c1_params(a, &sa, &za);
    c1_params(b, &sb, &zb);
    cr_assert(sa > 100.0 / 255 * 0.99, "min/max keeps the outlier: %g", sa);
    cr_assert(sb < 2.1 / 255 && sb > 1.9 / 255, "the percentile drops it: %g", sb);
    cr_assert_eq(za, 0);
    cr_assert_eq(zb, 0);
    free(x);
    osp_net_free(a);
    osp_net_free(b);
}

Test(quantize, int8_close_to_float32_and_saved) {
    osp_net *net = make_net();
    const int n = 32;
    float *x = inputs(n, -1.0f, 1.0f, 0);
    float *want = malloc(sizeof(float) * n * 4), *got = malloc(sizeof(float) * n * 4);
    float *outs[1] = {want};
    cr_assert_eq(osp_net_run(net, x, n, 8, NULL, 0, outs), 0);
    calibrate(net, x, n, OSP_CALIB_PERCENTILE, 99.99);
    char path[] = "/tmp/osp_quant_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(osp_model_save(net, path), 0, "%s", osp_last_error());
    osp_net *back;
    cr_assert_eq(osp_model_load(path, &back), 0, "%s", osp_last_error());
    remove(path);
    cr_assert_str_eq(back->quantization, net->quantization);
    cr_assert_eq(osp_net_quantized_layers(back), 2);
    outs[0] = got;
    cr_assert_eq(osp_net_run(back, x, n, 8, NULL, 0, outs), 0);
    double num = 0, den = 0;
    for (int i = 0; i < n * 4; i++) {
        num += (got[i] - want[i]) * (double)(got[i] - want[i]);
        den += want[i] * (double)want[i];
    }
    /* where the backend has no int8 kernel the outputs are float32's */
    cr_assert(sqrt(num / den) < 0.05, "relative error %g", sqrt(num / den));
    /* back to float32 */
    cr_assert_eq(osp_net_set_quantization(back, NULL, "x"), 0);
    cr_assert_eq(osp_net_quantized_layers(back), 0);
    cr_assert_null(back->quantization);
    free(x), free(want), free(got);
    osp_net_free(net);
    osp_net_free(back);
}

Test(quantize, hostile_records_refused) {
    osp_net *net = make_net();
    static const char *bad[][2] = {
        {"[1,2]", "must be an object"},
        {"{\"scheme\":\"int4\",\"layers\":{\"c1\":[0.1,0]}}", "not one osprey runs"},
        {"{\"scheme\":\"int8\",\"layers\":{\"nope\":[0.1,0]}}", "'nope'"},
        {"{\"scheme\":\"int8\",\"layers\":{\"dw\":[0.1,0]}}", "ungrouped"},
        {"{\"scheme\":\"int8\",\"layers\":{\"head\":[0.1,0]}}", "'head'"},
        {"{\"scheme\":\"int8\",\"layers\":{\"c1\":[0,0]}}", "scale > 0"},
        {"{\"scheme\":\"int8\",\"layers\":{\"c1\":[-1,0]}}", "scale > 0"},
        {"{\"scheme\":\"int8\",\"layers\":{\"c1\":[0.1,256]}}", "0..255"},
        {"{\"scheme\":\"int8\",\"layers\":{\"c1\":[0.1,1.5]}}", "0..255"},
        {"{\"scheme\":\"int8\",\"layers\":{\"c1\":[0.1]}}", "0..255"},
        {"{\"scheme\":\"int8\",\"layers\":{\"c1\":\"x\"}}", "0..255"},
        {"{\"scheme\":\"int8\",\"layers\":{}}", "no layer"},
        {"not json", "must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_neq(osp_net_set_quantization(net, bad[i][0], "m.osp"), 0, "%s accepted", bad[i][0]);
        cr_assert(strstr(osp_last_error(), bad[i][1]), "%s: '%s', expected '%s'", bad[i][0],
                  osp_last_error(), bad[i][1]);
        cr_assert_eq(osp_net_quantized_layers(net), 0, "a refused record leaves nothing set");
        cr_assert_null(net->quantization);
    }
    osp_net_free(net);
}

Test(quantize, calibration_misuse) {
    osp_net *net = make_net();
    cr_assert_eq(osp_net_calibrate_begin(net), 2);
    cr_assert_neq(osp_net_calibrate_end(net, OSP_CALIB_MINMAX, 0, 0), 0, "no input seen");
    cr_assert(strstr(osp_last_error(), "saw no input"), "%s", osp_last_error());
    cr_assert_neq(osp_net_calibrate_end(net, OSP_CALIB_PERCENTILE, 30, 0), 0);
    cr_assert(strstr(osp_last_error(), "percentile"), "%s", osp_last_error());
    osp_net_free(net);
}

/* Int8 activations between layers: a convolution whose output an int8
 * convolution with a stride-1 window reads hands it bytes: in its own
 * buffer where that layer alone reads it (c1 -> c2, with batch norm and
 * ReLU fused; c2 -> c3, 1x1), beside its float32 output where others read
 * it too (c4 -> c5, whose output an add reads too); the rest do not
 * (c3 -> c4 has a strided reader, c5 none that is a convolution). The
 * outputs are the same bits as when every layer's float32 output is kept
 * (osp_net_run's kept layers are never handed off), and the same on the
 * portable kernel as on this CPU's. */
static const char CHAIN[] = "[net]\ninput = 3x10x10\n"
                            "[conv]\nname = c1\nfilters = 10\nsize = 3\npad = 1\n"
                            "[batchnorm]\n[relu]\nname = r1\n"
                            "[conv]\nname = c2\nfilters = 16\nsize = 3\npad = 1\n[relu]\nname = r2\n"
                            "[conv]\nname = c3\nfilters = 8\nsize = 1\n"
                            "[conv]\nname = c4\nfilters = 8\nsize = 3\nstride = 2\npad = 1\n"
                            "[relu]\nname = r4\n"
                            "[conv]\nname = c5\nfilters = 8\nsize = 3\npad = 1\n"
                            "[add]\ninput = c5, r4\n[relu]\n"
                            "[globalavgpool]\n[fc]\nname = head\noutputs = 4\n";

/* 0: layer hands off no bytes; 1: in its own buffer; 2: beside it */
static int hands_off(osp_net *net, const char *layer) {
    const osp_node *n = osp_graph_find(net->graph, layer);
    const conv_attrs *a = n->attrs;
    if (a->qout_for == NULL || a->qout_node < 0) return 0;
    return a->qbytes_size ? 2 : 1;
}

Test(quantize, packed_handoff_equals_float32_handoff) {
    osp_net *nets[2];
    const int n = 24;
    float *x = inputs(n * 3, -1.0f, 1.0f, 0); /* 300 floats an image */
    char *record = NULL;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(osp_net_from_spec(CHAIN, strlen(CHAIN), "q", 11, &nets[i]), 0, "%s",
                     osp_last_error());
        if (!record) {
            float *y = malloc(sizeof(float) * n * 4);
            float *outs[1] = {y};
            cr_assert_eq(osp_net_calibrate_begin(nets[i]), 5);
            cr_assert_eq(osp_net_run(nets[i], x, n, 8, NULL, 0, outs), 0, "%s", osp_last_error());
            cr_assert_eq(osp_net_calibrate_pass(nets[i]), 0);
            cr_assert_eq(osp_net_run(nets[i], x, n, 8, NULL, 0, outs), 0, "%s", osp_last_error());
            cr_assert_eq(osp_net_calibrate_end(nets[i], OSP_CALIB_PERCENTILE, 99.99, n), 0, "%s",
                         osp_last_error());
            free(y);
            record = strdup(nets[i]->quantization);
        } else {
            cr_assert_eq(osp_net_set_quantization(nets[i], record, "q"), 0, "%s", osp_last_error());
        }
    }
    const char *backends[] = {"reference", "avx512"};
    float *first = NULL;
    for (int b = 0; b < 2; b++) {
        const osp_backend *be = osp_backend_find(backends[b]);
        if (!be || !be->conv2d_int8_forward_io) continue;
        for (int i = 0; i < 2; i++)
            cr_assert_eq(osp_graph_set_backend(nets[i]->graph, be), 0, "%s", osp_last_error());
        float *packed = malloc(sizeof(float) * n * 4), *plain = malloc(sizeof(float) * n * 4);
        float *r1 = malloc(sizeof(float) * n * 1000), *r2 = malloc(sizeof(float) * n * 1600);
        float *r4 = malloc(sizeof(float) * n * 200);
        float *outs[4] = {packed};
        cr_assert_eq(osp_net_run(nets[0], x, n, 8, NULL, 0, outs), 0, "%s", osp_last_error());
        cr_assert(hands_off(nets[0], "c1") == 1 && hands_off(nets[0], "c2") == 1,
                  "%s: c1, c2 hand off", be->name);
        cr_assert(hands_off(nets[0], "c4") == 2, "%s: c4 hands off beside float32", be->name);
        cr_assert(!hands_off(nets[0], "c3") && !hands_off(nets[0], "c5"));
        const char *layers[] = {"head", "r1", "r2", "r4"};
        outs[0] = plain, outs[1] = r1, outs[2] = r2, outs[3] = r4;
        cr_assert_eq(osp_net_run(nets[1], x, n, 8, layers, 4, outs), 0, "%s", osp_last_error());
        cr_assert(!hands_off(nets[1], "c1") && !hands_off(nets[1], "c2") &&
                      !hands_off(nets[1], "c4"),
                  "kept layers stay float32");
        cr_assert(memcmp(packed, plain, sizeof(float) * n * 4) == 0, "%s: packed and float32 differ",
                  be->name);
        if (first) cr_assert(memcmp(packed, first, sizeof(float) * n * 4) == 0,
                             "%s differs from the portable kernel", be->name);
        else first = packed, packed = NULL;
        free(packed), free(plain), free(r1), free(r2), free(r4);
    }
    cr_assert(first, "the portable kernel runs int8");
    free(first), free(record), free(x);
    osp_net_free(nets[0]);
    osp_net_free(nets[1]);
}
