/* The network spec parser: sections of key = value lines.
 *
 *   # comment               (also ; comments, and after values)
 *   [type]                  starts a section
 *   key = value             belongs to the current section
 *
 * Everything is checked; every error names file:line. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "osprey/nn.h"

/* Specs are small; anything bigger is a mistake (or an attack). */
#define SPEC_MAX_BYTES (1 << 20)
#define SPEC_MAX_SECTIONS 4096
#define SPEC_MAX_KEYS 64

static char *dup_range(const char *s, size_t n) {
    char *d = osp_alloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void trim(const char **s, const char **e) {
    while (*s < *e && isspace((unsigned char)**s)) (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1])) (*e)--;
}

void osp_spec_free(osp_spec *sp) {
    if (!sp) return;
    for (int i = 0; i < sp->n_sections; i++) {
        osp_spec_section *s = &sp->sections[i];
        for (int k = 0; k < s->n_kv; k++) {
            osp_free(s->kv[k].key);
            osp_free(s->kv[k].value);
        }
        osp_free(s->kv);
        osp_free(s->type);
    }
    osp_free(sp->sections);
    osp_free(sp->file);
    osp_free(sp);
}

static int valid_name(const char *s, const char *e) {
    if (s == e) return 0;
    for (const char *p = s; p < e; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return 0;
    return 1;
}

static int add_section(osp_spec *sp, const char *s, const char *e, int line) {
    if (sp->n_sections == SPEC_MAX_SECTIONS)
        return osp_error(OSP_EFORMAT, "%s:%d: more than %d sections", sp->file, line, SPEC_MAX_SECTIONS);
    if (!valid_name(s, e))
        return osp_error(OSP_EFORMAT, "%s:%d: bad section name '[%.*s]'", sp->file, line, (int)(e - s), s);
    if (sp->n_sections % 64 == 0) {
        osp_spec_section *bigger = osp_calloc((size_t)sp->n_sections + 64, sizeof *bigger);
        if (!bigger) return OSP_ENOMEM;
        if (sp->sections) memcpy(bigger, sp->sections, (size_t)sp->n_sections * sizeof *bigger);
        osp_free(sp->sections);
        sp->sections = bigger;
    }
    osp_spec_section *sec = &sp->sections[sp->n_sections];
    sec->type = dup_range(s, (size_t)(e - s));
    if (!sec->type) return OSP_ENOMEM;
    sec->file = sp->file;
    sec->line = line;
    sp->n_sections++;
    return OSP_OK;
}

static int add_kv(osp_spec *sp, const char *ks, const char *ke, const char *vs, const char *ve, int line) {
    if (sp->n_sections == 0)
        return osp_error(OSP_EFORMAT, "%s:%d: '%.*s' comes before any [section]", sp->file, line,
                         (int)(ke - ks), ks);
    osp_spec_section *sec = &sp->sections[sp->n_sections - 1];
    if (!valid_name(ks, ke))
        return osp_error(OSP_EFORMAT, "%s:%d: bad key '%.*s'", sp->file, line, (int)(ke - ks), ks);
    if (vs == ve)
        return osp_error(OSP_EFORMAT, "%s:%d: '%.*s' has no value", sp->file, line, (int)(ke - ks), ks);
    for (int k = 0; k < sec->n_kv; k++)
        if (strlen(sec->kv[k].key) == (size_t)(ke - ks) && !memcmp(sec->kv[k].key, ks, (size_t)(ke - ks)))
            return osp_error(OSP_EFORMAT, "%s:%d: '%s' is set twice in [%s] (line %d)", sp->file,
                             line, sec->kv[k].key, sec->type, sec->kv[k].line);
    if (sec->n_kv == SPEC_MAX_KEYS)
        return osp_error(OSP_EFORMAT, "%s:%d: too many keys in [%s]", sp->file, line, sec->type);
    if (sec->n_kv % 8 == 0) {
        osp_spec_kv *bigger = osp_calloc((size_t)sec->n_kv + 8, sizeof *bigger);
        if (!bigger) return OSP_ENOMEM;
        if (sec->kv) memcpy(bigger, sec->kv, (size_t)sec->n_kv * sizeof *bigger);
        osp_free(sec->kv);
        sec->kv = bigger;
    }
    osp_spec_kv *kv = &sec->kv[sec->n_kv];
    kv->key = dup_range(ks, (size_t)(ke - ks));
    kv->value = dup_range(vs, (size_t)(ve - vs));
    kv->line = line;
    if (!kv->key || !kv->value) {
        osp_free(kv->key);
        osp_free(kv->value);
        kv->key = kv->value = NULL;
        return OSP_ENOMEM;
    }
    sec->n_kv++;
    return OSP_OK;
}

static int parse_line(osp_spec *sp, const char *s, const char *e, int line) {
    for (const char *p = s; p < e; p++) {
        if (*p == '#' || *p == ';') {
            e = p;
            break;
        }
        if (*p == '\0' || (!isprint((unsigned char)*p) && *p != '\t' && *p != '\r'))
            return osp_error(OSP_EFORMAT, "%s:%d: unexpected byte 0x%02x", sp->file, line, (unsigned char)*p);
    }
    trim(&s, &e);
    if (s == e) return OSP_OK;
    if (*s == '[') {
        if (e[-1] != ']') return osp_error(OSP_EFORMAT, "%s:%d: '[' without ']'", sp->file, line);
        const char *ns = s + 1, *ne = e - 1;
        trim(&ns, &ne);
        return add_section(sp, ns, ne, line);
    }
    const char *eq = memchr(s, '=', (size_t)(e - s));
    if (!eq)
        return osp_error(OSP_EFORMAT, "%s:%d: expected 'key = value' or '[section]'", sp->file, line);
    const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
    trim(&ks, &ke);
    trim(&vs, &ve);
    return add_kv(sp, ks, ke, vs, ve, line);
}

int osp_spec_parse(const char *text, size_t len, const char *name, osp_spec **out) {
    *out = NULL;
    if (!name) name = "<spec>";
    if (len > SPEC_MAX_BYTES)
        return osp_error(OSP_EFORMAT, "%s: spec is larger than %d bytes", name, SPEC_MAX_BYTES);
    osp_spec *sp = osp_calloc(1, sizeof *sp);
    if (!sp) return OSP_ENOMEM;
    sp->file = dup_range(name, strlen(name));
    if (!sp->file) {
        osp_free(sp);
        return OSP_ENOMEM;
    }
    int line = 1, rc = OSP_OK;
    const char *p = text, *end = text + len;
    while (p < end && rc == OSP_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        rc = parse_line(sp, p, le, line++);
        p = nl ? nl + 1 : end;
    }
    if (rc == OSP_OK && sp->n_sections == 0)
        rc = osp_error(OSP_EFORMAT, "%s: no sections (an empty spec?)", name);
    if (rc != OSP_OK) {
        osp_spec_free(sp);
        return rc;
    }
    *out = sp;
    return OSP_OK;
}

int osp_spec_load(const char *path, osp_spec **out) {
    void *buf;
    size_t len;
    *out = NULL;
    int rc = osp_file_read_all(path, SPEC_MAX_BYTES, &buf, &len);
    if (rc) return rc;
    rc = osp_spec_parse(buf, len, path, out);
    osp_free(buf);
    return rc;
}

/* ---- key accessors ------------------------------------------------------- */

int osp_spec_error(const osp_spec_section *s, const char *key, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = s->line;
    if (key)
        for (int k = 0; k < s->n_kv; k++)
            if (!strcmp(s->kv[k].key, key)) line = s->kv[k].line;
    return osp_error(OSP_EFORMAT, "%s:%d: [%s] %s", s->file, line, s->type, msg);
}

static osp_spec_kv *find_kv(osp_spec_section *s, const char *key) {
    for (int k = 0; k < s->n_kv; k++)
        if (!strcmp(s->kv[k].key, key)) {
            s->kv[k].used = 1;
            return &s->kv[k];
        }
    return NULL;
}

const char *osp_spec_str(osp_spec_section *s, const char *key, const char *def) {
    osp_spec_kv *kv = find_kv(s, key);
    return kv ? kv->value : def;
}

static int parse_long(const char *s, long *v) {
    char *end;
    errno = 0;
    *v = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

static int parse_float(const char *s, float *v) {
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(d) || fabs(d) > 3e38) return 0;
    *v = (float)d;
    return 1;
}

int osp_spec_int(osp_spec_section *s, const char *key, int def, int min, int max, int *out) {
    osp_spec_kv *kv = find_kv(s, key);
    if (!kv) {
        *out = def;
        return OSP_OK;
    }
    long v;
    if (!parse_long(kv->value, &v))
        return osp_spec_error(s, key, "'%s' must be an integer, not '%s'", key, kv->value);
    if (v < min || v > max)
        return osp_spec_error(s, key, "'%s' must be between %d and %d, not %ld", key, min, max, v);
    *out = (int)v;
    return OSP_OK;
}

int osp_spec_float(osp_spec_section *s, const char *key, float def, float min, float max, float *out) {
    osp_spec_kv *kv = find_kv(s, key);
    if (!kv) {
        *out = def;
        return OSP_OK;
    }
    float v;
    if (!parse_float(kv->value, &v))
        return osp_spec_error(s, key, "'%s' must be a number, not '%s'", key, kv->value);
    if (v < min || v > max)
        return osp_spec_error(s, key, "'%s' must be between %g and %g, not %g", key, min, max, v);
    *out = v;
    return OSP_OK;
}

/* Splits value at ',' or 'x' into up to max_n trimmed items. */
static int split_list(const char *value, char items[][64], int max_n, int *n) {
    *n = 0;
    const char *p = value;
    while (*p) {
        const char *e = p;
        while (*e && *e != ',' && *e != 'x') e++;
        const char *s = p, *t = e;
        trim(&s, &t);
        if (*n == max_n || t == s || t - s >= 64) return 0;
        memcpy(items[*n], s, (size_t)(t - s));
        items[*n][t - s] = '\0';
        (*n)++;
        p = *e ? e + 1 : e;
        if (*e && !*p) return 0; /* trailing separator */
    }
    return *n > 0;
}

int osp_spec_ints(osp_spec_section *s, const char *key, int *out, int max_n, int *n, int min, int max) {
    osp_spec_kv *kv = find_kv(s, key);
    *n = 0;
    if (!kv) return OSP_OK;
    char items[OSP_MAX_DIMS * 2][64];
    int count;
    if (max_n > OSP_MAX_DIMS * 2 || !split_list(kv->value, items, max_n, &count))
        return osp_spec_error(s, key, "'%s' must be a list of at most %d integers, not '%s'", key,
                              max_n, kv->value);
    for (int i = 0; i < count; i++) {
        long v;
        if (!parse_long(items[i], &v) || v < min || v > max)
            return osp_spec_error(s, key, "'%s': '%s' is not an integer between %d and %d", key,
                                  items[i], min, max);
        out[i] = (int)v;
    }
    *n = count;
    return OSP_OK;
}

int osp_spec_float_inf(osp_spec_section *s, const char *key, float def, float *out) {
    const char *v = osp_spec_str(s, key, NULL);
    if (v) {
        const char *p = v + (*v == '+' || *v == '-');
        if (!strcasecmp(p, "inf") || !strcasecmp(p, "infinity")) {
            *out = *v == '-' ? -INFINITY : INFINITY;
            return OSP_OK;
        }
    }
    return osp_spec_float(s, key, def, -3e38f, 3e38f, out);
}

int osp_spec_floats(osp_spec_section *s, const char *key, float *out, int max_n, int *n) {
    osp_spec_kv *kv = find_kv(s, key);
    *n = 0;
    if (!kv) return OSP_OK;
    char items[OSP_MAX_DIMS * 2][64];
    int count;
    if (max_n > OSP_MAX_DIMS * 2 || !split_list(kv->value, items, max_n, &count))
        return osp_spec_error(s, key, "'%s' must be a list of at most %d numbers, not '%s'", key,
                              max_n, kv->value);
    for (int i = 0; i < count; i++)
        if (!parse_float(items[i], &out[i]))
            return osp_spec_error(s, key, "'%s': '%s' is not a number", key, items[i]);
    *n = count;
    return OSP_OK;
}

int osp_spec_choice(osp_spec_section *s, const char *key, const char *const *choices, int def, int *out) {
    osp_spec_kv *kv = find_kv(s, key);
    *out = def;
    if (!kv) return OSP_OK;
    char allowed[256] = "";
    for (int i = 0; choices[i]; i++) {
        if (!strcmp(kv->value, choices[i])) {
            *out = i;
            return OSP_OK;
        }
        size_t used = strlen(allowed);
        snprintf(allowed + used, sizeof allowed - used, "%s%s", i ? ", " : "", choices[i]);
    }
    return osp_spec_error(s, key, "'%s' must be one of %s, not '%s'", key, allowed, kv->value);
}
