/* Networks against PyTorch: scripts/torchspec.py builds each spec in
 * PyTorch (Debian's python3-torch) with the same layer names, runs it on a
 * random batch and saves the output and the gradients of
 * L = sum(output * r); osprey then runs the spec with PyTorch's weights. */
#ifndef OSPREY_TEST_TORCH_GOLDEN_H
#define OSPREY_TEST_TORCH_GOLDEN_H

/* Writes the golden data of specs[0 .. n) into the tmpdir (tmpdir_make
 * first) with one run of python3, batch samples each. Returns 0, or -1
 * when python3-torch is not installed (the caller skips); any other
 * failure is a failed assertion. */
int torch_golden_make(const char *const *specs, int n, int batch);

/* Runs spec i of the last torch_golden_make on the default backend
 * (training mode, the input gradient required) with PyTorch's weights and
 * returns the largest error (specs without [batchnorm] or [dropout], whose
 * inference differs), each tensor's largest absolute difference
 * divided by its largest absolute value, over the output, the input
 * gradient and every parameter's gradient. */
double torch_golden_error(const char *spec, int i);

#endif
