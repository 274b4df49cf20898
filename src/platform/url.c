/* Broker URLs: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]. */
#include <stdlib.h>
#include <string.h>

#include "osprey/platform.h"

static int hex(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Copies s[0..n) into out (cap bytes with the NUL), decoding %XX. */
static int decode(const char *what, const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            const int a = i + 1 < n ? hex((unsigned char)s[i + 1]) : -1;
            const int b = i + 2 < n ? hex((unsigned char)s[i + 2]) : -1;
            /* %00 would cut the secret short without a word */
            if (a < 0 || b < 0 || a * 16 + b == 0)
                return osp_error(OSP_EINVAL, "broker URL: bad %%-escape in the %s", what);
            c = a * 16 + b;
            i += 2;
        }
        if (o + 1 >= cap) return osp_error(OSP_EINVAL, "broker URL: the %s is too long", what);
        out[o++] = (char)c;
    }
    out[o] = 0;
    return OSP_OK;
}

int osp_broker_url_parse(const char *url, osp_broker_url *out) {
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url) return osp_error(OSP_EINVAL, "broker URL: missing");
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof scheme - 1))
        return osp_error(OSP_EINVAL, "broker URL: '%.64s' does not start with redis://", url);
    const char *p = url + sizeof scheme - 1;
    /* userinfo: up to the last '@' before the path (a password may hold '@'
     * only percent-encoded, but be lenient about the last one) */
    const char *path = strchr(p, '/');
    const char *end = path ? path : p + strlen(p);
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@') at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) return osp_error(OSP_EINVAL, "broker URL: user info without ':' (redis://:PASSWORD@HOST)");
        if (decode("user", p, (size_t)(colon - p), out->user, sizeof out->user) ||
            decode("password", colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password))
            return OSP_EINVAL;
        p = at + 1;
    }
    const char *host_end, *port_at = NULL;
    if (*p == '[') {
        host_end = memchr(p, ']', (size_t)(end - p));
        if (!host_end) return osp_error(OSP_EINVAL, "broker URL: '[' without ']'");
        if (host_end + 1 < end) {
            if (host_end[1] != ':') return osp_error(OSP_EINVAL, "broker URL: junk after ']'");
            port_at = host_end + 2;
        }
        p++;
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (host_end) port_at = host_end + 1;
        else host_end = end;
    }
    const size_t hn = (size_t)(host_end - p);
    if (hn == 0) return osp_error(OSP_EINVAL, "broker URL: no host");
    if (hn >= sizeof out->host) return osp_error(OSP_EINVAL, "broker URL: host too long");
    for (size_t i = 0; i < hn; i++) {
        const char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == '_' || c == ':'))
            return osp_error(OSP_EINVAL, "broker URL: bad character in the host");
    }
    memcpy(out->host, p, hn);
    out->host[hn] = 0;
    if (port_at) {
        long v = 0;
        if (port_at == end) return osp_error(OSP_EINVAL, "broker URL: empty port");
        for (const char *q = port_at; q < end; q++) {
            if (*q < '0' || *q > '9' || v > 65535) return osp_error(OSP_EINVAL, "broker URL: bad port");
            v = v * 10 + (*q - '0');
        }
        if (v < 1 || v > 65535) return osp_error(OSP_EINVAL, "broker URL: port out of range");
        out->port = (int)v;
    }
    if (path && path[1]) {
        long v = 0;
        for (const char *q = path + 1; *q; q++) {
            if (*q < '0' || *q > '9' || v > 100000) return osp_error(OSP_EINVAL, "broker URL: bad database number");
            v = v * 10 + (*q - '0');
        }
        out->db = (int)v;
    }
    return OSP_OK;
}
