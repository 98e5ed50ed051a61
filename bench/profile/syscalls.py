#!/usr/bin/env python3
"""System calls per proxied request: ferry, nginx and HAProxy, each as one process/thread
proxying to an nginx backend, one keep-alive client connection, 100 warm-up requests, then N
counted ones under `strace -f -c` (attached after warm-up, detached before the proxy stops).

    bench/profile/syscalls.py target/release/ferry [N]

Prints a table of calls per request by system call for each proxy (needs nginx, haproxy and
strace). strace slows the proxy a lot; the counts, not the times, are the result."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import keepalive_client, manifest, wait_port

BACKEND, PORT = 18281, 18282


def proxies(work, ferry):
    """name -> command line of each measured proxy, listening on PORT."""
    (work / "nginx-proxy.conf").write_text(
        f"daemon off; master_process off; worker_processes 1; error_log {work}/np.err; pid {work}/np.pid;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off; keepalive_requests 1000000;\n"
        f"  upstream b {{ server 127.0.0.1:{BACKEND}; keepalive 16; }}\n"
        f"  server {{ listen 127.0.0.1:{PORT}; location / {{ proxy_pass http://b; proxy_http_version 1.1;\n"
        "    proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } } }\n")
    (work / "haproxy.cfg").write_text(
        "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n"
        "  timeout server 60s\n  option forwardfor\n  http-reuse always\n"
        f"frontend fe\n  bind 127.0.0.1:{PORT}\n  default_backend be\n"
        f"backend be\n  server s1 127.0.0.1:{BACKEND}\n")
    (work / "m").mkdir(exist_ok=True)
    (work / "m" / "app.yaml").write_text(manifest(BACKEND))
    return {
        "nginx": ["nginx", "-c", str(work / "nginx-proxy.conf"), "-e", f"{work}/np.err"],
        "haproxy": ["haproxy", "-f", str(work / "haproxy.cfg"), "-db"],
        "ferry": [ferry, "--manifests", str(work / "m"), "--http-addr", f"127.0.0.1:{PORT}", "--https-addr",
                  "127.0.0.1:18283", "--admin-addr", "127.0.0.1:18284", "--threads", "1", "--access-log", "off"],
    }


def count(cmd, n, work, name):
    proxy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORT)
        time.sleep(1)
        send = keepalive_client(PORT)
        send(100)
        out = work / f"strace-{name}"
        tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(proxy.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        send(n)
        time.sleep(0.5)
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
        calls = {}
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
        return calls
    finally:
        proxy.terminate()
        proxy.wait()


def main():
    ferry = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    work = Path(tempfile.mkdtemp(prefix="ferry-sys-"))
    os.chmod(work, 0o755)
    (work / "backend.conf").write_text(
        f"daemon off; worker_processes 1; error_log {work}/b.err; pid {work}/b.pid;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; keepalive_requests 1000000; server {{ listen 127.0.0.1:{BACKEND}; "
        "location / { return 200 \"ok\\n\"; } } }\n")
    backend = subprocess.Popen(["nginx", "-c", str(work / "backend.conf"), "-e", f"{work}/b.err"])
    try:
        wait_port(BACKEND)
        results = {name: count(cmd, n, work, name) for name, cmd in proxies(work, ferry).items()}
    finally:
        backend.terminate()
        backend.wait()
    names = sorted({s for r in results.values() for s in r}, key=lambda s: -max(r.get(s, 0) for r in results.values()))
    print(f"system calls per request ({n} keep-alive requests, one connection)\n")
    print("| system call | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for s in names:
        row = [results[p].get(s, 0) / n for p in results]
        if max(row) >= 0.005:
            print(f"| {s} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    print("| **total** | " + " | ".join(f"**{sum(r.values()) / n:.2f}**" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
