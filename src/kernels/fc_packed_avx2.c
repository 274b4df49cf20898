/* fc_packed.h compiled for AVX2 (the flags are set in CMakeLists.txt;
 * see cpu_kernels.h). */
#define KFN(name) osp__avx2_##name
#include "fc_packed.h"
