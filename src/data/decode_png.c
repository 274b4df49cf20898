/* PNG through libpng: every colour type and bit depth (1..16-bit grey,
 * palette, RGB, with or without alpha, interlaced or not) comes out as
 * 8-bit RGB. libpng reports errors by longjmp; everything that must
 * survive the jump lives in a struct reached through a pointer, never in
 * locals that change after setjmp. Warnings are dropped: library code does
 * not print. */
#include <png.h>
#include <stdio.h>
#include <string.h>

#include "decode_impl.h"

/* A bound on what libpng may allocate for one chunk. */
#define PNG_CHUNK_MAX (8u << 20)

typedef struct png_job {
    const uint8_t *buf;
    size_t len, pos;
    const char *name;
    char message[160];
    uint8_t *pixels; /* output, freed on error */
    png_bytep *rows;
} png_job;

static void on_error(png_structp png, png_const_charp msg) {
    png_job *job = png_get_error_ptr(png);
    snprintf(job->message, sizeof job->message, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void on_read(png_structp png, png_bytep out, size_t n) {
    png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos) png_error(png, "truncated PNG");
    memcpy(out, job->buf + job->pos, n);
    job->pos += n;
}

/* libpng allocates a chunk's declared length before it reads the chunk
 * (1.6.39 does for zTXt), so a 20-byte file could ask for 2 GB. The whole
 * file is in memory: no chunk may claim more bytes than the file has left. */
static int check_chunks(const png_job *job) {
    size_t pos = 8;
    while (pos < job->len) {
        if (job->len - pos < 12) return osp_error(OSP_EFORMAT, "%s: truncated PNG", job->name);
        const uint8_t *c = job->buf + pos;
        size_t n = (size_t)c[0] << 24 | (size_t)c[1] << 16 | (size_t)c[2] << 8 | c[3];
        if (n > job->len - pos - 12) return osp_error(OSP_EFORMAT, "%s: truncated PNG", job->name);
        if (!memcmp(c + 4, "IEND", 4)) break;
        pos += 12 + n;
    }
    return OSP_OK;
}

/* Chunks that say nothing about the pixels as osprey uses them: not even
 * inflated (text can be a zlib bomb of its own). */
static const png_byte IGNORED[] = "tEXt\0zTXt\0iTXt\0iCCP\0sPLT\0eXIf\0hIST\0pCAL\0sCAL\0tIME\0"
                                  "oFFs\0pHYs\0sBIT\0gAMA\0cHRM\0sRGB\0bKGD";

static int fail(png_job *job, int code) {
    const char *m = job->message;
    if (!strcmp(m, "truncated PNG")) return osp_error(code, "%s: truncated PNG", job->name);
    return osp_error(code, "%s: corrupt PNG: %s", job->name, m);
}

/* Reads the header; with decode, the pixels too. The caller has checked
 * the 8-byte signature. */
static int run(png_job *job, int64_t max_pixels, osp_image_info *info, int decode,
               osp_image *out) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, on_error, on_warning);
    if (!png) return osp_error(OSP_ENOMEM, "%s: cannot start the PNG decoder", job->name);
    png_infop pi = png_create_info_struct(png);
    if (!pi) {
        png_destroy_read_struct(&png, NULL, NULL);
        return osp_error(OSP_ENOMEM, "%s: cannot start the PNG decoder", job->name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &pi, NULL);
        osp_free(job->pixels);
        osp_free(job->rows);
        job->pixels = NULL;
        job->rows = NULL;
        return fail(job, OSP_EFORMAT);
    }
    png_set_read_fn(png, job, on_read);
    png_set_chunk_malloc_max(png, PNG_CHUNK_MAX);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, IGNORED, (int)(sizeof IGNORED / 5));
    png_read_info(png, pi);
    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &color, &interlace, NULL, NULL);
    int rc = osp__check_pixels(job->name, "PNG", w, h, max_pixels);
    if (rc == OSP_OK) {
        memset(info, 0, sizeof *info);
        info->format = OSP_IMAGE_PNG;
        info->width = (int)w;
        info->height = (int)h;
        info->orientation = 1;
        info->channels = png_get_channels(png, pi);
        info->bit_depth = depth;
    }
    if (rc != OSP_OK || !decode) {
        png_destroy_read_struct(&png, &pi, NULL);
        return rc;
    }
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    /* also the alpha that palette expansion makes from a tRNS chunk */
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, pi);
    if (png_get_rowbytes(png, pi) != (size_t)w * 3) png_error(png, "unexpected row layout");
    job->pixels = osp_alloc((size_t)w * h * 3);
    job->rows = osp_alloc((size_t)h * sizeof *job->rows);
    if (!job->pixels || !job->rows) {
        osp_free(job->pixels);
        osp_free(job->rows);
        job->pixels = NULL;
        job->rows = NULL;
        png_destroy_read_struct(&png, &pi, NULL);
        return osp_error(OSP_ENOMEM, "%s: out of memory for %ux%u pixels", job->name, w, h);
    }
    for (png_uint_32 y = 0; y < h; y++) job->rows[y] = job->pixels + (size_t)y * w * 3;
    /* The pixels are all in once the image data is read; what follows
     * (text chunks, IEND) is not needed, so a file cut after its image
     * data is accepted. */
    png_read_image(png, job->rows);
    png_destroy_read_struct(&png, &pi, NULL);
    osp_free(job->rows);
    job->rows = NULL;
    out->width = (int)w;
    out->height = (int)h;
    out->pixels = job->pixels;
    job->pixels = NULL;
    return OSP_OK;
}

int osp__png_probe(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                   osp_image_info *info) {
    png_job job = {.buf = buf, .len = len, .name = name};
    osp_image unused;
    int rc = check_chunks(&job);
    return rc ? rc : run(&job, max_pixels, info, 0, &unused);
}

int osp__png_decode(const uint8_t *buf, size_t len, const char *name, int64_t max_pixels,
                    osp_image *out, osp_image_info *info) {
    png_job job = {.buf = buf, .len = len, .name = name};
    int rc = check_chunks(&job);
    return rc ? rc : run(&job, max_pixels, info, 1, out);
}
