#include "spec_expect.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

osp_net *spec_build(const char *spec) {
    osp_net *net = NULL;
    int rc = osp_net_from_spec(spec, strlen(spec), "t.cfg", 1, &net);
    cr_assert_eq(rc, 0, "spec did not build: %s", osp_last_error());
    return net;
}

void spec_expect_shape(const char *spec, const char *want) {
    osp_net *net = spec_build(spec);
    char buf[64];
    osp_shape_format(&osp_graph_output(net->graph)->shape, buf, sizeof buf);
    cr_assert_str_eq(buf, want, "output %s, expected %s for:\n%s", buf, want, spec);
    osp_net_free(net);
}

void spec_expect_error(const char *spec, int code, int line, const char *what) {
    osp_net *net = NULL;
    int rc = osp_net_from_spec(spec, strlen(spec), "t.cfg", 1, &net);
    cr_assert_null(net);
    cr_assert_eq(rc, code, "rc %d, expected %d (%s) for:\n%s", rc, code, osp_last_error(), spec);
    char where[32];
    snprintf(where, sizeof where, "t.cfg:%d:", line);
    cr_assert(strstr(osp_last_error(), where), "'%s' lacks '%s'", osp_last_error(), where);
    cr_assert(strstr(osp_last_error(), what), "'%s' lacks '%s'", osp_last_error(), what);
}
