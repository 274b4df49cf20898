/* batchnorm.c compiled for AVX2 (see cpu_kernels.h): the same code, so the
 * same results as the reference up to the compiler's vector sums. */
#pragma GCC target("avx2,fma")
#define KFN(name) osp__avx2_##name
#include "batchnorm.c"
