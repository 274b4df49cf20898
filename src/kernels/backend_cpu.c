/* The CPU backend tables and the choice of backend at start.
 *
 * Three tables share one set of slots: "cpu-ref" (baseline x86-64 code),
 * "cpu-avx2" and "cpu-avx512", whose multiversioned families (conv, pool,
 * batchnorm, activation; see cpu_kernels.h) are the same C compiled for
 * those instruction sets; the slots they do not override (sgemm through
 * OpenBLAS, which dispatches itself; fc; softmax; l2norm) are the
 * reference's. osp_backend_default() takes the widest the CPU runs, unless
 * OSP_BACKEND names one. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"


int osp_conv_out_size(int in, int kernel, int stride, int pad, int dil, int ceil_mode) {
    if (in <= 0 || kernel <= 0 || stride <= 0 || pad < 0 || dil <= 0) return -1;
    int64_t span = (int64_t)dil * (kernel - 1) + 1;
    int64_t room = (int64_t)in + 2 * (int64_t)pad - span;
    if (room < 0) return -1;
    int64_t out = (ceil_mode ? (room + stride - 1) / stride : room / stride) + 1;
    /* ceil mode: the last window must start inside the input or left padding */
    if (ceil_mode && (out - 1) * stride >= (int64_t)in + pad) out--;
    return out > (1 << 24) ? -1 : (int)out;
}

int osp__kernel_slots(void) {
#ifdef _OPENMP
    int p = omp_get_num_procs();
    return p > 0 ? p : 1;
#else
    return 1;
#endif
}

int osp__kernel_team(void) {
#ifdef _OPENMP
    int t = omp_get_max_threads(), s = osp__kernel_slots();
    return t < 1 ? 1 : t < s ? t : s;
#else
    return 1;
#endif
}

/* The losses' slots: the CPU's memory is the host's, so the loss is
 * written where the caller reads it. */
static void cpu_softmax_xent(int rows, int cols, const float *logits, const int32_t *labels,
                             float *probs, float *dlogits, double *loss) {
    *loss = osp__cpu_softmax_xent(rows, cols, logits, labels, probs, dlogits);
}

static void cpu_sigmoid_bce(int rows, int cols, const float *logits, const float *targets,
                            float *probs, float *dlogits, double *loss) {
    *loss = osp__cpu_sigmoid_bce(rows, cols, logits, targets, probs, dlogits);
}

/* The slots every CPU table shares, then the multiversioned ones of prefix P. */
#define SHARED_SLOTS                                          \
    .sgemm = osp__cpu_sgemm, .fc_forward = osp__cpu_fc_forward, \
    .fc_backward = osp__cpu_fc_backward,                      \
    .softmax_forward = osp__cpu_softmax_forward,              \
    .softmax_backward = osp__cpu_softmax_backward,            \
    .softmax_xent = cpu_softmax_xent,                         \
    .sigmoid_bce = cpu_sigmoid_bce,                           \
    .l2norm_forward = osp__cpu_l2norm_forward,                \
    .l2norm_backward = osp__cpu_l2norm_backward,              \
    .resize_forward = osp__cpu_resize_forward,                \
    .resize_backward = osp__cpu_resize_backward,              \
    .deconv2d_workspace = osp__cpu_deconv2d_workspace,        \
    .deconv2d_forward = osp__cpu_deconv2d_forward,            \
    .deconv2d_backward_data = osp__cpu_deconv2d_backward_data, \
    .deconv2d_backward_filter = osp__cpu_deconv2d_backward_filter, \
    .groupnorm_forward = osp__cpu_groupnorm_forward,          \
    .groupnorm_backward = osp__cpu_groupnorm_backward,        \
    .batchnorm_sums = osp__cpu_batchnorm_sums,                \
    .batchnorm_forward_stats = osp__cpu_batchnorm_forward_stats, \
    .batchnorm_backward_sums = osp__cpu_batchnorm_backward_sums, \
    .batchnorm_backward_stats = osp__cpu_batchnorm_backward_stats, \
    TRANSFORMER_SLOTS, SEAM_SLOTS
/* The transformers' kernels (appended to the table). */
#define TRANSFORMER_SLOTS                                     \
    .sgemm_batched = osp__cpu_sgemm_batched,                  \
    .softmax_axis_forward = osp__cpu_softmax_axis_forward,    \
    .softmax_axis_backward = osp__cpu_softmax_axis_backward,  \
    .logsoftmax_forward = osp__cpu_logsoftmax_forward,        \
    .logsoftmax_backward = osp__cpu_logsoftmax_backward
/* Memory is host memory; the slots of the device seam. */
#define SEAM_SLOTS                                            \
    .host_memory = 1, .mem_alloc = osp__cpu_mem_alloc,        \
    .mem_free = osp__cpu_mem_free, .copy_h2d = osp__cpu_copy, \
    .copy_d2h = osp__cpu_copy, .copy_d2d = osp__cpu_copy,     \
    .mem_zero = osp__cpu_mem_zero, .run_begin = osp__cpu_run_begin, \
    .run_end = osp__cpu_run_end, .fill_bytes = osp__cpu_fill_bytes, \
    .add = osp__cpu_add, .accumulate = osp__cpu_accumulate,   \
    .dropout_forward = osp__cpu_dropout_forward,              \
    .dropout_backward = osp__cpu_dropout_backward,            \
    .piecewise_forward = osp__cpu_piecewise_forward,          \
    .piecewise_backward = osp__cpu_piecewise_backward,        \
    .permute_forward = osp__cpu_permute_forward,              \
    .permute_backward = osp__cpu_permute_backward,            \
    .copy_rows = osp__cpu_copy_rows,                          \
    .accumulate_rows = osp__cpu_accumulate_rows,              \
    .sgd_step = osp__cpu_sgd_step, .adam_step = osp__cpu_adam_step
#define VERSIONED_SLOTS(P)                                           \
    .conv2d_workspace = P##conv2d_workspace,                         \
    .conv2d_forward = P##conv2d_forward,                             \
    .conv2d_prepared_floats = P##conv2d_prepared_floats,             \
    .conv2d_prepare = P##conv2d_prepare,                             \
    .conv2d_backward_data = P##conv2d_backward_data,                 \
    .conv2d_backward_filter = P##conv2d_backward_filter,             \
    .maxpool_forward = P##maxpool_forward,                           \
    .maxpool_backward = P##maxpool_backward,                         \
    .avgpool_forward = P##avgpool_forward,                           \
    .avgpool_backward = P##avgpool_backward,                         \
    .activation_forward = P##activation_forward,                     \
    .activation_backward = P##activation_backward,                   \
    .batchnorm_forward_train = P##batchnorm_forward_train,           \
    .batchnorm_forward_infer = P##batchnorm_forward_infer,           \
    .batchnorm_backward = P##batchnorm_backward,                     \
    TRANSFORMER_VERSIONED_SLOTS(P)
/* The transformers' kernels compiled per instruction set. */
#define TRANSFORMER_VERSIONED_SLOTS(P)                               \
    .special_forward = P##special_forward,                           \
    .special_backward = P##special_backward,                         \
    .fc_forward_fused = P##fc_forward_fused,                         \
    .attention_workspace = P##attention_workspace,                   \
    .attention_forward = P##attention_forward,                       \
    .attention_backward = P##attention_backward,                     \
    .layernorm_forward = P##layernorm_forward,                       \
    .layernorm_backward = P##layernorm_backward

/* The linear layers' prepared weights: AVX2 and AVX-512 only. */
#define FC_PREPARED_SLOTS(P)                                         \
    .fc_prepared_floats = P##fc_prepared_floats, .fc_prepare = P##fc_prepare, \
    .fc_forward_prepared = P##fc_forward_prepared

#define INT8_SLOTS(forward)                                                \
    .conv2d_int8_prepared_bytes = osp__conv2d_int8_prepared_bytes,          \
    .conv2d_int8_prepare = osp__conv2d_int8_prepare,                        \
    .conv2d_int8_workspace = osp__conv2d_int8_workspace, .conv2d_int8_forward = forward, \
    .conv2d_int8_packed_bytes = osp__conv2d_int8_packed_bytes,              \
    .conv2d_int8_forward_io = forward##_io

/* The reference backend has the portable int8 kernel (the one every other
 * int8 kernel must equal); AVX2 has none (int8 layers run float32 there,
 * which is faster than the portable loop); AVX-512 has VNNI's where the
 * CPU has the instructions. */
static const osp_backend cpu_reference = {.name = "cpu-ref", SHARED_SLOTS,
                                          VERSIONED_SLOTS(osp__cpu_),
                                          INT8_SLOTS(osp__cpu_conv2d_int8_forward)};
static const osp_backend cpu_avx2 = {.name = "cpu-avx2", SHARED_SLOTS,
                                     VERSIONED_SLOTS(osp__avx2_),
                                     FC_PREPARED_SLOTS(osp__avx2_)};
static const osp_backend cpu_avx512 = {.name = "cpu-avx512", SHARED_SLOTS,
                                       VERSIONED_SLOTS(osp__avx512_),
                                       FC_PREPARED_SLOTS(osp__avx512_)};
static const osp_backend cpu_avx512_vnni = {.name = "cpu-avx512", SHARED_SLOTS,
                                            VERSIONED_SLOTS(osp__avx512_),
                                            FC_PREPARED_SLOTS(osp__avx512_),
                                            INT8_SLOTS(osp__vnni_conv2d_int8_forward)};

const osp_backend *osp_backend_cpu_reference(void) { return &cpu_reference; }

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int cpu_has_avx512(void) {
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
}

static int cpu_has_vnni(void) {
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
}

static const osp_backend *avx512_table(void) {
    return cpu_has_vnni() ? &cpu_avx512_vnni : &cpu_avx512;
}

const osp_backend *osp_backend_find(const char *name) {
    if (!strcmp(name, "reference") || !strcmp(name, "cpu-ref")) return &cpu_reference;
    if (!strcmp(name, "avx2") || !strcmp(name, "cpu-avx2")) return cpu_has_avx2() ? &cpu_avx2 : NULL;
    if (!strcmp(name, "avx512") || !strcmp(name, "cpu-avx512"))
        return cpu_has_avx512() ? avx512_table() : NULL;
    return NULL;
}

/* The automatic pick, or OSP_BACKEND's (an unknown or unsupported name
 * falls back to the automatic pick). */
static const osp_backend *choose_backend(void) {
    const char *want = getenv("OSP_BACKEND");
    const osp_backend *be = want && *want ? osp_backend_find(want) : NULL;
    if (be) return be;
    if (cpu_has_avx512()) return avx512_table();
    if (cpu_has_avx2()) return &cpu_avx2;
    return &cpu_reference;
}

static const osp_backend *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose_once(void) { chosen = choose_backend(); }

/* Chosen once: the tables are constant, so every later call returns the
 * same one whatever the environment says by then. */
const osp_backend *osp_backend_default(void) {
    pthread_once(&chosen_once, choose_once);
    return chosen;
}
