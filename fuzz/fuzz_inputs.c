/* Fuzz target: the pipeline's list files (a path a line, '#' comments, a
 * TAB and a label ignored), read through the input stream as
 * 'osprey tag LIST' reads them. Lines name files that do not exist: only
 * the list is parsed, nothing is opened. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/osprey-fuzz-list-%d.txt", (int)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    /* a first line that is not an image, so the file is taken for a list */
    fputs("# list\n", f);
    fwrite(data, 1, size, f);
    fclose(f);
    const char *sources[] = {path};
    osp_inputs *in;
    if (osp_inputs_new(sources, 1, &in) == OSP_OK) {
        const char *p;
        int64_t n = 0;
        while (osp_inputs_next(in, &p) == OSP_OK && p) {
            if (!*p || strlen(p) > size + sizeof path + 2) __builtin_trap();
            if (osp_image_id(p) < 0) __builtin_trap();
            n++;
        }
        (void)n;
        osp_inputs_free(in);
    }
    unlink(path);
    return 0;
}
