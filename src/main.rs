//! The `ferry` binary: command line, wiring of control plane and data plane, admin server.
//!
//! Threads: Pingora owns the main thread and one runtime per listener; the control plane
//! (sources, builds) and the admin server run on their own small tokio runtime, so a slow build
//! never competes with request handling on the same scheduler. The two sides share only the
//! `ArcSwap<RouteTable>`, the metrics registry and the readiness flag.

mod admin;
mod check;
mod gateways;

// Allocation is a large share of Pingora's per-request cost; bench/run compares the allocators.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the memory a whole build left free back to the system. Reading the objects (YAML
/// documents and values) frees far more than the table keeps, and mimalloc returns a thread's
/// free pages only while that thread goes on allocating; the control plane's thread then waits
/// for the next change. At 10,000 Ingresses from files that is about 11 MiB of RSS.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
fn release_free_memory() {
    // SAFETY: mi_collect takes no arguments to trust; it frees this thread's unused pages.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// The system allocator and jemalloc (which purges on its own) need no help.
#[cfg(not(all(feature = "mimalloc", not(feature = "jemalloc"))))]
fn release_free_memory() {}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. mimalloc advises the kernel to back the memory it maps with 2 MiB pages; such a
/// page is zeroed whole when first touched, however little of it is used. Loading 50,000
/// Ingresses through the API, a third of ferry's CPU was the kernel zeroing huge pages; serving
/// one route under load, ferry held 36–38 MiB instead of 24–27. mimalloc's own switch
/// (`MIMALLOC_ALLOW_THP=0`) is read before `main`, too late to set here; the process-wide flag
/// also covers memory mapped and advised before `main`. A failure costs only memory and time.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc"), target_os = "linux"))]
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integers and touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Only mimalloc asks for huge pages.
#[cfg(not(all(feature = "mimalloc", not(feature = "jemalloc"), target_os = "linux")))]
fn no_huge_pages() {}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::{Args, Parser, Subcommand};
use controller::{BuildOptions, Publisher};
use gateway::h1::H1App;
use gateway::http::{Gateway, Timeouts};
use gateway::l4_server::{GatewayL4App, L4Server, PortApp};
use gateway::limits::ConnLimiter;
use gateway::listener::{Accepting, Limited};
use gateway::{Metrics, RouteTable, SharedTable, SniResolver};
use pingora::apps::HttpServerOptions;
use pingora::connectors::ConnectorOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};

/// Kubernetes ingress controller and gateway in one process.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile manifests and print every diagnostic; exit 1 if anything was skipped.
    Check(Box<check::CheckArgs>),
    /// Print the CustomResourceDefinitions of ferry's own kinds (L4Route) as YAML.
    Crd,
    /// Print the annotations ferry reads (Markdown tables): its own, and the ingress-nginx ones
    /// `--nginx-annotations` maps onto them.
    Annotations,
}

/// Which objects are ours and how they compile (shared by serving and `check`).
#[derive(Debug, Clone, Args)]
struct ClassArgs {
    /// IngressClass name this instance serves.
    #[arg(long, env = "FERRY_INGRESS_CLASS", default_value = "ferry")]
    ingress_class: String,
    /// `IngressClass.spec.controller` value that is ours.
    #[arg(long, env = "FERRY_CONTROLLER_NAME", default_value = "ferry.dev/ingress-controller")]
    controller_name: String,
    /// `GatewayClass.spec.controllerName` value that is ours (Gateway API).
    #[arg(long, env = "FERRY_GATEWAY_CONTROLLER_NAME", default_value = "ferry.dev/gateway-controller")]
    gateway_controller_name: String,
    /// Certificate (a `kubernetes.io/tls` Secret, NAMESPACE/NAME) when no SNI matches.
    #[arg(long, env = "FERRY_DEFAULT_TLS_SECRET", value_name = "NS/NAME", value_parser = parse_ns_name)]
    default_tls_secret: Option<(String, String)>,
    /// TCP ports served at L4 (comma-separated), on the address of --http-addr; L4Routes choose
    /// among them.
    #[arg(long, env = "FERRY_L4_PORTS", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    l4_ports: Vec<u16>,
    /// Route to ExternalName Services (their DNS name, resolved by the gateway). Off by default:
    /// with it, anyone who may create a Service can make the gateway connect to any host it can
    /// reach (server-side request forgery).
    #[arg(long, env = "FERRY_ALLOW_EXTERNAL_NAME")]
    allow_external_name: bool,
    /// Honour the `nginx.ingress.kubernetes.io/*` annotations that map onto ferry's (see the
    /// README's table); the others are reported as unsupported.
    #[arg(long, env = "FERRY_NGINX_ANNOTATIONS")]
    nginx_annotations: bool,
}

impl ClassArgs {
    fn build_options(&self) -> BuildOptions {
        BuildOptions {
            ingress_class: self.ingress_class.clone(),
            controller_name: self.controller_name.clone(),
            gateway_controller_name: self.gateway_controller_name.clone(),
            default_tls_secret: self.default_tls_secret.clone(),
            l4_ports: self.l4_ports.iter().copied().collect(),
            allow_external_name: self.allow_external_name,
            nginx_annotations: self.nginx_annotations,
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// File or directory of YAML/JSON Kubernetes objects (repeatable); watched. When given, no
    /// Kubernetes API is used.
    #[arg(long, env = "FERRY_MANIFESTS", value_delimiter = ',')]
    manifests: Vec<PathBuf>,
    /// Plaintext HTTP/1.1 and h2c listener.
    #[arg(long, env = "FERRY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// TLS listener (certificate by SNI; ALPN h2, http/1.1).
    #[arg(long, env = "FERRY_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    https_addr: SocketAddr,
    /// Admin listener: /healthz, /readyz, /metrics, /routes.
    #[arg(long, env = "FERRY_ADMIN_ADDR", default_value = "127.0.0.1:9180")]
    admin_addr: SocketAddr,
    /// Restrict watches to these namespaces (repeatable; Kubernetes mode).
    #[arg(long, env = "FERRY_WATCH_NAMESPACE", value_delimiter = ',')]
    watch_namespace: Vec<String>,
    /// Service whose LoadBalancer address is written to Ingress status (Kubernetes mode).
    #[arg(long, env = "FERRY_PUBLISH_SERVICE", value_name = "NS/NAME", value_parser = parse_ns_name)]
    publish_service: Option<(String, String)>,
    /// Address written into Ingress status (repeatable; IP or hostname). Takes precedence over
    /// --publish-service.
    #[arg(long, env = "FERRY_PUBLISH_ADDRESS", value_delimiter = ',')]
    publish_address: Vec<String>,
    /// Name of the Lease used for leader election (in POD_NAMESPACE, else `default`).
    #[arg(long, env = "FERRY_ELECTION_ID", default_value = "ferry-leader")]
    election_id: String,
    /// Seconds a leader holds the Lease without renewing before another replica takes over.
    #[arg(long, env = "FERRY_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_duration: u64,
    /// Worker threads per listener (default: number of CPUs).
    #[arg(long, env = "FERRY_THREADS")]
    threads: Option<usize>,
    /// On SIGTERM: seconds during which /readyz answers 503 while the listeners keep accepting,
    /// so load balancers notice before connections are refused.
    #[arg(long, env = "FERRY_SHUTDOWN_DELAY", default_value_t = 5)]
    shutdown_delay: u64,
    /// On SIGTERM, after the shutdown delay: seconds in-flight requests and L4 streams get to
    /// finish once the listeners stop accepting; ferry exits as soon as none is left. SIGINT stops
    /// at once.
    #[arg(long, env = "FERRY_DRAIN_TIMEOUT", default_value_t = 10)]
    drain_timeout: u64,
    /// Engine for HTTP/1.x (plaintext and TLS): `fast` (ferry's lean path on pingora-core
    /// sessions; about a third fewer instructions per request) or `pingora` (Pingora's full proxy,
    /// which serves HTTP/2 either way).
    #[arg(long, env = "FERRY_HTTP1_ENGINE", default_value = "fast", value_parser = ["fast", "pingora"])]
    http1_engine: String,
    /// Passive outlier detection: failures in a row (connect errors, 5xx, broken responses) that
    /// eject an endpoint; 0 turns ejection off.
    #[arg(long, env = "FERRY_OUTLIER_FAILURES", default_value_t = 5)]
    outlier_failures: u32,
    /// First ejection period in seconds; it doubles with each further ejection (at most 300).
    #[arg(long, env = "FERRY_OUTLIER_EJECTION", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    outlier_ejection_seconds: u64,
    /// Seconds a new client connection has to send its first request head.
    #[arg(long, env = "FERRY_CLIENT_HEADER_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    client_header_timeout: u64,
    /// Seconds a client may take between two reads of a request body; a body that stalls longer
    /// is answered 408 and the connection closed.
    #[arg(long, env = "FERRY_CLIENT_BODY_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_body_timeout: u64,
    /// Clients (IP or CIDR, repeatable) whose forwarding headers are trusted: their
    /// `X-Forwarded-For` is appended to and their `X-Forwarded-Proto/-Host/-Port/-Prefix` and
    /// `Forwarded` kept. From any other client these are replaced or removed.
    #[arg(long, env = "FERRY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a keep-alive client connection may stay idle between requests.
    #[arg(long, env = "FERRY_CLIENT_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    client_idle_timeout: u64,
    /// Concurrent connections per listener (HTTP, TLS, each L4 port); more are closed at once.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Concurrent connections per client IP and listener; 0 = no limit.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    max_connections_per_ip: u64,
    /// Gateway UDP listeners: seconds a client's flow (its upstream socket and endpoint) lives
    /// without a datagram in either direction.
    #[arg(long, env = "FERRY_UDP_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    udp_idle_timeout: u64,
    /// Gateway UDP listeners: flows per listener port, at most; a new client beyond it evicts
    /// the flow idle the longest.
    #[arg(long, env = "FERRY_UDP_MAX_FLOWS", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..))]
    udp_max_flows: u64,
    /// Ports for Gateway API listeners: `0` binds an ephemeral port per Gateway port (manifest
    /// mode; `/routes` lists each listener's address), `FIRST-LAST` the lowest free port of the
    /// range. Bound on the IP of --http-addr. Kubernetes mode needs a range: each Gateway's
    /// Service targets container ports the leader allocates from it, and every replica binds
    /// exactly those.
    #[arg(long, env = "FERRY_GATEWAY_PORTS", default_value = "0", value_parser = gateways::parse_range)]
    gateway_ports: gateways::PortRange,
    /// Kubernetes mode: type of the Service ferry makes for each Gateway.
    #[arg(long, env = "FERRY_GATEWAY_SERVICE_TYPE", default_value = "LoadBalancer", value_parser = ["LoadBalancer", "NodePort", "ClusterIP"])]
    gateway_service_type: String,
    /// Kubernetes mode: labels of ferry's own pods (`key=value,...`), the selector of each
    /// Gateway's Service (the Helm chart sets its pod labels).
    #[arg(long, env = "FERRY_GATEWAY_SERVICE_SELECTOR", value_delimiter = ',', value_parser = parse_label)]
    gateway_service_selector: Vec<(String, String)>,
    /// Access log (one JSON line per request): `off`, `stdout`, or a file path (appended to).
    #[arg(long, env = "FERRY_ACCESS_LOG", default_value = "stdout")]
    access_log: String,
    /// OpenTelemetry collector for request spans (OTLP over HTTP, protobuf), e.g.
    /// `http://otel-collector:4318`; unset = no export.
    #[arg(long, env = "FERRY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of the traces ferry starts itself that are exported (0.0 – 1.0); a client's
    /// `traceparent` decides for its own trace.
    #[arg(long, env = "FERRY_OTLP_SAMPLE_RATIO", default_value_t = 0.01)]
    otlp_sample_ratio: f64,
    /// Log format.
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    class: ClassArgs,
}

enum Listener {
    Tcp(SocketAddr),
    Tls(SocketAddr, TlsSettings),
}

/// One data-plane listener. With the fast engine, HTTP/1.x is served by ferry's lean path
/// (`H1App`) and HTTP/2 (h2c, or ALPN `h2`) by Pingora's full proxy; otherwise Pingora's full
/// proxy serves everything.
fn data_service(
    conf: &Arc<ServerConf>,
    name: &'static str,
    fast: bool,
    proxy: impl Fn() -> Gateway,
    listener: Listener,
    limits: &ListenerLimits,
) -> anyhow::Result<Box<dyn pingora::services::ServiceWithDependents>> {
    let (addr, tls) = match listener {
        Listener::Tcp(addr) => (addr, None),
        Listener::Tls(addr, settings) => (addr, Some(settings)),
    };
    let app = listener_app(conf, name, fast, proxy, tls, limits);
    // ferry's own accept loop, not Pingora's listening service: each of Pingora's connection
    // tasks held ~9 KB (its TLS accept state inline) and a 1.5 KB write buffer for the
    // connection's life, most of what an idle keep-alive connection cost (`conn::Conn`).
    let socket = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    Ok(Box::new(Accepting::new(name, socket, Arc::new(app))))
}

/// A listening socket on `addr` (address reuse, as Pingora's listeners; backlog 65,535).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(65_535)?;
    Ok(socket.into())
}

/// The app of one listener: connection limits, TLS (when `tls`), then the engines.
fn listener_app(
    conf: &Arc<ServerConf>,
    name: &'static str,
    fast: bool,
    proxy: impl Fn() -> Gateway,
    tls: Option<TlsSettings>,
    limits: &ListenerLimits,
) -> Limited<H1App> {
    let mut options = HttpServerOptions::default();
    options.h2c = tls.is_none();
    options.h2_idle_timeout = Some(limits.idle);
    let mut full = HttpProxy::new(proxy(), conf.clone());
    full.server_options = Some(options);
    full.handle_init_modules();
    let limiter = ConnLimiter::new(limits.max_connections, limits.max_connections_per_ip);
    let connector = Some(ConnectorOptions::from_server_conf(conf));
    let app = H1App::new(proxy(), full, connector);
    let app = if fast { app } else { app.with_full_proxy_for_http1() };
    // TLS is terminated by `Limited` after the connection is admitted, under the client header
    // timeout; the listener itself is plain TCP.
    let tls = tls.map(|settings| (Arc::new(settings.build()), limits.header));
    Limited { inner: Arc::new(app), limiter, metrics: limits.metrics.clone(), listener: name, tls }
}

/// Connection limits and client idle timeout of the data-plane listeners.
#[derive(Clone)]
struct ListenerLimits {
    idle: Duration,
    /// Also the limit for a TLS handshake.
    header: Duration,
    max_connections: usize,
    max_connections_per_ip: usize,
    metrics: Arc<Metrics>,
}

/// Serves the L4 ports on a runtime of their own (streams are long-lived and need no Pingora
/// machinery).
fn spawn_l4(
    server: Arc<L4Server>,
    listeners: Vec<std::net::TcpListener>,
    threads: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ferry-l4")
        .enable_all()
        .build()
        .context("L4 runtime")?;
    std::thread::Builder::new().name("ferry-l4".into()).spawn(move || {
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for listener in listeners {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => tasks.push(tokio::spawn(server.clone().serve(l, stop.clone()))),
                    Err(e) => tracing::error!(error = %e, "cannot serve an L4 port"),
                }
            }
            for t in tasks {
                let _ = t.await;
            }
            // Streams in flight keep running on this runtime until the process exits.
            std::future::pending::<()>().await;
        })
    })?;
    Ok(())
}

/// Serves the Gateway API ports on a runtime of their own, binding and closing them as the
/// table changes.
fn spawn_gateways(
    manager: Arc<gateways::GatewayListeners<PortApp<Limited<H1App>>>>,
    on_publish: tokio::sync::watch::Receiver<()>,
    pins: Option<tokio::sync::watch::Receiver<std::collections::HashMap<gateway::ListenerKey, u16>>>,
    threads: usize,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ferry-gateway")
        .enable_all()
        .build()
        .context("Gateway runtime")?;
    std::thread::Builder::new().name("ferry-gateway".into()).spawn(move || {
        rt.block_on(async move {
            if let Some(pins) = pins {
                tokio::spawn(manager.clone().follow_pins(pins));
            }
            manager.run(on_publish).await;
            std::future::pending::<()>().await;
        })
    })?;
    Ok(())
}

/// The pod name in a cluster (`POD_NAME`, from the downward API), else host name and process id.
fn replica_identity() -> String {
    std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// An IP address (a one-address range) or a CIDR range.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.trim().split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_ns_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    no_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => std::process::exit(check::run(&args)),
        Some(Command::Crd) => {
            for (_, yaml) in controller::crd::crd_files() {
                println!("---\n{yaml}");
            }
            Ok(())
        }
        Some(Command::Annotations) => {
            print!("{}\n{}", controller::build::annotations_table(), controller::build::nginx_annotations_table());
            Ok(())
        }
        None => serve(cli.serve),
    }
}

/// Pingora's TLS listener wants callbacks; ferry chooses certificates in the resolver instead.
struct NoCallbacks;
impl TlsAccept for NoCallbacks {}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let kube_mode = args.manifests.is_empty();
    if kube_mode && args.gateway_ports.0.is_none() {
        anyhow::bail!(
            "Kubernetes mode needs --gateway-ports FIRST-LAST (e.g. 20000-20099): each Gateway's Service \
             targets container ports ferry allocates from that range, the same on every replica"
        );
    }
    if kube_mode && args.gateway_service_selector.is_empty() {
        tracing::warn!(
            "no --gateway-service-selector: the Services ferry makes for Gateways select no pods \
             (set it to the labels of ferry's pods; the Helm chart does)"
        );
    }
    // Kubernetes mode: find the API server before anything starts, so a missing configuration
    // fails start-up with a clear message instead of an unready gateway.
    let kube_config = if args.manifests.is_empty() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let config = rt.block_on(controller::kube_config()).map_err(|e| {
            anyhow::anyhow!(
                "Kubernetes mode (no --manifests): no API server configuration found ({e}); \
                 run in a pod, set KUBECONFIG, or pass --manifests PATH"
            )
        })?;
        tracing::info!(server = %config.cluster_url, "Kubernetes mode");
        Some(config)
    } else {
        None
    };
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    // One registry, owned here: the data plane's metrics and the controller's register into it.
    let mut registry = prometheus_client::registry::Registry::with_prefix("ferry");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let control_metrics = Arc::new(controller::ControlMetrics::register(&mut registry));
    let registry = Arc::new(registry);
    let ready = Arc::new(AtomicBool::new(false));
    let listening = Arc::new(AtomicBool::new(false));

    // Pingora binds its listeners inside its runtimes, where a failure cannot stop the process;
    // check the data-plane addresses here so a port clash fails start-up loudly.
    for addr in [args.http_addr, args.https_addr] {
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
    }
    let mut l4_listeners = Vec::new();
    for port in &args.class.l4_ports {
        let addr = SocketAddr::new(args.http_addr.ip(), *port);
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind L4 port {addr}"))?;
        listener.set_nonblocking(true)?;
        l4_listeners.push(listener);
    }
    let admin_listener = std::net::TcpListener::bind(args.admin_addr)
        .with_context(|| format!("cannot bind admin address {}", args.admin_addr))?;
    admin_listener.set_nonblocking(true)?;

    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(args.drain_timeout),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let phases = server.watch_execution_phase();

    let (published, on_publish) = tokio::sync::watch::channel(());
    // The state every table's routes share with the next one's (outlier detection included).
    let runtime = Arc::new(gateway::Runtime::new(gateway::balance::OutlierConfig {
        consecutive_failures: args.outlier_failures,
        base_ejection: std::time::Duration::from_secs(args.outlier_ejection_seconds),
    }));
    let publisher =
        Publisher::new(table.clone(), control_metrics.clone(), ready.clone(), args.class.build_options(), runtime)
            .with_notify(published)
            .with_after_whole_build(release_free_memory);
    let gateway_addresses = Arc::new(ArcSwap::from_pointee(gateways::Addresses::new()));
    let admin_state = admin::State {
        table: table.clone(),
        registry,
        ready,
        listening: listening.clone(),
        gateway_addresses: gateway_addresses.clone(),
        l4_status: publisher.l4_status_handle(),
    };
    let manifests = args.manifests.clone();
    let lease_duration = std::time::Duration::from_secs(args.lease_duration);
    let pod_namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let (gateway_pins, pins) = tokio::sync::watch::channel(std::collections::HashMap::new());
    let gateway_services = args.gateway_ports.0.clone().map(|ports| controller::gateway_service::ServiceOptions {
        namespace: pod_namespace.clone(),
        instance: controller::gateway_service::instance_label(&args.election_id),
        service_type: args.gateway_service_type.clone(),
        selector: args.gateway_service_selector.iter().cloned().collect(),
        ports,
    });
    let kube_opts = controller::KubeOptions {
        gateway_services,
        gateway_pins: Some(gateway_pins),
        namespaces: args.watch_namespace.clone(),
        publish_service: args.publish_service.clone(),
        publish_addresses: args.publish_address.clone(),
        lease: controller::LeaseOptions {
            namespace: pod_namespace,
            name: args.election_id.clone(),
            identity: replica_identity(),
            lease_duration,
            // Renew five times per lease period: a follower notices an expired lease quickly,
            // and one failed renewal stops a leader's writes long before the lease expires.
            renew_period: (lease_duration / 5).max(std::time::Duration::from_millis(200)),
        },
    };
    let data_addrs = [args.http_addr, args.https_addr];
    std::thread::Builder::new().name("ferry-control".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the control-plane runtime");
                std::process::exit(1);
            }
        };
        rt.block_on(async move {
            tokio::spawn(admin::serve(admin_listener, admin_state));
            tokio::spawn(admin::wait_listening(phases, data_addrs, listening));
            match kube_config {
                None => controller::run_manifests(manifests, publisher).await,
                Some(config) => {
                    if let Err(e) = controller::run_kube(config, kube_opts, control_metrics, publisher).await {
                        tracing::error!(error = %e, "Kubernetes mode cannot start");
                        std::process::exit(1);
                    }
                }
            }
        });
    })?;

    let timeouts = Timeouts {
        client_header: Duration::from_secs(args.client_header_timeout),
        client_idle: Duration::from_secs(args.client_idle_timeout),
        client_body: Duration::from_secs(args.client_body_timeout),
        ..Timeouts::default()
    };
    let (l4_stop, l4_stopped) = tokio::sync::watch::channel(false);
    if !l4_listeners.is_empty() {
        let limits = (args.max_connections as usize, args.max_connections_per_ip as usize);
        let l4 = L4Server::new(table.clone(), metrics.clone(), timeouts.connect, limits);
        spawn_l4(l4, l4_listeners, threads, l4_stopped)?;
    }
    let fast = args.http1_engine == "fast";
    let access_log = match args.access_log.as_str() {
        "off" => None,
        dest => {
            let dest: gateway::access_log::Destination =
                dest.parse().map_err(|e| anyhow::anyhow!("--access-log: {e}"))?;
            let log = gateway::access_log::AccessLog::open(&dest, metrics.access_log_dropped.clone())
                .with_context(|| format!("--access-log {}", args.access_log))?;
            Some(Arc::new(log))
        }
    };
    let otlp = match &args.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let config = gateway::otlp::Config { endpoint: endpoint.clone(), sample_ratio: args.otlp_sample_ratio };
            let exporter = gateway::otlp::Exporter::start(&config, metrics.otlp_spans.clone())
                .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
            tracing::info!(endpoint = %endpoint, sample_ratio = args.otlp_sample_ratio, "exporting request spans over OTLP");
            Some(Arc::new(exporter))
        }
    };
    let trusted: Arc<[ipnet::IpNet]> = args.trusted_proxies.clone().into();
    let proxy = {
        let (table, metrics, access_log, otlp) = (table.clone(), metrics.clone(), access_log.clone(), otlp.clone());
        move |tls: bool| {
            let trusted = trusted.clone();
            let (table, metrics, access_log, otlp) = (table.clone(), metrics.clone(), access_log.clone(), otlp.clone());
            move || {
                Gateway::new(table.clone(), metrics.clone(), tls, timeouts)
                    .with_trusted_proxies(trusted.clone())
                    .with_access_log(access_log.clone())
                    .with_otlp(otlp.clone())
            }
        }
    };
    let limits = ListenerLimits {
        idle: timeouts.client_idle,
        header: timeouts.client_header,
        max_connections: args.max_connections as usize,
        max_connections_per_ip: args.max_connections_per_ip as usize,
        metrics: metrics.clone(),
    };
    let conf = server.configuration.clone();
    let http = data_service(&conf, "ferry http", fast, proxy(false), Listener::Tcp(args.http_addr), &limits)?;
    let mut tls = TlsSettings::with_callbacks(Box::new(NoCallbacks)).context("TLS settings")?;
    tls.set_cert_resolver(Arc::new(SniResolver::new(table.clone())));
    tls.enable_h2();
    let https = data_service(&conf, "ferry https", fast, proxy(true), Listener::Tls(args.https_addr, tls), &limits)?;
    server.add_boxed_service(http);
    server.add_boxed_service(https);
    let (gw_stop, gw_stopped) = tokio::sync::watch::channel(false);
    let make_app: gateways::AppFactory<PortApp<Limited<H1App>>> = {
        let (conf, table, limits, metrics) =
            (server.configuration.clone(), table.clone(), limits.clone(), metrics.clone());
        let proxy = proxy.clone();
        let connect_timeout = timeouts.connect;
        Box::new(move |key, protocol| {
            use gateway::PortProtocol;
            let tls = matches!(protocol, PortProtocol::Https | PortProtocol::Tls);
            let gw = proxy(tls);
            let scoped = || gw().with_scope(key.clone());
            let settings = |h2: bool| {
                let mut settings = TlsSettings::with_callbacks(Box::new(NoCallbacks)).ok()?;
                settings.set_cert_resolver(Arc::new(SniResolver::for_gateway(table.clone(), key.clone())));
                if h2 {
                    settings.enable_h2();
                }
                Some(settings)
            };
            let max = (limits.max_connections, limits.max_connections_per_ip);
            match protocol {
                PortProtocol::Http | PortProtocol::Https => {
                    let settings = if tls { Some(settings(true)?) } else { None };
                    let name = if tls { "gateway https" } else { "gateway http" };
                    Some(Arc::new(PortApp::Http(Arc::new(listener_app(&conf, name, fast, scoped, settings, &limits)))))
                }
                PortProtocol::Tcp => {
                    let app = GatewayL4App::new(table.clone(), key.clone(), metrics.clone(), connect_timeout, max);
                    Some(Arc::new(PortApp::L4(Arc::new(app))))
                }
                // The server name picks the listener: TLSRoutes are passed through or terminated
                // here; HTTPS listeners sharing the port get the HTTPS app (the port's limits
                // already counted the connection).
                PortProtocol::Tls => {
                    let unlimited =
                        ListenerLimits { max_connections: usize::MAX, max_connections_per_ip: 0, ..limits.clone() };
                    let https = listener_app(&conf, "gateway https", fast, scoped, Some(settings(true)?), &unlimited);
                    let app = GatewayL4App::new(table.clone(), key.clone(), metrics.clone(), connect_timeout, max)
                        .with_tls(Arc::new(settings(false)?.build()), limits.header)
                        .with_https(Arc::new(https));
                    Some(Arc::new(PortApp::L4(Arc::new(app))))
                }
                // Served by the UDP relay, not by a stream app.
                PortProtocol::Udp => None,
            }
        })
    };
    let manager = gateways::GatewayListeners::new(
        table.clone(),
        args.http_addr.ip(),
        args.gateway_ports.0.clone(),
        make_app,
        gw_stopped,
        gateway_addresses,
    );
    let udp = gateway::udp::UdpConfig {
        idle_timeout: Duration::from_secs(args.udp_idle_timeout),
        max_flows: usize::try_from(args.udp_max_flows).unwrap_or(usize::MAX),
    };
    manager.serve_udp(gateway::udp::UdpRelay::new(table.clone(), metrics.clone(), udp));
    let pins = if kube_mode {
        // Nothing is bound before the Services say where.
        manager.set_pins(std::collections::HashMap::new());
        Some(pins)
    } else {
        None
    };
    spawn_gateways(manager, on_publish, pins, threads)?;
    tracing::info!(http = %args.http_addr, https = %args.https_addr, admin = %args.admin_addr, l4_ports = ?args.class.l4_ports, threads, http1_engine = %args.http1_engine, "ferry starting");
    let signals = Signals {
        shutdown_delay: Duration::from_secs(args.shutdown_delay),
        l4_stop,
        gw_stop,
        access_log: access_log.clone(),
    };
    server.run(RunArgs { shutdown_signal: Box::new(signals) });
    if let Some(otlp) = &otlp {
        otlp.flush(Duration::from_secs(2));
    }
    if let Some(log) = &access_log {
        log.flush();
    }
    std::process::exit(0)
}

/// SIGTERM: drain (readiness 503 and `Connection: close` at once; listeners stop after the
/// shutdown delay; exit when nothing is in flight, or after the drain timeout). SIGINT: stop now.
/// SIGQUIT (Pingora's socket hand-over) is treated as SIGTERM.
struct Signals {
    shutdown_delay: Duration,
    l4_stop: tokio::sync::watch::Sender<bool>,
    /// Gateway API ports: stop accepting, and close keep-alive connections.
    gw_stop: tokio::sync::watch::Sender<bool>,
    /// Written out before the process exits (its lines are batched).
    access_log: Option<Arc<gateway::access_log::AccessLog>>,
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
            _ = quit.recv() => {}
        }
        gateway::drain::start_draining();
        tracing::info!(
            shutdown_delay_s = self.shutdown_delay.as_secs(),
            "SIGTERM: draining; not ready, still accepting"
        );
        tokio::select! {
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = tokio::time::sleep(self.shutdown_delay) => {}
        }
        tracing::info!(
            in_flight = gateway::drain::in_flight(),
            "listeners stop accepting; waiting for requests and streams in flight"
        );
        let _ = self.l4_stop.send(true);
        let _ = self.gw_stop.send(true);
        // Pingora waits the whole drain timeout; end the process as soon as nothing is in flight.
        let access_log = self.access_log.clone();
        std::thread::spawn(move || {
            let mut idle_checks = 0;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                idle_checks = if gateway::drain::in_flight() == 0 { idle_checks + 1 } else { 0 };
                if idle_checks >= 3 {
                    tracing::info!("drained; exiting");
                    if let Some(log) = &access_log {
                        log.flush();
                    }
                    std::process::exit(0);
                }
            }
        });
        ShutdownSignal::GracefulTerminate
    }
}
