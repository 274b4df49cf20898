/* layernorm.c compiled for AVX512 (the flags are set in CMakeLists.txt; see
 * cpu_kernels.h): the same code, so the same results as the reference up
 * to fused multiply-adds. */
#define KFN(name) osp__avx512_##name
#include "layernorm.c"
