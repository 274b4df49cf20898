/* Tasks as data: which argv may be a task, its JSON form, task ids, and
 * the queue messages that name a task. Everything here reads untrusted
 * input (a stream entry or a task hash may have been written by anyone
 * who can reach the broker). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "osprey/platform.h"

/* The subcommands a task may run, and the subcommands of theirs that print
 * a --json summary ("*": the command itself does; NULL: none does). The
 * servers (serve, route) and the platform's own commands are left out:
 * a task is batch work that ends. */
static const struct {
    const char *name;
    const char *subs;      /* its own subcommands, "a,b" (NULL: none) */
    const char *json_subs; /* which print --json */
} allowed[] = {
    {"train", NULL, "*"},   {"eval", NULL, "*"},      {"run", NULL, NULL},
    {"info", NULL, "*"},    {"export", NULL, NULL},   {"import", NULL, NULL},
    {"quantize", NULL, "*"}, {"dataset", NULL, "*"},  {"tag", NULL, "*"},
    {"embed", NULL, "*"},   {"merge", NULL, "*"},     {"similar", NULL, "*"},
    {"bench", NULL, "*"},   {"advise", NULL, "*"},
    {"index", "build,search,add,remove,info", "build,search,info"},
    {"hash", "train,apply,info", "train,info"},
};

/* 1 if word is one of the comma-separated names of list. */
static int in_list(const char *list, const char *word) {
    const size_t n = strlen(word);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, word, n)) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

static int find_command(const char *name) {
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!strcmp(allowed[i].name, name)) return (int)i;
    return -1;
}

/* Bytes of the UTF-8 sequence at s (at most n), or 0 if it is not valid
 * UTF-8 or is a control character. */
static size_t utf8_char(const unsigned char *s, size_t n) {
    if (s[0] < 0x20 || s[0] == 0x7f) return 0;
    if (s[0] < 0x80) return 1;
    size_t len;
    unsigned min;
    unsigned cp;
    if ((s[0] & 0xe0) == 0xc0) len = 2, min = 0x80, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0) len = 3, min = 0x800, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0) len = 4, min = 0x10000, cp = s[0] & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    if (cp >= 0x80 && cp < 0xa0) return 0; /* C1 controls */
    return len;
}

int osp_task_check_argv(int argc, const char *const *argv) {
    if (argc < 1 || !argv || !argv[0]) return osp_error(OSP_EINVAL, "task: no command");
    if (argc > OSP_TASK_MAX_ARGS)
        return osp_error(OSP_EINVAL, "task: %d words, at most %d", argc, OSP_TASK_MAX_ARGS);
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) return osp_error(OSP_EINVAL, "task: word %d missing", i + 1);
        const size_t n = strlen(argv[i]);
        if (n > OSP_TASK_MAX_ARG)
            return osp_error(OSP_EINVAL, "task: word %d is %zu bytes, at most %d", i + 1, n, OSP_TASK_MAX_ARG);
        const unsigned char *s = (const unsigned char *)argv[i];
        for (size_t at = 0; at < n;) {
            const size_t len = utf8_char(s + at, n - at);
            if (!len)
                return osp_error(OSP_EINVAL, "task: word %d has a control character or is not UTF-8 (byte %zu)",
                                 i + 1, at + 1);
            at += len;
        }
    }
    const int c = find_command(argv[0]);
    if (c < 0)
        return osp_error(OSP_EINVAL,
                         "task: '%.64s' is not an osprey command a task may run (train, eval, run, info, "
                         "export, import, quantize, dataset, tag, embed, merge, index, hash, similar, bench)",
                         argv[0]);
    if (allowed[c].subs && (argc < 2 || !in_list(allowed[c].subs, argv[1])))
        return osp_error(OSP_EINVAL, "task: '%s' needs one of its subcommands (%s)", argv[0], allowed[c].subs);
    return OSP_OK;
}

int osp_task_takes_json(int argc, const char *const *argv) {
    if (argc < 1) return 0;
    const int c = find_command(argv[0]);
    if (c < 0 || !allowed[c].json_subs) return 0;
    if (!strcmp(allowed[c].json_subs, "*")) return 1;
    return argc >= 2 && in_list(allowed[c].json_subs, argv[1]);
}

char *osp_task_argv_encode(int argc, const char *const *argv) {
    cJSON *a = cJSON_CreateArray();
    if (!a) return NULL;
    for (int i = 0; i < argc; i++) {
        cJSON *s = cJSON_CreateString(argv[i]);
        if (!s) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, s);
    }
    char *out = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    if (!out) osp_error(OSP_ENOMEM, "task: encoding argv");
    return out;
}

int osp_task_argv_decode(const char *json, size_t len, int *argc, char ***argv) {
    *argc = 0;
    *argv = NULL;
    if (len > (size_t)OSP_TASK_MAX_ARGS * (OSP_TASK_MAX_ARG * 6 + 4) + 2)
        return osp_error(OSP_EFORMAT, "task argv: %zu bytes, too long", len);
    /* cJSON cuts a string at \u0000: such a word would run as a shorter
     * one than the record shows. An escape is a backslash preceded by an
     * even number of them. */
    for (size_t i = 0; i + 5 < len; i++) {
        if (json[i] != '\\') continue;
        size_t run = 1;
        while (i + run < len && json[i + run] == '\\') run++;
        if (run % 2 == 1 && i + run + 5 <= len && !strncasecmp(json + i + run, "u0000", 5))
            return osp_error(OSP_EFORMAT, "task argv: a NUL character in a word");
        i += run - 1;
    }
    cJSON *a = cJSON_ParseWithLength(json, len);
    if (!a || !cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return osp_error(OSP_EFORMAT, "task argv: not a JSON array");
    }
    const int n = cJSON_GetArraySize(a);
    if (n < 1 || n > OSP_TASK_MAX_ARGS) {
        cJSON_Delete(a);
        return osp_error(OSP_EFORMAT, "task argv: %d words (1 to %d)", n, OSP_TASK_MAX_ARGS);
    }
    size_t bytes = (size_t)(n + 1) * sizeof(char *);
    for (cJSON *s = a->child; s; s = s->next) {
        if (!cJSON_IsString(s) || !s->valuestring) {
            cJSON_Delete(a);
            return osp_error(OSP_EFORMAT, "task argv: a word is not a string");
        }
        bytes += strlen(s->valuestring) + 1;
    }
    char **v = malloc(bytes);
    if (!v) {
        cJSON_Delete(a);
        return osp_error(OSP_ENOMEM, "task argv: %zu bytes", bytes);
    }
    char *p = (char *)(v + n + 1);
    int i = 0;
    for (cJSON *s = a->child; s; s = s->next, i++) {
        const size_t l = strlen(s->valuestring) + 1;
        memcpy(p, s->valuestring, l);
        v[i] = p;
        p += l;
    }
    v[n] = NULL;
    cJSON_Delete(a);
    if (osp_task_check_argv(n, (const char *const *)v)) {
        free(v);
        return OSP_EFORMAT;
    }
    *argc = n;
    *argv = v;
    return OSP_OK;
}

int osp_task_id_valid(const char *s, size_t len) {
    if (!s || len < 1 || len > 19 || s[0] == '0') return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

int osp_task_message_decode(const char *const *fields, const size_t *lens, int n_fields,
                            char id[OSP_TASK_ID_MAX]) {
    id[0] = 0;
    if (n_fields != 4) return osp_error(OSP_EFORMAT, "message: %d fields, expected task ID v 1", n_fields);
    const char *task = NULL, *version = NULL;
    size_t task_len = 0, version_len = 0;
    for (int i = 0; i < n_fields; i += 2) {
        if (!fields[i] || !fields[i + 1]) return osp_error(OSP_EFORMAT, "message: a field is missing");
        if (lens[i] == 4 && !memcmp(fields[i], "task", 4) && !task) {
            task = fields[i + 1];
            task_len = lens[i + 1];
        } else if (lens[i] == 1 && fields[i][0] == 'v' && !version) {
            version = fields[i + 1];
            version_len = lens[i + 1];
        } else {
            return osp_error(OSP_EFORMAT, "message: unexpected field '%.*s'", (int)(lens[i] < 32 ? lens[i] : 32),
                             fields[i]);
        }
    }
    if (!task || !version) return osp_error(OSP_EFORMAT, "message: expected fields task and v");
    if (version_len != 1 || version[0] != '1')
        return osp_error(OSP_EFORMAT, "message: version '%.*s', this worker reads 1",
                         (int)(version_len < 16 ? version_len : 16), version);
    if (!osp_task_id_valid(task, task_len))
        return osp_error(OSP_EFORMAT, "message: '%.*s' is not a task id", (int)(task_len < 32 ? task_len : 32),
                         task);
    memcpy(id, task, task_len);
    id[task_len] = 0;
    return OSP_OK;
}

void osp_task_spec_defaults(osp_task_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->priority = 5;
    spec->max_tries = 3;
}

int osp_task_state_final(const char *state) {
    return state && (!strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled") ||
                     !strcmp(state, "dead"));
}

/* 1 if argv has the option --name (alone or as --name=VALUE). */
static int has_option(int argc, const char *const *argv, const char *name) {
    const size_t n = strlen(name);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return 0;
        if (!strncmp(argv[i], name, n) && (argv[i][n] == 0 || argv[i][n] == '=')) return 1;
    }
    return 0;
}

int osp_task_prepare(int argc, const char *const *argv, int *out_argc, char ***out) {
    *out = NULL;
    *out_argc = 0;
    int rc = osp_task_check_argv(argc, argv);
    if (rc) return rc;
    const char *extra[5];
    int n_extra = 0;
    if (!strcmp(argv[0], "train")) {
        if (!has_option(argc, argv, "--out")) extra[n_extra++] = "--out", extra[n_extra++] = "model.osp";
        if (has_option(argc, argv, "--net") && !has_option(argc, argv, "--resume"))
            extra[n_extra++] = "--resume", extra[n_extra++] = "auto";
    }
    if (osp_task_takes_json(argc, argv) && !has_option(argc, argv, "--json")) extra[n_extra++] = "--json";
    const int m = argc + n_extra;
    if (m > OSP_TASK_MAX_ARGS) return osp_error(OSP_EINVAL, "task: %d words, at most %d", m, OSP_TASK_MAX_ARGS);
    size_t bytes = (size_t)(m + 1) * sizeof(char *);
    for (int i = 0; i < argc; i++) bytes += strlen(argv[i]) + 1;
    for (int i = 0; i < n_extra; i++) bytes += strlen(extra[i]) + 1;
    char **v = malloc(bytes);
    if (!v) return osp_error(OSP_ENOMEM, "task: argv");
    char *s = (char *)(v + m + 1);
    for (int i = 0; i < m; i++) {
        const char *w = i < argc ? argv[i] : extra[i - argc];
        const size_t l = strlen(w) + 1;
        memcpy(s, w, l);
        v[i] = s;
        s += l;
    }
    v[m] = NULL;
    *out = v;
    *out_argc = m;
    return OSP_OK;
}
