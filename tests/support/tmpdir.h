/* A scratch directory for a test's files, made fresh and removed after. */
#ifndef OSPREY_TEST_TMPDIR_H
#define OSPREY_TEST_TMPDIR_H

#include <stddef.h>

/* The directory made by tmpdir_make ("/tmp/osp-test-XXXXXX" filled in). */
extern char tmpdir_name[64];

void tmpdir_make(void);
/* Removes the files in it and the directory (not sub-directories). */
void tmpdir_remove(void);
/* "<dir>/<name>" in a static buffer, valid until the next call. */
const char *tmpdir_path(const char *name);
/* Writes len bytes to path, asserting that it worked. */
void tmpdir_write(const char *path, const void *buf, size_t len);

#endif
