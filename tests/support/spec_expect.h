/* Assertions for spec tests: build a network from spec text (named
 * "t.cfg" in messages) and check its output shape or its error. */
#ifndef OSPREY_TEST_SPEC_EXPECT_H
#define OSPREY_TEST_SPEC_EXPECT_H

#include "osprey/nn.h"

/* A [net] section of lines 1-3: a layer's header is line 4, its first key 5. */
#define NET(input) "[net]\ninput = " input "\n\n"

/* The network, or a failed assertion naming the error. */
osp_net *spec_build(const char *spec);
/* The output shape formatted ("16x16x16") equals want. */
void spec_expect_shape(const char *spec, const char *want);
/* The spec fails with code, and the message holds "t.cfg:<line>:" and what. */
void spec_expect_error(const char *spec, int code, int line, const char *what);

#endif
