/* The platform's parsers of outside input: broker URLs, task argv (and its
 * JSON form as stored in a task hash), queue messages, sweep grids and
 * the argv of a sweep's points, and the words a task gets added. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/platform.h"

/* ---- URLs -------------------------------------------------------------------- */

Test(url, plain_and_defaults) {
    osp_broker_url u;
    cr_assert_eq(osp_broker_url_parse("redis://127.0.0.1", &u), 0, "%s", osp_last_error());
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert_str_eq(u.password, "");
    cr_assert_eq(osp_broker_url_parse("redis://queue.example:6380/3", &u), 0);
    cr_assert_str_eq(u.host, "queue.example");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 3);
    cr_assert_eq(osp_broker_url_parse("redis://[::1]:7000", &u), 0, "%s", osp_last_error());
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 7000);
}

Test(url, passwords) {
    osp_broker_url u;
    cr_assert_eq(osp_broker_url_parse("redis://:secret@host:1234", &u), 0, "%s", osp_last_error());
    cr_assert_str_eq(u.password, "secret");
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.host, "host");
    cr_assert_eq(u.port, 1234);
    cr_assert_eq(osp_broker_url_parse("redis://alice:p%40ss%3Aw@host", &u), 0, "%s", osp_last_error());
    cr_assert_str_eq(u.user, "alice");
    cr_assert_str_eq(u.password, "p@ss:w");
    /* an unescaped '@' in the password: the last one before the host ends it */
    cr_assert_eq(osp_broker_url_parse("redis://:a@b@host", &u), 0);
    cr_assert_str_eq(u.password, "a@b");
    cr_assert_str_eq(u.host, "host");
}

Test(url, refused) {
    osp_broker_url u;
    const char *bad[] = {"http://host", "redis://", "redis://:6379", "redis://host:0", "redis://host:65536",
                         "redis://host:12x", "redis://host:", "redis://pw@host", "redis://:%zz@host",
                         "redis://:%00@host", "redis://:%4@host", "redis://ho st", "redis://[::1", "redis://[::1]x",
                         "redis://host/x", NULL, "redis://host;rm"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(osp_broker_url_parse(bad[i], &u), OSP_EINVAL, "%s", bad[i] ? bad[i] : "NULL");
    char longhost[400] = "redis://";
    memset(longhost + 8, 'a', 300);
    cr_assert_eq(osp_broker_url_parse(longhost, &u), OSP_EINVAL);
}

/* ---- argv -------------------------------------------------------------------- */

#define ARGV(...) ((const char *const[]){__VA_ARGS__})
#define ARGC(...) ((int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))
#define CHECK(...) osp_task_check_argv(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

Test(argv, allowed_commands) {
    cr_assert_eq(CHECK("train", "--net", "a.cfg"), 0, "%s", osp_last_error());
    cr_assert_eq(CHECK("index", "build", "--type", "flat"), 0);
    cr_assert_eq(CHECK("hash", "info", "x.osh"), 0);
    cr_assert_eq(CHECK("tag", "--model", "m.osp", "photos/é.jpg"), 0, "UTF-8 is fine");
    cr_assert_eq(CHECK("serve", "--model", "m.osp"), OSP_EINVAL, "a server never ends");
    cr_assert_eq(CHECK("worker"), OSP_EINVAL);
    cr_assert_eq(CHECK("submit", "--", "train"), OSP_EINVAL);
    cr_assert_eq(CHECK("sh", "-c", "rm -rf /"), OSP_EINVAL);
    cr_assert_eq(CHECK("/bin/sh"), OSP_EINVAL);
    cr_assert_eq(CHECK("index"), OSP_EINVAL, "index needs its subcommand");
    cr_assert_eq(CHECK("index", "drop"), OSP_EINVAL);
    cr_assert_eq(CHECK("train", "--out", "a\nb"), OSP_EINVAL, "control characters");
    cr_assert_eq(CHECK("train", "\xff\xfe"), OSP_EINVAL, "not UTF-8");
    cr_assert_eq(CHECK("train", "\xc0\xaf"), OSP_EINVAL, "overlong UTF-8");
    cr_assert_eq(CHECK("train", "\xed\xa0\x80"), OSP_EINVAL, "a surrogate");
    cr_assert_eq(osp_task_check_argv(0, NULL), OSP_EINVAL);
    const char *many[OSP_TASK_MAX_ARGS + 1];
    for (int i = 0; i <= OSP_TASK_MAX_ARGS; i++) many[i] = "x";
    many[0] = "train";
    cr_assert_eq(osp_task_check_argv(OSP_TASK_MAX_ARGS, many), 0);
    cr_assert_eq(osp_task_check_argv(OSP_TASK_MAX_ARGS + 1, many), OSP_EINVAL);
    char *big = malloc(OSP_TASK_MAX_ARG + 2);
    memset(big, 'a', OSP_TASK_MAX_ARG + 1);
    big[OSP_TASK_MAX_ARG + 1] = 0;
    cr_assert_eq(CHECK("train", big), OSP_EINVAL);
    big[OSP_TASK_MAX_ARG] = 0;
    cr_assert_eq(CHECK("train", big), 0);
    free(big);
}

Test(argv, json_round_trip) {
    const char *const words[] = {"tag", "--model", "m \"x\".osp", "a\\b", "ünï"};
    char *json = osp_task_argv_encode(5, words);
    cr_assert_not_null(json);
    int argc;
    char **argv;
    cr_assert_eq(osp_task_argv_decode(json, strlen(json), &argc, &argv), 0, "%s", osp_last_error());
    cr_assert_eq(argc, 5);
    for (int i = 0; i < 5; i++) cr_assert_str_eq(argv[i], words[i]);
    cr_assert_null(argv[5]);
    free(argv);
    free(json);
}

Test(argv, json_hostile) {
    const char *bad[] = {"", "{}", "[]", "[1]", "[\"train\", 2]", "[\"sh\", \"-c\", \"x\"]", "[\"train\"",
                         "[\"train\", \"a\\u0000b\"]", "[\"train\", \"\\n\"]", "null", "[\"index\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int argc = -1;
        char **argv = (char **)1;
        cr_assert_neq(osp_task_argv_decode(bad[i], strlen(bad[i]), &argc, &argv), 0, "%s", bad[i]);
        cr_assert_null(argv);
        cr_assert_eq(argc, 0);
    }
}

Test(argv, prepare) {
    int n;
    char **v;
    cr_assert_eq(osp_task_prepare(ARGC("train", "--net", "a.cfg"), ARGV("train", "--net", "a.cfg"), &n, &v), 0);
    cr_assert_eq(n, 8);
    cr_assert_str_eq(v[3], "--out");
    cr_assert_str_eq(v[4], "model.osp");
    cr_assert_str_eq(v[5], "--resume");
    cr_assert_str_eq(v[6], "auto");
    cr_assert_str_eq(v[7], "--json");
    free(v);
    /* what the user gave stays */
    cr_assert_eq(osp_task_prepare(ARGC("train", "--resume", "x.ckpt", "--out=m.osp", "--json"),
                                  ARGV("train", "--resume", "x.ckpt", "--out=m.osp", "--json"), &n, &v), 0);
    cr_assert_eq(n, 5);
    free(v);
    cr_assert_eq(osp_task_prepare(ARGC("run", "--model", "m"), ARGV("run", "--model", "m"), &n, &v), 0);
    cr_assert_eq(n, 3, "run prints no --json summary");
    free(v);
    cr_assert_eq(osp_task_prepare(ARGC("index", "add", "x"), ARGV("index", "add", "x"), &n, &v), 0);
    cr_assert_eq(n, 3);
    free(v);
    cr_assert_eq(osp_task_prepare(ARGC("index", "build", "x"), ARGV("index", "build", "x"), &n, &v), 0);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(v[3], "--json");
    free(v);
}

/* ---- messages ---------------------------------------------------------------- */

static int decode(int n, const char *const *f, char id[OSP_TASK_ID_MAX]) {
    size_t lens[8];
    for (int i = 0; i < n; i++) lens[i] = f[i] ? strlen(f[i]) : 0;
    return osp_task_message_decode(f, lens, n, id);
}

Test(message, good) {
    char id[OSP_TASK_ID_MAX];
    cr_assert_eq(decode(4, ARGV("task", "42", "v", "1"), id), 0, "%s", osp_last_error());
    cr_assert_str_eq(id, "42");
    cr_assert_eq(decode(4, ARGV("v", "1", "task", "9223372036854775807"), id), 0);
    cr_assert_str_eq(id, "9223372036854775807");
}

Test(message, foreign) {
    char id[OSP_TASK_ID_MAX];
    cr_assert_eq(decode(2, ARGV("task", "42"), id), OSP_EFORMAT, "no version");
    cr_assert_eq(decode(4, ARGV("task", "42", "v", "2"), id), OSP_EFORMAT, "a version to come");
    cr_assert_eq(decode(4, ARGV("task", "042", "v", "1"), id), OSP_EFORMAT);
    cr_assert_eq(decode(4, ARGV("task", "../x", "v", "1"), id), OSP_EFORMAT);
    cr_assert_eq(decode(4, ARGV("task", "1 2", "v", "1"), id), OSP_EFORMAT);
    cr_assert_eq(decode(4, ARGV("task", "12345678901234567890", "v", "1"), id), OSP_EFORMAT, "20 digits");
    cr_assert_eq(decode(4, ARGV("task", "", "v", "1"), id), OSP_EFORMAT);
    cr_assert_eq(decode(4, ARGV("task", "1", "task", "2"), id), OSP_EFORMAT, "twice");
    cr_assert_eq(decode(4, ARGV("foo", "bar", "v", "1"), id), OSP_EFORMAT);
    cr_assert_eq(decode(4, ARGV("task", NULL, "v", "1"), id), OSP_EFORMAT);
    cr_assert_eq(decode(6, ARGV("task", "1", "v", "1", "x", "y"), id), OSP_EFORMAT);
    cr_assert_eq(decode(0, NULL, id), OSP_EFORMAT);
    cr_assert_str_eq(id, "");
    /* a NUL inside a field is not a shorter field */
    const char *f[] = {"task", "4\0002", "v", "1"};
    const size_t lens[] = {4, 3, 1, 1};
    cr_assert_eq(osp_task_message_decode(f, lens, 4, id), OSP_EFORMAT);
}

/* ---- sweeps ------------------------------------------------------------------ */

Test(sweep, grid_points) {
    osp_sweep_grid *g;
    cr_assert_eq(osp_sweep_grid_parse("lr=0.1,0.03,0.01;batch=32,64", &g), 0, "%s", osp_last_error());
    cr_assert_eq(osp_sweep_grid_size(g), 6);
    osp_sweep_point p;
    osp_sweep_grid_point(g, 0, &p);
    cr_assert_eq(p.n, 2);
    cr_assert_str_eq(p.names[0], "lr");
    cr_assert_str_eq(p.values[0], "0.1");
    cr_assert_str_eq(p.values[1], "32");
    osp_sweep_grid_point(g, 1, &p);
    cr_assert_str_eq(p.values[0], "0.1");
    cr_assert_str_eq(p.values[1], "64", "the last name varies fastest");
    osp_sweep_grid_point(g, 5, &p);
    cr_assert_str_eq(p.values[0], "0.01");
    cr_assert_str_eq(p.values[1], "64");
    int64_t *idx;
    int n;
    cr_assert_eq(osp_sweep_grid_select(g, 0, 1, &idx, &n), 0);
    cr_assert_eq(n, 6);
    free(idx);
    int64_t *a, *b;
    int na, nb;
    cr_assert_eq(osp_sweep_grid_select(g, 4, 7, &a, &na), 0);
    cr_assert_eq(osp_sweep_grid_select(g, 4, 7, &b, &nb), 0);
    cr_assert_eq(na, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(a[i], b[i], "the same seed draws the same points");
        cr_assert(a[i] >= 0 && a[i] < 6);
        if (i) cr_assert_gt(a[i], a[i - 1], "distinct, in grid order");
    }
    free(a);
    free(b);
    cr_assert_eq(osp_sweep_grid_select(g, 60, 7, &a, &na), 0);
    cr_assert_eq(na, 6, "more than the grid: all of it");
    free(a);
    osp_sweep_grid_free(g);
}

Test(sweep, grid_refused) {
    const char *bad[] = {"", "lr", "lr=", "=1,2", "lr=1;lr=2", "LR=1", "--lr=1", "lr=1,,2x=3", "lr=a b",
                         "a=1;b=1;c=1;d=1;e=1;f=1;g=1;h=1;i=1;j=1;k=1;l=1;m=1;n=1;o=1;p=1;q=1",
                         "a=1,2,3,4,5,6,7,8,9,10;b=1,2,3,4,5,6,7,8,9,10;c=1,2,3,4,5,6,7,8,9,10;d=1,2,3,4,5,6,7,8,9,10;e=1,2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        osp_sweep_grid *g = (osp_sweep_grid *)1;
        cr_assert_eq(osp_sweep_grid_parse(bad[i], &g), OSP_EINVAL, "%s", bad[i]);
        cr_assert_null(g);
    }
}

Test(sweep, apply) {
    osp_sweep_grid *g;
    cr_assert_eq(osp_sweep_grid_parse("lr=0.5;batch=16;epochs=2", &g), 0);
    osp_sweep_point p;
    osp_sweep_grid_point(g, 0, &p);
    const char *const argv[] = {"train", "--lr", "0.1", "--net", "n.cfg", "--batch=64"};
    int n;
    char **v;
    cr_assert_eq(osp_sweep_apply(6, argv, &p, &n, &v), 0);
    const char *want[] = {"train", "--lr", "0.5", "--net", "n.cfg", "--batch", "16", "--epochs", "2"};
    cr_assert_eq(n, 9);
    for (int i = 0; i < n; i++) cr_assert_str_eq(v[i], want[i], "word %d", i);
    cr_assert_null(v[n]);
    free(v);
    /* "--lr" as the last word has no value to replace: the point's is appended */
    const char *const odd[] = {"train", "--lr=1", "--lr=2", "--lrate", "x"};
    cr_assert_eq(osp_sweep_apply(5, odd, &p, &n, &v), 0);
    cr_assert_eq(n, 11);
    cr_assert_str_eq(v[3], "--lr");
    cr_assert_str_eq(v[5], "--lrate", "another option that starts the same is left alone");
    free(v);
    osp_sweep_grid_free(g);
}
