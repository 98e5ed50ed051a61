#!/usr/bin/env python3
"""Instructions per proxied request of one ferry binary under callgrind, Ingress hot path:
an nginx backend, one keep-alive connection, 100 warm-up requests, then N counted ones.

    bench/profile/ingress-instructions.py target/release/ferry [N] [--h2] [extra ferry flags...]

(the access log is off unless the extra flags name `--access-log`). `--h2`: HTTP/2 over TLS
instead, one stream at a time on one connection (h2load `-c1 -m1`); a request's cost is the
difference between a run of N+200 requests and one of 200 (the handshakes cancel). The last
callgrind dump is kept for `callgrind_annotate`.

The same method as bench/run's instructions scenario, without building anything: a quick check
that a change keeps the Ingress path's cost (needs nginx and valgrind)."""
import base64
import glob
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import keepalive_client, manifest, wait_port

BACKEND, HTTP, HTTPS, ADMIN = 18181, 18195, 18495, 19195


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    extra = sys.argv[3:]
    h2 = "--h2" in extra
    extra = [a for a in extra if a != "--h2"]
    work = Path(tempfile.mkdtemp(prefix="ferry-prof-"))
    (work / "m").mkdir()
    (work / "m" / "app.yaml").write_text(manifest(BACKEND))
    if h2:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=bench.test", "-days", "2", "-keyout", str(work / "key.pem"),
                        "-out", str(work / "cert.pem")], check=True, capture_output=True)
        crt, key = (base64.b64encode((work / f).read_bytes()).decode() for f in ("cert.pem", "key.pem"))
        (work / "m" / "secret.yaml").write_text(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: bench-tls, namespace: bench}\n"
            f"data: {{tls.crt: {crt}, tls.key: {key}}}\n")
        extra += ["--default-tls-secret", "bench/bench-tls"]
    (work / "nginx.conf").write_text(
        f"daemon off; master_process off; worker_processes 1; error_log {work}/nginx.err; pid {work}/nginx.pid;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{BACKEND}; location / {{ return 200 \"ok\\n\"; }} }} }}\n")
    nginx = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf")])
    out = work / "callgrind"
    ferry = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", binary, "--manifests", str(work / "m"),
         "--http-addr", f"127.0.0.1:{HTTP}", "--https-addr", f"127.0.0.1:{HTTPS}", "--admin-addr",
         f"127.0.0.1:{ADMIN}", "--threads", "1",
         *([] if "--access-log" in extra else ["--access-log", "off"]), *extra],
        stderr=subprocess.DEVNULL)
    try:
        wait_port(HTTP)
        time.sleep(2)

        def counted(run):
            """Instructions of `run()` alone, and the dump that has them."""
            subprocess.run(["callgrind_control", "-z", str(ferry.pid)], check=True, capture_output=True)
            run()
            subprocess.run(["callgrind_control", "-d", str(ferry.pid)], check=True, capture_output=True)
            dump = sorted(glob.glob(f"{out}.*.*"), key=lambda f: int(f.rsplit(".", 1)[1]))[-1]
            text = Path(dump).read_text(errors="replace")
            return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1)), dump

        if h2:
            def h2load(k):
                return lambda: subprocess.run(["h2load", "-n", str(k), "-c", "1", "-m", "1",
                                               f"https://127.0.0.1:{HTTPS}/"], check=True, capture_output=True)
            h2load(100)()
            short, _ = counted(h2load(200))
            total, dump = counted(h2load(200 + n))
            total -= short
        else:
            send = keepalive_client(HTTP)
            send(100)
            total, dump = counted(lambda: send(n))
        print(f"{total / n:,.0f} instructions/request ({dump})")
    finally:
        ferry.terminate()
        ferry.wait()
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
