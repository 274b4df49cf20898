/* What a file is, from its first bytes: magic numbers where the format has
 * one, the shape of the start otherwise (ONNX's protobuf, a spec's [net]).
 * Used for messages, so a guess is enough; parsers still check everything. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "osprey/core.h"

#define SNIFF_BYTES 4096

static int starts_with(const unsigned char *h, size_t n, const char *magic, size_t m) {
    return n >= m && memcmp(h, magic, m) == 0;
}

/* 8-byte little-endian header length, then a JSON object within the file. */
static int is_safetensors(const unsigned char *h, size_t n) {
    if (n < 10 || h[8] != '{') return 0;
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--) len = len << 8 | h[i];
    return len >= 2 && len <= 100u * 1000u * 1000u;
}

/* An ONNX ModelProto as every exporter writes it: field 1 (ir_version, a
 * varint of 1..127) first, then a length-delimited field of the model
 * (producer_name, producer_version, domain, doc_string, graph,
 * opset_import, metadata_props) or model_version (a varint). */
static int is_onnx(const unsigned char *h, size_t n) {
    if (n < 4 || h[0] != 0x08 || h[1] < 1 || h[1] > 0x7f) return 0;
    switch (h[2]) {
    case 0x12: case 0x1a: case 0x22: case 0x32: case 0x3a: case 0x42: case 0x72: case 0x28:
        return 1;
    }
    return 0;
}

/* Text whose first line that is not blank or a comment is "[net]". */
static int is_netspec(const unsigned char *h, size_t n) {
    size_t i = 0;
    while (i < n) {
        while (i < n && (h[i] == ' ' || h[i] == '\t' || h[i] == '\r' || h[i] == '\n')) i++;
        if (i < n && (h[i] == '#' || h[i] == ';')) {
            while (i < n && h[i] != '\n') i++;
            continue;
        }
        break;
    }
    if (n - i < 5 || memcmp(h + i, "[net]", 5) != 0) return 0;
    for (size_t k = 0; k < n; k++)
        if (h[k] == 0) return 0;
    return 1;
}

osp_file_kind osp_file_sniff(const void *head, size_t n) {
    const unsigned char *h = head;
    if (!h || n == 0) return OSP_FILE_UNKNOWN;
    if (is_safetensors(h, n)) return OSP_FILE_SAFETENSORS;
    if (starts_with(h, n, "\x93NUMPY", 6)) return OSP_FILE_NPY;
    if (starts_with(h, n, "\xff\xd8\xff", 3)) return OSP_FILE_JPEG;
    if (starts_with(h, n, "\x89PNG\r\n\x1a\n", 8)) return OSP_FILE_PNG;
    if (n >= 12 && !memcmp(h, "RIFF", 4) && !memcmp(h + 8, "WEBP", 4)) return OSP_FILE_WEBP;
    if (starts_with(h, n, "\x00\x00\x08\x03", 4)) return OSP_FILE_IDX_IMAGES;
    if (starts_with(h, n, "\x00\x00\x08\x01", 4)) return OSP_FILE_IDX_LABELS;
    if (starts_with(h, n, "OSPINDEX", 8)) return OSP_FILE_INDEX;
    if (starts_with(h, n, "\x1f\x8b", 2)) return OSP_FILE_GZIP;
    if (starts_with(h, n, "SQLite format 3", 16)) return OSP_FILE_SQLITE;
    if (is_onnx(h, n)) return OSP_FILE_ONNX;
    if (is_netspec(h, n)) return OSP_FILE_NETSPEC;
    return OSP_FILE_UNKNOWN;
}

osp_file_kind osp_file_sniff_path(const char *path) {
    unsigned char head[SNIFF_BYTES];
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) return OSP_FILE_UNKNOWN;
    size_t n = 0;
    while (n < sizeof head) {
        ssize_t r = read(fd, head + n, sizeof head - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    return osp_file_sniff(head, n);
}

const char *osp_file_kind_phrase(osp_file_kind kind) {
    switch (kind) {
    case OSP_FILE_UNKNOWN: return "";
    case OSP_FILE_SAFETENSORS: return "an osprey model or checkpoint (safetensors)";
    case OSP_FILE_ONNX: return "an ONNX model";
    case OSP_FILE_NETSPEC: return "a network spec";
    case OSP_FILE_NPY: return "a NumPy array (.npy)";
    case OSP_FILE_JPEG: return "a JPEG image";
    case OSP_FILE_PNG: return "a PNG image";
    case OSP_FILE_WEBP: return "a WebP image";
    case OSP_FILE_IDX_IMAGES: return "an IDX images file";
    case OSP_FILE_IDX_LABELS: return "an IDX labels file";
    case OSP_FILE_INDEX: return "an osprey vector index";
    case OSP_FILE_GZIP: return "a gzip-compressed file";
    case OSP_FILE_SQLITE: return "an SQLite database";
    }
    return "";
}
