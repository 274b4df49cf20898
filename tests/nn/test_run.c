/* osp_net_run: any layers' outputs from one call, the same numbers as the
 * graph run by hand; photos to inputs; clear errors for bad requests. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../data/imagegen.h"
#include "osprey/nn.h"

static const char *SPEC =
    "[net]\ninput = 3x16x16\nmean = 0.5\nstd = 0.25\n"
    "[conv]\nname = conv1\nfilters = 4\nsize = 3\npad = 1\n"
    "[batchnorm]\nname = bn1\n[relu]\nname = relu1\n"
    "[globalavgpool]\nname = pool\n"
    "[fc]\nname = fc\noutputs = 5\n[softmax]\nname = prob\n";

static osp_net *make_net(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 7, &net), 0, "%s", osp_last_error());
    return net;
}

static float *random_inputs(int64_t n, int64_t size) {
    float *x = malloc((size_t)(n * size) * sizeof(float));
    osp_rng rng;
    osp_rng_seed(&rng, 3);
    for (int64_t i = 0; i < n * size; i++) x[i] = osp_rng_uniform(&rng) * 2 - 1;
    return x;
}

Test(net_run, layers_match_a_forward_by_hand) {
    osp_net *net = make_net(), *ref = make_net();
    const int64_t n = 11, size = osp_shape_numel(&net->input);
    float *x = random_inputs(n, size);
    int64_t relu_size, out_size, logit_size;
    cr_assert_eq(osp_net_find_layer(net, "relu1", NULL, &relu_size), 0);
    cr_assert_eq(osp_net_find_layer(net, NULL, NULL, &out_size), 0);
    cr_assert_eq(osp_net_find_layer(net, OSP_LAYER_LOGITS, NULL, &logit_size), 0);
    cr_assert_eq(relu_size, 4 * 16 * 16);
    cr_assert_eq(out_size, 5);
    cr_assert_eq(logit_size, 5);
    float *relu = malloc((size_t)(n * relu_size) * sizeof(float));
    float *prob = malloc((size_t)(n * out_size) * sizeof(float));
    float *logits = malloc((size_t)(n * logit_size) * sizeof(float));
    const char *layers[] = {"relu1", NULL, OSP_LAYER_LOGITS};
    float *outs[] = {relu, prob, logits};
    /* batches of 4 (the last one 3) against one batch of all 11 by hand */
    cr_assert_eq(osp_net_run(net, x, n, 4, layers, 3, outs), 0, "%s", osp_last_error());

    osp_graph *g = ref->graph;
    osp_node *r = osp_graph_find(g, "relu1"), *f = osp_graph_find(g, "fc");
    r->keep = f->keep = 1;
    cr_assert_eq(osp_graph_plan(g, (int)n, OSP_MODE_INFER), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = (int)n};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    const float *want_prob = osp_graph_output(g)->out;
    for (int64_t i = 0; i < n * relu_size; i++) cr_assert_float_eq(relu[i], r->out[i], 1e-5f, "relu %ld", (long)i);
    for (int64_t i = 0; i < n * out_size; i++) {
        cr_assert_float_eq(prob[i], want_prob[i], 1e-6f);
        cr_assert_float_eq(logits[i], f->out[i], 1e-5f);
    }
    /* the output alone, with n_layers 0 */
    memset(prob, 0, (size_t)(n * out_size) * sizeof(float));
    float *only[] = {prob};
    cr_assert_eq(osp_net_run(net, x, n, 0, NULL, 0, only), 0);
    for (int64_t i = 0; i < n * out_size; i++) cr_assert_float_eq(prob[i], want_prob[i], 1e-6f);
    free(x); free(relu); free(prob); free(logits);
    osp_net_free(net);
    osp_net_free(ref);
}

Test(net_run, bad_requests_are_refused) {
    osp_net *net = make_net();
    float x[3 * 16 * 16] = {0}, out[5];
    float *outs[] = {out};
    const char *missing[] = {"conv9"};
    cr_assert_eq(osp_net_run(net, x, 1, 0, missing, 1, outs), OSP_ENOENT);
    cr_assert(strstr(osp_last_error(), "no layer 'conv9'"), "%s", osp_last_error());
    const char *input[] = {"input"};
    cr_assert_eq(osp_net_run(net, x, 1, 0, input, 1, outs), OSP_ENOENT);
    cr_assert_eq(osp_net_run(net, x, -1, 0, NULL, 0, outs), OSP_EINVAL);
    cr_assert_eq(osp_net_run(net, x, 1, 0, NULL, 0, NULL), OSP_EINVAL);
    cr_assert_eq(osp_net_run(net, x, 0, 0, NULL, 0, outs), 0);
    osp_net_free(net);
}

Test(net_run, photos_become_normalised_inputs) {
    osp_net *net = make_net();
    size_t len;
    uint8_t *png = gen_png_rgb(40, 30, &len);
    const int64_t size = osp_shape_numel(&net->input);
    float *a = malloc((size_t)size * sizeof(float)), *b = malloc((size_t)size * sizeof(float));
    cr_assert_eq(osp_net_image_input(net, png, len, "g.png", NULL, 0, a), 0, "%s", osp_last_error());
    /* the same as the transform by hand, then (x - 0.5) / 0.25 */
    osp_transform t;
    cr_assert_eq(osp_net_transform(net, &t), 0);
    cr_assert_eq(osp_image_to_sample(png, len, "g.png", &t, 0, NULL, b), 0);
    for (int64_t i = 0; i < size; i++) cr_assert_float_eq(a[i], (b[i] - 0.5f) / 0.25f, 1e-5f);
    /* a broken file is named */
    cr_assert_neq(osp_net_image_input(net, png, len / 3, "cut.png", NULL, 0, a), 0);
    cr_assert(strstr(osp_last_error(), "cut.png"), "%s", osp_last_error());
    /* a transform of another size is refused */
    osp_transform other = osp_transform_defaults(3, 8, 8);
    cr_assert_eq(osp_net_image_input(net, png, len, "g.png", &other, 0, a), OSP_ESHAPE);
    free(png); free(a); free(b);
    osp_net_free(net);

    /* a network whose input is not an image has no transform */
    const char *flat = "[net]\ninput = 10\n[fc]\noutputs = 2\n";
    cr_assert_eq(osp_net_from_spec(flat, strlen(flat), "flat", 1, &net), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_transform(net, &t), OSP_ESHAPE);
    cr_assert(strstr(osp_last_error(), "not an image"), "%s", osp_last_error());
    osp_net_free(net);
}

/* A network rebuilt for another input size keeps its weights: at its own
 * size it answers exactly as the original; a network whose parameters
 * depend on the input size is refused, naming the layer. */
Test(net_run, with_input_keeps_the_weights) {
    const char *gap = "[net]\ninput = 3x16x16\nmean = 0.5\nstd = 0.25\n"
                      "[conv]\nfilters = 4\nsize = 3\npad = 1\n[batchnorm]\n[relu]\n"
                      "[globalavgpool]\n[fc]\nname = fc\noutputs = 3\n";
    osp_net *net, *same, *big;
    cr_assert_eq(osp_net_from_spec(gap, strlen(gap), "gap", 3, &net), 0, "%s", osp_last_error());
    const char *labels[] = {"a", "b", "c"};
    cr_assert_eq(osp_net_set_labels(net, labels, 3), 0);
    cr_assert_eq(osp_net_with_input(net, 16, 16, &same), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_with_input(net, 24, 20, &big), 0, "%s", osp_last_error());
    cr_assert_eq(big->input.dim[1], 24);
    cr_assert_eq(big->input.dim[2], 20);
    cr_assert_str_eq(big->labels[2], "c");
    cr_assert_float_eq(big->std[1], 0.25f, 0);
    float *x = random_inputs(2, 3 * 16 * 16), a[6], b[6];
    float *oa[] = {a}, *ob[] = {b};
    cr_assert_eq(osp_net_run(net, x, 2, 0, NULL, 0, oa), 0);
    cr_assert_eq(osp_net_run(same, x, 2, 0, NULL, 0, ob), 0);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the copy answers otherwise");
    float *y = random_inputs(1, 3 * 24 * 20), c[3];
    float *oc[] = {c};
    cr_assert_eq(osp_net_run(big, y, 1, 0, NULL, 0, oc), 0, "%s", osp_last_error());
    free(x);
    free(y);
    osp_net_free(same);
    osp_net_free(big);
    osp_net_free(net);

    osp_net *flat = make_net(), *other; /* conv then fc over... a pooled map: fine */
    cr_assert_eq(osp_net_with_input(flat, 32, 32, &other), 0, "%s", osp_last_error());
    osp_net_free(other);
    osp_net_free(flat);
    const char *fc = "[net]\ninput = 1x8x8\n[conv]\nfilters = 2\nsize = 3\n[fc]\nname = head\noutputs = 3\n";
    cr_assert_eq(osp_net_from_spec(fc, strlen(fc), "fc", 1, &net), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_with_input(net, 16, 16, &other), OSP_ESHAPE);
    cr_assert(strstr(osp_last_error(), "head.weight depends on the input size"), "%s", osp_last_error());
    osp_net_free(net);
}

/* Scores, the top few and embeddings: the small steps from a network's
 * outputs to answers that the pipeline, the server and the examples share. */
Test(net_run, scores_top_k_and_embeddings) {
    const float logits[5] = {1.0f, 3.0f, -2.0f, 3.0f, 1000.0f};
    float p[5];
    osp_scores_from_logits(logits, 4, 0, p);
    double sum = 0;
    for (int j = 0; j < 4; j++) sum += p[j];
    cr_assert_float_eq(sum, 1.0, 1e-6);
    cr_assert_float_eq(p[1], expf(3) / (expf(1) + 2 * expf(3) + expf(-2)), 1e-6f);
    osp_scores_from_logits(logits, 5, 0, p); /* a huge logit does not overflow */
    cr_assert_float_eq(p[4], 1.0f, 1e-6f);
    osp_scores_from_logits(logits, 3, 1, p);
    cr_assert_float_eq(p[0], 1.0f / (1.0f + expf(-1.0f)), 1e-6f);
    const float s[6] = {0.1f, 0.5f, 0.2f, 0.5f, 0.9f, 0.0f};
    int order[6];
    cr_assert_eq(osp_top_k(s, 6, 3, order), 3);
    cr_assert(order[0] == 4 && order[1] == 1 && order[2] == 3, "%d %d %d", order[0], order[1], order[2]);
    cr_assert_eq(osp_top_k(s, 2, 5, order), 2);
    cr_assert(order[0] == 1 && order[1] == 0);
    cr_assert_eq(osp_top_k(s, 6, 0, order), 0);
    /* 2 channels of 2 x 2: averaged, then normalised */
    const float layer[8] = {1, 2, 3, 4, -4, -4, -4, -4};
    float v[2];
    osp_embedding_from_layer(layer, 2, 4, 0, v);
    cr_assert(v[0] == 2.5f && v[1] == -4.0f);
    osp_embedding_from_layer(layer, 2, 4, 1, v);
    cr_assert_float_eq(v[0] * v[0] + v[1] * v[1], 1.0f, 1e-6f);
    const float zero[2] = {0, 0};
    osp_embedding_from_layer(zero, 2, 1, 1, v);
    cr_assert(v[0] == 0 && v[1] == 0);
    osp_net *net = make_net();
    int64_t channels, plane;
    cr_assert_eq(osp_net_embedding_size(net, "relu1", &channels, &plane), 0);
    cr_assert(channels == 4 && plane == 256);
    cr_assert_eq(osp_net_embedding_size(net, "fc", &channels, &plane), 0);
    cr_assert(channels == 5 && plane == 1);
    cr_assert_eq(osp_net_embedding_size(net, "nope", &channels, &plane), OSP_ENOENT);
    osp_net_free(net);
}
