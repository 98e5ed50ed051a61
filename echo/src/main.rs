//! `ferry-echo`: echo backends for the quickstart, a self-signed TLS Secret generator, and the
//! test Kubernetes API server (for benchmarks of ferry's Kubernetes mode).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry-echo", about = "Echo backend for ferry's quickstart and tests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve echo backends: each `--listen NAME=ADDR` answers as service NAME.
    Serve {
        #[arg(long, required = true)]
        listen: Vec<String>,
    },
    /// Print a self-signed `kubernetes.io/tls` Secret manifest for the given hosts.
    GenCert {
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        name: String,
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Also write the certificate PEM here (for `curl --cacert`).
        #[arg(long)]
        cert_out: Option<std::path::PathBuf>,
    },
    /// Serve the test Kubernetes API server on 127.0.0.1 until killed; its kubeconfig is written
    /// to `--kubeconfig` once it serves (and holds the `--load` objects).
    Apiserver {
        #[arg(long)]
        kubeconfig: std::path::PathBuf,
        /// YAML files of objects (documents separated by `---`) to hold from the start.
        #[arg(long)]
        load: Vec<std::path::PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Serve { listen } => {
            for spec in listen {
                let (name, addr) = spec.split_once('=').ok_or_else(|| format!("--listen {spec:?} is not NAME=ADDR"))?;
                let bound = ferry_echo::spawn(addr, name).await?;
                eprintln!("ferry-echo: {name} on {bound}");
            }
            std::future::pending::<()>().await;
        }
        Command::GenCert { namespace, name, hosts, cert_out } => {
            let (manifest, cert) = ferry_echo::tls_secret_manifest(&namespace, &name, &hosts)?;
            if let Some(path) = cert_out {
                std::fs::write(path, cert)?;
            }
            print!("{manifest}");
        }
        Command::Apiserver { kubeconfig, load } => {
            let api = ferry_echo::apiserver::ApiServer::start_new().await;
            for file in load {
                api.upsert(&std::fs::read_to_string(&file)?);
            }
            // Written last, by rename: a reader that sees the file can connect.
            let tmp = kubeconfig.with_extension("tmp");
            std::fs::copy(api.kubeconfig(), &tmp)?;
            std::fs::rename(&tmp, &kubeconfig)?;
            eprintln!("ferry-echo: test API server on {}", api.addr);
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}
