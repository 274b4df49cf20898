#!/usr/bin/python3
"""Drives the router's web page in headless Chromium, as a person would:
load it, choose an image in its file input, wait for the labels and the
grid of similar images, check them and save a screenshot.

    page_check.py URL IMAGE SCREENSHOT.png N_SIMILAR [CHROMIUM]

Talks to Chromium over its DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages ended by NUL on file descriptors 3
and 4), so it needs no package beyond Python and Chromium. Prints what the
page showed as JSON; exits 1 with a message when the page does not show
labels and N_SIMILAR loaded images within the time allowed.
"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, exe, timeout=60):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="osprey-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():  # in the child: its ends as fds 3 and 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [exe, "--headless=new", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-dev-shm-usage", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--mute-audio",
                "--user-data-dir=" + self.profile, "--window-size=1280,900", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            r, _, _ = select.select([self.from_child], [], [], left)
            if r:
                chunk = os.read(self.from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed its pipe: " + self.tail_log())
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.to_child, data):]
        deadline = time.time() + (timeout or self.timeout)
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def tail_log(self):
        try:
            self.log.flush()
            return open(self.log.name, "rb").read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_child)
        os.close(self.from_child)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    url, image, shot, n_similar = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    exe = sys.argv[5] if len(sys.argv) > 5 else "/usr/bin/chromium"
    b = Browser(exe)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "DOM"):
            b.call(domain + ".enable", session=s)
        b.call("Emulation.setDeviceMetricsOverride",
               {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=s)
        b.call("Page.navigate", {"url": url}, session=s)

        def js(expr):
            r = b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True},
                       session=s)
            if "exceptionDetails" in r:
                raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
            return r["result"].get("value")

        def wait_for(expr, what, timeout=60):
            end = time.time() + timeout
            while time.time() < end:
                v = js(expr)
                if v:
                    return v
                time.sleep(0.1)
            status = js("document.getElementById('status') && document.getElementById('status').textContent")
            raise TimeoutError(f"the page did not show {what} within {timeout} s: status '{status}'")

        wait_for("document.readyState === 'complete' && !!document.getElementById('file')", "its file input")
        root = b.call("DOM.getDocument", session=s)["root"]["nodeId"]
        node = b.call("DOM.querySelector", {"nodeId": root, "selector": "#file"}, session=s)["nodeId"]
        b.call("DOM.setFileInputFiles", {"files": [image], "nodeId": node}, session=s)
        # Chromium fires "change" for the file chosen; where a version did
        # not, the page is told as a browser would
        time.sleep(0.3)
        if not js("document.body.dataset.state"):
            js("document.getElementById('file').dispatchEvent(new Event('change')), 1")
        state = wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state",
                         "an answer")
        if state == "done":
            wait_for("Array.from(document.querySelectorAll('#similar img')).every(i => i.complete)",
                     "every similar image loaded")
        shown = js("""({
            status: document.getElementById('status').textContent,
            labels: Array.from(document.querySelectorAll('#labels li.label')).map(li =>
                [li.querySelector('.description').textContent, li.querySelector('.score').textContent]),
            similar: Array.from(document.querySelectorAll('#similar figure img')).map(i =>
                ({src: i.getAttribute('src'), width: i.naturalWidth, caption: i.parentNode.textContent})),
            warning: document.getElementById('warning').textContent,
        })""")
        png = b.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, session=s)
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png["data"]))
        if state != "done":
            raise RuntimeError("the page shows an error: " + shown["status"])
    finally:
        b.close()
    print(json.dumps(shown, indent=1))
    problems = []
    if not shown["labels"]:
        problems.append("no label shown")
    if len(shown["similar"]) != n_similar:
        problems.append(f"{len(shown['similar'])} similar images shown, not {n_similar}")
    broken = [x["src"] for x in shown["similar"] if not x["width"]]
    if broken:
        problems.append(f"{len(broken)} similar images did not load, first {broken[0]}")
    if not all(x["src"].startswith("/v1/catalog/image?path=") for x in shown["similar"]):
        problems.append("a similar image is not served from /v1/catalog/image")
    if problems:
        sys.exit("page_check: " + "; ".join(problems))


if __name__ == "__main__":
    main()
