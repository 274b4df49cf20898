#include "tmpdir.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char tmpdir_name[64];

void tmpdir_make(void) {
    strcpy(tmpdir_name, "/tmp/osp-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir_name));
}

void tmpdir_remove(void) {
    DIR *d = opendir(tmpdir_name);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", tmpdir_name, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(tmpdir_name);
}

const char *tmpdir_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir_name, name);
    return path;
}

void tmpdir_write(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
}
