/* The router's web page (src/serve/web/index.html, compiled in by
 * CMakeLists.txt as osp__router_page) and the catalogue's image files it
 * shows. */
#ifndef OSP_SERVE_ROUTER_PAGE_H
#define OSP_SERVE_ROUTER_PAGE_H

#include <stddef.h>

#include "serve/http.h"

extern const unsigned char osp__router_page[];
extern const size_t osp__router_page_len;

/* The page, as text/html. */
enum MHD_Result osp__rt_send_page(osp__http_request *req);

/* The image file named by the query's "path", only if its real path lies
 * below allow_root (a realpath; NULL: no image is served) and it is a
 * JPEG, PNG or WebP file: 400 without a path, 404 when there is no such
 * file (or no root), 403 outside the root or not an image. */
enum MHD_Result osp__rt_send_catalog_image(osp__http_request *req, const char *allow_root);

/* 1 if the real path `real` is root or lies below it. */
int osp__rt_path_below(const char *real, const char *root);

#endif
