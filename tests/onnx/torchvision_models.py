#!/usr/bin/python3
"""torchvision's classification models through osprey's ONNX import.

Every model of torchvision.models.list_models(module=torchvision.models) is
built with random weights (weights=None, a fixed seed; weights the builder
sets to 0, as the vision transformers' head, drawn at random too) and random
batch-norm statistics, in eval mode; exported by PyTorch at each opset asked for (18 is
not written by torch 1.13's exporter: it is the opset 17 file rewritten, see
to_opset18); imported with `osprey import`; run with `osprey run` on two
random images; and compared with PyTorch's output:

  match    max |osprey - PyTorch| <= 1e-4 * max |PyTorch|
  wrong    imported, but the output differs or has another shape
  crash    killed by a signal, an exit status other than 0 or 1, a timeout,
           or an error that is not one clear line
  refused  osprey said no in one line (the line, without file names)
  export   PyTorch could not export the model at that opset (not osprey's)
  skipped  more parameters than --max-params (30 millions; --all runs all):
           one row for the model, not one per opset

Inputs are small to keep the run practical: 64x64 for CNNs, vision
transformers built for 32x32 images (image_size=32), the few models that need
more at their minimum (SIZES).

usage: torchvision_models.py OSPREY [--opsets 11,13,17] [--models REGEX]
           [--quick] [--all] [--max-params M] [--require A,B] [--report FILE]
           [--fixed-batch] [--keep DIR]
Exit status: 0 when nothing is wrong or crashed (and every --require model
matched), 1 otherwise.
"""
import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import torch
import torchvision

TOL = 1e-4
# Input sizes other than 64x64: a model's smallest, or where an adaptive pool
# would otherwise have to upsample (which the exporter refuses).
SIZES = {"inception_v3": 75, "maxvit_t": 224, "alexnet": 224,
         "vgg11": 224, "vgg11_bn": 224, "vgg13": 224, "vgg13_bn": 224,
         "vgg16": 224, "vgg16_bn": 224, "vgg19": 224, "vgg19_bn": 224}
# Builders that take the image size (vision transformers): built small.
IMAGE_SIZE_KW = {"vit_b_16": 32, "vit_b_32": 32, "vit_l_16": 32, "vit_l_32": 32, "vit_h_14": 28}
# The fast subset inside `make test`: small, and between them most of the
# layer kinds of the CNNs (grouped and depthwise convolutions, channel
# shuffles, squeeze-excitation, concatenations) and one transformer.
QUICK = ["shufflenet_v2_x0_5", "mnasnet0_5", "regnet_x_400mf", "mobilenet_v3_small", "vit_b_32"]
# The smallest vision transformers, run whatever the cap: built for 32x32
# images they are quick, and the cap would leave out every ViT.
UNCAPPED = ["vit_b_16", "vit_b_32"]
KINDS = ["match", "wrong", "crash", "refused", "export", "skipped"]


def num_params(name):
    """From the weights' metadata, without building the model."""
    try:
        return list(torchvision.models.get_model_weights(name))[0].meta["num_params"]
    except Exception:
        return 0


def build(name):
    torch.manual_seed(0)
    kw = {"weights": None}
    if name in IMAGE_SIZE_KW:
        kw["image_size"] = IMAGE_SIZE_KW[name]
    if name in ("inception_v3", "googlenet"):
        kw.update(aux_logits=False, init_weights=True)
    model = torchvision.models.get_model(name, **kw)
    # Statistics away from 0 and 1, so that the batch norms are exercised.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    # Weights a builder sets to 0 (the vision transformers' classification
    # head) would make every output 0 whatever came before: random instead.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                bound = p[0].numel() ** -0.5
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
    return model.eval()


def input_size(name):
    if name in IMAGE_SIZE_KW:
        return IMAGE_SIZE_KW[name]
    return SIZES.get(name, 64)


def export(model, x, path, opset, fixed_batch):
    """None, or PyTorch's reason in one line. The batch is symbolic unless
    fixed_batch: a fixed one turns x.view(batch, ...) into a Reshape whose
    first axis is a number, which osprey cannot tell from a mix of samples."""
    dynamic = None if fixed_batch else {"input": {0: "batch"}, "output": {0: "batch"}}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"],
                              output_names=["output"], do_constant_folding=True,
                              dynamic_axes=dynamic)
    except Exception as e:
        lines = [l for l in str(e).splitlines() if l.strip()]
        # The first sentence says what; the rest asks for a pull request.
        first = re.split(r"(?<=\.) ", lines[0])[0] if lines else ""
        return (type(e).__name__ + ": " + first)[:200]
    return None


# Operators whose `axes` moved from an attribute to an input at opset 18.
REDUCE_AXES_18 = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                  "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare"}


def to_opset18(src, dst):
    """Rewrites an opset 17 file as opset 18. Between them only the Reduce
    operators' `axes` changed form (an attribute became an optional int64
    input, as ReduceSum's did at 13); Split's `num_outputs`, Pad's `axes`,
    Resize's `antialias`/`axes`/`keep_aspect_ratio_policy` and
    ScatterElements' min/max reductions are new and optional, so 17's forms
    of those are valid 18 as they stand."""
    m = onnx.load(src)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 18

    def rewrite(graph):
        for n in graph.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    rewrite(a.g)
            if n.op_type not in REDUCE_AXES_18:
                continue
            axes = [a for a in n.attribute if a.name == "axes"]
            if not axes:
                continue
            name = n.name + "_axes" if n.name else n.output[0] + "_axes"
            graph.initializer.append(onnx.helper.make_tensor(name, onnx.TensorProto.INT64,
                                                             [len(axes[0].ints)], list(axes[0].ints)))
            n.attribute.remove(axes[0])
            n.input.append(name)

    rewrite(m.graph)
    # onnx 1.12 (Debian's) knows operator schemas up to opset 17 only.
    if onnx.defs.onnx_opset_version() >= 18:
        onnx.checker.check_model(m)
    # Over protobuf's 2 GB (vit_h_14, regnet_y_128gf) the weights go to a
    # file beside the model, as PyTorch's exporter did for the source.
    if sum(len(t.raw_data) for t in m.graph.initializer) > 1 << 30:
        onnx.save(m, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(dst) + ".data")
    else:
        onnx.save(m, dst)


def osprey(cmd, timeout):
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, ""
    return p.returncode, p.stderr.decode("utf-8", "replace")


def failure(step, status, err, work, timeout):
    if status is None:
        return "crash", "%s: timed out after %d s" % (step, timeout)
    if re.search(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:", err):
        return "crash", "%s: sanitizer report" % step
    if status < 0:
        return "crash", "%s: killed by signal %d" % (step, -status)
    if status != 1:
        return "crash", "%s: exit status %d" % (step, status)
    lines = [l for l in err.splitlines() if l.strip() and not re.match(r"(osprey \w+: )?(warning|note): ", l)]
    if len(lines) != 1 or not lines[0].startswith("osprey %s: " % step):
        return "crash", "%s: error is not one clear line: %r" % (step, err[:300])
    line = lines[0][len("osprey %s: " % step):].replace(work + "/", "")
    line = re.sub(r"^[\w.]+\.(onnx|osp): ", "", line)
    return "refused", ("run: " + line) if step == "run" else line


def export_opset(model, x, work, opset, fixed_batch):
    """(path, None) or (None, why). Opset 18 is the opset 17 file rewritten;
    that file is exported once per model and kept in work for both."""
    path = os.path.join(work, "opset%d.onnx" % opset)
    if os.path.exists(path):
        return path, None
    if opset != 18:
        why = export(model, x, path, opset, fixed_batch)
        return (None, why) if why else (path, None)
    src, why = export_opset(model, x, work, 17, fixed_batch)
    if why:
        return None, why
    try:
        to_opset18(src, path)
    except Exception as e:
        return None, "rewrite to 18: " + str(e).splitlines()[0][:200]
    return path, None


def check(osprey_bin, model, x, ref, opset, work, args):
    """(kind, detail, max error or None) for one model at one opset."""
    onnx_path, why = export_opset(model, x, work, opset, args.fixed_batch)
    if why:
        return "export", why, None
    np.save(os.path.join(work, "input.npy"), x.numpy())
    osp = os.path.join(work, "opset%d.osp" % opset)
    timeout = args.timeout
    status, err = osprey([osprey_bin, "import", onnx_path, "--out", osp], timeout)
    if status != 0:
        return failure("import", status, err, work, timeout) + (None,)
    out = os.path.join(work, "output%d.npy" % opset)
    status, err = osprey([osprey_bin, "run", "--model", osp, "--input", os.path.join(work, "input.npy"),
                          "--output", out, "--threads", "2"], timeout)
    if status != 0:
        return failure("run", status, err, work, timeout) + (None,)
    got = np.load(out)
    if got.shape != ref.shape:
        return "wrong", "shape %s, expected %s" % (list(got.shape), list(ref.shape)), None
    err = float(np.abs(got.astype(np.float64) - ref).max())
    scale = float(np.abs(ref).max())
    if not np.isfinite(err) or err > TOL * scale:
        return "wrong", "max |diff| %.3g, largest |PyTorch| %.3g" % (err, scale), err / max(scale, 1e-30)
    return "match", "", err / max(scale, 1e-30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("osprey")
    ap.add_argument("--opsets", default="11,13,17", help="comma-separated, 7 to 18 (18: 17 rewritten)")
    ap.add_argument("--models", default="", help="only models whose name matches this regex")
    ap.add_argument("--quick", action="store_true", help="the fast subset (%s), opset 17" % ", ".join(QUICK))
    ap.add_argument("--all", action="store_true", help="no size cap")
    ap.add_argument("--max-params", type=float, default=30,
                    help="skip models with more millions of parameters (default 30; %s always run)"
                    % " and ".join(UNCAPPED))
    ap.add_argument("--batch", type=int, default=2, help="images run (default 2)")
    ap.add_argument("--fixed-batch", action="store_true", help="export with the batch fixed, not symbolic")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per osprey command")
    ap.add_argument("--report", help="write the table as markdown")
    ap.add_argument("--require", default="",
                    help="comma-separated models that must match (a refusal of one fails the run)")
    ap.add_argument("--keep", help="keep each model's files in this folder")
    args = ap.parse_args()
    opsets = [int(o) for o in args.opsets.split(",") if o]
    if any(o < 7 or o > 18 for o in opsets):
        sys.exit("torchvision_models.py: opsets are 7 to 18")
    names = torchvision.models.list_models(module=torchvision.models)
    if args.quick:
        names = [n for n in QUICK if n in names]
        if args.opsets == ap.get_default("opsets"):
            opsets = [17]
    names = [n for n in names if re.search(args.models, n)]
    torch.set_num_threads(2)
    osprey_bin = os.path.abspath(args.osprey)
    rows = []
    start = time.time()
    print("%-22s %5s %-8s %-10s %s" % ("model", "opset", "result", "max err", "reason"), flush=True)
    for name in names:
        params = num_params(name)
        if not args.all and params > args.max_params * 1e6 and name not in UNCAPPED:
            rows.append((name, None, "skipped", "%.0fM parameters (--all runs it)" % (params / 1e6), None))
            print("%-22s %5s %-8s %-10s %s" % (name, "-", "skipped", "", rows[-1][3]), flush=True)
            continue
        t0 = time.time()
        try:
            model = build(name)
            size = input_size(name)
            x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                ref = model(x)
            if isinstance(ref, tuple):
                ref = ref[0]
            ref = ref.double().numpy()
        except Exception as e:
            for o in opsets:
                rows.append((name, o, "export", "cannot build: " + str(e).splitlines()[0][:200], None))
            print("%-22s %5s %-8s %-10s %s" % (name, "-", "export", "", rows[-1][3]), flush=True)
            continue
        work = tempfile.mkdtemp(prefix="osp-tv-")
        try:
            for o in opsets:
                kind, detail, err = check(osprey_bin, model, x, ref, o, work, args)
                rows.append((name, o, kind, detail, err))
                print("%-22s %5d %-8s %-10s %s" % (name, o, kind, "%.2g" % err if err is not None else "",
                                                    detail), flush=True)
            if args.keep:
                dst = os.path.join(args.keep, name)
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(work, dst)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        del model
        sys.stdout.flush()
        if time.time() - t0 > 120:
            print("  (%s took %.0f s)" % (name, time.time() - t0), flush=True)
    seconds = time.time() - start
    counts = {k: sum(1 for r in rows if r[2] == k) for k in KINDS}
    print("  ".join("%s %d" % (k, counts[k]) for k in KINDS) + "  (%d models, %.0f s)" % (len(names), seconds))
    if args.report:
        write_report(args.report, rows, counts, opsets, seconds)
        print("report: %s" % args.report)
    required = [n for n in args.require.split(",") if n]
    lost = sorted({r[0] for r in rows if r[0] in required and r[2] != "match"} |
                  {n for n in required if n not in {r[0] for r in rows}})
    if lost:
        print("torchvision_models.py: required to match, but did not: %s" % ", ".join(lost))
    return 1 if counts["wrong"] or counts["crash"] or lost else 0


def write_report(path, rows, counts, opsets, seconds):
    with open(path + ".tmp", "w") as f:
        f.write("# torchvision models through `osprey import`\n\n")
        f.write("Written by `tests/onnx/torchvision_models.py OSPREY --report FILE` (`make\n"
                "check-models`): torch %s, torchvision %s, opsets %s; max err is\n"
                "max |osprey - PyTorch| / max |PyTorch| (match: at most 1e-4).\n\n"
                % (torch.__version__, torchvision.__version__, ", ".join(map(str, opsets))))
        f.write(" | ".join("%s %d" % (k, counts[k]) for k in KINDS) + " (%.0f s)\n\n" % seconds)
        groups = {}
        for name, o, kind, detail, err in rows:
            if kind in ("refused", "export"):
                key = kind + ": " + re.sub(r"node '[^']*' \(", "node (", detail)
                groups.setdefault(key, []).append("%s (%d)" % (name, o))
        if groups:
            f.write("By reason (model and opset):\n\n")
            for key, models in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                f.write("- %s: %s\n" % (key.replace("|", "\\|"), ", ".join(models)))
            f.write("\n")
        f.write("| model | opset | result | max err | reason |\n| --- | ---: | --- | ---: | --- |\n")
        for name, o, kind, detail, err in rows:
            f.write("| %s | %s | %s | %s | %s |\n" % (name, "-" if o is None else o, kind, "%.1e" % err if err is not None else "",
                                                   detail.replace("|", "\\|")))
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
