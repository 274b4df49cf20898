/* The router's web page and the catalogue images it shows (router_page.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serve/router_page.h"

/* Images larger than this are not served (Cloud Vision's image limit). */
#define MAX_IMAGE_BYTES ((off_t)20 * 1000 * 1000)

enum MHD_Result osp__rt_send_page(osp__http_request *req) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(osp__router_page_len, (void *)osp__router_page, MHD_RESPMEM_PERSISTENT);
    if (!resp) return osp__http_send_error(req, 500, "out of memory");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
                            "script-src 'self' 'unsafe-inline'; connect-src 'self'");
    enum MHD_Result res = MHD_queue_response(req->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    req->status = MHD_HTTP_OK;
    return res;
}

int osp__rt_path_below(const char *real, const char *root) {
    const size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return real[0] == '/';
    return !strncmp(real, root, n) && (real[n] == '\0' || real[n] == '/');
}

static const char *image_type(const unsigned char *b, ssize_t n) {
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return "image/jpeg";
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return "image/png";
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return "image/webp";
    return NULL;
}

enum MHD_Result osp__rt_send_catalog_image(osp__http_request *req, const char *allow_root) {
    const char *path = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "path");
    if (!path || !*path) return osp__http_send_error(req, 400, "give the image as ?path=PATH");
    if (!allow_root)
        return osp__http_send_error(req, 404, "this router serves no catalogue images (it has no --allow-root)");
    char *real = realpath(path, NULL);
    if (!real) return osp__http_send_error(req, 404, "no such image: %.300s", path);
    if (!osp__rt_path_below(real, allow_root)) {
        free(real);
        return osp__http_send_error(req, 403, "%.300s is outside the catalogue's root", path);
    }
    /* the file opened is the one checked: no link is followed past here */
    const int fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    free(real);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return osp__http_send_error(req, 404, "no such image: %.300s", path);
    }
    unsigned char head[16];
    const ssize_t got = pread(fd, head, sizeof head, 0);
    const char *type = image_type(head, got);
    if (!type || st.st_size > MAX_IMAGE_BYTES) {
        close(fd);
        return osp__http_send_error(req, 403, "%.300s is not a JPEG, PNG or WebP image of at most 20 MB", path);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* owns fd */
    if (!resp) {
        close(fd);
        return osp__http_send_error(req, 500, "out of memory");
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "max-age=300");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result res = MHD_queue_response(req->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    req->status = MHD_HTTP_OK;
    return res;
}
