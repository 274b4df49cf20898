/* Finite-difference gradient checks for ops, driven by small specs. */
#ifndef OSPREY_TEST_GRADCHECK_H
#define OSPREY_TEST_GRADCHECK_H

#include <stdint.h>

typedef struct gradcheck_opts {
    int batch;          /* default 2 */
    float eps;          /* central-difference step; default 1e-2 */
    double rtol, atol;  /* |analytic - numeric| <= atol + rtol * max(|a|, |n|); defaults 2e-2, 2e-3 */
    int max_checks;     /* coordinates checked per tensor; default 64 */
    uint64_t seed;      /* default 1 */
    float input_scale;  /* inputs ~ U(-scale, scale); default 1 */
    const struct osp_exec_hooks *hooks; /* run with these (distributed training's); default none */
} gradcheck_opts;

/* Builds a network from spec text, then checks the gradient of
 * L = sum(output * R) (R random) with respect to the input and every trained
 * parameter against central differences. Returns 0 if all agree; otherwise
 * prints the first disagreements to stderr and returns the number found
 * (or -1 if the spec did not build). */
int gradcheck_spec(const char *spec_text, const gradcheck_opts *opts);

/* The same on a network as it is (its weights, its buffers: an imported
 * model's), planned here for training; the network stays the caller's. */
struct osp_net;
int gradcheck_net(struct osp_net *net, const gradcheck_opts *opts);

#endif
