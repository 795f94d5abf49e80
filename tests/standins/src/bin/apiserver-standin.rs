//! `apiserver-standin`: a muster test STAND-IN for kube-apiserver (see tests/README.md).
//!
//! `apiserver-standin serve --bind ADDR:PORT --cert F --key F --client-ca F [--client-ca-key F]
//!   --etcd-endpoint URL --etcd-cafile F --etcd-certfile F --etcd-keyfile F`
//!
//! `apiserver-standin get|put|post|delete PATH [--data JSON] --kubeconfig FILE [--server URL]`:
//! a tiny kubectl for tests; prints the body, exits 0 on 2xx, 1 otherwise.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use muster_standins::{api, client, etcd, pki, read_file};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "apiserver-standin",
    about = "muster stand-in for kube-apiserver (not kube-apiserver)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    Serve {
        #[arg(long)]
        bind: std::net::SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        client_ca: PathBuf,
        #[arg(long)]
        client_ca_key: Option<PathBuf>,
        #[arg(long, default_value = "https://127.0.0.1:2379")]
        etcd_endpoint: String,
        #[arg(long)]
        etcd_cafile: PathBuf,
        #[arg(long)]
        etcd_certfile: PathBuf,
        #[arg(long)]
        etcd_keyfile: PathBuf,
    },
    Get(ClientArgs),
    Put(ClientArgs),
    Post(ClientArgs),
    Delete(ClientArgs),
}

#[derive(clap::Args, Debug)]
struct ClientArgs {
    path: String,
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    data: Option<String>,
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Serve {
            bind,
            cert,
            key,
            client_ca,
            client_ca_key,
            etcd_endpoint,
            etcd_cafile,
            etcd_certfile,
            etcd_keyfile,
        } => {
            let ca_key = match &client_ca_key {
                Some(p) => read_file(p)?,
                None => String::new(),
            };
            api::serve(api::ServerConfig {
                bind,
                serving: pki::CertKey {
                    cert_pem: read_file(&cert)?,
                    key_pem: read_file(&key)?,
                },
                client_ca: pki::CertKey {
                    cert_pem: read_file(&client_ca)?,
                    key_pem: ca_key,
                },
                client_ca_has_key: client_ca_key.is_some(),
                storage: std::sync::Arc::new(etcd::Gateway::new(
                    &etcd_endpoint,
                    &read_file(&etcd_cafile)?,
                    &pki::CertKey {
                        cert_pem: read_file(&etcd_certfile)?,
                        key_pem: read_file(&etcd_keyfile)?,
                    },
                    etcd::gateway_timeout()?,
                )?),
                version: api::discovery::kubernetes_version(),
            })
            .await?;
            Ok(0)
        }
        Cmd::Get(a) => request(reqwest::Method::GET, a).await,
        Cmd::Put(a) => request(reqwest::Method::PUT, a).await,
        Cmd::Post(a) => request(reqwest::Method::POST, a).await,
        Cmd::Delete(a) => request(reqwest::Method::DELETE, a).await,
    }
}

async fn request(method: reqwest::Method, a: ClientArgs) -> Result<i32> {
    let mut api = client::Api::from_kubeconfig(
        &read_file(&a.kubeconfig)?,
        Duration::from_secs(a.timeout_secs),
    )?;
    if let Some(s) = &a.server {
        api = api.with_base(s);
    }
    let body = match &a.data {
        Some(d) => {
            Some(serde_json::from_str::<serde_json::Value>(d).context("--data is not JSON")?)
        }
        None => None,
    };
    let r = api.request(method, &a.path, body.as_ref()).await?;
    match &r.body {
        serde_json::Value::String(s) => println!("{s}"),
        v => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(if r.ok() { 0 } else { 1 })
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("apiserver-standin: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("apiserver-standin: {e:#}");
            std::process::exit(1);
        }
    }
}
