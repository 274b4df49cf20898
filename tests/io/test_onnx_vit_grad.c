/* An imported vision transformer trains: torchvision's VisionTransformer
 * (tests/golden/make_mha_golden.py's tvit17: patch embedding, class token,
 * position embedding, two encoder blocks of nn.MultiheadAttention, whose
 * export moves the batch off the first axis) imported from ONNX with its
 * random weights, then every gradient of the network (input and each
 * parameter) checked against central differences, end to end. Skipped where the
 * golden data (python3-torch) is missing. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#include "gradcheck.h"
#include "osprey/onnx.h"

Test(onnx_vit_grad, imported_vit_gradients_end_to_end) {
    const char *path = OSP_BINARY_DIR "/mha_golden/tvit17.onnx";
    if (access(path, R_OK) != 0) cr_skip_test("no %s (python3-torch missing?)", path);
    osp_net *net;
    cr_assert_eq(osp_onnx_import_file(path, NULL, &net), 0, "%s", osp_last_error());
    const gradcheck_opts o = {.max_checks = 24, .eps = 1e-2f};
    int bad = gradcheck_net(net, &o);
    cr_expect_eq(bad, 0, "gradcheck found %d disagreements in the imported ViT", bad);
    osp_net_free(net);
}
