/* osprey core: errors, logging, aligned allocation, tensors, random numbers,
 * thread policy. Everything else in osprey is built on this header. */
#ifndef OSPREY_CORE_H
#define OSPREY_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define OSP_API __attribute__((visibility("default")))
#define OSP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define OSP_API
#define OSP_PRINTF(f, a)
#endif

/* ---- errors ------------------------------------------------------------ */

/* One table gives the codes, their names and their messages. Codes are
 * stable: never renumber. */
#define OSP_ERROR_TABLE(X)                                   \
    X(OK, 0, "success")                                      \
    X(EINVAL, -1, "invalid argument")                        \
    X(ENOMEM, -2, "out of memory")                           \
    X(EIO, -3, "input/output error")                         \
    X(EFORMAT, -4, "malformed input")                        \
    X(ESHAPE, -5, "shape mismatch")                          \
    X(ENOTSUP, -6, "not supported")                          \
    X(ENOENT, -7, "not found")                               \
    X(ERANGE, -8, "value out of range")                      \
    X(ESTATE, -9, "operation not valid in the current state") \
    X(ECORRUPT, -10, "corrupted data")

typedef enum osp_status {
#define OSP_X_ENUM(name, code, msg) OSP_##name = code,
    OSP_ERROR_TABLE(OSP_X_ENUM)
#undef OSP_X_ENUM
} osp_status;

/* The message of the last error set on this thread: what failed and on
 * which input ("mnist/x: truncated IDX file at byte 1234"). Never NULL. */
OSP_API const char *osp_last_error(void);
/* Static description of a code ("out of memory"). */
OSP_API const char *osp_strerror(int code);
/* Symbolic name of a code ("OSP_ENOMEM"). */
OSP_API const char *osp_err_name(int code);
/* Sets this thread's error message and returns code, so that library code
 * can write `return osp_error(OSP_EFORMAT, "%s: bad magic", path);`. */
OSP_API int osp_error(int code, const char *fmt, ...) OSP_PRINTF(2, 3);
/* Clears this thread's error message. */
OSP_API void osp_error_clear(void);

/* ---- logging ----------------------------------------------------------- */

typedef enum osp_log_level {
    OSP_LOG_DEBUG = 0,
    OSP_LOG_INFO = 1,
    OSP_LOG_WARN = 2,
    OSP_LOG_ERROR = 3,
    OSP_LOG_QUIET = 4,
} osp_log_level;

OSP_API void osp_log_set_level(osp_log_level level);
OSP_API osp_log_level osp_log_get_level(void);
/* Writes one line to stderr if level is at or above the set level. */
OSP_API void osp_log(osp_log_level level, const char *fmt, ...) OSP_PRINTF(2, 3);

/* ---- allocation -------------------------------------------------------- */

/* All tensor memory is aligned to a cache line (and AVX-512 register). */
#define OSP_ALIGN 64

/* Aligned allocation (OSP_ALIGN; blocks of 2 MiB and more on a 2 MiB
 * boundary, with transparent huge pages asked for); returns NULL and sets
 * OSP_ENOMEM on failure. Memory is not cleared. Free with osp_free. */
OSP_API void *osp_alloc(size_t bytes);
/* Aligned, zeroed allocation of n * size bytes, checking the product for
 * overflow. */
OSP_API void *osp_calloc(size_t n, size_t size);
OSP_API void osp_free(void *p);
/* Stores a * b in *out; returns 0, or OSP_ERANGE if it overflows size_t. */
OSP_API int osp_mul_size(size_t a, size_t b, size_t *out);

/* ---- tensors ----------------------------------------------------------- */

#define OSP_MAX_DIMS 8

typedef struct osp_shape {
    int ndim;
    int64_t dim[OSP_MAX_DIMS];
} osp_shape;

/* Number of elements; 0 for a shape with a zero dimension. */
OSP_API int64_t osp_shape_numel(const osp_shape *s);
OSP_API int osp_shape_equal(const osp_shape *a, const osp_shape *b);
/* Writes "2x3x28x28" into buf (always terminated). */
OSP_API void osp_shape_format(const osp_shape *s, char *buf, size_t len);
OSP_API osp_shape osp_shape_make(int ndim, const int64_t *dim);
OSP_API osp_shape osp_shape4(int64_t n, int64_t c, int64_t h, int64_t w);

struct osp_backend;

/* A float32 tensor, row-major; images are NCHW. */
typedef struct osp_tensor {
    float *data;   /* numel floats, OSP_ALIGN-aligned when owned */
    osp_shape shape;
    int64_t numel;
    int owns_data; /* 1 if osp_tensor_free releases data */
    const struct osp_backend *backend; /* who owns the memory; NULL = CPU */
} osp_tensor;

/* New zero-filled tensor; OSP_EINVAL or OSP_ERANGE on a bad shape,
 * OSP_ENOMEM without memory. */
OSP_API int osp_tensor_new(const osp_shape *shape, osp_tensor **out);
/* A tensor header over caller memory (borrowed: not freed by the tensor). */
OSP_API int osp_tensor_wrap(float *data, const osp_shape *shape, osp_tensor **out);
OSP_API void osp_tensor_free(osp_tensor *t);

/* ---- random numbers ---------------------------------------------------- */

/* xoshiro256** seeded through splitmix64. The whole state is the four words:
 * saving and restoring them continues the stream exactly. */
typedef struct osp_rng {
    uint64_t s[4];
} osp_rng;

OSP_API void osp_rng_seed(osp_rng *r, uint64_t seed);
/* An independent stream for (seed, stream, index): a new generator per epoch
 * or per step without having to carry state from earlier ones. */
OSP_API void osp_rng_derive(osp_rng *r, uint64_t seed, uint64_t stream, uint64_t index);
OSP_API uint64_t osp_rng_u64(osp_rng *r);
/* Uniform in [0, 1). */
OSP_API float osp_rng_uniform(osp_rng *r);
/* Standard normal (Box-Muller; one value per call, deterministic). */
OSP_API float osp_rng_normal(osp_rng *r);
/* Uniform integer in [0, n); n > 0. Unbiased. */
OSP_API uint64_t osp_rng_below(osp_rng *r, uint64_t n);
/* Fisher-Yates shuffle of idx[0..n). */
OSP_API void osp_rng_shuffle(osp_rng *r, int64_t *idx, int64_t n);

/* ---- threads ----------------------------------------------------------- */

/* The one thread policy: sets OpenMP's and OpenBLAS's thread counts together
 * so that they never oversubscribe the cores. n <= 0 means all cores. */
OSP_API void osp_threads_set(int n);
OSP_API int osp_threads_get(void);
/* The threads an inference step takes now: OpenMP's count, less the cores
 * that other processes kept busy over the last quarter of a second (at
 * least 1). Spinning threads on shared cores are many times slower than
 * one thread; osp_graph_forward applies it to inference steps. */
OSP_API int osp_threads_for_inference(void);
/* Seconds since an arbitrary fixed point (monotonic clock). */
OSP_API double osp_now(void);


/* ---- files ------------------------------------------------------------- */

/* A file written under a temporary name in the same directory and renamed
 * into place by commit (after fsync of the file and its directory), so that
 * readers see the old file or the whole new one, never a half-written one. */
typedef struct osp_atomic_file {
    int fd;
    char *path;     /* final path */
    char *tmp_path; /* where the bytes go until commit */
} osp_atomic_file;

OSP_API int osp_atomic_open(osp_atomic_file *f, const char *path);
OSP_API int osp_atomic_write(osp_atomic_file *f, const void *buf, size_t len);
/* fsync, rename, fsync the directory; frees f's strings either way. */
OSP_API int osp_atomic_commit(osp_atomic_file *f);
/* Removes the temporary file; safe after a failed write. */
OSP_API void osp_atomic_abort(osp_atomic_file *f);

/* Reads a whole file into a new buffer (osp_free it); refuses files larger
 * than max_bytes with OSP_ERANGE. */
OSP_API int osp_file_read_all(const char *path, size_t max_bytes, void **buf, size_t *len);

/* A read-only memory map of a whole file. */
typedef struct osp_mapped_file {
    const void *data;
    size_t len;
} osp_mapped_file;
OSP_API int osp_file_map(const char *path, osp_mapped_file *m);
OSP_API void osp_file_unmap(osp_mapped_file *m);

/* What a file is, told from its first bytes, so that a message can say
 * "x.onnx is an ONNX model" instead of how a parser choked on it. A guess
 * for messages only: parsers still check everything. */
typedef enum osp_file_kind {
    OSP_FILE_UNKNOWN = 0,
    OSP_FILE_SAFETENSORS, /* an osprey model or checkpoint (or other safetensors) */
    OSP_FILE_ONNX,        /* an ONNX model (protobuf) */
    OSP_FILE_NETSPEC,     /* a network spec: text whose first section is [net] */
    OSP_FILE_NPY,         /* a NumPy array */
    OSP_FILE_JPEG,
    OSP_FILE_PNG,
    OSP_FILE_WEBP,
    OSP_FILE_IDX_IMAGES,  /* MNIST IDX images (magic 0x00000803) */
    OSP_FILE_IDX_LABELS,  /* MNIST IDX labels (magic 0x00000801) */
    OSP_FILE_INDEX,       /* an osprey vector index */
    OSP_FILE_GZIP,
    OSP_FILE_SQLITE,      /* an SQLite database (an output folder's catalogue) */
} osp_file_kind;

/* The kind of a file that starts with head[0..len) (pass at least the
 * first 512 bytes, or the whole file if shorter). */
OSP_API osp_file_kind osp_file_sniff(const void *head, size_t len);
/* The same from the file's first bytes; OSP_FILE_UNKNOWN if unreadable. */
OSP_API osp_file_kind osp_file_sniff_path(const char *path);
/* "an ONNX model", "a network spec", "a JPEG image", ... ("" if unknown):
 * the phrase to put after "x is ". */
OSP_API const char *osp_file_kind_phrase(osp_file_kind kind);

/* ---- half precision ------------------------------------------------------- */

/* IEEE binary16 from float (round to nearest even; beyond 65504 gives
 * infinity) and back (exact). */
OSP_API void osp_half_from_float(const float *src, uint16_t *dst, int64_t n);
OSP_API void osp_float_from_half(const uint16_t *src, float *dst, int64_t n);

/* CRC-32C (Castagnoli) of buf, continuing from crc (start with 0). */
OSP_API uint32_t osp_crc32c(uint32_t crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
