#!/usr/bin/env python3
"""Manifest mode, ferry binaries side by side in one run: the initial load of 10,000 Ingresses and
the time from a new Ingress file renamed into place to the first request it serves (15 per round,
3 interleaved rounds), each binary pinned to core 0 with one worker thread.

    bench/profile/propagation-ab.py OLD_FERRY NEW_FERRY

bench/run's propagation scenario measures one binary; this compares two in the same conditions,
which a noisy host needs for a difference of tens of milliseconds."""
import os, shutil, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
bins = sys.argv[1:]
M = tempfile.mkdtemp(prefix="ferry-prop-")
_loader = __import__("importlib.machinery").machinery.SourceFileLoader("benchrun", str(Path(__file__).resolve().parent.parent / "run"))
open(os.path.join(M, "base.yaml"), "w").write(_loader.load_module().bulk_manifest(10_000))
def get(host):
    s = socket.create_connection(("127.0.0.1", 18990), timeout=2)
    s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    d = b""
    while True:
        c = s.recv(4096)
        if not c: break
        d += c
    s.close()
    return d.split(b" ", 2)[1]
def ready():
    try:
        s = socket.create_connection(("127.0.0.1", 19990), timeout=1)
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        ok = b" 200 " in s.recv(100); s.close(); return ok
    except OSError:
        return False
res = {b: {"load": [], "new": []} for b in bins}
for rnd in range(3):
    for b in bins:
        for f in os.listdir(M):
            if f != "base.yaml": os.remove(os.path.join(M, f))
        t0 = time.perf_counter()
        p = subprocess.Popen(["taskset", "-c", "0", b, "--manifests", M, "--http-addr", "127.0.0.1:18990",
                              "--https-addr", "127.0.0.1:18991", "--admin-addr", "127.0.0.1:19990", "--threads", "1",
                              "--access-log", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not ready(): time.sleep(0.01)
        res[b]["load"].append(time.perf_counter() - t0)
        time.sleep(1)
        for i in range(15):
            t = os.path.join(M, f".n{i}.tmp")
            open(t, "w").write(f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: new{i}, namespace: ns0}}\nspec:\n  ingressClassName: ferry\n  rules:\n  - host: new{i}.test\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc0, port: {{number: 80}}}}}}}}\n")
            t1 = time.perf_counter(); os.rename(t, f"{M}/new{i}.yaml")
            while get(f"new{i}.test") == b"404": time.sleep(0.0005)
            res[b]["new"].append((time.perf_counter() - t1) * 1e3)
            time.sleep(0.3)
        p.terminate(); p.wait()
for b in bins:
    n = sorted(res[b]["new"])
    print(f"{b}: initial load median {statistics.median(res[b]['load']):.2f}s {['%.2f' % x for x in res[b]['load']]}; "
          f"new Ingress p50 {statistics.median(n):.1f} ms p90 {n[int(len(n)*0.9)]:.1f} ms max {n[-1]:.1f} ms (n={len(n)})")
shutil.rmtree(M)
