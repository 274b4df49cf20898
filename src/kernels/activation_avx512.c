/* activation.c compiled for AVX512 (see cpu_kernels.h): the same code, so the
 * same results as the reference up to the compiler's vector sums. */
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")
#define KFN(name) osp__avx512_##name
#include "activation.c"
