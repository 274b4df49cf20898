/* fc_packed.h compiled for AVX512 (the flags are set in CMakeLists.txt;
 * see cpu_kernels.h). */
#define KFN(name) osp__avx512_##name
#include "fc_packed.h"
