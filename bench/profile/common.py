"""What the profile scripts share: the bench Ingress for ferry and a keep-alive client."""
import socket
import sys
import time


def manifest(backend_port):
    """Service `bench/backend` on 127.0.0.1:`backend_port`, and an Ingress sending every host's
    `/` to it."""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: bench}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: backend-1, namespace: bench, labels: {{kubernetes.io/service-name: backend}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: bench, namespace: bench}}
spec:
  ingressClassName: ferry
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: backend, port: {{number: 80}}}}}}}}
"""


def wait_port(port, limit=120.0):
    """Waits until 127.0.0.1:`port` accepts connections."""
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"port {port} never opened")


def keepalive_client(port):
    """A function sending k `GET /` requests one after another on one connection to `port`,
    each read to the backend's `ok\\n`."""
    conn = socket.create_connection(("127.0.0.1", port))
    request = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n"

    def send(k):
        for _ in range(k):
            conn.sendall(request)
            buf = b""
            while not buf.endswith(b"ok\n"):
                buf += conn.recv(4096)

    return send
