//! Support for end-to-end tests: start the real `ferry` binary on ephemeral loopback ports with a
//! manifest directory, echo backends on 127.0.0.x, and manifest builders that read like YAML.
#![allow(dead_code)]

pub mod apiserver;

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

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// An address on which nothing listens (bound once, then released).
pub fn closed_addr(ip: &str) -> SocketAddr {
    let l = TcpListener::bind(format!("{ip}:0")).expect("bind");
    l.local_addr().expect("addr")
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
    pub fn start_kube(api: &apiserver::ApiServer, extra: &[&str]) -> Ferry {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.env("KUBECONFIG", api.kubeconfig()).env_remove("KUBERNETES_SERVICE_HOST");
        Ferry::spawn(tempfile::tempdir().expect("tempdir"), cmd, extra)
    }

    fn spawn(dir: tempfile::TempDir, mut cmd: Command, extra: &[&str]) -> Ferry {
        let (http, https, admin) = (free_addr(), free_addr(), free_addr());
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
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn open(addr: SocketAddr) -> RawConn {
        RawConn { stream: tokio::net::TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    /// Opens a connection from a chosen local address (e.g. `127.0.0.5`).
    pub async fn open_from(addr: SocketAddr, ip: &str) -> RawConn {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(ip.parse().expect("ip"), 0)).expect("bind");
        RawConn { stream: socket.connect(addr).await.expect("connect"), buf: Vec::new() }
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

    /// Sends raw bytes and reads one response (Content-Length or chunked framing). Returns status, headers
    /// (lower-cased names) and body; status 0 if the connection closed first.
    pub async fn exchange(&mut self, request: &[u8]) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.write_all(request).await.is_err() {
            return (0, String::new(), String::new());
        }
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
