#!/usr/bin/python3
"""ONNX's own conformance suite (Debian's libonnx-testdata) through osprey.

For every test directory of the suites node, pytorch-converted,
pytorch-operator and simple (not `real`: those need downloads), the model is
imported with `osprey import` and, when it imports, run with `osprey run` on
test_data_set_0's input_0 and compared with its output_0. Each test is one of:

  match    imported, and the first output equals output_0 within the tolerance
  wrong    imported, but the output differs or has another shape
  crash    killed by a signal, a sanitizer report, an exit status other than
           osprey's 0 and 1, a timeout, or an error that is not one clear line
  refused  osprey said no, in one line (import, or run of what it imported)

The first graph input that is not an initializer is the data input (the batch
is its first axis); every other input is made a constant: the model is
rewritten with those inputs turned into initializers holding input_k.pb.

Tolerance: |osprey - expected| <= 1e-4 * max |expected| + 1e-6 elementwise
(the absolute floor keeps all-zero or tiny outputs from demanding exact
zeros); NaN must meet NaN and an infinity the same infinity.

The test fails when any is wrong or crashed; refusals are counted, and
`--report FILE` writes the tally and the refusals grouped by reason as
markdown (docs/onnx-conformance.md is that file).

usage: conformance.py OSPREY [--data DIR] [--suites a,b] [--jobs N]
                             [--timeout S] [--filter REGEX] [--report FILE]
Exit status: 0 all matched or refused, 1 some wrong or crashed, 77 no data.
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import numpy_helper

DATA = "/usr/share/libonnx-testdata/data"
SUITES = ["node", "pytorch-converted", "pytorch-operator", "simple"]
KINDS = ["match", "wrong", "crash", "refused"]
RTOL, ATOL = 1e-4, 1e-6
SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
MAX_LINE = 400  # longer than this is not "one clear line"


class Result:
    def __init__(self, suite, name, kind, detail=""):
        self.suite, self.name, self.kind, self.detail = suite, name, kind, detail


def load_tensor(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def is_tensor_type(value_info):
    return value_info.type.HasField("tensor_type")


def prepare(test_dir, work):
    """Writes work/model.onnx with every input but the first made constant,
    and work/input.npy; returns (data input name or None, expected path)."""
    model = onnx.load(os.path.join(test_dir, "model.onnx"))
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    data_set = os.path.join(test_dir, "test_data_set_0")
    for k, inp in enumerate(inputs):
        if k == 0:
            continue
        path = os.path.join(data_set, "input_%d.pb" % k)
        # An input of a sequence or optional type has no tensor to stand
        # for it: it stays an input and osprey refuses the second input.
        if not os.path.exists(path) or not is_tensor_type(inp):
            continue
        t = load_tensor(path)
        t.name = inp.name
        g.initializer.append(t)
        g.input.remove(inp)
    onnx.save(model, os.path.join(work, "model.onnx"))
    first = os.path.join(data_set, "input_0.pb")
    if inputs and is_tensor_type(inputs[0]) and os.path.exists(first):
        np.save(os.path.join(work, "input.npy"), numpy_helper.to_array(load_tensor(first)))
    return os.path.join(data_set, "output_0.pb")


def run_osprey(cmd, timeout):
    """(status, stderr); status None on a timeout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, ""
    return p.returncode, p.stderr.decode("utf-8", "replace")


def judge_failure(step, status, err, work, timeout):
    """A failed command: crash, or refused with its normalised reason."""
    if status is None:
        return "crash", "%s: timed out after %d s" % (step, timeout)
    if SANITIZER.search(err):
        line = next(l for l in err.splitlines() if SANITIZER.search(l))
        return "crash", "%s: sanitizer: %s" % (step, line.strip()[:200])
    if status < 0:
        return "crash", "%s: killed by signal %d" % (step, -status)
    if status != 1:
        return "crash", "%s: exit status %d" % (step, status)
    # Warnings (osprey's log: "warning: ...") and notes may come first.
    lines = [l for l in err.splitlines() if l.strip() and not re.match(r"(osprey \w+: )?(warning|note): ", l)]
    if len(lines) != 1 or len(lines[0]) > MAX_LINE or not lines[0].startswith("osprey %s: " % step):
        return "crash", "%s: error is not one clear line: %r" % (step, err[:300])
    return "refused", normalise(lines[0], step, work)


def normalise(line, step, work):
    """'osprey import: /tmp/x/model.onnx: node ...' to 'node ...'."""
    line = line[len("osprey %s: " % step):]
    line = line.replace(work + "/", "")
    for f in ("model.onnx: ", "model.osp: ", "input.npy: "):
        line = line.replace(f, "")
    return ("run: " + line) if step == "run" else line


def compare(got, want):
    """None when they agree, else what differs."""
    if got.shape != want.shape:
        return "shape %s, expected %s" % (list(got.shape), list(want.shape))
    got = got.astype(np.float64)
    want = want.astype(np.float64)
    if want.size == 0:
        return None
    nan_w, nan_g = np.isnan(want), np.isnan(got)
    if (nan_w != nan_g).any():
        return "NaN where none is expected, or a number where NaN is"
    inf_w = np.isinf(want)
    if (got[inf_w] != want[inf_w]).any() or np.isinf(got[~inf_w]).any():
        return "infinities differ"
    finite = ~(nan_w | inf_w)
    if not finite.any():
        return None
    scale = np.abs(want[finite]).max()
    err = np.abs(got[finite] - want[finite]).max()
    if err > RTOL * scale + ATOL:
        return "max |diff| %.3g, largest |expected| %.3g" % (err, scale)
    return None


def run_test(osprey, suite, test_dir, timeout):
    name = os.path.basename(test_dir)
    work = tempfile.mkdtemp(prefix="osp-conf-")
    try:
        try:
            expected = prepare(test_dir, work)
        except Exception as e:  # the harness's own reading, not osprey's
            return Result(suite, name, "refused", "harness: cannot read the test: %s" % str(e).splitlines()[0])
        model = os.path.join(work, "model.osp")
        status, err = run_osprey([osprey, "import", os.path.join(work, "model.onnx"), "--out", model], timeout)
        if status != 0 or SANITIZER.search(err):
            return Result(suite, name, *judge_failure("import", status, err, work, timeout))
        if not os.path.exists(model):
            return Result(suite, name, "crash", "import: exit status 0 without a model")
        data = os.path.join(work, "input.npy")
        if not os.path.exists(data):
            return Result(suite, name, "wrong", "imported a model whose data input is not a tensor")
        out = os.path.join(work, "output.npy")
        status, err = run_osprey([osprey, "run", "--model", model, "--input", data, "--output", out,
                                  "--threads", "1"], timeout)
        if status != 0 or SANITIZER.search(err):
            return Result(suite, name, *judge_failure("run", status, err, work, timeout))
        if not os.path.exists(out):
            return Result(suite, name, "crash", "run: exit status 0 without an output")
        if not os.path.exists(expected):
            return Result(suite, name, "refused", "harness: the test has no output_0.pb")
        diff = compare(np.load(out), numpy_helper.to_array(load_tensor(expected)))
        return Result(suite, name, "wrong" if diff else "match", diff or "")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def group_key(reason):
    """Refusals grouped by what they say, not by which node said it."""
    key = re.sub(r"node '[^']*' \(", "node (", reason)
    key = re.sub(r"'[^']*'", "'…'", key)
    return key


def tally(results):
    table = {s: dict.fromkeys(KINDS, 0) for s in SUITES + ["total"]}
    for r in results:
        table[r.suite][r.kind] += 1
        table["total"][r.kind] += 1
    return table


def print_tally(table, suites, seconds):
    print("%-20s %7s %7s %7s %7s" % ("suite", *KINDS))
    for s in suites + ["total"]:
        print("%-20s %7d %7d %7d %7d" % (s, *(table[s][k] for k in KINDS)))
    print("%d tests in %.1f s" % (sum(table["total"].values()), seconds))


def write_report(path, results, table, suites):
    groups = {}
    for r in results:
        if r.kind == "refused":
            groups.setdefault(group_key(r.detail), []).append(r)
    with open(path + ".tmp", "w") as f:
        f.write("# ONNX conformance: the tally and the refusals\n\n")
        f.write("Written by `tests/onnx/conformance.py OSPREY --report FILE` from the test\n"
                "data of Debian's libonnx-testdata (see docs/onnx.md, Conformance).\n\n")
        f.write("| suite | %s |\n| --- |%s\n" % (" | ".join(KINDS), " ---: |" * len(KINDS)))
        for s in suites + ["total"]:
            f.write("| %s | %s |\n" % (s, " | ".join(str(table[s][k]) for k in KINDS)))
        for kind in ("wrong", "crash"):
            bad = [r for r in results if r.kind == kind]
            if bad:
                f.write("\n## %s\n\n" % kind)
                for r in bad:
                    f.write("- %s/%s: %s\n" % (r.suite, r.name, r.detail))
        f.write("\n## Matched\n\n")
        f.write(", ".join("%s/%s" % (r.suite, r.name) for r in results if r.kind == "match") + "\n")
        f.write("\n## Refused, by reason\n\n")
        for key, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            f.write("- **%s** (%d): %s\n" % (key.replace("|", "\\|"), len(rs),
                                             ", ".join("%s/%s" % (r.suite, r.name) for r in rs)))
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("osprey")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=60, help="seconds per command")
    ap.add_argument("--filter", default="", help="only tests whose name matches this regex")
    ap.add_argument("--report", help="write the tally and refusals as markdown")
    ap.add_argument("--verbose", action="store_true", help="one line per test")
    args = ap.parse_args()
    suites = [s for s in args.suites.split(",") if s]
    for s in suites:
        if s not in SUITES:
            sys.exit("conformance.py: unknown suite '%s' (known: %s)" % (s, ", ".join(SUITES)))
    if not os.path.isdir(args.data):
        print("conformance.py: no test data in %s (Debian's libonnx-testdata; scripts/install-deps)" % args.data)
        return 77
    osprey = os.path.abspath(args.osprey)
    tests = []
    for s in suites:
        d = os.path.join(args.data, s)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if re.search(args.filter, name) and os.path.exists(os.path.join(d, name, "model.onnx")):
                tests.append((s, os.path.join(d, name)))
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda t: run_test(osprey, t[0], t[1], args.timeout), tests))
    seconds = time.time() - start
    for r in results:
        if args.verbose or r.kind in ("wrong", "crash"):
            print("%-8s %s/%s%s" % (r.kind, r.suite, r.name, ": " + r.detail if r.detail else ""))
    table = tally(results)
    print_tally(table, suites, seconds)
    if args.report:
        write_report(args.report, results, table, suites)
        print("report: %s" % args.report)
    bad = table["total"]["wrong"] + table["total"]["crash"]
    if bad:
        print("conformance: %d wrong or crashed (listed above)" % bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
