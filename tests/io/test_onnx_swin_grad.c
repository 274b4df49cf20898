/* An imported Swin transformer trains: torchvision's SwinTransformer
 * (tests/golden/make_mha_golden.py's tswin17: 4x4 patches, two stages of
 * two blocks, 4x4 windows, the second block of the first stage shifted)
 * imported from ONNX with its random weights, then every gradient of the
 * network (input and each parameter) checked against central differences,
 * end to end. The window partition keeps the windows as an axis inside
 * each sample (docs/onnx.md, "Where the batch sits"), and the shifted
 * windows' mask and the relative position bias are folded constants: the
 * gradients must flow through all of it. Skipped where the golden data
 * (python3-torch) is missing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#include "gradcheck.h"
#include "osprey/onnx.h"

Test(onnx_swin_grad, imported_swin_gradients_end_to_end) {
    const char *path = OSP_BINARY_DIR "/mha_golden/tswin17.onnx";
    if (access(path, R_OK) != 0) cr_skip_test("no %s (python3-torch missing?)", path);
    osp_net *net;
    cr_assert_eq(osp_onnx_import_file(path, NULL, &net), 0, "%s", osp_last_error());
    /* 6 coordinates of each of the ~60 tensors keep it within seconds */
    const gradcheck_opts o = {.max_checks = 6, .eps = 1e-2f};
    int bad = gradcheck_net(net, &o);
    cr_expect_eq(bad, 0, "gradcheck found %d disagreements in the imported Swin", bad);
    osp_net_free(net);
}
