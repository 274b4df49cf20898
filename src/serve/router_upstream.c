/* The router's calls to its workers: libcurl's multi interface, one multi
 * handle per client (a request holds one client while it runs; there are
 * at most as many clients as HTTP threads), each keeping its own cache of
 * kept-alive connections to the workers and its easy handles between
 * requests. Calls run at once; a failed one moves to another live replica
 * of its shard while the request's deadline allows. docs/serving.md says
 * why a client per thread rather than one shared connection cache. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "osprey/core.h"
#include "serve/router.h"
#include "serve/router_metrics.h"

int64_t osp__rt_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- workers ---------------------------------------------------------------- */

/* "host:port" or "http://host:port" (a trailing slash allowed), with a
 * port of 1..65535; host: a name, an IPv4 address or [IPv6]. */
static int parse_addr(const char *s, size_t n, rt_worker *w) {
    if (n >= 7 && !strncmp(s, "http://", 7)) s += 7, n -= 7;
    if (n > 0 && s[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof w->addr) return osp_error(OSP_EINVAL, "'%.*s': not HOST:PORT", (int)n, s);
    size_t colon = n;
    while (colon > 0 && s[colon - 1] != ':') colon--;
    if (colon <= 1) return osp_error(OSP_EINVAL, "'%.*s': not HOST:PORT", (int)n, s);
    long port = 0;
    for (size_t i = colon; i < n; i++) {
        if (!isdigit((unsigned char)s[i]) || port > 65535)
            return osp_error(OSP_EINVAL, "'%.*s': not HOST:PORT", (int)n, s);
        port = port * 10 + (s[i] - '0');
    }
    if (colon == n || port < 1 || port > 65535)
        return osp_error(OSP_EINVAL, "'%.*s': the port must be 1 to 65535", (int)n, s);
    for (size_t i = 0; i < colon - 1; i++)
        if (!(isalnum((unsigned char)s[i]) || strchr(".-_[]:", s[i])))
            return osp_error(OSP_EINVAL, "'%.*s': not HOST:PORT", (int)n, s);
    memcpy(w->addr, s, n);
    w->addr[n] = '\0';
    snprintf(w->url, sizeof w->url, "http://%s", w->addr);
    return 0;
}

int osp__rt_router_init(rt_router *r, const char *const *shards, int n_shards) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->pool_lock, NULL);
    if (n_shards < 1 || n_shards > 4096) return osp_error(OSP_EINVAL, "the router needs 1 to 4096 shards");
    int total = 0;
    for (int s = 0; s < n_shards; s++) {
        if (!shards[s] || !*shards[s]) return osp_error(OSP_EINVAL, "shard %d has no address", s);
        total++;
        for (const char *p = shards[s]; *p; p++) total += *p == ',';
    }
    r->shards = calloc((size_t)n_shards, sizeof *r->shards);
    r->workers = calloc((size_t)total, sizeof *r->workers);
    if (!r->shards || !r->workers) return osp_error(OSP_ENOMEM, "the router's workers");
    r->n_shards = n_shards;
    for (int s = 0; s < n_shards; s++) {
        rt_shard *sh = &r->shards[s];
        int n = 1;
        for (const char *p = shards[s]; *p; p++) n += *p == ',';
        sh->replicas = calloc((size_t)n, sizeof *sh->replicas);
        if (!sh->replicas) return osp_error(OSP_ENOMEM, "the router's workers");
        const char *p = shards[s];
        for (int i = 0; i < n; i++) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            rt_worker *w = &r->workers[r->n_workers];
            pthread_mutex_init(&w->lock, NULL);
            r->n_workers++;
            int err = parse_addr(p, len, w);
            if (err) return osp_error(err, "shard %d: %s", s, osp_last_error());
            for (int j = 0; j < r->n_workers - 1; j++)
                if (!strcmp(r->workers[j].addr, w->addr))
                    return osp_error(OSP_EINVAL, "worker %s is given twice", w->addr);
            w->index = r->n_workers - 1;
            w->shard = s;
            w->replica = i;
            atomic_store(&w->up, 1);
            sh->replicas[sh->n++] = w;
            p = e ? e + 1 : p + len;
        }
    }
    return 0;
}

void osp__rt_router_free(rt_router *r) {
    osp__rt_clients_free(r);
    for (int s = 0; s < r->n_shards; s++) free(r->shards[s].replicas);
    for (int i = 0; i < r->n_workers; i++) pthread_mutex_destroy(&r->workers[i].lock);
    free(r->shards);
    free(r->workers);
    pthread_mutex_destroy(&r->pool_lock);
    memset(r, 0, sizeof *r);
}

void osp__rt_worker_set_up(rt_router *r, rt_worker *w, int up, const char *why) {
    if (why) {
        pthread_mutex_lock(&w->lock);
        snprintf(w->last_error, sizeof w->last_error, "%.255s", why);
        pthread_mutex_unlock(&w->lock);
    }
    const int was = atomic_exchange(&w->up, up);
    if (was == up) return;
    if (up)
        osp_log(OSP_LOG_INFO, "route: worker %s (shard %d) is up", w->addr, w->shard);
    else
        osp_log(OSP_LOG_WARN, "route: worker %s (shard %d) is down: %s", w->addr, w->shard, why ? why : "");
    osp__rt_metrics_worker_up(r->metrics, w, up);
}

int osp__rt_shard_live(const rt_router *r, int s) {
    int n = 0;
    for (int i = 0; i < r->shards[s].n; i++) n += atomic_load(&r->shards[s].replicas[i]->up) != 0;
    return n;
}

/* ---- clients ---------------------------------------------------------------- */

typedef struct rt_client {
    CURLM *multi;
    CURL **easy; /* idle easy handles */
    int n_easy, cap_easy;
    struct rt_client *next;
} rt_client;

static rt_client *client_get(rt_router *r) {
    pthread_mutex_lock(&r->pool_lock);
    rt_client *c = r->idle;
    if (c) r->idle = c->next;
    pthread_mutex_unlock(&r->pool_lock);
    if (c) return c;
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->multi = curl_multi_init();
    if (!c->multi) {
        free(c);
        return NULL;
    }
    /* room for a kept-alive connection to every worker, twice over */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)(2 * r->n_workers + 4));
    return c;
}

static void client_put(rt_router *r, rt_client *c) {
    pthread_mutex_lock(&r->pool_lock);
    c->next = r->idle;
    r->idle = c;
    pthread_mutex_unlock(&r->pool_lock);
}

void osp__rt_clients_free(rt_router *r) {
    rt_client *c = r->idle;
    while (c) {
        rt_client *next = c->next;
        for (int i = 0; i < c->n_easy; i++) curl_easy_cleanup(c->easy[i]);
        free(c->easy);
        curl_multi_cleanup(c->multi);
        free(c);
        c = next;
    }
    r->idle = NULL;
}

static CURL *easy_get(rt_client *c) {
    if (c->n_easy > 0) return c->easy[--c->n_easy];
    return curl_easy_init();
}

static void easy_put(rt_client *c, CURL *e) {
    if (c->n_easy == c->cap_easy) {
        int ncap = c->cap_easy ? 2 * c->cap_easy : 8;
        CURL **ne = realloc(c->easy, (size_t)ncap * sizeof *ne);
        if (!ne) {
            curl_easy_cleanup(e);
            return;
        }
        c->easy = ne;
        c->cap_easy = ncap;
    }
    /* Not curl_easy_reset: start() sets every option each time, and the
     * handle keeps what it allocated for the next call. */
    c->easy[c->n_easy++] = e;
}

/* ---- calls ------------------------------------------------------------------ */

typedef struct attempt {
    rt_call *call;
    rt_worker *worker;
    CURL *easy;
    struct curl_slist *headers;
    char *buf;
    size_t len, cap;
    int too_big;
    int64_t started;
} attempt;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud) {
    attempt *a = ud;
    const size_t n = size * nmemb;
    if (a->len + n + 1 > RT_MAX_ANSWER) {
        a->too_big = 1;
        return 0;
    }
    if (a->len + n + 1 > a->cap) {
        size_t ncap = a->cap ? a->cap : 4096;
        while (ncap < a->len + n + 1) ncap *= 2;
        char *nb = realloc(a->buf, ncap);
        if (!nb) return 0;
        a->buf = nb;
        a->cap = ncap;
    }
    memcpy(a->buf + a->len, ptr, n);
    a->len += n;
    a->buf[a->len] = '\0';
    return n;
}

void osp__rt_call_clear(rt_call *call) {
    free(call->answer);
    cJSON_Delete(call->json);
    free(call->tried);
    call->answer = NULL;
    call->json = NULL;
    call->tried = NULL;
}

/* The next worker for a call: for a shard or any worker, a live one not
 * tried yet, round robin; NULL if none is left. */
static rt_worker *pick(rt_router *r, rt_call *call) {
    if (call->target == RT_FIXED_WORKER) return call->attempts == 0 ? call->fixed : NULL;
    rt_worker **cand;
    int n;
    atomic_uint *next;
    if (call->target == RT_ANY_WORKER) {
        n = r->n_workers;
        cand = NULL;
        next = &r->next_worker;
    } else {
        n = r->shards[call->target].n;
        cand = r->shards[call->target].replicas;
        next = &r->shards[call->target].next;
    }
    const unsigned start = atomic_fetch_add(next, 1u);
    for (int i = 0; i < n; i++) {
        rt_worker *w = cand ? cand[(start + (unsigned)i) % (unsigned)n] : &r->workers[(start + (unsigned)i) % (unsigned)n];
        if (!atomic_load(&w->up) || call->tried[w->index]) continue;
        return w;
    }
    return NULL;
}

/* 1 if the call has a live worker left that it has not tried. */
static int pick_peek(rt_router *r, const rt_call *call) {
    if (call->target == RT_ANY_WORKER) {
        for (int i = 0; i < r->n_workers; i++)
            if (atomic_load(&r->workers[i].up) && !call->tried[i]) return 1;
        return 0;
    }
    const rt_shard *sh = &r->shards[call->target];
    for (int i = 0; i < sh->n; i++)
        if (atomic_load(&sh->replicas[i]->up) && !call->tried[sh->replicas[i]->index]) return 1;
    return 0;
}

/* Starts the call's next attempt; 0, or -1 when no worker is left or the
 * deadline passed (call->error says why). */
static int start(rt_router *r, rt_client *c, rt_call *call, int64_t deadline) {
    const int64_t left = deadline - osp__rt_now_ms();
    if (left <= 0) {
        if (!call->error[0]) snprintf(call->error, sizeof call->error, "the request's deadline passed");
        return -1;
    }
    rt_worker *w = pick(r, call);
    if (!w) {
        if (!call->error[0])
            snprintf(call->error, sizeof call->error, "%s",
                     call->target >= 0 ? "no live replica of the shard"
                                       : call->target == RT_ANY_WORKER ? "no live worker" : "no worker");
        return -1;
    }
    call->tried[w->index] = 1;
    call->attempts++;
    if (call->attempts > 1) osp__rt_metrics_retry(r->metrics);
    attempt *a = calloc(1, sizeof *a);
    CURL *e = a ? easy_get(c) : NULL;
    if (!e) {
        free(a);
        snprintf(call->error, sizeof call->error, "out of memory");
        return -1;
    }
    a->call = call;
    a->worker = w;
    a->easy = e;
    a->started = osp__rt_now_ms();
    char url[sizeof w->url + 1024];
    snprintf(url, sizeof url, "%s%s", w->url, call->path);
    a->headers = curl_slist_append(a->headers, "Expect:");
    if (call->body) a->headers = curl_slist_append(a->headers, "Content-Type: application/json");
    if (call->auth) {
        char h[1100];
        snprintf(h, sizeof h, "Authorization: %s", call->auth);
        a->headers = curl_slist_append(a->headers, h);
    }
    /* A worker that hangs (stopped, overloaded, a network that drops
     * packets) must not take the whole deadline while another replica
     * could answer: with another left to try, an attempt gets half. */
    long timeout = (long)left;
    if (call->target != RT_FIXED_WORKER && left >= 20 && pick_peek(r, call)) timeout = (long)(left / 2);
    if (call->timeout_ms > 0 && call->timeout_ms < timeout) timeout = call->timeout_ms;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(r->connect_ms < timeout ? r->connect_ms : timeout));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_PRIVATE, a);
    /* every method-related option set each time: the handle is reused */
    if (!strcmp(call->method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body ? call->body : "");
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(call->method, "GET") ? call->method : (char *)NULL);
    }
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        curl_slist_free_all(a->headers);
        easy_put(c, e);
        free(a);
        snprintf(call->error, sizeof call->error, "cannot start a call to %.128s", w->addr);
        return -1;
    }
    return 0;
}

/* An attempt ended: 1 if the call is finished (answered or out of
 * options), 0 if another attempt was started. */
static int finish(rt_router *r, rt_client *c, attempt *a, CURLcode cc, int64_t deadline) {
    rt_call *call = a->call;
    rt_worker *w = a->worker;
    long status = 0;
    curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &status);
    atomic_fetch_add(&w->calls, 1);
    char why[256] = "";
    const int answered = cc == CURLE_OK && status > 0;
    /* the answer (or what came of it) is the call's, replacing an earlier
     * attempt's */
    free(call->answer);
    cJSON_Delete(call->json);
    call->json = NULL;
    call->answer = a->buf ? a->buf : strdup("");
    call->answer_len = a->buf ? a->len : 0;
    a->buf = NULL;
    if (!answered) {
        if (a->too_big)
            snprintf(why, sizeof why, "%.128s: an answer over %u bytes", w->addr, RT_MAX_ANSWER);
        else
            snprintf(why, sizeof why, "%.128s: %.100s", w->addr, curl_easy_strerror(cc));
    } else if (status >= 500) {
        snprintf(why, sizeof why, "%.128s answered %ld", w->addr, status);
    } else if (status >= 200 && status < 300 && call->check) {
        if (!call->answer || call->check(call, call->check_ctx))
            snprintf(why, sizeof why, "%.128s gave a malformed answer: %.100s", w->addr,
                     call->answer ? osp_last_error() : "out of memory");
    }
    osp__rt_metrics_upstream(r->metrics, w, status, answered, osp__rt_now_ms() - a->started);
    if (why[0]) {
        atomic_fetch_add(&w->failures, 1);
        snprintf(call->error, sizeof call->error, "%.255s", why);
        call->status = status;
        /* a worker that did not answer, or answered that it cannot serve,
         * is down until a health check finds it up */
        if (!answered || status == 503) osp__rt_worker_set_up(r, w, 0, why);
        else osp_log(OSP_LOG_WARN, "route: %s", why);
    } else {
        call->ok = 1;
        call->status = status;
        call->served_by = w;
        call->error[0] = '\0';
    }
    curl_multi_remove_handle(c->multi, a->easy);
    curl_slist_free_all(a->headers);
    easy_put(c, a->easy);
    free(a->buf);
    free(a);
    if (call->ok) return 1;
    return start(r, c, call, deadline) ? 1 : 0;
}

void osp__rt_run(rt_router *r, rt_call *calls, int n, int64_t deadline) {
    rt_client *c = client_get(r);
    int pending = 0;
    for (int i = 0; i < n; i++) {
        rt_call *call = &calls[i];
        call->ok = 0;
        call->attempts = 0;
        call->error[0] = '\0';
        free(call->tried);
        call->tried = calloc((size_t)r->n_workers, 1);
        if (!c || !call->tried) {
            snprintf(call->error, sizeof call->error, "out of memory");
            continue;
        }
        if (start(r, c, call, deadline) == 0) pending++;
    }
    while (pending > 0) {
        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            attempt *a = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&a);
            const CURLcode cc = m->data.result;
            if (finish(r, c, a, cc, deadline)) pending--;
        }
        if (pending == 0) break;
        curl_multi_poll(c->multi, NULL, 0, 100, NULL);
    }
    if (c) client_put(r, c);
}

/* ---- health ----------------------------------------------------------------- */

/* 1 unless the worker's /healthz says it holds another shard than the
 * one it was given as ("shard": "I/N", as its catalogue's `osprey tag
 * --shard I/N` recorded; null or absent: no claim). A worker over the
 * wrong shard would make every merged answer wrong, so it is kept down. */
static int shard_matches(const rt_router *r, const rt_worker *w, const char *body, char *why, size_t len) {
    cJSON *j = body ? cJSON_Parse(body) : NULL;
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shard");
    int ok = 1;
    if (cJSON_IsString(sh) && sh->valuestring) {
        int i = -1, n = -1;
        char tail;
        if (sscanf(sh->valuestring, "%d/%d%c", &i, &n, &tail) == 2 && (i != w->shard || n != r->n_shards)) {
            snprintf(why, len, "%.100s holds shard %d/%d, not %d/%d", w->addr, i, n, w->shard, r->n_shards);
            ok = 0;
        }
    }
    cJSON_Delete(j);
    return ok;
}

void osp__rt_health_round(rt_router *r, int timeout_ms) {
    rt_call *calls = calloc((size_t)r->n_workers, sizeof *calls);
    if (!calls) return;
    for (int i = 0; i < r->n_workers; i++) {
        calls[i].method = "GET";
        calls[i].path = "/healthz";
        calls[i].target = RT_FIXED_WORKER;
        calls[i].fixed = &r->workers[i];
    }
    osp__rt_run(r, calls, r->n_workers, osp__rt_now_ms() + timeout_ms);
    for (int i = 0; i < r->n_workers; i++) {
        rt_worker *w = &r->workers[i];
        char wrong[160] = "";
        if (calls[i].ok && calls[i].status == 200 && !shard_matches(r, w, calls[i].answer, wrong, sizeof wrong)) {
            osp__rt_worker_set_up(r, w, 0, wrong);
        } else if (calls[i].ok && calls[i].status == 200) {
            osp__rt_worker_set_up(r, w, 1, NULL);
        } else {
            char why[256];
            if (calls[i].ok)
                snprintf(why, sizeof why, "health check: %.128s answered %ld", w->addr, calls[i].status);
            else
                snprintf(why, sizeof why, "health check: %.200s", calls[i].error);
            osp__rt_worker_set_up(r, w, 0, why);
        }
        osp__rt_call_clear(&calls[i]);
    }
    free(calls);
}
