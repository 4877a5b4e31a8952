//! `serin injector`: the sidecar-injection admission webhook (the work is in serin-kube).

use std::net::SocketAddr;

use anyhow::Context as _;
use serin_kube::injector::InjectorOptions;

use crate::inject::ProxyFlags;

/// `serin injector` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// HTTPS listener (Service serin-injector port 443 -> container port 8443).
    #[arg(long, env = "SERIN_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serin's namespace (where the certificate Secret lives; never injected).
    #[arg(long, env = "POD_NAMESPACE", default_value = "serin-system")]
    pub namespace: String,
    /// The Secret holding the serving certificate (created when missing).
    #[arg(
        long,
        env = "SERIN_INJECTOR_TLS_SECRET",
        default_value = "serin-injector-tls"
    )]
    pub tls_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle the injector keeps.
    #[arg(
        long,
        env = "SERIN_INJECTOR_WEBHOOK_CONFIGURATION",
        default_value = "serin-injector"
    )]
    pub webhook_configuration: String,
    #[command(flatten)]
    pub proxy: ProxyFlags,
}

/// Runs `serin injector` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = InjectorOptions {
        listen: args.listen,
        namespace: args.namespace,
        secret: args.tls_secret,
        webhook_configuration: args.webhook_configuration,
        inject: args.proxy.config()?,
        ..InjectorOptions::default()
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move {
            let client = kube::Client::try_default()
                .await
                .context("serin injector: no usable Kubernetes configuration")?;
            let shutdown = async {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = tokio::signal::ctrl_c() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            serin_kube::injector::run(client, opts, shutdown)
                .await
                .context("serin injector")
        })
}
