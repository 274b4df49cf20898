/* The JPEG markers that TurboJPEG does not interpret for us: the EXIF
 * orientation (APP1 "Exif") and Adobe's APP14, which says whether CMYK is
 * stored inverted. Both parsers read untrusted bytes: every offset is
 * checked against the segment's length before it is read, and malformed
 * data gives the defaults rather than an error. */
#include <string.h>

#include "decode_impl.h"

#define JPEG_SOS 0xDA
#define JPEG_EOI 0xD9
#define JPEG_APP1 0xE1
#define JPEG_APP14 0xEE
#define EXIF_TAG_ORIENTATION 0x0112
#define TIFF_SHORT 3

static unsigned get16(const uint8_t *p, int big) {
    return big ? (unsigned)p[0] << 8 | p[1] : (unsigned)p[1] << 8 | p[0];
}

static uint32_t get32(const uint8_t *p, int big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* TIFF: byte order "II" or "MM", 42, offset of IFD0; IFD0 is a count and
 * 12-byte entries (tag, type, count, value or offset). Orientation is a
 * SHORT stored in the entry itself. */
int osp__exif_orientation(const uint8_t *tiff, size_t len) {
    if (len < 8) return 1;
    int big;
    if (tiff[0] == 'M' && tiff[1] == 'M') big = 1;
    else if (tiff[0] == 'I' && tiff[1] == 'I') big = 0;
    else return 1;
    if (get16(tiff + 2, big) != 42) return 1;
    uint32_t ifd = get32(tiff + 4, big);
    if (ifd > len - 2) return 1;
    unsigned count = get16(tiff + ifd, big);
    size_t entries = ((size_t)len - ifd - 2) / 12;
    if (count > entries) count = (unsigned)entries; /* a truncated IFD: read what is there */
    for (unsigned k = 0; k < count; k++) {
        const uint8_t *e = tiff + ifd + 2 + (size_t)k * 12;
        if (get16(e, big) != EXIF_TAG_ORIENTATION) continue;
        if (get16(e + 2, big) != TIFF_SHORT || get32(e + 4, big) < 1) return 1;
        unsigned v = get16(e + 8, big);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

void osp__jpeg_scan_markers(const uint8_t *buf, size_t len, osp__jpeg_markers *m) {
    m->orientation = 1;
    m->adobe = 0;
    if (len < 4 || buf[0] != 0xFF || buf[1] != 0xD8) return;
    size_t pos = 2;
    int have_exif = 0;
    while (pos + 4 <= len) {
        if (buf[pos] != 0xFF) return; /* lost sync: the decoder will say why */
        while (pos < len && buf[pos] == 0xFF) pos++; /* fill bytes */
        if (pos + 3 > len) return;
        unsigned marker = buf[pos];
        if (marker == JPEG_SOS || marker == JPEG_EOI) return;
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { /* no length */
            pos++;
            continue;
        }
        size_t seg = (size_t)buf[pos + 1] << 8 | buf[pos + 2]; /* includes its 2 bytes */
        if (seg < 2 || seg > len - pos - 1) return;
        const uint8_t *body = buf + pos + 3;
        size_t body_len = seg - 2;
        if (marker == JPEG_APP1 && !have_exif && body_len >= 6 && !memcmp(body, "Exif\0\0", 6)) {
            have_exif = 1; /* the first EXIF block counts, as in other readers */
            m->orientation = osp__exif_orientation(body + 6, body_len - 6);
        } else if (marker == JPEG_APP14 && body_len >= 12 && !memcmp(body, "Adobe", 5)) {
            m->adobe = 1;
        }
        pos += 1 + seg;
    }
}
