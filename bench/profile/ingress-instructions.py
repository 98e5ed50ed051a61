#!/usr/bin/env python3
"""Instructions per proxied request of one ferry binary under callgrind, Ingress hot path:
an nginx backend, one keep-alive connection, 100 warm-up requests, then N counted ones.

    bench/profile/ingress-instructions.py target/release/ferry [N] [extra ferry flags...]

(the access log is off unless the extra flags name `--access-log`)

The same method as bench/run's instructions scenario, without building anything: a quick check
that a change keeps the Ingress path's cost (needs nginx and valgrind)."""
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
    work = Path(tempfile.mkdtemp(prefix="ferry-prof-"))
    (work / "m").mkdir()
    (work / "m" / "app.yaml").write_text(manifest(BACKEND))
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
        send = keepalive_client(HTTP)
        send(100)
        subprocess.run(["callgrind_control", "-z", str(ferry.pid)], check=True, capture_output=True)
        send(n)
        subprocess.run(["callgrind_control", "-d", str(ferry.pid)], check=True, capture_output=True)
        dump = sorted(glob.glob(f"{out}.*.*"), key=lambda f: int(f.rsplit(".", 1)[1]))[-1]
        total = int(re.search(r"^(?:summary|totals): (\d+)", Path(dump).read_text(errors="replace"), re.M).group(1))
        print(f"{total / n:,.0f} instructions/request ({dump})")
    finally:
        ferry.terminate()
        ferry.wait()
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
