#!/usr/bin/env python3
"""Memory under hostile input: peak RSS growth of `kvinject serve` and `kvinject inject`.

    python3 bench/memory.py [KVINJECT_BINARY]     (default target/release/kvinject)

Cases (docs/security.md lists them with the figures):
- `/mutate` of one dry-run pod with 200 containers and 1,000 `kvinject.io/env.*` annotations
  (denied by the limits), and the same pod through `kvinject inject`;
- four concurrent 7 MiB AdmissionReviews whose object carries 3.5 million numbers under a field
  kvinject never reads, and four with as many numbers as `spec.volumes`, a field it reads (array
  items are kept whatever they hold, up to `core::pruned::MAX_KEPT_VALUES`: denied past it).

The server runs with `--facts` over TLS on 127.0.0.1; growth is VmHWM after the case minus VmRSS
once ready. Prints one line per case and exits 1 when a growth goes beyond its bound (32 MiB for
the big pod, 96 MiB for each four bodies) or the server stops serving. Standard library only.
"""

import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import http.client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# As the image and the chart run kvinject (see the Dockerfile); inherited by every child.
os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "10")
MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def review(pod, uid="u", dry_run=False):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": dry_run,
        },
    }


def big_pod():
    annotations = {"kvinject.io/vault": "shop-kv"}
    for i in range(1000):
        annotations[f"kvinject.io/env.VAR_{i}"] = f"object-{i}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "big",
            "namespace": "shop",
            "labels": {"kvinject.io/inject": "true"},
            "annotations": annotations,
        },
        "spec": {
            "serviceAccountName": "shop-api",
            "containers": [{"name": f"c{i}", "image": "app"} for i in range(200)],
        },
    }


def numbers_body(uid, field):
    """A 7 MiB review: a small pod with 3.5 million numbers in `spec.<field>` ahead of the rest."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "numbers", "namespace": "shop", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }
    head = json.dumps(review(pod, uid))
    marker = '"spec": {'
    numbers = ",".join(["1"] * 3_500_000)
    body = head.replace(marker, f'{marker}"{field}": [{numbers}], ', 1)
    return body.encode()


class Server:
    def __init__(self, binary, tmp):
        subprocess.run([binary, "certs", "--out", f"{tmp}/certs"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port, self.health = free_port(), free_port()
        self.log = open(f"{tmp}/serve.log", "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--facts", str(ROOT / "tests/fixtures/facts.yaml"),
             "--listen", f"127.0.0.1:{self.port}", "--health-listen", f"127.0.0.1:{self.health}",
             "--tls-cert-file", f"{tmp}/certs/tls.crt", "--tls-key-file", f"{tmp}/certs/tls.key"],
            stdout=self.log, stderr=self.log)
        self.context = ssl.create_default_context(cafile=f"{tmp}/certs/ca.crt")
        for _ in range(500):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.health, timeout=1)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            raise RuntimeError("kvinject did not become ready")
        time.sleep(0.5)

    def connect(self):
        c = http.client.HTTPSConnection("kvinject.kvinject.svc", self.port, timeout=60,
                                        context=self.context)
        c.sock = self.context.wrap_socket(
            socket.create_connection(("127.0.0.1", self.port)),
            server_hostname="kvinject.kvinject.svc")
        return c

    def post(self, body):
        return self.post_all([body])[0]

    def post_all(self, bodies):
        """Sends every body but its last byte, then the last bytes: all are held at once."""
        connections = [self.connect() for _ in bodies]
        for c, body in zip(connections, bodies):
            c.putrequest("POST", "/mutate?timeout=10s")
            c.putheader("Content-Type", "application/json")
            c.putheader("Content-Length", str(len(body)))
            c.endheaders()
            c.send(body[:-1])
        for c, body in zip(connections, bodies):
            c.send(body[-1:])
        results = []
        for c in connections:
            response = c.getresponse()
            results.append((response.status, response.read()))
        return results

    def rss(self):
        return status_kib(self.process.pid, "VmRSS")

    def peak(self):
        return status_kib(self.process.pid, "VmHWM")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def measure_serve(binary, tmp, name, bodies, bound_mib, expect):
    server = Server(binary, tmp)
    try:
        idle = server.rss()
        results = server.post_all(bodies)
        growth = (server.peak() - idle) / 1024
        statuses = [status for status, _ in results]
        small = {"metadata": {"name": "small", "labels": {"app": "x"}},
                 "spec": {"containers": [{"name": "a"}]}}
        after = server.post(json.dumps(review(small, uid="after")).encode())
        answers = [expect(status, body) for status, body in results]
        ok = growth < bound_mib and after[0] == 200 and all(answers)
        print(f"{name}: statuses {statuses}, peak RSS growth {growth:.1f} MiB "
              f"(bound {bound_mib} MiB), idle {idle / 1024:.1f} MiB, serving after: {after[0]}"
              f"{'' if ok else '  <-- FAILED'}")
        if not all(answers):
            print(f"  unexpected answer: {results[answers.index(False)]}"[:400])
        return ok
    finally:
        server.stop()


def peak_of_inject(binary, path):
    """Peak RSS in KiB of one `kvinject inject` run, and the run."""
    wrapper = ("import resource, subprocess, sys; "
               "done = subprocess.run(sys.argv[1:], capture_output=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode, "
               "len(done.stdout)); sys.stderr.buffer.write(done.stderr)")
    done = subprocess.run([sys.executable, "-c", wrapper, binary, "inject", "-f", str(path)],
                          capture_output=True, check=True)
    peak, code, out = (int(v) for v in done.stdout.split())
    return peak, code, out, done.stderr.decode(errors="replace")


def measure_inject(binary, tmp, bound_mib):
    small, big = Path(tmp) / "small.yaml", Path(tmp) / "big.yaml"
    pod = big_pod()
    small_pod = dict(pod, metadata=dict(pod["metadata"], annotations={
        "kvinject.io/vault": "shop-kv", "kvinject.io/env.A": "a"}),
        spec=dict(pod["spec"], containers=pod["spec"]["containers"][:1]))
    # The cluster facts (Namespace, ServiceAccount) travel in the same input, as `inject` reads them.
    facts = (ROOT / "tests/fixtures/facts.yaml").read_text()
    small.write_text(f"{facts}\n---\n{json.dumps(small_pod)}\n")
    big.write_text(f"{facts}\n---\n{json.dumps(pod)}\n")
    base, _, _, _ = peak_of_inject(binary, small)
    peak, code, out, stderr = peak_of_inject(binary, big)
    growth = (peak - base) / 1024
    message = stderr.strip().splitlines()[-1:] or [""]
    ok = code != 0 and growth < bound_mib and out < MIB
    print(f"inject, 200 containers x 1,000 annotations: exit {code}, peak RSS growth "
          f"{growth:.1f} MiB over a one-container pod ({base / 1024:.1f} MiB; bound {bound_mib} "
          f"MiB), {out} bytes out; {message[0][:160]}{'' if ok else '  <-- FAILED'}")
    return ok


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/kvinject")
    with tempfile.TemporaryDirectory() as tmp:
        def answer(status, body):
            return json.loads(body)["response"] if status == 200 else None

        def denied(status, body):
            a = answer(status, body)
            return a is not None and a["allowed"] is False and "limit" in a["status"]["message"].lower()

        def allowed(status, body):
            a = answer(status, body)
            return a is not None and a["allowed"] is True

        def refused(status, body):
            a = answer(status, body)
            return (a is not None and a["allowed"] is False
                    and "values in the fields kvinject reads" in a["status"]["message"])

        ok = measure_serve(binary, tmp, "/mutate, 200 containers x 1,000 annotations (dry run)",
                           [json.dumps(review(big_pod(), dry_run=True)).encode()], 32, denied)
        bodies = [numbers_body(f"n{i}", "unread") for i in range(4)]
        size = len(bodies[0]) / MIB
        ok &= measure_serve(binary, tmp, f"/mutate, 4 concurrent {size:.1f} MiB reviews "
                            "(3.5 million unread numbers each)", bodies, 96, allowed)
        # Array items kvinject reads are kept whatever they hold (JSON Patch indexes): capped.
        bodies = [numbers_body(f"c{i}", "volumes") for i in range(4)]
        ok &= measure_serve(binary, tmp, f"/mutate, 4 concurrent {size:.1f} MiB reviews "
                            "(3.5 million numbers as volumes each)", bodies, 96, refused)
        ok &= measure_inject(binary, tmp, 32)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
