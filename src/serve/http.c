/* HTTP plumbing on libmicrohttpd: whole bodies within a limit, JSON
 * answers and errors, strict base64, HOST:PORT, and a clean stop
 * (http.h). */
#define _GNU_SOURCE
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <stdarg.h>

#include <openssl/evp.h>

#include "osprey/serve.h"

struct osp__http_server {
    struct MHD_Daemon *daemon;
    osp__http_config cfg;
    int hard_cap;
    char address[320];
    int port;
    atomic_int connections; /* open now */
    atomic_long in_flight;  /* requests begun, not completed */
};

/* What a request carries between libmicrohttpd's calls. */
typedef struct req_state {
    osp__http_request req;
    char *body;
    size_t len, cap;
    size_t discarded; /* bytes dropped after an early answer could not be queued */
    int pending;      /* an error to answer once the body has ended (0: none) */
    int answered;     /* a response is queued */
} req_state;

/* ---- names ----------------------------------------------------------------- */

const char *osp__http_status_name(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 405: return "UNIMPLEMENTED";
    case 408: return "DEADLINE_EXCEEDED";
    case 409: return "ALREADY_EXISTS";
    case 413: return "PAYLOAD_TOO_LARGE";
    case 429: return "RESOURCE_EXHAUSTED";
    case 500: return "INTERNAL";
    case 501: return "UNIMPLEMENTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return "UNKNOWN";
    }
}

/* ---- answers ---------------------------------------------------------------- */

static enum MHD_Result queue(osp__http_request *req, int status, struct MHD_Response *resp) {
    if (!resp) return MHD_NO;
    enum MHD_Result r = MHD_queue_response(req->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (r == MHD_YES) req->status = status;
    return r;
}

enum MHD_Result osp__http_send_text(osp__http_request *req, int status, const char *content_type,
                                    const char *text, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return queue(req, status, resp);
}

/* A response over a malloc'ed JSON text (taken). */
static struct MHD_Response *json_response(char *text) {
    if (!text) return NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json; charset=utf-8");
    return resp;
}

cJSON *osp__http_error_object(int status, const char *message) {
    return osp__http_error_object_named(status, osp__http_status_name(status), message);
}

cJSON *osp__http_error_object_named(int status, const char *status_name, const char *message) {
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddNumberToObject(e, "code", status) ||
        !cJSON_AddStringToObject(e, "status", status_name) ||
        !cJSON_AddStringToObject(e, "message", message ? message : "")) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

/* The error answer, with extra headers (name, value pairs, NULL-ended). */
static enum MHD_Result send_error_headers(osp__http_request *req, int status, const char *status_name,
                                          const char *message, const char *const *headers) {
    cJSON *root = cJSON_CreateObject();
    cJSON *e = osp__http_error_object_named(status, status_name ? status_name : osp__http_status_name(status),
                                            message);
    char *text = NULL;
    if (root && e) {
        cJSON_AddItemToObject(root, "error", e);
        e = NULL;
        text = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(e);
    cJSON_Delete(root);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":500,\"status\":\"INTERNAL\",\"message\":\"out of memory\"}}";
        return osp__http_send_text(req, 500, "application/json; charset=utf-8", oom, sizeof oom - 1);
    }
    struct MHD_Response *resp = json_response(text);
    if (!resp) return MHD_NO;
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    for (const char *const *h = headers; h && h[0]; h += 2) MHD_add_response_header(resp, h[0], h[1]);
    return queue(req, status, resp);
}

enum MHD_Result osp__http_send_error(osp__http_request *req, int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_error_headers(req, status, NULL, msg, NULL);
}

enum MHD_Result osp__http_send_status_error(osp__http_request *req, int status, const char *status_name,
                                            const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_error_headers(req, status, status_name, msg, NULL);
}

enum MHD_Result osp__http_send_method_not_allowed(osp__http_request *req, const char *allow) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s %s: method not allowed (allowed: %s)", req->method, req->path, allow);
    const char *headers[] = {MHD_HTTP_HEADER_ALLOW, allow, NULL};
    return send_error_headers(req, 405, NULL, msg, headers);
}

enum MHD_Result osp__http_send_json(osp__http_request *req, int status, cJSON *obj) {
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text) return osp__http_send_error(req, 500, "out of memory");
    return queue(req, status, json_response(text));
}

const char *osp__http_header(const osp__http_request *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* ---- the request cycle --------------------------------------------------------- */

/* An error answered before the body is read: the connection is closed after. */
static enum MHD_Result early_error(req_state *st, int status, const char *message) {
    static const char *const close_hdr[] = {MHD_HTTP_HEADER_CONNECTION, "close", NULL};
    static const char *const busy_hdr[] = {MHD_HTTP_HEADER_CONNECTION, "close", MHD_HTTP_HEADER_RETRY_AFTER, "1",
                                           NULL};
    enum MHD_Result r = send_error_headers(&st->req, status, NULL, message, status == 429 ? busy_hdr : close_hdr);
    if (r == MHD_YES) st->answered = 1;
    return r;
}

static const char *limit_message(int status, const osp__http_server *s, char *buf, size_t cap) {
    if (status == 413)
        snprintf(buf, cap, "the request body is larger than %zu bytes", s->cfg.max_body);
    else if (status == 408)
        snprintf(buf, cap, "the request body did not arrive within %d s", s->cfg.timeout_s);
    else
        snprintf(buf, cap, "too many connections (the limit is %d): retry later", s->cfg.max_connections);
    return buf;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    osp__http_server *s = cls;
    req_state *st = *con_cls;
    char msg[160];
    if (!st) {
        if (!(st = calloc(1, sizeof *st))) return MHD_NO;
        st->req.conn = conn;
        st->req.method = method;
        st->req.path = url;
        st->req.body = "";
        st->req.started = osp_now();
        if (s->cfg.route) st->req.route = s->cfg.route(s->cfg.ctx, method, url);
        *con_cls = st;
        atomic_fetch_add(&s->in_flight, 1);
        osp__metrics_begin(s->cfg.metrics);
        if (atomic_load(&s->connections) > s->cfg.max_connections)
            return early_error(st, 429, limit_message(429, s, msg, sizeof msg));
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || (unsigned long long)s->cfg.max_body < n) {
                /* A client that waits for "100 Continue" gets the answer
                 * now and sends nothing. One that sends its body anyway
                 * would find the connection closed under it (a broken pipe,
                 * never the answer): its body is read and dropped first,
                 * unless it is over four times the limit. */
                const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                if ((expect && !strcasecmp(expect, "100-continue")) || errno || end == cl ||
                    n / 4 > (unsigned long long)s->cfg.max_body)
                    return early_error(st, 413, limit_message(413, s, msg, sizeof msg));
                st->pending = 413;
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->answered) return MHD_YES;
        if (st->pending) {
            /* libmicrohttpd takes no answer while a body arrives: drop the
             * rest, but not without end */
            st->discarded += n;
            if (st->discarded / 4 > s->cfg.max_body || osp_now() - st->req.started > 2.0 * s->cfg.timeout_s)
                return MHD_NO;
            return MHD_YES;
        }
        int status = 0;
        if (osp_now() - st->req.started > s->cfg.timeout_s) status = 408;
        else if (n > s->cfg.max_body - st->len) status = 413;
        if (status) {
            if (early_error(st, status, limit_message(status, s, msg, sizeof msg)) != MHD_YES) st->pending = status;
            return MHD_YES;
        }
        if (st->len + n + 1 > st->cap) {
            size_t cap = st->cap ? st->cap : 4096;
            while (cap < st->len + n + 1) cap *= 2;
            if (cap > s->cfg.max_body + 1) cap = s->cfg.max_body + 1;
            char *b = realloc(st->body, cap);
            if (!b) {
                if (early_error(st, 500, "out of memory") != MHD_YES) st->pending = 500;
                return MHD_YES;
            }
            st->body = b;
            st->cap = cap;
        }
        memcpy(st->body + st->len, upload_data, n);
        st->len += n;
        return MHD_YES;
    }
    /* the request is complete */
    if (st->answered) return MHD_YES;
    if (st->pending) {
        enum MHD_Result r = early_error(st, st->pending, limit_message(st->pending, s, msg, sizeof msg));
        st->pending = 0;
        return r;
    }
    if (st->body) st->body[st->len] = 0;
    st->req.body = st->body ? st->body : "";
    st->req.body_len = st->len;
    st->answered = 1;
    enum MHD_Result r = s->cfg.handler(s->cfg.ctx, &st->req);
    if (!st->req.status && r == MHD_YES) r = osp__http_send_error(&st->req, 500, "the handler gave no answer");
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    (void)toe;
    osp__http_server *s = cls;
    req_state *st = *con_cls;
    if (!st) return;
    osp__metrics_end(s->cfg.metrics, st->req.route, st->req.status, osp_now() - st->req.started);
    free(st->body);
    free(st);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    (void)conn;
    (void)socket_context;
    osp__http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) atomic_fetch_add(&s->connections, 1);
    else atomic_fetch_sub(&s->connections, 1);
}

/* ---- addresses ------------------------------------------------------------------- */

int osp__http_parse_listen(const char *s, struct sockaddr_storage *addr, socklen_t *len) {
    if (!s || !*s) return osp_error(OSP_EINVAL, "no listen address: give HOST:PORT");
    char host[256];
    const char *port_s;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof host)
            return osp_error(OSP_EINVAL, "'%s' is not HOST:PORT ([IPv6]:PORT)", s);
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = 0;
        port_s = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host || memchr(s, ':', (size_t)(colon - s)))
            return osp_error(OSP_EINVAL, "'%s' is not HOST:PORT (an IPv6 address goes in brackets)", s);
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
        port_s = colon + 1;
    }
    if (!*port_s || strspn(port_s, "0123456789") != strlen(port_s) || strlen(port_s) > 5 || atoi(port_s) > 65535)
        return osp_error(OSP_EINVAL, "'%s': the port must be a number from 0 to 65535", s);
    const int port = atoi(port_s);
    memset(addr, 0, sizeof *addr);
    if (!*host) {
        struct sockaddr_in *a = (struct sockaddr_in *)addr;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons((uint16_t)port);
        *len = sizeof *a;
        return OSP_OK;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    int rc = getaddrinfo(host, port_s, &hints, &res);
    if (rc || !res)
        return osp_error(OSP_EINVAL, "'%s': cannot resolve '%s': %s", s, host, rc ? gai_strerror(rc) : "no address");
    if (res->ai_addrlen > sizeof *addr) {
        freeaddrinfo(res);
        return osp_error(OSP_EINVAL, "'%s': address too long", s);
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return OSP_OK;
}

/* ---- the server --------------------------------------------------------------------- */

int osp__http_start(const osp__http_config *cfg, osp__http_server **out) {
    *out = NULL;
    if (!cfg->handler) return osp_error(OSP_EINVAL, "http: no handler");
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int rc = osp__http_parse_listen(cfg->listen, &addr, &addr_len);
    if (rc) return rc;
    osp__http_server *s = calloc(1, sizeof *s);
    if (!s) return osp_error(OSP_ENOMEM, "out of memory");
    s->cfg = *cfg;
    if (s->cfg.threads <= 0) s->cfg.threads = OSP__HTTP_DEFAULT_THREADS;
    if (s->cfg.max_connections <= 0) s->cfg.max_connections = OSP__HTTP_DEFAULT_MAX_CONNECTIONS;
    if (s->cfg.timeout_s <= 0) s->cfg.timeout_s = OSP__HTTP_DEFAULT_TIMEOUT_S;
    if (!s->cfg.max_body) s->cfg.max_body = OSP__HTTP_DEFAULT_MAX_BODY;
    /* past the cap, requests get a 429; past the hard cap, no connection */
    s->hard_cap = s->cfg.max_connections * 2;
    if (s->hard_cap < s->cfg.max_connections + 16) s->hard_cap = s->cfg.max_connections + 16;
    if (s->hard_cap < s->cfg.threads) s->hard_cap = s->cfg.threads;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC;
    if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->cfg.threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->hard_cap, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 128u, MHD_OPTION_END);
    if (!s->daemon) {
        int err = errno;
        free(s);
        return osp_error(OSP_EIO, "cannot listen on %s: %s", cfg->listen,
                         err ? strerror(err) : "libmicrohttpd refused to start");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    char host[INET6_ADDRSTRLEN] = "0.0.0.0";
    if (addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr)->sin6_addr, host, sizeof host);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&addr)->sin_addr, host, sizeof host);
    snprintf(s->address, sizeof s->address, addr.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, s->port);
    *out = s;
    return OSP_OK;
}

const char *osp__http_address(const osp__http_server *s) { return s->address; }

int osp__http_port(const osp__http_server *s) { return s->port; }

void osp__http_stop(osp__http_server *s, double drain_s) {
    if (!s) return;
    /* no new connections... */
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    /* ...the requests begun are answered... */
    const double end = osp_now() + drain_s;
    while (atomic_load(&s->in_flight) > 0 && osp_now() < end) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* ...and every connection closed */
    MHD_stop_daemon(s->daemon);
    free(s);
}

void osp__http_run(osp__http_server *s, double drain_s) {
    while (!osp_serve_stopping()) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    osp__http_stop(s, drain_s);
}

/* ---- base64 --------------------------------------------------------------------------- */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int osp__base64_decode(const char *in, size_t len, size_t max_out, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (len % 4) return osp_error(OSP_EFORMAT, "invalid base64: its length (%zu) is not a multiple of 4", len);
    if (len > (size_t)INT_MAX) return osp_error(OSP_ERANGE, "base64 text too long");
    size_t pad = 0;
    if (len && in[len - 1] == '=') pad = len >= 2 && in[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++)
        if (b64_value((unsigned char)in[i]) < 0)
            return osp_error(OSP_EFORMAT, "invalid base64: character %s%c%s at offset %zu",
                             in[i] >= 0x21 && in[i] < 0x7f ? "'" : "", in[i] >= 0x21 && in[i] < 0x7f ? in[i] : '?',
                             in[i] >= 0x21 && in[i] < 0x7f ? "'" : " (not printable)", i);
    /* the bits past the data must be zero (one text for each byte string) */
    if (pad == 2 && (b64_value((unsigned char)in[len - 3]) & 0x0f))
        return osp_error(OSP_EFORMAT, "invalid base64: non-zero bits before the '==' padding");
    if (pad == 1 && (b64_value((unsigned char)in[len - 2]) & 0x03))
        return osp_error(OSP_EFORMAT, "invalid base64: non-zero bits before the '=' padding");
    const size_t n = len / 4 * 3 - pad;
    if (n > max_out) return osp_error(OSP_ERANGE, "the decoded data (%zu bytes) is larger than %zu bytes", n, max_out);
    uint8_t *buf = osp_alloc(len / 4 * 3 + 1);
    if (!buf) return OSP_ENOMEM;
    int got = len ? EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len) : 0;
    if (got < 0 || (size_t)got != len / 4 * 3) {
        osp_free(buf);
        return osp_error(OSP_EFORMAT, "invalid base64");
    }
    *out = buf;
    *out_len = n;
    return OSP_OK;
}
