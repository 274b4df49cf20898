/* The client's side of the queue: submit, records, list, cancel, logs,
 * events, sweeps. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "broker.h"

/* Fields of a record that are numbers, and those that hold JSON. */
static const char *const number_fields[] = {"priority", "cores", "gpus", "tries", "max_tries", "attempt",
                                            "exit_code", "created", "started", "ended", "heartbeat",
                                            "queued_at", "passed"};
static const char *const json_fields[] = {"argv", "summary", "files", "params"};

static int is_one_of(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, list[i])) return 1;
    return 0;
}

/* A task hash (HGETALL's reply) as a JSON object. */
static cJSON *record_json(const redisReply *r) {
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        cJSON *item = NULL;
        if (is_one_of(k->str, number_fields, sizeof number_fields / sizeof *number_fields)) {
            char *end;
            const double d = strtod(v->str, &end);
            if (end != v->str && !*end) item = cJSON_CreateNumber(d);
        } else if (is_one_of(k->str, json_fields, sizeof json_fields / sizeof *json_fields)) {
            item = v->len ? cJSON_ParseWithLength(v->str, v->len) : cJSON_CreateNull();
        }
        if (!item) item = cJSON_CreateString(v->str);
        cJSON_AddItemToObject(o, k->str, item);
    }
    return o;
}

static int get_record(osp_broker *b, const char *id, cJSON **out) {
    *out = NULL;
    if (!osp_task_id_valid(id, strlen(id))) return osp_error(OSP_EINVAL, "'%.32s' is not a task id", id);
    redisReply *r = osp__broker_cmd(b, "HGETALL osprey:task:%s", id);
    if (!r) return OSP_EIO;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        return osp_error(OSP_ENOENT, "no task %s", id);
    }
    *out = record_json(r);
    freeReplyObject(r);
    return *out ? OSP_OK : osp_error(OSP_ENOMEM, "task %s", id);
}

static int print_json(cJSON *o, char **json) {
    *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return *json ? OSP_OK : osp_error(OSP_ENOMEM, "JSON");
}

int osp_task_get(osp_broker *b, const char *id, char **json) {
    *json = NULL;
    cJSON *o;
    const int rc = get_record(b, id, &o);
    return rc ? rc : print_json(o, json);
}

int osp_task_list(osp_broker *b, char **json) {
    *json = NULL;
    redisReply *ids = osp__broker_cmd(b, "ZRANGE osprey:tasks 0 -1");
    if (!ids) return OSP_EIO;
    cJSON *o = cJSON_CreateObject(), *tasks = cJSON_AddArrayToObject(o, "tasks");
    for (size_t i = 0; i < ids->elements; i++) {
        cJSON *t;
        if (ids->element[i]->type == REDIS_REPLY_STRING && !get_record(b, ids->element[i]->str, &t))
            cJSON_AddItemToArray(tasks, t);
    }
    freeReplyObject(ids);
    /* workers: a hash each that expires unless its heartbeat renews it */
    cJSON *workers = cJSON_AddArrayToObject(o, "workers");
    redisReply *names = osp__broker_cmd(b, "SMEMBERS osprey:workers");
    for (size_t i = 0; names && i < names->elements; i++) {
        const char *name = names->element[i]->str;
        redisReply *w = osp__broker_cmd(b, "HGETALL osprey:worker:%s", name);
        if (w && w->type == REDIS_REPLY_ARRAY && w->elements) {
            cJSON_AddItemToArray(workers, record_json(w));
        } else if (w) {
            redisReply *gone = osp__broker_cmd(b, "SREM osprey:workers %s", name);
            if (gone) freeReplyObject(gone);
        }
        if (w) freeReplyObject(w);
    }
    if (names) freeReplyObject(names);
    return print_json(o, json);
}

/* 0 if s is "a,b,c" of tag words (letters, digits, - _ .). */
static int tags_ok(const char *s) {
    if (!*s || strlen(s) > 256) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.' || (*p == ',' && p != s && p[1] && p[1] != ',')))
            return 0;
    return 1;
}

static int check_spec(const osp_task_spec *s) {
    int rc = osp_task_check_argv(s->argc, s->argv);
    if (rc) return rc;
    if (s->priority < 0 || s->priority >= OSP_PRIORITY_LEVELS)
        return osp_error(OSP_EINVAL, "task: priority %d (0 to %d)", s->priority, OSP_PRIORITY_LEVELS - 1);
    if (s->cores < 0 || s->cores > 4096 || s->gpus < 0 || s->gpus > 1024)
        return osp_error(OSP_EINVAL, "task: cores 0..4096 and gpus 0..1024");
    if (s->max_tries < 1 || s->max_tries > 100) return osp_error(OSP_EINVAL, "task: max tries 1..100");
    if (s->tags && *s->tags && !tags_ok(s->tags))
        return osp_error(OSP_EINVAL, "task: tags must be words (letters, digits, - _ .) joined by commas");
    if (s->after && *s->after && !osp_task_id_valid(s->after, strlen(s->after)))
        return osp_error(OSP_EINVAL, "task: --after '%.32s' is not a task id", s->after);
    if (s->notify && *s->notify) {
        if (strncmp(s->notify, "http://", 7) && strncmp(s->notify, "https://", 8))
            return osp_error(OSP_EINVAL, "task: --notify must be an http:// or https:// URL");
        if (strlen(s->notify) > 2048) return osp_error(OSP_EINVAL, "task: --notify URL too long");
        for (const char *p = s->notify; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == 0x7f)
                return osp_error(OSP_EINVAL, "task: --notify URL with a space or control character");
    }
    return OSP_OK;
}

int osp_task_submit(osp_broker *b, const osp_task_spec *s, char id[OSP_TASK_ID_MAX]) {
    id[0] = 0;
    int rc = check_spec(s);
    if (rc) return rc;
    if ((rc = osp__broker_ensure_groups(b))) return rc;
    redisReply *n = osp__broker_cmd(b, "INCR osprey:next-id");
    if (!n) return OSP_EIO;
    snprintf(id, OSP_TASK_ID_MAX, "%lld", n->integer);
    freeReplyObject(n);
    char *argv_json = osp_task_argv_encode(s->argc, s->argv);
    if (!argv_json) return OSP_ENOMEM;
    char now[32], prio[16], cores[16], gpus[16], tries[16];
    osp__now_string(now);
    snprintf(prio, sizeof prio, "%d", s->priority);
    snprintf(cores, sizeof cores, "%d", s->cores);
    snprintf(gpus, sizeof gpus, "%d", s->gpus);
    snprintf(tries, sizeof tries, "%d", s->max_tries);
    const char *args[] = {now, id, prio, s->after ? s->after : "",
                          "argv", argv_json, "priority", prio, "cores", cores, "gpus", gpus,
                          "max_tries", tries, "tags", s->tags ? s->tags : "", "after", s->after ? s->after : "",
                          "notify", s->notify ? s->notify : "", "sweep", s->sweep ? s->sweep : "",
                          "params", s->params ? s->params : "", "state", "new"};
    redisReply *r = osp__broker_eval(b, osp__script_submit, (int)(sizeof args / sizeof *args), args);
    free(argv_json);
    if (!r) {
        id[0] = 0;
        return strstr(osp_last_error(), "no task") ? OSP_ENOENT : OSP_EIO;
    }
    osp__notify_tasks(b, r, 0);
    freeReplyObject(r);
    return OSP_OK;
}

int osp_task_cancel(osp_broker *b, const char *id, char state[16], int *had_ended) {
    state[0] = 0;
    *had_ended = 0;
    if (!osp_task_id_valid(id, strlen(id))) return osp_error(OSP_EINVAL, "'%.32s' is not a task id", id);
    char now[32];
    osp__now_string(now);
    const char *args[] = {now, id};
    redisReply *r = osp__broker_eval(b, osp__script_cancel, 2, args);
    if (!r) return strstr(osp_last_error(), "no task") ? OSP_ENOENT : OSP_EIO;
    if (r->type == REDIS_REPLY_ARRAY && r->elements && r->element[0]->type == REDIS_REPLY_STRING) {
        *had_ended = !strcmp(r->element[0]->str, "ended") && r->elements == 2;
        snprintf(state, 16, "%s", r->element[*had_ended]->str);
    }
    if (!*had_ended) osp__notify_tasks(b, r, 1);
    freeReplyObject(r);
    return OSP_OK;
}

int osp_task_logs(osp_broker *b, const char *id, char after[64], int block_ms,
                  void (*fn)(const osp_task_log_line *line, void *user), void *user) {
    if (!osp_task_id_valid(id, strlen(id))) return osp_error(OSP_EINVAL, "'%.32s' is not a task id", id);
    redisReply *r = block_ms > 0
                        ? osp__broker_cmd(b, "XREAD COUNT 1000 BLOCK %d STREAMS osprey:task:%s:log %s", block_ms, id, after)
                        : osp__broker_cmd(b, "XREAD COUNT 1000 STREAMS osprey:task:%s:log %s", id, after);
    if (!r) return OSP_EIO;
    /* [[stream, [[entry, [field, value, ...]], ...]]] or nil */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
        const redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
            osp_task_log_line line = {.entry = e->element[0]->str, .text = ""};
            const redisReply *f = e->element[1];
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                const char *k = f->element[j]->str, *v = f->element[j + 1]->str;
                if (!k || !v) continue;
                if (!strcmp(k, "a")) line.attempt = atoi(v);
                else if (!strcmp(k, "s")) line.is_stderr = !strcmp(v, "e");
                else if (!strcmp(k, "l")) line.text = v;
            }
            fn(&line, user);
            snprintf(after, 64, "%s", line.entry);
        }
    }
    freeReplyObject(r);
    return OSP_OK;
}

int osp_events_subscribe(osp_broker *b) {
    redisReply *r = osp__broker_cmd(b, "SUBSCRIBE osprey:events");
    if (!r) return OSP_EIO;
    freeReplyObject(r);
    return OSP_OK;
}

int osp_events_next(osp_broker *b, int timeout_ms, char **json) {
    *json = NULL;
    void *reply = NULL;
    if (redisGetReplyFromReader(b->c, &reply) != REDIS_OK) return osp_error(OSP_EIO, "broker %s: %s", b->where, b->c->errstr);
    if (!reply) {
        struct pollfd p = {.fd = b->c->fd, .events = POLLIN};
        const int n = poll(&p, 1, timeout_ms);
        if (n <= 0) return OSP_OK;
        if (redisBufferRead(b->c) != REDIS_OK || redisGetReplyFromReader(b->c, &reply) != REDIS_OK)
            return osp_error(OSP_EIO, "broker %s: %s", b->where, b->c->errstr[0] ? b->c->errstr : "connection lost");
        if (!reply) return OSP_OK;
    }
    redisReply *r = reply;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING &&
        !strcmp(r->element[0]->str, "message"))
        *json = strdup(r->element[2]->str);
    freeReplyObject(r);
    return OSP_OK;
}

int osp_sweep_submit(osp_broker *b, const osp_task_spec *base, const char *grid_text, int random, uint64_t seed,
                     char id[OSP_TASK_ID_MAX]) {
    id[0] = 0;
    osp_sweep_grid *grid;
    int rc = osp_sweep_grid_parse(grid_text, &grid);
    if (rc) return rc;
    int64_t *idx = NULL;
    int n = 0;
    if ((rc = osp_sweep_grid_select(grid, random, seed, &idx, &n))) goto out;
    /* every point is checked before the first is queued */
    for (int i = 0; i < n && !rc; i++) {
        osp_sweep_point p;
        osp_sweep_grid_point(grid, idx[i], &p);
        int argc;
        char **argv;
        if ((rc = osp_sweep_apply(base->argc, base->argv, &p, &argc, &argv))) break;
        osp_task_spec s = *base;
        s.argc = argc;
        s.argv = (const char *const *)argv;
        rc = check_spec(&s);
        free(argv);
    }
    if (rc) goto out;
    redisReply *r = osp__broker_cmd(b, "INCR osprey:next-id");
    if (!r) {
        rc = OSP_EIO;
        goto out;
    }
    snprintf(id, OSP_TASK_ID_MAX, "%lld", r->integer);
    freeReplyObject(r);
    cJSON *tasks = cJSON_CreateArray();
    for (int i = 0; i < n && !rc; i++) {
        osp_sweep_point p;
        osp_sweep_grid_point(grid, idx[i], &p);
        int argc;
        char **argv;
        if ((rc = osp_sweep_apply(base->argc, base->argv, &p, &argc, &argv))) break;
        cJSON *params = cJSON_CreateObject();
        for (int k = 0; k < p.n; k++) cJSON_AddStringToObject(params, p.names[k], p.values[k]);
        char *params_json = cJSON_PrintUnformatted(params);
        cJSON_Delete(params);
        osp_task_spec s = *base;
        s.argc = argc;
        s.argv = (const char *const *)argv;
        s.sweep = id;
        s.params = params_json;
        char task[OSP_TASK_ID_MAX];
        rc = osp_task_submit(b, &s, task);
        free(params_json);
        free(argv);
        if (!rc) cJSON_AddItemToArray(tasks, cJSON_CreateString(task));
    }
    char *tasks_json = cJSON_PrintUnformatted(tasks);
    cJSON_Delete(tasks);
    char now[32];
    osp__now_string(now);
    /* written even after a failure part way, so that the tasks queued are found */
    r = osp__broker_cmd(b, "HSET osprey:sweep:%s id %s grid %s tasks %s created %s", id, id, grid_text,
                        tasks_json ? tasks_json : "[]", now);
    free(tasks_json);
    if (r) freeReplyObject(r);
    else if (!rc) rc = OSP_EIO;
out:
    free(idx);
    osp_sweep_grid_free(grid);
    return rc;
}

int osp_sweep_get(osp_broker *b, const char *id, char **json) {
    *json = NULL;
    if (!osp_task_id_valid(id, strlen(id))) return osp_error(OSP_EINVAL, "'%.32s' is not a sweep id", id);
    redisReply *r = osp__broker_cmd(b, "HMGET osprey:sweep:%s grid tasks", id);
    if (!r) return OSP_EIO;
    if (r->elements != 2 || r->element[1]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return osp_error(OSP_ENOENT, "no sweep %s", id);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "grid", r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "");
    cJSON *ids = cJSON_Parse(r->element[1]->str);
    freeReplyObject(r);
    cJSON *tasks = cJSON_AddArrayToObject(o, "tasks");
    const cJSON *t;
    cJSON_ArrayForEach(t, ids) {
        cJSON *rec;
        if (cJSON_IsString(t) && !get_record(b, t->valuestring, &rec)) cJSON_AddItemToArray(tasks, rec);
    }
    cJSON_Delete(ids);
    return print_json(o, json);
}
