#!/usr/bin/env python3
"""Manifest mode, ferry binaries side by side in one run: the initial load of 10,000 Ingresses and
the time from a new Ingress file renamed into place to the first request it serves (15 per round,
3 interleaved rounds), each binary pinned to core 0 with one worker thread.

    bench/profile/propagation-ab.py OLD_FERRY NEW_FERRY

bench/run's propagation scenario measures one binary; this compares two in the same conditions,
which a noisy host needs for a difference of tens of milliseconds. The manifests, the readiness
wait, the request and the atomic file write are bench/run's own."""
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

bench = SourceFileLoader("bench_run", str(Path(__file__).resolve().parent.parent / "run")).load_module()
HTTP, HTTPS, ADMIN = 18990, 18991, "127.0.0.1:19990"


def main():
    bins = sys.argv[1:]
    d = Path(tempfile.mkdtemp(prefix="ferry-prop-"))
    (d / "base.yaml").write_text(bench.bulk_manifest(10_000))
    src = bench.ManifestSource(d)
    res = {b: {"load": [], "new": []} for b in bins}
    try:
        for _ in range(3):
            for b in bins:
                for f in d.glob("new*.yaml"):
                    f.unlink()
                t0 = time.perf_counter()
                p = subprocess.Popen(["taskset", "-c", "0", b, "--manifests", str(d), "--http-addr",
                                      f"127.0.0.1:{HTTP}", "--https-addr", f"127.0.0.1:{HTTPS}", "--admin-addr", ADMIN,
                                      "--threads", "1", "--access-log", "off"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    bench.wait_ready(ADMIN)
                    res[b]["load"].append(time.perf_counter() - t0)
                    time.sleep(1)
                    for i in range(15):
                        host = f"new{i}.test"
                        src.apply(f"new{i}", f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: new{i}, namespace: ns0}}
spec:
  ingressClassName: ferry
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc0, port: {{number: 80}}}}}}}}
""")
                        t = bench.wait_until(lambda: bench.http_get(HTTP, host)[0] != 404)
                        res[b]["new"].append(t * 1e3 if t is not None else float("inf"))
                        time.sleep(0.3)
                finally:
                    p.terminate()
                    p.wait()
    finally:
        shutil.rmtree(d)
    for b in bins:
        n = sorted(res[b]["new"])
        loads = res[b]["load"]
        print(f"{b}: initial load median {statistics.median(loads):.2f}s {['%.2f' % x for x in loads]}; "
              f"new Ingress p50 {statistics.median(n):.1f} ms p90 {n[int(len(n) * 0.9)]:.1f} ms max {n[-1]:.1f} ms "
              f"(n={len(n)})")


if __name__ == "__main__":
    main()
