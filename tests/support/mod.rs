//! Support for end-to-end tests: start the real `ferry` binary on ephemeral loopback ports with a
//! manifest directory, echo backends on 127.0.0.x, and manifest builders that read like YAML.
#![allow(dead_code)]

pub use ferry_echo::apiserver;

use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Ferry {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

/// A port on 127.0.0.1 that is free now; see [`free_ports_on`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_ports_on("127.0.0.1", 1).0))
}

/// `n` consecutive ports on 127.0.0.1 that are free now; see [`free_ports_on`].
pub fn free_port_range(n: u16) -> (u16, u16) {
    free_ports_on("127.0.0.1", n)
}

/// `n` (≤ 16) consecutive ports on `ip` that are free now, for ferry (or a test) to bind later.
/// They are below the kernel's ephemeral range (32768+), so that no client socket or backend
/// bound to port 0 takes them in the meantime, and every call in this process gets its own block
/// of 16 (a port the OS picked, released and handed to ferry could be given to a parallel test's
/// socket before ferry binds it: "Address already in use").
pub fn free_ports_on(ip: &str, n: u16) -> (u16, u16) {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BLOCK: u32 = 16;
    static CALLS: AtomicU32 = AtomicU32::new(0);
    assert!((1..=BLOCK as u16).contains(&n), "at most {BLOCK} ports at once");
    let blocks = 12_000 / BLOCK;
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let first = (20_000 + ((start.wrapping_add(call)) % blocks) * BLOCK) as u16;
        if (first..first + n).all(|p| TcpListener::bind((ip, p)).is_ok()) {
            return (first, first + n - 1);
        }
        assert!(call < 100_000, "no free port range");
    }
}

/// An address on `ip` on which nothing listens (free now, not in the ephemeral range).
pub fn closed_addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), free_ports_on(ip, 1).0)
}

impl Ferry {
    /// Starts ferry on `manifests` (a path under `dir`, created by the caller or not) with
    /// `extra` arguments. Does not wait for readiness.
    pub fn start_at(dir: tempfile::TempDir, manifests: &Path, extra: &[&str]) -> Ferry {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("--manifests").arg(manifests);
        Ferry::spawn(dir, cmd, extra)
    }

    /// Starts ferry in Kubernetes mode against `api` (through a kubeconfig). Does not wait.
    /// Kubernetes mode needs `--gateway-ports`: a free range is passed unless `extra` has one.
    pub fn start_kube(api: &apiserver::ApiServer, extra: &[&str]) -> Ferry {
        Ferry::start_kube_on(api, "127.0.0.1", extra)
    }

    /// [`Ferry::start_kube`] with every listener (Gateway ports too) on `ip`, so that replicas
    /// on one host can bind the same ports.
    pub fn start_kube_on(api: &apiserver::ApiServer, ip: &str, extra: &[&str]) -> Ferry {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.env("KUBECONFIG", api.kubeconfig()).env_remove("KUBERNETES_SERVICE_HOST");
        if !extra.contains(&"--gateway-ports") {
            let (first, last) = free_port_range(10);
            cmd.arg("--gateway-ports").arg(format!("{first}-{last}"));
        }
        Ferry::spawn_on(tempfile::tempdir().expect("tempdir"), cmd, ip, extra)
    }

    fn spawn(dir: tempfile::TempDir, cmd: Command, extra: &[&str]) -> Ferry {
        Ferry::spawn_on(dir, cmd, "127.0.0.1", extra)
    }

    fn spawn_on(dir: tempfile::TempDir, mut cmd: Command, ip: &str, extra: &[&str]) -> Ferry {
        let (first, _) = free_ports_on(ip, 3);
        let addr = |port| SocketAddr::new(ip.parse().expect("ip"), port);
        let (http, https, admin) = (addr(first), addr(first + 1), addr(first + 2));
        let log = dir.path().join("ferry.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .args(["--http-addr", &http.to_string()])
            .args(["--https-addr", &https.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--threads", "1"])
            .args(extra)
            .env("FERRY_LOG", "info,pingora_core=warn,pingora_proxy=warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ferry");
        Ferry { child, http, https, admin, dir, log }
    }

    /// Starts ferry on a fresh manifest directory holding `files` and waits until ready.
    pub async fn start(files: &[(&str, String)], extra: &[&str]) -> Ferry {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("mkdir");
        for (name, content) in files {
            std::fs::write(manifests.join(name), content).expect("write");
        }
        let f = Ferry::start_at(dir, &manifests, extra);
        f.wait_ready().await;
        f
    }

    /// Ferry serving one route: host `a.test`, Prefix `/` → Service `web` (an echo backend on
    /// 127.0.0.2), from Ingress `default/<ingress>`. Returns the backend's address too.
    pub async fn one_route(ingress_name: &str) -> (Ferry, SocketAddr) {
        let web = echo("127.0.0.2", "web").await;
        let files = docs(&[service("web", &[web]), ingress(ingress_name, &[("a.test", "Prefix", "/", "web")])]);
        (Ferry::start(&[("a.yaml", files)], &[]).await, web)
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// `ferry check --output json` over this instance's manifests (the build's diagnostics and,
    /// for Gateway API objects, the status each would get).
    pub async fn check_json(&self) -> serde_json::Value {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["check", "--output", "json", "--manifests"])
            .arg(self.manifests())
            .output()
            .await
            .expect("ferry check");
        serde_json::from_slice(&out.stdout).expect("check JSON")
    }

    /// Replaces a manifest file atomically (write + rename), as editors and ConfigMaps do.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).expect("create");
        f.write_all(content.as_bytes()).expect("write");
        f.sync_all().expect("sync");
        std::fs::rename(&tmp, self.manifests().join(name)).expect("rename");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn readyz(&self) -> Option<u16> {
        let url = format!("http://{}/readyz", self.admin);
        reqwest::get(url).await.ok().map(|r| r.status().as_u16())
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.readyz().await != Some(200) {
            assert!(Instant::now() < deadline, "ferry not ready in time; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn admin_get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.admin)).await.expect("admin").text().await.expect("body")
    }

    /// Plain HTTP/1.1 GET with a Host header.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        let resp =
            client().get(format!("http://{}{path}", self.http)).header("host", host).send().await.expect("request");
        Reply::read(resp).await
    }

    /// SIGKILL, as when a node dies.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill -s {name}");
    }

    /// Waits up to `limit` for the process to exit; its exit code, if it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ferry log ---\n{}", self.log());
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

/// A response, with the echo backend's JSON parsed when there is one.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub json: serde_json::Value,
    pub version: reqwest::Version,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let version = resp.version();
        let body = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        Reply { status, body, json, version }
    }

    /// The echo service that answered.
    pub fn service(&self) -> &str {
        self.json["service"].as_str().unwrap_or("")
    }

    pub fn endpoint(&self) -> &str {
        self.json["endpoint"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.json["headers"][name].as_str().unwrap_or("")
    }
}

/// Starts an echo backend named `name` on `ip` (any free port).
pub async fn echo(ip: &str, name: &str) -> SocketAddr {
    ferry_echo::spawn(&format!("{ip}:0"), name).await.expect("echo backend")
}

/// Polls `f` until it returns true (at most 10 s).
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), f).await
}

pub async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET over TLS to `host` (SNI and Host) at `addr`, trusting `roots`; returns the reply and the
/// DER of the certificate the server presented.
pub async fn get_tls(
    addr: SocketAddr,
    host: &str,
    roots: &[&str],
    h2: bool,
) -> Result<(Reply, Vec<u8>), reqwest::Error> {
    let mut b = reqwest::Client::builder().no_proxy().tls_info(true).resolve(host, addr).use_rustls_tls();
    for pem in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    if !h2 {
        b = b.http1_only();
    }
    let resp = b.build().unwrap().get(format!("https://{host}:{}/x", addr.port())).send().await?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
        .unwrap_or_default();
    Ok((Reply::read(resp).await, der))
}

pub fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate").to_vec()
}

// ---- L4 ----

/// A TCP backend that echoes everything and, after the client's end of stream, writes
/// `bye from NAME` and closes: the reply after the half-close proves the other direction stayed open.
pub async fn tcp_echo(ip: &str, name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if tokio::io::AsyncWriteExt::write_all(&mut s, &buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, format!("bye from {name}").as_bytes()).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
            });
        }
    });
    addr
}

/// A TCP Service `name` with port 5432 → the given endpoints (port name `tcp`).
pub fn tcp_service(name: &str, endpoints: &[SocketAddr]) -> String {
    service_on(name, "tcp", 5432, endpoints)
}

pub fn l4_route(name: &str, port: u16, sni: &[&str], service: &str, extra: &str) -> String {
    let sni = sni.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: L4Route\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  port: {port}\n  sni: [{sni}]\n  backend: {{service: {service}, port: 5432}}\n{extra}"
    )
}

/// Sends `data`, half-closes, returns everything read until EOF.
pub async fn l4_talk(port: u16, data: &[u8]) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return String::new() };
    let _ = tokio::io::AsyncWriteExt::write_all(&mut s, data).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

// ---- manifest builders ----

/// A Service with one port (`name`, number 80) and one EndpointSlice per endpoint (endpoints may
/// differ in port), in namespace `default`.
pub fn service(name: &str, endpoints: &[SocketAddr]) -> String {
    service_on(name, "http", 80, endpoints)
}

/// A Service with one port `port_name`/`port` and one ready EndpointSlice per endpoint.
fn service_on(name: &str, port_name: &str, port: u16, endpoints: &[SocketAddr]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports:\n  - {{name: {port_name}, port: {port}}}\n"
    );
    for (i, ep) in endpoints.iter().enumerate() {
        out += &endpoint_slice(&format!("{name}-{i}"), name, port_name, ep, "ready: true");
    }
    out
}

pub fn endpoint_slice(slice: &str, svc: &str, port_name: &str, ep: &SocketAddr, conditions: &str) -> String {
    let family = if ep.is_ipv4() { "IPv4" } else { "IPv6" };
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: {family}\nports:\n- {{name: {port_name}, port: {}}}\nendpoints:\n- addresses: [\"{}\"]\n  conditions: {{{conditions}}}\n",
        ep.port(),
        ep.ip()
    )
}

/// An Ingress of class `ferry` with rules `(host, pathType, path, service)`.
pub fn ingress(name: &str, rules: &[(&str, &str, &str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ingressClassName: ferry\n  rules:\n"
    );
    for (host, kind, path, svc) in rules {
        let host = if host.is_empty() { String::new() } else { format!("host: \"{host}\"\n    ") };
        out += &format!(
            "  - {host}http:\n      paths:\n      - {{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
        );
    }
    out
}

/// The `---`-joined concatenation of manifests.
pub fn docs(parts: &[String]) -> String {
    parts.iter().map(|p| p.trim_start_matches("---\n").to_string()).collect::<Vec<_>>().join("\n---\n")
}

/// One HTTP/1.1 connection kept open across requests, to prove a connection survives.
pub struct RawConn {
    stream: Box<dyn RawStream>,
    buf: Vec<u8>,
}

/// A byte stream `RawConn` can talk over: plain TCP, or TLS (`TlsStream`).
pub trait RawStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawStream for T {}

impl RawConn {
    pub async fn open(addr: SocketAddr) -> RawConn {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Small writes go out at once, so split writes arrive as separate reads.
        stream.set_nodelay(true).expect("nodelay");
        RawConn { stream: Box::new(stream), buf: Vec::new() }
    }

    /// A connection over any stream (e.g. a `TlsStream`).
    pub fn over(stream: impl RawStream + 'static) -> RawConn {
        RawConn { stream: Box::new(stream), buf: Vec::new() }
    }

    /// A TLS connection to `addr` with SNI `sni` and ALPN `alpn` (certificate not verified).
    pub async fn open_tls(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> std::io::Result<RawConn> {
        Ok(RawConn::over(TlsStream::connect(addr, sni, alpn).await?))
    }

    /// Opens a connection from a chosen local address (e.g. `127.0.0.5`).
    pub async fn open_from(addr: SocketAddr, ip: &str) -> RawConn {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(ip.parse().expect("ip"), 0)).expect("bind");
        let stream = socket.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawConn { stream: Box::new(stream), buf: Vec::new() }
    }

    /// Whether the server closes the connection (end of stream) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Every byte the server sends until it closes the connection (what is buffered first), or
    /// `None` if it is still open after `limit`: for close-delimited responses.
    pub async fn read_to_close(&mut self, limit: Duration) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(std::mem::take(&mut self.buf)),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Sends raw bytes and reads one response (Content-Length or chunked framing). Returns status, headers
    /// (lower-cased names) and body; status 0 if the connection closed first.
    pub async fn exchange(&mut self, request: &[u8]) -> (u16, String, String) {
        if !self.send(request).await {
            return (0, String::new(), String::new());
        }
        self.read_response().await
    }

    /// Writes `bytes` (and flushes); false if the connection is gone.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Writes `pieces` one after another with `gap` between them, so each lands in its own read
    /// on the other side; false if the connection broke on the way.
    pub async fn send_pieces(&mut self, pieces: &[&[u8]], gap: Duration) -> bool {
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            if !piece.is_empty() && !self.send(piece).await {
                return false;
            }
        }
        true
    }

    /// Reads one response (see `exchange`).
    pub async fn read_response(&mut self) -> (u16, String, String) {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return (0, String::new(), String::new()),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_lowercase();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        self.buf.drain(..head_end);
        let body = if head.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !self.fill(&mut chunk).await {
                        return (status, head, String::from_utf8_lossy(&body).into_owned());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
                while self.buf.len() < line_end + 2 + size + 2 {
                    if !self.fill(&mut chunk).await {
                        break;
                    }
                }
                let end = (line_end + 2 + size).min(self.buf.len());
                body.extend_from_slice(&self.buf[line_end + 2..end]);
                self.buf.drain(..(end + 2).min(self.buf.len()));
                if size == 0 {
                    break;
                }
            }
            String::from_utf8_lossy(&body).into_owned()
        } else {
            // 1xx, 204 and 304 have no body; otherwise Content-Length frames it.
            let len: usize = if status < 200 || status == 204 || status == 304 {
                0
            } else {
                head.lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            while self.buf.len() < len {
                if !self.fill(&mut chunk).await {
                    break;
                }
            }
            let body = String::from_utf8_lossy(&self.buf[..len.min(self.buf.len())]).into_owned();
            self.buf.drain(..len.min(self.buf.len()));
            body
        };
        (status, head, body)
    }

    async fn fill(&mut self, chunk: &mut [u8]) -> bool {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ferry-tests\r\n\r\n");
        let (status, _, body) = self.exchange(req.as_bytes()).await;
        (status, body)
    }
}

// ---- HTTP safety: recording backends, raw TLS, launch checks ----

impl Ferry {
    /// Like `start`, but fails at once (with the log) when ferry exits instead of becoming ready,
    /// e.g. because a flag is unknown.
    pub async fn launch(files: &[(&str, String)], extra: &[&str]) -> Ferry {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("mkdir");
        for (name, content) in files {
            std::fs::write(manifests.join(name), content).expect("write");
        }
        let mut f = Ferry::start_at(dir, &manifests, extra);
        let deadline = Instant::now() + Duration::from_secs(20);
        while f.readyz().await != Some(200) {
            if let Some(status) = f.child.try_wait().expect("wait") {
                panic!("ferry {extra:?} exited ({status}) before it was ready; log:\n{}", f.log());
            }
            assert!(Instant::now() < deadline, "ferry not ready in time; log:\n{}", f.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f
    }
}

/// Whether the e2e run uses Pingora's HTTP/1 engine (`FERRY_HTTP1_ENGINE=pingora`).
pub fn pingora_engine() -> bool {
    std::env::var("FERRY_HTTP1_ENGINE").as_deref() == Ok("pingora")
}

/// A Service (port 80, name `http`) whose port declares `appProtocol` (e.g. `kubernetes.io/h2c`).
pub fn service_with_app_protocol(name: &str, endpoints: &[SocketAddr], app_protocol: &str) -> String {
    service(name, endpoints).replacen(
        "{name: http, port: 80}",
        &format!("{{name: http, port: 80, appProtocol: {app_protocol}}}"),
        1,
    )
}

/// An Ingress like `ingress()` with `annotations` (YAML flow-map entries, e.g.
/// `ferry.dev/max-body-size: "100"`).
pub fn ingress_annotated(name: &str, rules: &[(&str, &str, &str, &str)], annotations: &str) -> String {
    ingress(name, rules).replacen(
        "namespace: default}",
        &format!("namespace: default, annotations: {{{annotations}}}}}"),
        1,
    )
}

/// Appends a `tls:` section (`hosts` with `secret`) to an Ingress manifest.
pub fn with_tls(ingress: String, hosts: &[&str], secret: &str) -> String {
    let hosts = hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
    format!("{ingress}  tls:\n  - hosts: [{hosts}]\n    secretName: {secret}\n")
}

/// Values of every header field `name` (case-insensitive) in an HTTP/1 head, trimmed, in order.
pub fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .collect()
}

/// One request as a `RecordingBackend` parsed it.
#[derive(Clone, Default)]
pub struct ParsedRequest {
    /// Request line and header fields, up to and including the blank line, as received.
    pub head: String,
    /// The body, decoded (chunk framing removed).
    pub body: Vec<u8>,
    /// The body as framed on the wire (chunk sizes, extensions, last chunk and trailers included).
    pub raw_body: Vec<u8>,
    /// Index of the upstream connection it came on (see `RecordingBackend::connections`).
    pub conn: usize,
}

impl std::fmt::Debug for ParsedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |b: &[u8]| {
            let t = String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned();
            if b.len() > 300 {
                format!("{t}… ({} bytes)", b.len())
            } else {
                t
            }
        };
        f.debug_struct("ParsedRequest")
            .field("conn", &self.conn)
            .field("head", &cut(self.head.as_bytes()))
            .field("body", &cut(&self.body))
            .field("raw_body", &cut(&self.raw_body))
            .finish()
    }
}

impl ParsedRequest {
    /// The request line (`GET /x HTTP/1.1`).
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or("")
    }

    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.head, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.headers(name).is_empty()
    }
}

/// A raw HTTP/1.1 backend that records exactly the bytes it receives on each connection and
/// parses requests itself (head up to CRLFCRLF; body by chunked decoding when `Transfer-Encoding`
/// ends in `chunked`, else by `Content-Length`), answering each with `200 OK`, a `Content-Length`
/// body `request N` (N counts parsed requests from 1) and keep-alive. Anything ahead of a
/// CRLFCRLF counts as a request, so bytes smuggled after a body show up as an extra request. A
/// framing error (bad chunk) is recorded in `errors()` and the connection is closed.
#[derive(Clone)]
pub struct RecordingBackend {
    pub addr: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<ParsedRequest>>>,
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

enum Chunked {
    Incomplete,
    Done { consumed: usize, decoded: Vec<u8> },
    Invalid(String),
}

/// Decodes a complete chunked body at the start of `buf` (strict: hex sizes, CRLF line ends).
fn decode_chunked(buf: &[u8]) -> Chunked {
    let mut at = 0;
    let mut decoded = Vec::new();
    let line = |from: usize| buf[from..].windows(2).position(|w| w == b"\r\n").map(|i| from + i);
    loop {
        let Some(end) = line(at) else {
            return if buf[at..].len() > 1024 || buf[at..].contains(&b'\n') {
                Chunked::Invalid(format!(
                    "bad chunk-size line {:?}",
                    String::from_utf8_lossy(&buf[at..buf.len().min(at + 40)])
                ))
            } else {
                Chunked::Incomplete
            };
        };
        let size_line = &buf[at..end];
        let digits = size_line.split(|b| *b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| usize::from_str_radix(d, 16).ok());
        let Some(size) = size else {
            return Chunked::Invalid(format!("bad chunk size {:?}", String::from_utf8_lossy(size_line)));
        };
        at = end + 2;
        if size == 0 {
            // Trailer section: header lines up to an empty line.
            loop {
                let Some(end) = line(at) else {
                    return Chunked::Incomplete;
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Chunked::Done { consumed: at, decoded };
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Chunked::Incomplete;
        }
        decoded.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Chunked::Invalid("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}

impl RecordingBackend {
    /// Starts a recording backend on `ip` (any free port).
    pub async fn start(ip: &str) -> RecordingBackend {
        RecordingBackend::start_with(ip, "").await
    }

    /// Like `start`, with `extra_headers` (complete lines, each ending in CRLF) in every response.
    pub async fn start_with(ip: &str, extra_headers: &str) -> RecordingBackend {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.expect("bind recording backend");
        let backend = RecordingBackend {
            addr: listener.local_addr().expect("addr"),
            conns: Default::default(),
            requests: Default::default(),
            errors: Default::default(),
        };
        let b = backend.clone();
        let extra = extra_headers.to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let b = b.clone();
                let extra = extra.clone();
                tokio::spawn(async move {
                    let conn = {
                        let mut conns = b.conns.lock().unwrap();
                        conns.push(Vec::new());
                        conns.len() - 1
                    };
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        // Parse every complete request in the buffer.
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head_end = i + 4;
                            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                            let te = header_values(&head, "transfer-encoding").join(",");
                            let chunked =
                                te.rsplit(',').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
                            let (consumed, decoded) = if chunked {
                                match decode_chunked(&buf[head_end..]) {
                                    Chunked::Incomplete => break,
                                    Chunked::Done { consumed, decoded } => (consumed, decoded),
                                    Chunked::Invalid(e) => {
                                        b.errors.lock().unwrap().push(e);
                                        return;
                                    }
                                }
                            } else {
                                let len = header_values(&head, "content-length")
                                    .first()
                                    .and_then(|v| v.parse::<usize>().ok())
                                    .unwrap_or(0);
                                if buf.len() < head_end + len {
                                    break;
                                }
                                (len, buf[head_end..head_end + len].to_vec())
                            };
                            let raw_body = buf[head_end..head_end + consumed].to_vec();
                            buf.drain(..head_end + consumed);
                            let is_head = head.starts_with("HEAD ");
                            let n = {
                                let mut requests = b.requests.lock().unwrap();
                                requests.push(ParsedRequest { head, body: decoded, raw_body, conn });
                                requests.len()
                            };
                            let body = format!("request {n}");
                            let mut reply = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\r\n",
                                body.len()
                            );
                            if !is_head {
                                reply += &body;
                            }
                            if s.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                b.conns.lock().unwrap()[conn].extend_from_slice(&chunk[..n]);
                                buf.extend_from_slice(&chunk[..n]);
                            }
                        }
                    }
                });
            }
        });
        backend
    }

    /// Every byte received, all connections concatenated (in connection order).
    pub fn received(&self) -> Vec<u8> {
        self.conns.lock().unwrap().concat()
    }

    /// The bytes received on each connection.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.conns.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<ParsedRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Framing errors met (each closed its connection).
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// `received()` as text (lossy), for assertion messages.
    pub fn received_text(&self) -> String {
        String::from_utf8_lossy(&self.received()).into_owned()
    }
}

/// One request stream as an `H2RecordingBackend` saw it.
#[derive(Clone, Default)]
pub struct H2Request {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    /// Regular header fields (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes received so far.
    pub body: Vec<u8>,
    /// The client ended the stream (END_STREAM): the body is complete.
    pub ended: bool,
    /// The stream was reset, or its connection lost, before END_STREAM.
    pub reset: bool,
}

impl std::fmt::Debug for H2Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Request")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body", &String::from_utf8_lossy(&self.body[..self.body.len().min(100)]))
            .field("ended", &self.ended)
            .field("reset", &self.reset)
            .finish()
    }
}

impl H2Request {
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }
}

/// An h2c (prior-knowledge HTTP/2) backend that records each stream's pseudo-headers, headers and
/// body as they arrive, and whether the stream ended or was reset; it answers `200` with body
/// `h2 ok` once a stream's body is complete. Declare its Service port with `appProtocol:
/// kubernetes.io/h2c` (`service_with_app_protocol`).
#[derive(Clone)]
pub struct H2RecordingBackend {
    pub addr: SocketAddr,
    streams: std::sync::Arc<std::sync::Mutex<Vec<H2Request>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl H2RecordingBackend {
    pub async fn start(ip: &str) -> H2RecordingBackend {
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.expect("bind h2 backend");
        let backend = H2RecordingBackend {
            addr: listener.local_addr().expect("addr"),
            streams: Default::default(),
            connections: Default::default(),
        };
        let b = backend.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                b.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let b = b.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else { return };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        let streams = b.streams.clone();
                        tokio::spawn(H2RecordingBackend::serve_stream(streams, req, respond));
                    }
                });
            }
        });
        backend
    }

    async fn serve_stream(
        streams: std::sync::Arc<std::sync::Mutex<Vec<H2Request>>>,
        req: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<bytes::Bytes>,
    ) {
        let (parts, mut body) = req.into_parts();
        let record = H2Request {
            method: parts.method.to_string(),
            scheme: parts.uri.scheme_str().unwrap_or("").to_string(),
            authority: parts.uri.authority().map(|a| a.to_string()).unwrap_or_default(),
            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            ..Default::default()
        };
        let i = {
            let mut s = streams.lock().unwrap();
            s.push(record);
            s.len() - 1
        };
        loop {
            match body.data().await {
                Some(Ok(data)) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    streams.lock().unwrap()[i].body.extend_from_slice(&data);
                }
                Some(Err(_)) => {
                    streams.lock().unwrap()[i].reset = true;
                    return;
                }
                None => break,
            }
        }
        streams.lock().unwrap()[i].ended = true;
        let response = http::Response::builder().status(200).header("content-length", "5").body(()).unwrap();
        if let Ok(mut send) = respond.send_response(response, false) {
            let _ = send.send_data(bytes::Bytes::from_static(b"h2 ok"), true);
        }
    }

    pub fn requests(&self) -> Vec<H2Request> {
        self.streams.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Accepts any server certificate (the tests look at what was presented, not whether it chains).
#[derive(Debug)]
struct AcceptAnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A minimal TLS client stream (rustls over tokio TCP) with a chosen SNI and ALPN, which accepts
/// any certificate. Implements `AsyncRead`/`AsyncWrite`, so `RawConn::over` and
/// `h2::client::handshake` run over it.
pub struct TlsStream {
    tcp: tokio::net::TcpStream,
    tls: rustls::ClientConnection,
    out: Vec<u8>,
}

impl TlsStream {
    /// Connects and completes the handshake.
    pub async fn connect(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> std::io::Result<TlsStream> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
        let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(std::io::Error::other)?;
        let mut stream = TlsStream { tcp, tls, out: Vec::new() };
        let handshake = std::future::poll_fn(|cx| stream.poll_handshake(cx));
        tokio::time::timeout(Duration::from_secs(10), handshake)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(stream)
    }

    /// The certificate the server presented (DER).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec())
    }

    /// The ALPN protocol agreed on.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.alpn_protocol().map(<[u8]>::to_vec)
    }

    fn poll_handshake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            match self.poll_flush_tls(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
            }
            if !self.tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match self.poll_read_tls(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    )))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Moves everything rustls has to send into `out` and writes `out` to the socket.
    fn poll_flush_tls(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            while self.tls.wants_write() {
                self.tls.write_tls(&mut self.out)?;
            }
            if self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            match tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.tcp), cx, &self.out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.out.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads from the socket into rustls; `Ok(0)` at end of stream.
    fn poll_read_tls(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let mut raw = [0u8; 16 * 1024];
        let mut rb = tokio::io::ReadBuf::new(&mut raw);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.tcp), cx, &mut rb) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let mut filled = rb.filled();
        let n = filled.len();
        while !filled.is_empty() {
            self.tls.read_tls(&mut filled)?;
            self.tls.process_new_packets().map_err(std::io::Error::other)?;
        }
        Poll::Ready(Ok(n))
    }
}

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read as _;
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Poll::Ready(Err(e)) = this.poll_flush_tls(cx) {
                return Poll::Ready(Err(e));
            }
            match this.tls.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: end of stream as far as the tests care.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
            match this.poll_read_tls(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.out.len() > 256 * 1024 {
            match this.poll_flush_tls(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = std::io::Write::write(&mut this.tls.writer(), data)?;
        if let Poll::Ready(Err(e)) = this.poll_flush_tls(cx) {
            return Poll::Ready(Err(e));
        }
        if n == 0 && !data.is_empty() {
            // rustls's buffer is full: try again once the flush above made room.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.poll_flush_tls(cx) {
            std::task::Poll::Ready(Ok(())) => tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut this.tcp), cx),
            other => other,
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        match this.poll_flush_tls(cx) {
            std::task::Poll::Ready(Ok(())) => {
                tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut this.tcp), cx)
            }
            other => other,
        }
    }
}
