/* The backend seam, proved: a backend that lives only in this test runs
 * the reference kernels on "device" memory that the host cannot touch.
 *
 * Its mem_alloc carves memory from pages of its own that are PROT_NONE
 * whenever host code runs; each of its slots opens them (read and write),
 * calls the reference kernel and closes them again, and its copies do the
 * same. A layer, optimizer or trainer that reads or writes a device
 * pointer itself faults, and the fault handler names the address. Every
 * net trains and runs here and on the plain reference backend from the
 * same seed, and the results must match bit for bit. */
#include <criterion/criterion.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "osprey/nn.h"
#include "osprey/optim.h"
#include "osprey/train.h"

/* Address space reserved for the device; only what is handed out is ever
 * opened. */
#define DEVICE_BYTES ((size_t)1 << 30)

static char *device_base;
static size_t device_used; /* bytes handed out, page-rounded */
static const osp_backend *ref;
/* The reference as the host run uses it: an inference pass of the real one
 * takes only the cores other processes leave idle, and a different thread
 * count sums in a different order; both runs here keep the full team. */
static osp_backend host_be;

static void device_protect(int prot) {
    if (device_used && mprotect(device_base, device_used, prot) != 0) {
        perror("mprotect");
        _exit(3);
    }
}

static void open_device(void) { device_protect(PROT_READ | PROT_WRITE); }
static void close_device(void) { device_protect(PROT_NONE); }

static void on_fault(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    char msg[160];
    const char *at = info->si_addr;
    int in_device = device_base && at >= device_base && at < device_base + DEVICE_BYTES;
    int len = snprintf(msg, sizeof msg, "signal %d at %p: %s\n", sig, info->si_addr,
                       in_device ? "host code touched device memory" : "not device memory");
    if (len > 0) (void)write(2, msg, (size_t)len);
    void *frames[24];
    backtrace_symbols_fd(frames, backtrace(frames, 24), 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A bump allocator: the tests are small, and freed memory is never
 * reused, so a stale pointer still faults on the host. */
static void *dev_mem_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t rounded = (bytes + page - 1) / page * page;
    if (rounded > DEVICE_BYTES - device_used) return NULL;
    void *p = device_base + device_used;
    device_used += rounded;
    return p;
}

static void dev_mem_free(void *ctx, void *p) { (void)ctx, (void)p; }

#define DEVICE_CALL(call) \
    do {                  \
        open_device();    \
        call;             \
        close_device();   \
    } while (0)

static void dev_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    DEVICE_CALL(memcpy(dst, src, bytes));
}
static void dev_mem_zero(void *ctx, void *p, size_t bytes) {
    (void)ctx;
    DEVICE_CALL(memset(p, 0, bytes));
}
static void dev_fill_bytes(void *ctx, void *p, int value, size_t bytes) {
    (void)ctx;
    DEVICE_CALL(memset(p, value, bytes));
}

/* A slot with its parameter list and the arguments passed on. */
#define WRAP(name, params, args) \
    static void dev_##name params { DEVICE_CALL(ref->name args); }

/* 1 when p lies in memory the device handed out: the losses' labels and
 * result must, or a device would read the host's. */
static int on_device(const void *p) {
    return (const char *)p >= device_base && (const char *)p < device_base + device_used;
}

WRAP(sgemm, (osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
             const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc),
     (ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))
WRAP(conv2d_forward, (const osp_conv_desc *d, const float *x, const float *w, const float *bias,
                      float *y, void *ws), (d, x, w, bias, y, ws))
WRAP(conv2d_prepare, (const osp_conv_desc *d, const float *w, float *p), (d, w, p))
WRAP(conv2d_backward_data, (const osp_conv_desc *d, const float *dy, const float *w, float *dx,
                            void *ws), (d, dy, w, dx, ws))
WRAP(conv2d_backward_filter, (const osp_conv_desc *d, const float *x, const float *dy, float *dw,
                              float *db, void *ws), (d, x, dy, dw, db, ws))
WRAP(maxpool_forward, (const osp_conv_desc *d, const float *x, float *y, int32_t *am),
     (d, x, y, am))
WRAP(maxpool_backward, (const osp_conv_desc *d, const float *dy, const int32_t *am, float *dx),
     (d, dy, am, dx))
WRAP(avgpool_forward, (const osp_conv_desc *d, int ex, const float *x, float *y), (d, ex, x, y))
WRAP(avgpool_backward, (const osp_conv_desc *d, int ex, const float *dy, float *dx),
     (d, ex, dy, dx))
WRAP(fc_forward, (int n, int in, int out, const float *x, const float *w, const float *b,
                  float *y), (n, in, out, x, w, b, y))
WRAP(fc_backward, (int n, int in, int out, const float *x, const float *w, const float *dy,
                   float *dx, float *dw, float *db), (n, in, out, x, w, dy, dx, dw, db))
WRAP(fc_forward_fused, (int n, int in, int out, const float *x, const float *w, const float *b,
                        int fn, float *y), (n, in, out, x, w, b, fn, y))
WRAP(activation_forward, (osp_activation act, float alpha, int64_t count, const float *x,
                          float *y), (act, alpha, count, x, y))
WRAP(activation_backward, (osp_activation act, float alpha, int64_t count, const float *x,
                           const float *y, const float *dy, float *dx),
     (act, alpha, count, x, y, dy, dx))
WRAP(batchnorm_forward_train, (int n, int c, int s, const float *x, const float *gamma,
                               const float *beta, float momentum, float eps, float *rm, float *rv,
                               float *sm, float *si, float *y),
     (n, c, s, x, gamma, beta, momentum, eps, rm, rv, sm, si, y))
WRAP(batchnorm_forward_infer, (int n, int c, int s, const float *x, const float *gamma,
                               const float *beta, const float *rm, const float *rv, float eps,
                               float *y), (n, c, s, x, gamma, beta, rm, rv, eps, y))
WRAP(batchnorm_backward, (int n, int c, int s, const float *x, const float *dy,
                          const float *gamma, const float *sm, const float *si, float *dx,
                          float *dg, float *db), (n, c, s, x, dy, gamma, sm, si, dx, dg, db))
WRAP(softmax_forward, (int rows, int cols, const float *x, float *y), (rows, cols, x, y))
WRAP(softmax_backward, (int rows, int cols, const float *y, const float *dy, float *dx),
     (rows, cols, y, dy, dx))
static void dev_softmax_xent(int rows, int cols, const float *logits, const int32_t *labels,
                             float *probs, float *dlogits, double *loss) {
    if (!on_device(labels) || !on_device(loss)) {
        fprintf(stderr, "softmax_xent: labels or loss in host memory\n");
        _exit(4);
    }
    DEVICE_CALL(ref->softmax_xent(rows, cols, logits, labels, probs, dlogits, loss));
}
static void dev_sigmoid_bce(int rows, int cols, const float *logits, const float *targets,
                            float *probs, float *dlogits, double *loss) {
    if (!on_device(targets) || !on_device(loss)) {
        fprintf(stderr, "sigmoid_bce: targets or loss in host memory\n");
        _exit(4);
    }
    DEVICE_CALL(ref->sigmoid_bce(rows, cols, logits, targets, probs, dlogits, loss));
}
WRAP(sgemm_batched, (osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                     const float *a, int lda, int64_t sa, const float *b, int ldb, int64_t sb,
                     float beta, float *c, int ldc, int64_t sc, int count),
     (ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count))
WRAP(layernorm_forward, (int64_t rows, int cols, float eps, const float *x, const float *gamma,
                         const float *beta, float *y, float *sm, float *si),
     (rows, cols, eps, x, gamma, beta, y, sm, si))
WRAP(layernorm_backward, (int64_t rows, int cols, const float *x, const float *dy,
                          const float *gamma, const float *sm, const float *si, float *dx,
                          float *dg, float *db), (rows, cols, x, dy, gamma, sm, si, dx, dg, db))
WRAP(special_forward, (osp_special fn, int64_t count, const float *x, float *y), (fn, count, x, y))
WRAP(special_backward, (osp_special fn, int64_t count, const float *x, const float *dy,
                        float *dx), (fn, count, x, dy, dx))
WRAP(softmax_axis_forward, (int64_t outer, int len, int64_t inner, const float *x, float *y),
     (outer, len, inner, x, y))
WRAP(softmax_axis_backward, (int64_t outer, int len, int64_t inner, const float *y,
                             const float *dy, float *dx), (outer, len, inner, y, dy, dx))
WRAP(attention_forward, (const osp_attention_desc *d, const float *q, const float *k,
                         const float *v, float *o, float *lse, void *ws), (d, q, k, v, o, lse, ws))
WRAP(attention_backward, (const osp_attention_desc *d, const float *q, const float *k,
                          const float *v, const float *o, const float *dout, const float *lse,
                          float *dq, float *dk, float *dv, void *ws),
     (d, q, k, v, o, dout, lse, dq, dk, dv, ws))
WRAP(add, (int64_t count, const float *a, const float *b, float *y), (count, a, b, y))
WRAP(accumulate, (int64_t count, const float *x, float *y), (count, x, y))
WRAP(dropout_forward, (int64_t count, float p, uint64_t seed, uint64_t stream, uint64_t step,
                       const float *x, float *y, uint8_t *mask),
     (count, p, seed, stream, step, x, y, mask))
WRAP(dropout_backward, (int64_t count, float p, const uint8_t *mask, const float *dy, float *dx),
     (count, p, mask, dy, dx))
WRAP(piecewise_forward, (osp_piecewise fn, const float *params, int64_t count, const float *x,
                         float *y), (fn, params, count, x, y))
WRAP(piecewise_backward, (osp_piecewise fn, const float *params, int64_t count, const float *x,
                          const float *dy, float *dx), (fn, params, count, x, dy, dx))
WRAP(permute_forward, (int64_t samples, int ndim, const int64_t *dims, const int64_t *stride,
                       const float *x, float *y), (samples, ndim, dims, stride, x, y))
WRAP(permute_backward, (int64_t samples, int ndim, const int64_t *dims, const int64_t *stride,
                        const float *dy, float *dx), (samples, ndim, dims, stride, dy, dx))
WRAP(copy_rows, (int64_t rows, int64_t len, const float *x, int64_t ldx, float *y, int64_t ldy),
     (rows, len, x, ldx, y, ldy))
WRAP(accumulate_rows, (int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                       int64_t ldy), (rows, len, x, ldx, y, ldy))
WRAP(sgd_step, (int64_t n, float lr, float mu, float wd, int nesterov, float *w, const float *g,
                float *buf), (n, lr, mu, wd, nesterov, w, g, buf))
WRAP(adam_step, (int64_t n, const osp_adam_step *s, float *w, const float *g, float *m, float *v),
     (n, s, w, g, m, v))

static osp_backend device;

#define SLOT(name) device.name = dev_##name

/* The reference table with every slot that touches memory wrapped. A slot
 * left unwrapped keeps the reference kernel, which faults on device
 * memory: a slot the seam misses fails loudly rather than passing. */
static void device_setup(void) {
    ref = osp_backend_cpu_reference();
    device_base = mmap(NULL, DEVICE_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    cr_assert(device_base != MAP_FAILED, "cannot reserve the device's pages");
    struct sigaction sa = {0};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    host_be = *ref;
    host_be.run_begin = NULL;
    host_be.run_end = NULL;
    device = host_be;
    device.name = "test-device";
    device.host_memory = 0;
    device.ctx = &device; /* its memory is nobody else's */
    device.mem_alloc = dev_mem_alloc;
    device.mem_free = dev_mem_free;
    device.copy_h2d = device.copy_d2h = device.copy_d2d = dev_copy;
    device.mem_zero = dev_mem_zero;
    device.fill_bytes = dev_fill_bytes;
    /* optional: without them int8 layers run float32 */
    device.conv2d_int8_prepared_bytes = NULL;
    device.conv2d_int8_prepare = NULL;
    device.conv2d_int8_workspace = NULL;
    device.conv2d_int8_forward = NULL;
    device.conv2d_int8_packed_bytes = NULL;
    device.conv2d_int8_forward_io = NULL;
    SLOT(sgemm), SLOT(conv2d_forward), SLOT(conv2d_prepare), SLOT(conv2d_backward_data);
    SLOT(conv2d_backward_filter), SLOT(maxpool_forward), SLOT(maxpool_backward);
    SLOT(avgpool_forward), SLOT(avgpool_backward), SLOT(fc_forward), SLOT(fc_backward);
    SLOT(fc_forward_fused), SLOT(activation_forward), SLOT(activation_backward);
    SLOT(batchnorm_forward_train), SLOT(batchnorm_forward_infer), SLOT(batchnorm_backward);
    SLOT(softmax_forward), SLOT(softmax_backward), SLOT(softmax_xent), SLOT(sigmoid_bce);
    SLOT(sgemm_batched);
    SLOT(layernorm_forward), SLOT(layernorm_backward), SLOT(special_forward);
    SLOT(special_backward), SLOT(softmax_axis_forward), SLOT(softmax_axis_backward);
    SLOT(attention_forward), SLOT(attention_backward), SLOT(add), SLOT(accumulate);
    SLOT(dropout_forward), SLOT(dropout_backward), SLOT(permute_forward);
    SLOT(permute_backward), SLOT(copy_rows), SLOT(accumulate_rows), SLOT(sgd_step);
    SLOT(adam_step), SLOT(piecewise_forward), SLOT(piecewise_backward);
}

/* Deterministic inputs and labels, from the sample index. */
static void make_batch(int64_t in_size, int batch, int classes, float *x, int32_t *labels) {
    osp_rng rng;
    osp_rng_seed(&rng, 1234);
    for (int64_t i = 0; i < in_size * batch; i++) x[i] = 2 * osp_rng_uniform(&rng) - 1;
    for (int b = 0; b < batch; b++) labels[b] = (int32_t)osp_rng_below(&rng, (uint64_t)classes);
}

/* What a few training steps and an inference pass leave: the weights,
 * the buffers, the losses and the inference output, read to the host. */
typedef struct outcome {
    float *weights, *buffers, *infer;
    int64_t n_weights, n_buffers, n_infer;
    double loss[4];
} outcome;

#define STEPS 3

static void run_net(const char *spec, const osp_backend *be, osp_optim_kind kind, int batch,
                    outcome *o) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "seam", 7, &net), 0, "%s", osp_last_error());
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_set_backend(g, be), 0, "%s", osp_last_error());
    cr_assert_eq(osp_graph_backend(g), be);
    int64_t nw, nb;
    float *w = osp_graph_weights(g, &nw);
    osp_graph_buffers(g, &nb);
    osp_optim_config cfg = osp_optim_defaults(kind);
    if (kind == OSP_OPTIM_SGD) cfg.nesterov = 1, cfg.weight_decay = 1e-4f;
    osp_optim *opt;
    cr_assert_eq(osp_optim_new_for(&cfg, nw, be, &opt), 0, "%s", osp_last_error());
    const int64_t in_size = osp_graph_node(g, 0)->size;
    const int classes = (int)osp_graph_node(g, net->logits_node)->size;
    float *x = malloc(sizeof(float) * (size_t)(in_size * batch));
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)batch);
    make_batch(in_size, batch, classes, x, labels);
    for (int s = 0; s < STEPS; s++) {
        osp_step_result r;
        cr_assert_eq(osp_train_step(net, opt, x, labels, batch, 0.05f, s, 11, &r), 0, "%s",
                     osp_last_error());
        o->loss[s] = r.loss;
    }
    /* inference: a plan of its own, with what it fuses */
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_INFER), 0, "%s", osp_last_error());
    osp_exec ex = {.mode = OSP_MODE_INFER, .batch = batch};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    o->n_infer = out->size * batch;
    o->infer = malloc(sizeof(float) * (size_t)o->n_infer);
    osp_graph_read(g, o->infer, out->out, o->n_infer);
    o->n_weights = nw;
    o->n_buffers = nb;
    o->weights = malloc(sizeof(float) * (size_t)(nw ? nw : 1));
    o->buffers = malloc(sizeof(float) * (size_t)(nb ? nb : 1));
    osp_graph_read(g, o->weights, w, nw);
    osp_graph_read(g, o->buffers, osp_graph_buffers(g, NULL), nb);
    free(x);
    free(labels);
    osp_optim_free(opt);
    osp_net_free(net);
}

static void outcome_free(outcome *o) {
    free(o->weights);
    free(o->buffers);
    free(o->infer);
}

/* The same run on the device and on the reference: equal bit for bit. */
static void expect_same(const char *spec, osp_optim_kind kind, int batch) {
    device_setup();
    outcome host = {0}, dev = {0};
    run_net(spec, &host_be, kind, batch, &host);
    run_net(spec, &device, kind, batch, &dev);
    for (int s = 0; s < STEPS; s++)
        cr_expect_eq(host.loss[s], dev.loss[s], "step %d: loss %.9g on the host, %.9g on the device",
                     s, host.loss[s], dev.loss[s]);
    cr_assert_eq(host.n_weights, dev.n_weights);
    cr_expect(!memcmp(host.weights, dev.weights, sizeof(float) * (size_t)host.n_weights),
              "the trained weights differ");
    cr_expect(!memcmp(host.buffers, dev.buffers, sizeof(float) * (size_t)host.n_buffers),
              "the buffers (batch-norm statistics) differ");
    cr_expect(!memcmp(host.infer, dev.infer, sizeof(float) * (size_t)host.n_infer),
              "the inference outputs differ");
    cr_expect(host.loss[STEPS - 1] < host.loss[0], "the loss fell (%g to %g)", host.loss[0],
              host.loss[STEPS - 1]);
    outcome_free(&host);
    outcome_free(&dev);
}

#define LENET                                                                            \
    "[net]\ninput = 1x28x28\n\n"                                                         \
    "[conv]\nfilters = 6\nsize = 5\n\n[maxpool]\nsize = 2\nstride = 2\n\n"                \
    "[conv]\nfilters = 8\nsize = 5\n\n[maxpool]\nsize = 2\nstride = 2\n\n"                \
    "[fc]\noutputs = 32\n\n[relu]\n\n[fc]\noutputs = 10\n"

Test(device_backend, lenet_sgd) { expect_same(LENET, OSP_OPTIM_SGD, 8); }

/* A ResNet-20-like block: convolutions with batch norm, a residual add,
 * MobileNetV3's piecewise activations, global pooling; Adam. */
#define RESNET                                                                           \
    "[net]\ninput = 3x8x8\n\n"                                                           \
    "[conv]\nname = c0\nfilters = 8\nsize = 3\npad = 1\nbias = 0\n\n[batchnorm]\n\n[relu]\nname = r0\n\n" \
    "[conv]\nfilters = 8\nsize = 3\npad = 1\nbias = 0\n\n[batchnorm]\n\n[relu]\n\n"      \
    "[conv]\nfilters = 8\nsize = 3\npad = 1\nbias = 0\n\n[batchnorm]\nname = b2\n\n"     \
    "[add]\ninput = b2, r0\n\n[relu]\n\n"                                                \
    "[conv]\nfilters = 16\nsize = 3\nstride = 2\npad = 1\nbias = 0\n\n[batchnorm]\n\n[relu]\n\n" \
    "[hardswish]\n\n[clip]\nmin = -0.5\nmax = 2\n\n[hardsigmoid]\n\n"                    \
    "[globalavgpool]\n\n[fc]\noutputs = 10\n"

Test(device_backend, resnet_adam) { expect_same(RESNET, OSP_OPTIM_ADAM, 4); }

/* A small transformer block: a constant added, layer norm, attention (as
 * matmuls and fused), GELU, dropout, a concatenation; AdamW. */
#define TRANSFORMER                                                                      \
    "[net]\ninput = 5x8\n\n"                                                            \
    "[constant]\nname = c\nshape = 5x8\n\n[add]\nname = shifted\ninput = input, c\n\n"      \
    "[layernorm]\nname = ln1\n\n"                                                        \
    "[fc]\nname = q\noutputs = 8\nlast_axis = 1\n\n"                                     \
    "[fc]\nname = k\noutputs = 8\nlast_axis = 1\ninput = ln1\n\n"                       \
    "[fc]\nname = v\noutputs = 8\nlast_axis = 1\ninput = ln1\n\n"                       \
    "[reshape]\nname = qh\nshape = 5x2x4\ninput = q\n\n"                                 \
    "[transpose]\nname = qt\nperm = 1, 0, 2\n\n"                                         \
    "[reshape]\nname = kh\nshape = 5x2x4\ninput = k\n\n"                                 \
    "[transpose]\nname = kt\nperm = 1, 2, 0\n\n"                                         \
    "[reshape]\nname = vh\nshape = 5x2x4\ninput = v\n\n"                                 \
    "[transpose]\nname = vt\nperm = 1, 0, 2\n\n"                                         \
    "[matmul]\nname = scores\ninput = qt, kt\n\n"                                        \
    "[softmax]\nname = attn\naxis = -1\n\n"                                              \
    "[matmul]\nname = ctx\ninput = attn, vt\n\n"                                         \
    "[attention]\nname = fused\ninput = qt, kt, vt\ntransposed_k = 1\n\n"                 \
    "[concat]\nname = both\ninput = ctx, fused\naxis = 2\n\n"                             \
    "[transpose]\nname = ctxt\nperm = 1, 0, 2\n\n"                                       \
    "[reshape]\nname = merged\nshape = 5x16\n\n"                                         \
    "[dropout]\np = 0.2\n\n"                                                              \
    "[fc]\nname = proj\noutputs = 8\nlast_axis = 1\n\n"                                  \
    "[add]\nname = res1\ninput = input, proj\n\n"                                        \
    "[layernorm]\nname = ln2\n\n"                                                        \
    "[fc]\nname = ff1\noutputs = 16\nlast_axis = 1\n\n"                                  \
    "[gelu]\n\n"                                                                          \
    "[flatten]\n\n[fc]\noutputs = 10\n"

Test(device_backend, transformer_adamw) { expect_same(TRANSFORMER, OSP_OPTIM_ADAMW, 4); }

/* The spec nets of nets/, as `osprey train` builds them. */
static void expect_same_file(const char *name, osp_optim_kind kind, int batch) {
    char path[1024];
    snprintf(path, sizeof path, "%s/nets/%s", OSP_SOURCE_DIR, name);
    void *text;
    size_t len;
    cr_assert_eq(osp_file_read_all(path, 1 << 20, &text, &len), 0, "%s", osp_last_error());
    char *spec = malloc(len + 1);
    memcpy(spec, text, len);
    spec[len] = 0;
    osp_free(text);
    expect_same(spec, kind, batch);
    free(spec);
}

Test(device_backend, spec_lenet) { expect_same_file("lenet.cfg", OSP_OPTIM_SGD, 4); }
Test(device_backend, spec_resnet20) { expect_same_file("resnet20.cfg", OSP_OPTIM_SGD, 2); }
Test(device_backend, spec_mobilenet) { expect_same_file("mobilenet.cfg", OSP_OPTIM_SGD, 2); }

/* The test can fail: host code that reads device memory faults. */
Test(device_backend, host_access_faults, .signal = SIGSEGV) {
    device_setup();
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(LENET, strlen(LENET), "seam", 7, &net), 0, "%s",
                 osp_last_error());
    cr_assert_eq(osp_graph_set_backend(net->graph, &device), 0, "%s", osp_last_error());
    volatile float *w = osp_graph_weights(net->graph, NULL);
    printf("%g\n", (double)w[0]); /* must not be reached */
}
