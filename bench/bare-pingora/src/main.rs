//! The smallest Pingora proxy: every request goes to one fixed upstream over a pooled
//! keep-alive connection, with Pingora's defaults except `threads` (from `--threads`).
//! Benchmarks run it beside ferry so that ferry's own cost is separated from Pingora's.
//!
//! Usage: bare-pingora --listen ADDR --upstream ADDR [--tls-listen ADDR --cert PEM --key PEM] [--threads N]
//! `--no-modules` drops Pingora's default (disabled) compression module, as ferry does.

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Fixed {
    upstream: std::net::SocketAddr,
    no_modules: bool,
}

#[async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();
    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        if !self.no_modules {
            modules.add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(0));
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// `--lean`: the same fixed-peer proxy written directly on pingora-core's HTTP/1 sessions and
/// connector (a `ServerApp`), without pingora-proxy's generic request machinery. An experiment
/// that measures how much of Pingora's per-request cost a lean path could avoid.
struct Lean {
    peer: HttpPeer,
    connector: pingora::connectors::http::v1::Connector,
}

impl Lean {
    async fn one(&self, ds: &mut pingora::protocols::http::v1::server::HttpSession) -> Result<()> {
        let (mut us, _reused) = self.connector.get_http_session(&self.peer).await?;
        us.write_request_header(Box::new(ds.req_header().clone())).await?;
        while let Some(chunk) = ds.read_body_bytes().await? {
            us.write_body(&chunk).await?;
        }
        us.finish_body().await?;
        us.read_response().await?;
        let resp = us.resp_header().expect("response read").clone();
        ds.write_response_header(Box::new(resp)).await?;
        while let Some(chunk) = us.read_body_ref().await? {
            ds.write_body(chunk).await?;
        }
        ds.finish_body().await?;
        self.connector.release_http_session(us, &self.peer, None).await;
        Ok(())
    }
}

#[async_trait]
impl pingora::apps::ServerApp for Lean {
    async fn process_new(
        self: &std::sync::Arc<Self>,
        mut stream: pingora::protocols::Stream,
        _shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        loop {
            let mut ds = pingora::protocols::http::v1::server::HttpSession::new(stream);
            if !matches!(ds.read_request().await, Ok(Some(_))) {
                return None;
            }
            if self.one(&mut ds).await.is_err() {
                return None;
            }
            stream = ds.reuse().await.ok()??.into_parts().0;
        }
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen").expect("--listen ADDR");
    let upstream = arg(&args, "--upstream").expect("--upstream ADDR").parse().expect("upstream address");
    let threads = arg(&args, "--threads").map_or(1, |t| t.parse().expect("--threads N"));
    let no_modules = args.iter().any(|a| a == "--no-modules");
    let conf = ServerConf { threads, grace_period_seconds: Some(0), ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    if args.iter().any(|a| a == "--lean") {
        let lean = Lean {
            peer: HttpPeer::new(upstream, false, String::new()),
            connector: pingora::connectors::http::v1::Connector::new(None),
        };
        let mut svc = pingora::services::listening::Service::new("lean".into(), lean);
        svc.add_tcp(&listen);
        server.add_service(svc);
        server.run_forever()
    }
    let mut svc = http_proxy_service(&server.configuration, Fixed { upstream, no_modules });
    svc.add_tcp(&listen);
    if let Some(tls_listen) = arg(&args, "--tls-listen") {
        let cert = arg(&args, "--cert").expect("--cert PEM");
        let key = arg(&args, "--key").expect("--key PEM");
        let mut tls = TlsSettings::intermediate(&cert, &key).expect("TLS settings");
        tls.enable_h2();
        svc.add_tls_with_settings(&tls_listen, None, tls);
    }
    server.add_service(svc);
    server.run_forever()
}
