/* Notification of a task's end: an HTTP POST of its record (libcurl). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "broker.h"

/* The answer's body is not wanted: read and dropped. */
static size_t discard(char *p, size_t size, size_t n, void *user) {
    (void)p;
    (void)user;
    return size * n;
}

int osp__http_post_json(const char *url, const char *body, long timeout_s) {
    CURL *e = curl_easy_init();
    if (!e) return osp_error(OSP_ENOMEM, "notify: curl");
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    /* http and https only: a task's URL must not reach files or other schemes */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    const CURLcode rc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (rc != CURLE_OK) return osp_error(OSP_EIO, "notify %s: %s", url, curl_easy_strerror(rc));
    if (status < 200 || status >= 300) return osp_error(OSP_EIO, "notify %s: HTTP %ld", url, status);
    return OSP_OK;
}

void osp__notify_tasks(osp_broker *b, const redisReply *ids, size_t from) {
    if (!ids || ids->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = from; i < ids->elements; i++) {
        const redisReply *id = ids->element[i];
        if (id->type != REDIS_REPLY_STRING) continue;
        char *json = NULL;
        if (osp_task_get(b, id->str, &json)) continue;
        cJSON *rec = cJSON_Parse(json);
        const cJSON *url = cJSON_GetObjectItemCaseSensitive(rec, "notify");
        if (cJSON_IsString(url) && url->valuestring[0] && osp__http_post_json(url->valuestring, json, 10))
            osp_log(OSP_LOG_WARN, "task %s: %s", id->str, osp_last_error());
        cJSON_Delete(rec);
        free(json);
    }
}
