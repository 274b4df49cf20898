/* The worker's request parser (src/serve/request.c) on good and hostile
 * bodies, strict base64, image ids, HOST:PORT, the Google-style error
 * names and the Prometheus metrics (src/serve/http.c, metrics.c). */
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/core.h"
#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/request.h"

/* ---- annotate ------------------------------------------------------------------ */

static int annotate(const char *body, osp__annotate_request *r) {
    return osp__parse_annotate(body, strlen(body), OSP__MAX_IMAGE_BYTES, r);
}

Test(request, annotate_good) {
    const char *body =
        "{\"requests\": [{\"image\": {\"content\": \"QUJD\"},"
        " \"features\": [{\"type\": \"LABEL_DETECTION\", \"maxResults\": 3}, {\"type\": \"IMAGE_PROPERTIES\"}]},"
        " {\"image\": {\"source\": {\"imageUri\": \"photos/a.jpg\"}}, \"imageContext\": {\"x\": 1},"
        " \"features\": [{\"type\": \"WEB_DETECTION\", \"maxResults\": 0}, {\"type\": \"EMBEDDING\", \"model\": \"m\"}]}]}";
    osp__annotate_request r;
    cr_assert_eq(annotate(body, &r), 0, "%s", osp_last_error());
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.items[0].image.content_len, 3);
    cr_assert(!memcmp(r.items[0].image.content, "ABC", 3));
    cr_assert_null(r.items[0].image.uri);
    cr_assert_eq(r.items[0].features, OSP__FEATURE_LABELS | OSP__FEATURE_PROPERTIES);
    cr_assert_eq(r.items[0].max_results[0], 3);
    cr_assert_eq(r.items[0].max_results[2], OSP__DEFAULT_RESULTS);
    cr_assert_str_eq(r.items[1].image.uri, "photos/a.jpg");
    cr_assert_null(r.items[1].image.content);
    cr_assert_eq(r.items[1].features, OSP__FEATURE_WEB | OSP__FEATURE_EMBEDDING);
    cr_assert_eq(r.items[1].max_results[1], OSP__DEFAULT_RESULTS, "maxResults 0 is the default");
    osp__annotate_request_free(&r);
    cr_assert_eq(r.n, 0);
}

/* Each body is refused with a message that says `want`. */
static void refused(const char *body, const char *want) {
    osp__annotate_request r;
    int rc = annotate(body, &r);
    cr_assert_eq(rc, OSP_EINVAL, "accepted: %s", body);
    cr_assert_eq(r.n, 0);
    cr_assert(strstr(osp_last_error(), want), "'%s' said '%s', not '%s'", body, osp_last_error(), want);
}

#define FEAT "\"features\": [{\"type\": \"LABEL_DETECTION\"}]"

Test(request, annotate_hostile) {
    refused("", "empty");
    refused("{", "malformed JSON");
    refused("{\"requests\": [}", "malformed JSON");
    refused("[1, 2]", "must be a JSON object");
    refused("{\"requests\": []} x", "text after the value");
    refused("{}", "requests is missing");
    refused("{\"requests\": {}}", "requests must be an array, not an object");
    refused("{\"requests\": []}", "requests is empty");
    refused("{\"requests\": [1]}", "requests[0] must be an object, not a number");
    refused("{\"request\": []}", "unknown field 'request'");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, " FEAT ", \"extra\": 1}]}",
            "requests[0]: unknown field 'extra'");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, " FEAT ", " FEAT "}]}", "given twice");
    refused("{\"requests\": [{" FEAT "}]}", "requests[0].image is missing");
    refused("{\"requests\": [{\"image\": {}, " FEAT "}]}", "give content (base64) or source.imageUri");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\", \"source\": {\"imageUri\": \"a\"}}, " FEAT "}]}",
            "not both");
    refused("{\"requests\": [{\"image\": {\"content\": 12}, " FEAT "}]}", "content must be a base64 string");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJ\"}, " FEAT "}]}", "multiple of 4");
    refused("{\"requests\": [{\"image\": {\"content\": \"QU*D\"}, " FEAT "}]}", "character '*' at offset 2");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\\n\"}, " FEAT "}]}", "invalid base64");
    refused("{\"requests\": [{\"image\": {\"content\": \"QR==\"}, " FEAT "}]}", "non-zero bits");
    refused("{\"requests\": [{\"image\": {\"content\": \"\"}, " FEAT "}]}", "content is empty");
    refused("{\"requests\": [{\"image\": {\"source\": {}}, " FEAT "}]}", "imageUri is missing");
    refused("{\"requests\": [{\"image\": {\"source\": {\"gcsImageUri\": \"gs://b/o\"}}, " FEAT "}]}",
            "unknown field 'gcsImageUri'");
    refused("{\"requests\": [{\"image\": {\"source\": {\"imageUri\": \"http://x/a.jpg\"}}, " FEAT "}]}", "is a URL");
    refused("{\"requests\": [{\"image\": {\"source\": {\"imageUri\": \"a\\u0001b\"}}, " FEAT "}]}",
            "control character");
    refused("{\"requests\": [{\"image\": {\"source\": {\"imageUri\": \"a\\u0000b\"}}, " FEAT "}]}", "NUL");
    refused("{\"requests\": [{\"image\": {\"source\": {\"imageUri\": \"a\xff\"}}, " FEAT "}]}", "not valid UTF-8");
    refused("{\"requests\": [{\"image\": {\"source\": {\"imageUri\": \"a\xed\xa0\x80\"}}, " FEAT "}]}",
            "not valid UTF-8");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}}]}", "features is missing");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": []}]}", "features is empty");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{}]}]}", "type is missing");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": 1}]}]}",
            "type must be a string");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": \"FACE_DETECTION\"}]}]}",
            "'FACE_DETECTION' is not supported");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": \"LABEL_DETECTION\", "
            "\"maxResults\": -1}]}]}",
            "maxResults is -1");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": \"LABEL_DETECTION\", "
            "\"maxResults\": 1001}]}]}",
            "from 0 to 1000");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": \"LABEL_DETECTION\", "
            "\"maxResults\": 2.5}]}]}",
            "must be an integer");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": \"LABEL_DETECTION\", "
            "\"maxResults\": \"3\"}]}]}",
            "must be an integer, not a string");
    refused("{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"features\": [{\"type\": \"LABEL_DETECTION\", "
            "\"maxResults\": 1e400}]}]}",
            "maxResults");
}

Test(request, annotate_limits) {
    /* 17 images: one too many */
    char body[8192] = "{\"requests\": [";
    for (int i = 0; i < 17; i++)
        strcat(body, i ? ", {\"image\": {\"content\": \"QUJD\"}, " FEAT "}" : "{\"image\": {\"content\": \"QUJD\"}, " FEAT "}");
    strcat(body, "]}");
    refused(body, "requests has 17 items: at most 16");
    /* an image over the byte limit */
    osp__annotate_request r;
    const char *b = "{\"requests\": [{\"image\": {\"content\": \"QUJDRA==\"}, " FEAT "}]}";
    cr_assert_eq(osp__parse_annotate(b, strlen(b), 3, &r), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "larger than 3 bytes"), "%s", osp_last_error());
    cr_assert_eq(osp__parse_annotate(b, strlen(b), 4, &r), 0);
    osp__annotate_request_free(&r);
    /* deep nesting: cJSON's limit, no stack overflow */
    char *deep = malloc(200100);
    size_t n = 0;
    n += (size_t)sprintf(deep, "{\"requests\": ");
    for (int i = 0; i < 100000; i++) deep[n++] = '[';
    for (int i = 0; i < 100000; i++) deep[n++] = ']';
    deep[n++] = '}';
    cr_assert_eq(osp__parse_annotate(deep, n, 100, &r), OSP_EINVAL);
    free(deep);
}

Test(request, value_count_limit) {
    /* a million and one values are refused before cJSON allocates them */
    const size_t n = OSP__MAX_JSON_VALUES + 1;
    char *body = malloc(n * 2 + 32);
    size_t len = (size_t)sprintf(body, "{\"queries\": [{\"vector\": [");
    for (size_t i = 0; i < n; i++) {
        body[len++] = '0';
        body[len++] = ',';
    }
    body[len - 1] = ']';
    len += (size_t)sprintf(body + len, "}]}");
    cr_assert_gt(osp__json_count_values(body, len), OSP__MAX_JSON_VALUES);
    osp__search_request r;
    cr_assert_eq(osp__parse_search(body, len, &r), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "more than 1000000 JSON values"), "%s", osp_last_error());
    free(body);
    /* commas, colons and brackets inside strings are not values */
    const char *s = "{\"a\": \"[,:{\\\",\"}";
    cr_assert_eq(osp__json_count_values(s, strlen(s)), 3); /* the root, the "{" and the ":" */
}

/* ---- search --------------------------------------------------------------------- */

static int search(const char *body, osp__search_request *r) { return osp__parse_search(body, strlen(body), r); }

Test(request, search_good) {
    const char *body = "{\"queries\": [{\"vector\": [0.5, -1, 2e-3], \"k\": 3, \"ef\": 50, \"nprobe\": 4,"
                       " \"filter\": {\"idMin\": \"12\", \"idMax\": \"9223372036854775807\", \"label\": \"cat\"}},"
                       " {\"vector\": [1, 2, 3], \"filter\": {\"idMax\": 99}}]}";
    osp__search_request r;
    cr_assert_eq(search(body, &r), 0, "%s", osp_last_error());
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.queries[0].dim, 3);
    cr_assert_float_eq(r.queries[0].vector[2], 2e-3f, 1e-9);
    cr_assert_eq(r.queries[0].k, 3);
    cr_assert_eq(r.queries[0].ef, 50);
    cr_assert_eq(r.queries[0].nprobe, 4);
    cr_assert_eq(r.queries[0].id_min, 12);
    cr_assert_eq(r.queries[0].id_max, INT64_MAX);
    cr_assert_str_eq(r.queries[0].label, "cat");
    cr_assert_eq(r.queries[1].k, OSP__DEFAULT_RESULTS);
    cr_assert_eq(r.queries[1].id_min, 0);
    cr_assert_eq(r.queries[1].id_max, 99);
    cr_assert_null(r.queries[1].label);
    osp__search_request_free(&r);
}

static void search_refused(const char *body, const char *want) {
    osp__search_request r;
    cr_assert_eq(search(body, &r), OSP_EINVAL, "accepted: %s", body);
    cr_assert_eq(r.n, 0);
    cr_assert(strstr(osp_last_error(), want), "'%s' said '%s', not '%s'", body, osp_last_error(), want);
}

Test(request, search_hostile) {
    search_refused("{\"queries\": []}", "queries is empty");
    search_refused("{\"queries\": [{}]}", "queries[0].vector is missing");
    search_refused("{\"queries\": [{\"vector\": []}]}", "vector is empty");
    search_refused("{\"queries\": [{\"vector\": [1, \"2\"]}]}", "vector[1] must be a number, not a string");
    search_refused("{\"queries\": [{\"vector\": [1, null]}]}", "vector[1] must be a number, not null");
    search_refused("{\"queries\": [{\"vector\": [1e39]}]}", "not a finite float32");
    search_refused("{\"queries\": [{\"vector\": [1e999]}]}", "not a finite float32");
    search_refused("{\"queries\": [{\"vector\": [1], \"k\": 0}]}", "k is 0");
    search_refused("{\"queries\": [{\"vector\": [1], \"k\": 1001}]}", "from 1 to 1000");
    search_refused("{\"queries\": [{\"vector\": [1], \"ef\": -3}]}", "ef is -3");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": []}]}", "filter must be an object");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"idMin\": \"-1\"}}]}", "is not an image id");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"idMin\": \"9223372036854775808\"}}]}",
                   "is not an image id");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"idMin\": \" 1\"}}]}", "is not an image id");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"idMin\": 9007199254740993}}]}",
                   "decimal strings");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"idMin\": \"5\", \"idMax\": \"4\"}}]}",
                   "idMin is above idMax");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"label\": \"\"}}]}", "label is empty");
    search_refused("{\"queries\": [{\"vector\": [1], \"filter\": {\"labels\": \"x\"}}]}", "unknown field 'labels'");
    char body[8192] = "{\"queries\": [";
    for (int i = 0; i < OSP__MAX_QUERIES + 1; i++) strcat(body, i ? ", {\"vector\": [1]}" : "{\"vector\": [1]}");
    strcat(body, "]}");
    search_refused(body, "at most 64");
}

/* ---- add ------------------------------------------------------------------------ */

Test(request, add) {
    const char *good = "{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"path\": \"new/a.jpg\"},"
                       " {\"image\": {\"source\": {\"imageUri\": \"b.png\"}}, \"path\": \"b.png\"}]}";
    osp__add_request r;
    cr_assert_eq(osp__parse_add(good, strlen(good), OSP__MAX_IMAGE_BYTES, &r), 0, "%s", osp_last_error());
    cr_assert_eq(r.n, 2);
    cr_assert_str_eq(r.items[0].path, "new/a.jpg");
    cr_assert_str_eq(r.items[1].image.uri, "b.png");
    osp__add_request_free(&r);
    const char *bad[][2] = {
        {"{\"requests\": [{\"image\": {\"content\": \"QUJD\"}}]}", "requests[0].path is missing"},
        {"{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"path\": 3}]}", "path must be a string"},
        {"{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"path\": \"a\"},"
         " {\"image\": {\"content\": \"QUJD\"}, \"path\": \"a\"}]}",
         "is also requests[0].path"},
        {"{\"requests\": [{\"image\": {\"content\": \"QUJD\"}, \"path\": \"a\", \"features\": []}]}",
         "unknown field 'features'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(osp__parse_add(bad[i][0], strlen(bad[i][0]), OSP__MAX_IMAGE_BYTES, &r), OSP_EINVAL, "%s",
                     bad[i][0]);
        cr_assert(strstr(osp_last_error(), bad[i][1]), "said '%s', not '%s'", osp_last_error(), bad[i][1]);
    }
}

/* ---- base64, ids, addresses ---------------------------------------------------------- */

Test(request, base64) {
    const char *good[][2] = {{"", ""}, {"QQ==", "A"}, {"QUI=", "AB"}, {"QUJD", "ABC"}, {"QUJDRA==", "ABCD"},
                             {"+/+/", "\xfb\xff\xbf"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint8_t *out;
        size_t n;
        cr_assert_eq(osp__base64_decode(good[i][0], strlen(good[i][0]), 100, &out, &n), 0, "%s: %s", good[i][0],
                     osp_last_error());
        cr_assert_eq(n, strlen(good[i][1]), "%s", good[i][0]);
        cr_assert(!memcmp(out, good[i][1], n), "%s", good[i][0]);
        osp_free(out);
    }
    const char *bad[] = {"Q", "QQ=", "QQ===", "====", "QQ=A", "Q===", "QR==", "QUJ=", "QUK=", " QUJD", "QUJD ",
                         "QU\nJD", "QUJD\n", "QU-_", "QUJD=", "\xc3\xa9\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *out = (uint8_t *)1;
        size_t n = 7;
        cr_assert_eq(osp__base64_decode(bad[i], strlen(bad[i]), 100, &out, &n), OSP_EFORMAT, "accepted '%s'", bad[i]);
        cr_assert_null(out);
        cr_assert_eq(n, 0);
    }
    uint8_t *out;
    size_t n;
    cr_assert_eq(osp__base64_decode("QUJDRA==", 8, 3, &out, &n), OSP_ERANGE);
    cr_assert_eq(osp__base64_decode("QUJDRA==", 8, 4, &out, &n), 0);
    osp_free(out);
}

Test(request, ids) {
    cr_assert_eq(osp__parse_id("0"), 0);
    cr_assert_eq(osp__parse_id("1737042285115645281"), 1737042285115645281LL);
    cr_assert_eq(osp__parse_id("9223372036854775807"), INT64_MAX);
    const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1e3", "0x10", "9223372036854775808", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) cr_assert_eq(osp__parse_id(bad[i]), -1, "'%s'", bad[i]);
}

Test(request, listen_addresses) {
    struct sockaddr_storage a;
    socklen_t len;
    cr_assert_eq(osp__http_parse_listen("127.0.0.1:0", &a, &len), 0);
    cr_assert_eq(a.ss_family, AF_INET);
    cr_assert_eq(osp__http_parse_listen("127.0.0.1:8080", &a, &len), 0);
    cr_assert_eq(ntohs(((struct sockaddr_in *)&a)->sin_port), 8080);
    cr_assert_eq(osp__http_parse_listen(":9000", &a, &len), 0);
    cr_assert_eq(((struct sockaddr_in *)&a)->sin_addr.s_addr, htonl(INADDR_ANY));
    cr_assert_eq(osp__http_parse_listen("[::1]:65535", &a, &len), 0);
    cr_assert_eq(a.ss_family, AF_INET6);
    cr_assert_eq(osp__http_parse_listen("localhost:80", &a, &len), 0);
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "::1:80", "[::1]80",
                         "host:8x", "[::1:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(osp__http_parse_listen(bad[i], &a, &len), OSP_EINVAL, "accepted '%s'", bad[i]);
}

Test(request, status_names) {
    cr_assert_str_eq(osp__http_status_name(400), "INVALID_ARGUMENT");
    cr_assert_str_eq(osp__http_status_name(401), "UNAUTHENTICATED");
    cr_assert_str_eq(osp__http_status_name(404), "NOT_FOUND");
    cr_assert_str_eq(osp__http_status_name(413), "PAYLOAD_TOO_LARGE");
    cr_assert_str_eq(osp__http_status_name(503), "UNAVAILABLE");
    cJSON *e = osp__http_error_object(413, "too big");
    char *text = cJSON_PrintUnformatted(e);
    cr_assert_str_eq(text, "{\"code\":413,\"status\":\"PAYLOAD_TOO_LARGE\",\"message\":\"too big\"}");
    free(text);
    cJSON_Delete(e);
}

/* ---- metrics ----------------------------------------------------------------------- */

Test(metrics, render) {
    const char *routes[] = {"search", "annotate"};
    osp__metrics *m = osp__metrics_new("osprey_worker", routes, 2);
    cr_assert_not_null(m);
    cr_assert_null(osp__metrics_new("Bad-Prefix", routes, 2));
    int g = osp__metrics_gauge(m, "inference_queue", "waiting");
    cr_assert_geq(g, 0);
    osp__metrics_gauge_add(m, g, 3);
    osp__metrics_gauge_add(m, g, -1);
    for (int i = 0; i < 3; i++) osp__metrics_begin(m);
    osp__metrics_end(m, "search", 200, 0.002);
    osp__metrics_end(m, "search", 413, 0.7);
    osp__metrics_end(m, "nowhere", 404, 0.0001);
    osp__metrics_begin(m);
    size_t len;
    char *t = osp__metrics_render(m, &len);
    cr_assert_not_null(t);
    cr_assert_eq(strlen(t), len);
    const char *want[] = {
        "# TYPE osprey_worker_requests_total counter\n",
        "osprey_worker_requests_total{route=\"search\",code=\"2xx\"} 1\n",
        "osprey_worker_requests_total{route=\"search\",code=\"4xx\"} 1\n",
        "osprey_worker_requests_total{route=\"other\",code=\"4xx\"} 1\n",
        "osprey_worker_request_errors_total{route=\"search\",code=\"413\"} 1\n",
        "osprey_worker_request_errors_total{route=\"other\",code=\"404\"} 1\n",
        "# TYPE osprey_worker_request_duration_seconds histogram\n",
        "osprey_worker_request_duration_seconds_bucket{route=\"search\",le=\"0.001\"} 0\n",
        "osprey_worker_request_duration_seconds_bucket{route=\"search\",le=\"0.0025\"} 1\n",
        "osprey_worker_request_duration_seconds_bucket{route=\"search\",le=\"0.5\"} 1\n",
        "osprey_worker_request_duration_seconds_bucket{route=\"search\",le=\"1\"} 2\n",
        "osprey_worker_request_duration_seconds_bucket{route=\"search\",le=\"+Inf\"} 2\n",
        "osprey_worker_request_duration_seconds_count{route=\"search\"} 2\n",
        "osprey_worker_request_duration_seconds_bucket{route=\"annotate\",le=\"+Inf\"} 0\n",
        "osprey_worker_requests_in_flight 1\n",
        "# TYPE osprey_worker_inference_queue gauge\n",
        "osprey_worker_inference_queue 2\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(t, want[i]), "missing '%s' in:\n%s", want[i], t);
    free(t);
    osp__metrics_free(m);
}
