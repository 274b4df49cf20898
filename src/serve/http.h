/* The HTTP plumbing shared by the worker and the router (private to
 * src/serve), on libmicrohttpd.
 *
 * A server: osp__http_start binds HOST:PORT and answers on a pool of
 * threads (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL,
 * MHD_OPTION_THREAD_POOL_SIZE). For each request it collects the whole
 * body (up to max_body bytes: a larger Content-Length, or a body that
 * grows past it, is answered 413 PAYLOAD_TOO_LARGE, and the connection
 * closed), then calls the handler once, on a pool thread, with
 * the complete request. The handler answers with exactly one of the send
 * functions below and returns what it returned. Handlers run concurrently
 * (up to `threads` at once) and may block (a handler blocks only the
 * connections of its pool thread).
 *
 * Limits, each a JSON error (osp__http_send_error's shape), never a hang:
 *  - max_body: 413 as said (a client that sends "Expect: 100-continue"
 *    gets it before sending its body; one that sends a body of up to four
 *    times the limit anyway has it read and dropped first, so that it sees
 *    the answer instead of a broken pipe; a larger one, or a chunked body
 *    growing past four times the limit, has its connection closed);
 *  - timeout_s: a connection idle that long is closed (MHD's connection
 *    timeout), and a request whose body is still arriving timeout_s after
 *    its headers is answered 408 DEADLINE_EXCEEDED once the body ends
 *    (libmicrohttpd takes no answer while a body arrives; the rest is
 *    read and dropped, and a body still arriving at twice timeout_s is
 *    cut off by closing the connection);
 *  - max_connections: requests on connections past the cap are answered
 *    429 RESOURCE_EXHAUSTED (with "Connection: close" and "Retry-After: 1");
 *    past twice the cap (at least cap + 16), libmicrohttpd refuses to
 *    accept more connections at all.
 *
 * Stopping: osp__http_run blocks until osp_serve_stopping() (the
 * SIGTERM handler's flag) and then stops cleanly: it stops accepting
 * (MHD_quiesce_daemon, closing the listening socket), waits for the
 * requests in flight to be answered (at most drain_s seconds), then
 * closes every connection (MHD_stop_daemon). Idle keep-alive connections
 * are closed, never answered half.
 *
 * Errors in the Google API style:
 *   {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "..."}}
 * with the status named by osp__http_status_name.
 *
 * Metrics: when the config names an osp__metrics, every request is counted
 * there (in flight from its headers to its end; latency, status) under the
 * route the handler set in req->route (NULL: "other"). */
#ifndef OSP_SERVE_HTTP_H
#define OSP_SERVE_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "metrics.h"
#include "osprey/core.h"

/* Defaults of the config (Cloud Vision's JSON limit: 10 MB). */
#define OSP__HTTP_DEFAULT_THREADS 4
#define OSP__HTTP_DEFAULT_MAX_CONNECTIONS 256
#define OSP__HTTP_DEFAULT_TIMEOUT_S 30
#define OSP__HTTP_DEFAULT_MAX_BODY ((size_t)10 * 1000 * 1000)

/* One complete request, as the handler sees it. Everything is borrowed
 * for the duration of the call. */
typedef struct osp__http_request {
    struct MHD_Connection *conn;
    const char *method; /* "GET", "POST", "DELETE", ... */
    const char *path;   /* the URL's path, as libmicrohttpd decoded it; no query */
    const char *body;   /* the body, NUL-terminated after body_len bytes ("" if none) */
    size_t body_len;
    double started;     /* osp_now() when the headers arrived */
    /* set by the handler / the send functions */
    const char *route;  /* for metrics: a static string naming the route, or NULL */
    int status;         /* the status sent (0 before) */
} osp__http_request;

/* Answers req with one osp__http_send_* call and returns its result. */
typedef enum MHD_Result (*osp__http_handler)(void *ctx, osp__http_request *req);

typedef struct osp__http_config {
    const char *listen;        /* HOST:PORT (osp__http_parse_listen); port 0: any free one */
    int threads;               /* pool threads (0: OSP__HTTP_DEFAULT_THREADS) */
    int max_connections;       /* (0: OSP__HTTP_DEFAULT_MAX_CONNECTIONS) */
    int timeout_s;             /* (0: OSP__HTTP_DEFAULT_TIMEOUT_S) */
    size_t max_body;           /* bytes (0: OSP__HTTP_DEFAULT_MAX_BODY) */
    osp__http_handler handler;
    void *ctx;                 /* the handler's */
    osp__metrics *metrics;     /* may be NULL; borrowed, must outlive the server */
    /* May be NULL: names a request's route for metrics as soon as its
     * headers arrive (a static string), so that answers given before the
     * handler runs (413, 408, 429) count under it; the handler may still
     * change req->route. */
    const char *(*route)(void *ctx, const char *method, const char *path);
} osp__http_config;

typedef struct osp__http_server osp__http_server;

/* Starts serving (the threads run at once). OSP_EINVAL for a bad listen
 * address, OSP_EIO when it cannot be bound (in use, no permission), each
 * with a message. */
int osp__http_start(const osp__http_config *cfg, osp__http_server **out);
/* The address it listens on, "HOST:PORT" with the real port (port 0
 * resolved), IPv6 hosts in brackets. Borrowed from the server. */
const char *osp__http_address(const osp__http_server *s);
int osp__http_port(const osp__http_server *s);
/* Blocks until osp_serve_stopping(), then stops as said above and frees
 * the server. */
void osp__http_run(osp__http_server *s, double drain_s);
/* Stops now (the same clean stop) and frees; NULL is fine. */
void osp__http_stop(osp__http_server *s, double drain_s);

/* ---- answers -------------------------------------------------------------- */

/* obj as JSON (application/json; charset=utf-8); takes ownership of obj
 * (NULL: a 500 "out of memory"). */
enum MHD_Result osp__http_send_json(osp__http_request *req, int status, cJSON *obj);
/* Raw bytes with a content type (copied). */
enum MHD_Result osp__http_send_text(osp__http_request *req, int status, const char *content_type,
                                    const char *text, size_t len);
/* {"error": {"code": status, "status": NAME, "message": printf(fmt, ...)}}
 * With status 401 a "WWW-Authenticate: Bearer" header is added. */
enum MHD_Result osp__http_send_error(osp__http_request *req, int status, const char *fmt, ...)
    OSP_PRINTF(3, 4);
/* The same with another status name than the HTTP status's (a 400 that is
 * "FAILED_PRECONDITION"). */
enum MHD_Result osp__http_send_status_error(osp__http_request *req, int status, const char *status_name,
                                            const char *fmt, ...) OSP_PRINTF(4, 5);
/* 405 with an Allow header naming the methods the path takes ("GET"). */
enum MHD_Result osp__http_send_method_not_allowed(osp__http_request *req, const char *allow);
/* The error object itself, {"code", "status", "message"} (NULL if out of
 * memory): for embedding in other answers. */
cJSON *osp__http_error_object(int status, const char *message);
/* The same with a status name of the caller's. */
cJSON *osp__http_error_object_named(int status, const char *status_name, const char *message);

/* Google API status names of HTTP statuses: 400 INVALID_ARGUMENT, 401
 * UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 405
 * UNIMPLEMENTED, 408 DEADLINE_EXCEEDED, 409 ALREADY_EXISTS, 413
 * PAYLOAD_TOO_LARGE, 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 501
 * UNIMPLEMENTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED; others "UNKNOWN". */
const char *osp__http_status_name(int status);

/* google.rpc.Code numbers (as Cloud Vision puts in a per-image error). */
enum {
    OSP__RPC_OK = 0,
    OSP__RPC_CANCELLED = 1,
    OSP__RPC_UNKNOWN = 2,
    OSP__RPC_INVALID_ARGUMENT = 3,
    OSP__RPC_DEADLINE_EXCEEDED = 4,
    OSP__RPC_NOT_FOUND = 5,
    OSP__RPC_ALREADY_EXISTS = 6,
    OSP__RPC_PERMISSION_DENIED = 7,
    OSP__RPC_RESOURCE_EXHAUSTED = 8,
    OSP__RPC_FAILED_PRECONDITION = 9,
    OSP__RPC_UNIMPLEMENTED = 12,
    OSP__RPC_INTERNAL = 13,
    OSP__RPC_UNAVAILABLE = 14,
    OSP__RPC_UNAUTHENTICATED = 16,
};

/* ---- requests --------------------------------------------------------------- */

/* A request header's value (borrowed), or NULL. */
const char *osp__http_header(const osp__http_request *req, const char *name);

/* ---- helpers ------------------------------------------------------------------ */

/* Parses "HOST:PORT": an IPv4 address, "[IPv6]", or a name resolved with
 * getaddrinfo (its first address); an empty HOST (":8080") is every IPv4
 * interface. PORT 0..65535. The result in *addr (*len bytes). OSP_EINVAL
 * with a message when it is not one. */
int osp__http_parse_listen(const char *s, struct sockaddr_storage *addr, socklen_t *len);

/* Strict standard base64 (RFC 4648 section 4: A-Z a-z 0-9 + /, '='
 * padding to a multiple of 4, no whitespace, no other characters), decoded
 * with OpenSSL's EVP_DecodeBlock. *out (osp_free) gets the bytes, *out_len
 * their count; refuses input that would decode to more than max_out bytes
 * with OSP_ERANGE before allocating. OSP_EFORMAT with a message ("invalid
 * base64 character at offset 17") for anything else. */
int osp__base64_decode(const char *in, size_t len, size_t max_out, uint8_t **out, size_t *out_len);

#endif
