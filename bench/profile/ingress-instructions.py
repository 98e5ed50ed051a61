import socket, subprocess, time, sys, glob, os, re
binary = sys.argv[1]; out = sys.argv[2]
subprocess.Popen(["nginx", "-c", "/tmp/prof/nginx.conf"])
time.sleep(0.5)
p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", binary, "--manifests", "/tmp/prof/m",
    "--http-addr", "127.0.0.1:18195", "--https-addr", "127.0.0.1:18495", "--admin-addr", "127.0.0.1:19195", "--threads", "1",
    "--access-log", "off"] + sys.argv[3:], stderr=subprocess.DEVNULL)
for _ in range(600):
    try:
        socket.create_connection(("127.0.0.1", 18195)).close(); break
    except OSError: time.sleep(0.2)
time.sleep(2)
c = socket.create_connection(("127.0.0.1", 18195))
req = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n"
def send(k):
    for _ in range(k):
        c.sendall(req); b = b""
        while not b.endswith(b"ok\n"): b += c.recv(4096)
send(100)
subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True)
send(2000)
subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True)
p.terminate(); p.wait()
subprocess.run(["pkill", "-f", "nginx -c /tmp/prof/nginx.conf"])
f = sorted(glob.glob(f"{out}.*.*"))[-1]
t = int(re.search(r"^(?:summary|totals): (\d+)", open(f).read(), re.M).group(1))
print(f, t / 2000)
