/* The index file container (layout in index_impl.h): sections written with
 * their offsets and sizes in a table, both checksummed with CRC-32C, and read
 * back with every offset and size checked against the file before use. */
#include <string.h>

#include "index/index_impl.h"

static const uint8_t zeros[64];

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void osp__writer_init(osp__writer *w) { memset(w, 0, sizeof *w); }

void osp__writer_free(osp__writer *w) {
    for (int i = 0; i < w->n_owned; i++) osp_free(w->owned[i]);
    osp_free(w->chunks);
    memset(w, 0, sizeof *w);
}

void osp__writer_begin(osp__writer *w, uint32_t tag) {
    if (w->n_sections == OSP__FILE_MAX_SECTIONS) {
        w->failed = 1;
        return;
    }
    osp__wsection *s = &w->sections[w->n_sections++];
    s->tag = tag;
    s->first_chunk = w->n_chunks;
    s->n_chunks = 0;
    s->bytes = 0;
}

void osp__writer_chunk(osp__writer *w, const void *data, size_t bytes) {
    if (w->failed || w->n_sections == 0) {
        w->failed = 1;
        return;
    }
    if (bytes == 0) return;
    if (w->n_chunks == w->cap_chunks) {
        size_t cap = osp__grow(w->cap_chunks, w->n_chunks + 1);
        osp__chunk *c = osp__realloc(w->chunks, w->n_chunks * sizeof *c, cap * sizeof *c);
        if (!c) {
            w->failed = 1;
            return;
        }
        w->chunks = c;
        w->cap_chunks = cap;
    }
    w->chunks[w->n_chunks++] = (osp__chunk){data, bytes};
    osp__wsection *s = &w->sections[w->n_sections - 1];
    s->n_chunks++;
    s->bytes += bytes;
}

void osp__writer_add(osp__writer *w, uint32_t tag, const void *data, size_t bytes) {
    osp__writer_begin(w, tag);
    osp__writer_chunk(w, data, bytes);
}

void osp__writer_add_copy(osp__writer *w, uint32_t tag, const void *data, size_t bytes) {
    void *copy = w->n_owned < OSP__FILE_MAX_SECTIONS ? osp__dup(data, bytes) : NULL;
    if (!copy) {
        w->failed = 1;
        return;
    }
    w->owned[w->n_owned++] = copy;
    osp__writer_add(w, tag, copy, bytes);
}

/* Feeds the body (table, padding, sections) to the CRC or to the file, in
 * file order, so that what is summed is exactly what is written. */
static int emit_body(osp__writer *w, const uint8_t *table, size_t table_bytes,
                     const uint64_t *offsets, uint32_t *crc, osp_atomic_file *f) {
    uint64_t pos = OSP__FILE_HEADER;
#define EMIT(ptr, n)                                                        \
    do {                                                                    \
        if (crc) *crc = osp_crc32c(*crc, (ptr), (n));                       \
        if (f) {                                                            \
            int rc_ = osp_atomic_write(f, (ptr), (n));                      \
            if (rc_) return rc_;                                            \
        }                                                                   \
        pos += (n);                                                         \
    } while (0)
    EMIT(table, table_bytes);
    for (int i = 0; i < w->n_sections; i++) {
        while (pos < offsets[i]) {
            size_t pad = (size_t)(offsets[i] - pos);
            EMIT(zeros, pad > sizeof zeros ? sizeof zeros : pad);
        }
        const osp__wsection *s = &w->sections[i];
        for (size_t c = 0; c < s->n_chunks; c++) {
            const osp__chunk *ch = &w->chunks[s->first_chunk + c];
            EMIT(ch->data, ch->bytes);
        }
    }
#undef EMIT
    return OSP_OK;
}

int osp__writer_write(osp__writer *w, const osp_index *ix, const char *path) {
    if (w->failed) return osp_error(OSP_ENOMEM, "%s: out of memory preparing the index file", path);
    uint8_t table[OSP__FILE_MAX_SECTIONS * 24];
    size_t table_bytes = (size_t)w->n_sections * 24;
    uint64_t offsets[OSP__FILE_MAX_SECTIONS];
    uint64_t pos = align64(OSP__FILE_HEADER + table_bytes);
    for (int i = 0; i < w->n_sections; i++) {
        offsets[i] = pos;
        uint8_t *t = table + 24 * i;
        put_u32(t, w->sections[i].tag);
        put_u32(t + 4, 0);
        put_u64(t + 8, pos);
        put_u64(t + 16, w->sections[i].bytes);
        pos = align64(pos + w->sections[i].bytes);
    }
    /* the last section ends the file: no trailing padding */
    uint64_t file_bytes = w->n_sections
                              ? offsets[w->n_sections - 1] + w->sections[w->n_sections - 1].bytes
                              : OSP__FILE_HEADER + table_bytes;

    uint32_t body_crc = 0;
    emit_body(w, table, table_bytes, offsets, &body_crc, NULL);

    uint8_t h[OSP__FILE_HEADER] = {0};
    memcpy(h, OSP__FILE_MAGIC, 8);
    put_u32(h + 8, OSP__FILE_VERSION);
    put_u32(h + 12, (uint32_t)ix->params.type);
    put_u32(h + 16, (uint32_t)ix->params.metric);
    put_u32(h + 20, (uint32_t)ix->params.dim);
    put_u64(h + 24, (uint64_t)ix->map.count);
    put_u64(h + 32, file_bytes);
    put_u32(h + 40, (uint32_t)w->n_sections);
    put_u32(h + 44, body_crc);
    put_u32(h + 60, osp_crc32c(0, h, 60));

    osp_atomic_file f;
    int rc = osp_atomic_open(&f, path);
    if (rc) return rc;
    rc = osp_atomic_write(&f, h, sizeof h);
    if (!rc) rc = emit_body(w, table, table_bytes, offsets, NULL, &f);
    if (rc) {
        osp_atomic_abort(&f);
        return rc;
    }
    return osp_atomic_commit(&f);
}

int osp__reader_open(osp__reader *r, const void *buf, size_t len, const char *name) {
    memset(r, 0, sizeof *r);
    r->name = name;
    r->base = buf;
    r->len = len;
    const uint8_t *h = buf;
    if (len < 8 || memcmp(h, OSP__FILE_MAGIC, 8) != 0)
        return osp_error(OSP_EFORMAT, "%s: not an osprey index file (bad magic)", name);
    if (len < OSP__FILE_HEADER)
        return osp_error(OSP_EFORMAT, "%s: truncated index file (%zu bytes, header needs %d)",
                         name, len, OSP__FILE_HEADER);
    if (osp_crc32c(0, h, 60) != get_u32(h + 60))
        return osp_error(OSP_ECORRUPT, "%s: index header checksum mismatch: the file is corrupted",
                         name);
    r->version = get_u32(h + 8);
    if (r->version == 0 || r->version > OSP__FILE_VERSION)
        return osp_error(OSP_ENOTSUP,
                         "%s: index file version %u; this osprey reads version %d (upgrade osprey)",
                         name, r->version, OSP__FILE_VERSION);
    r->type = get_u32(h + 12);
    r->metric = get_u32(h + 16);
    r->dim = get_u32(h + 20);
    r->count = get_u64(h + 24);
    uint64_t file_bytes = get_u64(h + 32);
    if (file_bytes > len)
        return osp_error(OSP_EFORMAT, "%s: truncated index file: header says %llu bytes, file has %zu",
                         name, (unsigned long long)file_bytes, len);
    if (file_bytes < len)
        return osp_error(OSP_EFORMAT, "%s: %zu bytes after the end of the index data", name,
                         len - (size_t)file_bytes);
    uint32_t n = get_u32(h + 40);
    if (n > OSP__FILE_MAX_SECTIONS)
        return osp_error(OSP_ECORRUPT, "%s: %u sections in the index file (at most %d)", name, n,
                         OSP__FILE_MAX_SECTIONS);
    size_t table_end = OSP__FILE_HEADER + (size_t)n * 24;
    if (table_end > len)
        return osp_error(OSP_EFORMAT, "%s: truncated index file in the section table", name);
    if (osp_crc32c(0, h + OSP__FILE_HEADER, len - OSP__FILE_HEADER) != get_u32(h + 44))
        return osp_error(OSP_ECORRUPT, "%s: index checksum mismatch: the file is corrupted", name);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *t = h + OSP__FILE_HEADER + 24 * i;
        uint32_t tag = get_u32(t);
        uint64_t off = get_u64(t + 8), bytes = get_u64(t + 16);
        if (off % 64 || off < table_end || off > len || bytes > len - off)
            return osp_error(OSP_ECORRUPT, "%s: section %u lies outside the file", name, i);
        for (int j = 0; j < r->n_sections; j++)
            if (r->sections[j].tag == tag)
                return osp_error(OSP_ECORRUPT, "%s: section %u repeated", name, i);
        r->sections[r->n_sections++] = (osp__rsection){tag, h + off, bytes};
    }
    return OSP_OK;
}

static void tag_text(uint32_t tag, char out[5]) {
    for (int i = 0; i < 4; i++) {
        char c = (char)(tag >> (8 * i));
        out[i] = (c >= 32 && c < 127) ? c : '?';
    }
    out[4] = '\0';
}

int osp__reader_get_any(const osp__reader *r, uint32_t tag, const void **data, size_t *bytes) {
    for (int i = 0; i < r->n_sections; i++)
        if (r->sections[i].tag == tag) {
            *data = r->sections[i].data;
            *bytes = (size_t)r->sections[i].bytes;
            return OSP_OK;
        }
    char t[5];
    tag_text(tag, t);
    return osp_error(OSP_EFORMAT, "%s: the index file has no '%s' section", r->name, t);
}

int osp__reader_get(const osp__reader *r, uint32_t tag, size_t bytes, const void **data) {
    size_t got = 0;
    int rc = osp__reader_get_any(r, tag, data, &got);
    if (rc) return rc;
    if (got != bytes) {
        char t[5];
        tag_text(tag, t);
        return osp_error(OSP_ECORRUPT, "%s: section '%s' has %zu bytes, expected %zu", r->name, t,
                         got, bytes);
    }
    return OSP_OK;
}
