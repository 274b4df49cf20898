/* The connection to the broker: URL, password, database; commands and
 * scripts with their errors turned into osprey's. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "broker.h"

int osp_platform_available(void) { return 1; }

/* The password in path, white space around it left out. */
static int read_password(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return osp_error(OSP_ENOENT, "%s: cannot open the password file", path);
    char buf[1024];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    const int long_file = !feof(f) && fgetc(f) != EOF;
    fclose(f);
    if (long_file) return osp_error(OSP_EINVAL, "%s: a password file of over 1 KB", path);
    buf[n] = 0;
    size_t a = 0, b = n;
    while (a < b && isspace((unsigned char)buf[a])) a++;
    while (b > a && isspace((unsigned char)buf[b - 1])) b--;
    if (b == a) return osp_error(OSP_EINVAL, "%s: the password file is empty", path);
    if (b - a >= cap) return osp_error(OSP_EINVAL, "%s: password too long", path);
    memcpy(out, buf + a, b - a);
    out[b - a] = 0;
    return OSP_OK;
}

/* An error reply as osprey's error: a script's "ENOENT ..." is OSP_ENOENT. */
static int reply_error(osp_broker *b, const redisReply *r) {
    if (!strncmp(r->str, "ENOENT ", 7)) return osp_error(OSP_ENOENT, "%s", r->str + 7);
    if (!strncmp(r->str, "NOAUTH", 6) || !strncmp(r->str, "WRONGPASS", 9))
        return osp_error(OSP_EINVAL, "broker %s: %s", b->where, r->str);
    return osp_error(OSP_EIO, "broker %s: %s", b->where, r->str);
}

static redisReply *checked(osp_broker *b, redisReply *r) {
    if (!r) {
        osp_error(OSP_EIO, "broker %s: %s", b->where, b->c->errstr[0] ? b->c->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        reply_error(b, r);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *osp__broker_call(osp_broker *b, int argc, const char *const *argv, const size_t *lens) {
    if (b->c->err) {
        osp_error(OSP_EIO, "broker %s: %s", b->where, b->c->errstr);
        return NULL;
    }
    return checked(b, redisCommandArgv(b->c, argc, (const char **)argv, lens));
}

redisReply *osp__broker_cmd(osp_broker *b, const char *fmt, ...) {
    if (b->c->err) {
        osp_error(OSP_EIO, "broker %s: %s", b->where, b->c->errstr);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(b->c, fmt, ap);
    va_end(ap);
    return checked(b, r);
}

redisReply *osp__broker_eval(osp_broker *b, const char *script, int argc, const char *const *argv) {
    const char *words[64];
    if (argc + 3 > 64) {
        osp_error(OSP_EINVAL, "broker: too many script arguments");
        return NULL;
    }
    words[0] = "EVAL";
    words[1] = script;
    words[2] = "0";
    for (int i = 0; i < argc; i++) words[3 + i] = argv[i];
    return osp__broker_call(b, argc + 3, words, NULL);
}

void osp__now_string(char buf[32]) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    snprintf(buf, 32, "%lld.%03d", (long long)tv.tv_sec, (int)(tv.tv_usec / 1000));
}

int osp__broker_ensure_groups(osp_broker *b) {
    for (int p = 0; p < OSP_PRIORITY_LEVELS; p++) {
        char stream[32];
        snprintf(stream, sizeof stream, "osprey:queue:%d", p);
        redisReply *r = redisCommand(b->c, "XGROUP CREATE %s %s 0 MKSTREAM", stream, OSP__GROUP);
        if (!r) return osp_error(OSP_EIO, "broker %s: %s", b->where, b->c->errstr);
        const int busy = r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "BUSYGROUP", 9);
        if (r->type == REDIS_REPLY_ERROR && !busy) {
            const int rc = reply_error(b, r);
            freeReplyObject(r);
            return rc;
        }
        freeReplyObject(r);
    }
    return OSP_OK;
}

int osp_broker_connect(const char *url, const char *password_file, osp_broker **out) {
    *out = NULL;
    osp_broker_url u;
    int rc = osp_broker_url_parse(url, &u);
    if (rc) return rc;
    if (password_file && (rc = read_password(password_file, u.password, sizeof u.password))) return rc;
    osp_broker *b = calloc(1, sizeof *b);
    if (!b) return osp_error(OSP_ENOMEM, "broker");
    snprintf(b->where, sizeof b->where, "%s:%d", u.host, u.port);
    const struct timeval tv = {5, 0};
    b->c = redisConnectWithTimeout(u.host, u.port, tv);
    if (!b->c || b->c->err) {
        rc = osp_error(OSP_EIO, "broker %s: cannot connect: %s", b->where, b->c ? b->c->errstr : "out of memory");
        osp_broker_free(b);
        return rc;
    }
    redisReply *r = NULL;
    if (u.password[0]) {
        r = u.user[0] ? osp__broker_cmd(b, "AUTH %s %s", u.user, u.password)
                      : osp__broker_cmd(b, "AUTH %s", u.password);
        if (!r) goto fail;
        freeReplyObject(r);
    }
    if (u.db) {
        if (!(r = osp__broker_cmd(b, "SELECT %d", u.db))) goto fail;
        freeReplyObject(r);
    }
    /* a server that wants a password says so here, not at the first task */
    if (!(r = osp__broker_cmd(b, "PING"))) goto fail;
    freeReplyObject(r);
    /* the password is not kept: it served its purpose */
    memset(&u, 0, sizeof u);
    *out = b;
    return OSP_OK;
fail:
    rc = strstr(osp_last_error(), "NOAUTH") || strstr(osp_last_error(), "WRONGPASS") ? OSP_EINVAL : OSP_EIO;
    memset(&u, 0, sizeof u);
    osp_broker_free(b);
    return rc;
}

void osp_broker_free(osp_broker *b) {
    if (!b) return;
    if (b->c) redisFree(b->c);
    free(b);
}
