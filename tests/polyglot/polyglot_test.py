#!/usr/bin/python3
"""Runs one language's EventBus client (client/python, client/go or client/node) against a live
eventbusd and checks, byte for byte, what a loopback JSON-RPC subscriber receives.

1. Generates that language's stubs into the work folder (Python: protoc + grpc_python_plugin; Go:
   protoc-gen-go + protoc-gen-go-grpc, GOPATH mode; Node: none, proto-loader reads the .proto).
2. Starts the built eventbusd (memory store, a free loopback port) and a JsonRpcPeer.
3. Runs the example (subscribe, raise async and sync, list, unsubscribe) and checks the exact bytes
   of the notification and of the request, and what the example printed.
4. Runs the language's contract tests (big integers in every form, unset Values, NaN, key order;
   RaiseStream: per-event results in order, the events at the subscriber in order, stream errors)
   against the same server.

Usage: polyglot_test.py {python,go,node} --eventbusd PATH --root REPO --work DIR
A runtime or package that is missing fails the test under CI=true and skips it (exit 77) elsewhere.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # nothing written into tests/polyglot
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testing"))
from jsonrpc_peer import JsonRpcPeer  # noqa: E402

SKIP = 77
RESULT = '{"accepted":true,"big":18446744073709551615}'

# What the subscriber must receive from each example, exactly: the async notification, then the
# sync request (id 1: the first request on the connection). An integer beyond 2^53 exact, the
# nested object's keys in the given order ("z" before "a"), UTF-8 verbatim, a boolean, a number.
EXPECTED = {
    "python": [
        b'{"jsonrpc":"2.0","method":"E_PYTHON","params":{"id":12345678901234567890,'
        b'"obj":{"z":1,"a":{"y":[true,null],"b":"x"}},"ok":true,"name":"caf\xc3\xa9","count":3}}',
        b'{"id":1,"jsonrpc":"2.0","method":"E_PYTHON","params":{"id":12345678901234567890,'
        b'"obj":{"z":1,"a":{"y":[true,null],"b":"x"}},"ok":true,"name":"caf\xc3\xa9","count":3}}',
    ],
    "go": [
        b'{"jsonrpc":"2.0","method":"E_GO","params":{"id":12345678901234567890,'
        b'"obj":{"z":1,"a":{"y":[true,null],"b":"x"}},"ok":true,"name":"caf\xc3\xa9","count":3}}',
        b'{"id":1,"jsonrpc":"2.0","method":"E_GO","params":{"id":12345678901234567890,'
        b'"obj":{"z":1,"a":{"y":[true,null],"b":"x"}},"ok":true,"name":"caf\xc3\xa9","count":3}}',
    ],
    "node": [
        b'{"jsonrpc":"2.0","method":"E_NODE","params":{"id":12345678901234567890,'
        b'"obj":{"z":1,"a":{"y":[true,null],"b":"x"}},"ok":true,"name":"caf\xc3\xa9","count":3}}',
        b'{"id":1,"jsonrpc":"2.0","method":"E_NODE","params":{"id":12345678901234567890,'
        b'"obj":{"z":1,"a":{"y":[true,null],"b":"x"}},"ok":true,"name":"caf\xc3\xa9","count":3}}',
    ],
}
EVENTS = {"python": "E_PYTHON", "go": "E_GO", "node": "E_NODE"}


def expected_output(lang, socket):
    """The example's output, line by line, as regular expressions."""
    e, s = EVENTS[lang], re.escape(socket)
    address = re.escape(socket[len("tcp:"):])
    return [
        r"subscribed (?P<id>[0-9a-f]+) %s %s created=true" % (e, s),
        r"raise async: subscribers=1",
        r"  %s  QUEUED  \d+\.\d\d ms" % s,
        r"raise sync: subscribers=1",
        r"  %s  OK  \d+\.\d\d ms  %s" % (s, re.escape(RESULT)),
        r"list %s: 1 subscription\(s\)" % e,
        r"  (?P=id)  %s  %s  ttl=(5\d|60)s  \[%s CONNECTED delivered=\d+ failed=0\]" % (e, s, address),
        r"unsubscribed removed=1",
    ]


class Failure(Exception):
    pass


def run(cmd, timeout=240, **kwargs):
    """Runs cmd; returns the CompletedProcess, or raises Failure naming the command and output."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as e:
        raise Failure("%s: no exit within %d s\n%s%s" % (" ".join(cmd), timeout, e.stdout or "",
                                                          e.stderr or ""))
    if done.returncode != 0:
        raise Failure("%s: exit %d\n--- stdout\n%s--- stderr\n%s" % (
            " ".join(cmd), done.returncode, done.stdout, done.stderr))
    return done


class Language:
    """How to check, generate, build and run one language's example and contract tests."""

    def __init__(self, lang, root, work):
        self.lang, self.root, self.work = lang, root, work
        self.env = dict(os.environ)

    def missing(self):
        """What this machine lacks to run the language's client ([] when nothing)."""
        need = {"protoc": shutil.which("protoc")} if self.lang != "node" else {}
        if self.lang == "python":
            need["grpc_python_plugin (protobuf-compiler-grpc)"] = shutil.which("grpc_python_plugin")
            probe = subprocess.run(["/usr/bin/python3", "-c", "import grpc, google.protobuf"],
                                   capture_output=True)
            need["python3-grpcio and python3-protobuf"] = probe.returncode == 0
        elif self.lang == "go":
            need["go (golang-go)"] = shutil.which("go")
            need["protoc-gen-go"] = shutil.which("protoc-gen-go")
            need["protoc-gen-go-grpc"] = shutil.which("protoc-gen-go-grpc")
            need["golang-google-grpc-dev"] = os.path.isdir(
                "/usr/share/gocode/src/google.golang.org/grpc")
            # grpc-go 1.33 marshals through github.com/golang/protobuf: 1.3 cannot handle the
            # APIv2 messages protoc-gen-go 1.28 makes (it panics); 1.5 delegates to APIv2.
            shim = "/usr/share/gocode/src/github.com/golang/protobuf/proto/registry.go"
            need["golang-github-golang-protobuf-1-5-dev"] = os.path.exists(shim)
        else:
            need["node"] = shutil.which("node")
            modules = os.path.join(self.root, ".tools", "node_modules")
            for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
                need["%s in .tools/" % package] = os.path.isdir(os.path.join(modules, package))
        return [name for name, present in need.items() if not present]

    def prepare(self):
        """Generates the stubs and builds what needs building."""
        proto = os.path.join(self.root, "proto")
        if self.lang == "python":
            out = os.path.join(self.work, "py")
            os.makedirs(out, exist_ok=True)
            run(["protoc", "-I", proto, "--python_out=" + out, "--grpc_python_out=" + out,
                 "--plugin=protoc-gen-grpc_python=" + shutil.which("grpc_python_plugin"),
                 "eventbus/v1/eventbus.proto"])
            self.env["PYTHONPATH"] = out + os.pathsep + os.path.join(self.root, "client", "python")
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into client/python
        elif self.lang == "go":
            gopath = os.path.join(self.work, "gopath")
            src = os.path.join(gopath, "src")
            os.makedirs(src, exist_ok=True)
            run(["protoc", "-I", proto, "--go_out=" + src, "--go-grpc_out=" + src,
                 "eventbus/v1/eventbus.proto"])
            self.env.update(GO111MODULE="off", GOPATH=gopath + ":/usr/share/gocode", GOFLAGS="")
            if not self.env.get("GOCACHE") and not self.env.get("HOME"):
                self.env["GOCACHE"] = os.path.join(self.work, "gocache")
            client = os.path.join(self.root, "client", "go")
            run(["go", "build", "-o", os.path.join(self.work, "example"), "."], cwd=client,
                env=self.env)
            run(["go", "test", "-c", "-o", os.path.join(self.work, "contract.test"), "."],
                cwd=client, env=self.env)
        else:
            self.env["NODE_PATH"] = os.path.join(self.root, ".tools", "node_modules")

    def example(self, server, socket):
        client = os.path.join(self.root, "client", self.lang)
        if self.lang == "python":
            return ["/usr/bin/python3", os.path.join(client, "example.py"), server, socket]
        if self.lang == "go":
            return [os.path.join(self.work, "example"), server, socket]
        return ["node", os.path.join(client, "example.js"), server, socket]

    def contract(self):
        client = os.path.join(self.root, "client", self.lang)
        if self.lang == "python":
            return ["/usr/bin/python3", os.path.join(client, "contract_test.py"), "-v"]
        if self.lang == "go":
            return [os.path.join(self.work, "contract.test"), "-test.v", "-test.count=1"]
        return ["node", "--test", os.path.join(client, "contract.test.js")]


def start_eventbusd(path, work):
    """Starts eventbusd on a free loopback port; returns (process, "127.0.0.1:PORT", log path)."""
    log_path = os.path.join(work, "eventbusd.log")
    log = open(log_path, "w")
    process = subprocess.Popen([path, "--listen=127.0.0.1:0", "--store=memory"], stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(log_path) as f:
            match = re.search(r'msg="eventbusd serving".* port=(\d+)', f.read())
        if match:
            return process, "127.0.0.1:" + match.group(1), log_path
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    with open(log_path) as f:
        raise Failure("eventbusd did not start serving:\n" + f.read())


def check_example(lang, language, server, peer):
    done = run(language.example(server, peer.socket_uri), timeout=60, env=language.env)
    print(done.stdout, end="")
    messages = peer.wait_for(2)
    for got, want, what in zip(messages, EXPECTED[lang], ("notification", "request")):
        if got != want:
            raise Failure("the subscriber got the %s\n  %r\nwant\n  %r" % (what, got, want))
    if peer.errors:
        raise Failure("the subscriber saw: %s" % peer.errors)
    lines = done.stdout.splitlines()
    patterns = expected_output(lang, peer.socket_uri)
    if len(lines) != len(patterns):
        raise Failure("the example printed %d lines, want %d" % (len(lines), len(patterns)))
    groups = {}
    for line, pattern in zip(lines, patterns):
        # (?P=id) refers back to the subscription id of the first line.
        if "(?P=id)" in pattern:
            pattern = pattern.replace("(?P=id)", re.escape(groups.get("id", "")))
        match = re.fullmatch(pattern, line)
        if not match:
            raise Failure("the example printed\n  %s\nwhich does not match\n  %s" % (line, pattern))
        groups.update(match.groupdict())


def run_contract(language, server):
    done = run(language.contract(), timeout=120, env=dict(language.env, EVENTBUS_SERVER=server))
    print(done.stdout + done.stderr, end="")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("lang", choices=sorted(EVENTS))
    parser.add_argument("--eventbusd", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    name = "polyglot_" + args.lang
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)

    language = Language(args.lang, os.path.abspath(args.root), os.path.abspath(args.work))
    missing = language.missing()
    if missing:
        message = "%s: missing %s (scripts/install-deps.sh installs them)" % (
            name, ", ".join(missing))
        if os.environ.get("CI", "").lower() in ("true", "1"):
            print(message + "; CI=true: failing rather than skipping")
            return 1
        print(message + "; skipped")
        return SKIP

    passed, failed = 0, 0
    start = time.monotonic()
    process = None
    peer = JsonRpcPeer(result=RESULT).start()
    try:
        language.prepare()
        print("%s: generated and built in %.1f s" % (name, time.monotonic() - start))
        process, server, log = start_eventbusd(args.eventbusd, args.work)
        for step, check in (
            ("example, exact bytes at the subscriber", lambda: check_example(
                args.lang, language, server, peer)),
            ("contract tests", lambda: run_contract(language, server)),
        ):
            try:
                check()
                passed += 1
                print("%s: PASS %s" % (name, step))
            except (Failure, TimeoutError) as e:
                failed += 1
                print("%s: FAIL %s\n%s" % (name, step, e))
    except Failure as e:
        failed += 1
        print("%s: FAIL\n%s" % (name, e))
    finally:
        peer.stop()
        if process:
            # A clean exit on SIGTERM also means no sanitizer report (scripts/sanitize.sh runs
            # this test against the instrumented eventbusd).
            process.terminate()
            try:
                code = process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                code = "none within 15 s"
            if code != 0:
                failed += 1
                print("%s: FAIL eventbusd exit status on SIGTERM: %s, want 0" % (name, code))
            if failed:
                with open(log) as f:
                    print("--- eventbusd log\n" + f.read())
    print("%s: %.1f s" % (name, time.monotonic() - start))
    print("%s: %d passed, %d failed" % (name, passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
