//! `berth`: the registry binary. Loads config, sets up logging, binds, serves.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_registry::app::App;
use berth_registry::config::{self, Config, LogFormat, Overrides};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: an OCI container registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry. With no options: 127.0.0.1:5000, data under ./berth-data.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:5000.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Folder for blobs and the metadata database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the configuration in effect (defaults, file, environment, flags) as TOML.
    Config {
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { listen, data_dir, config } => {
            let overrides = Overrides { listen, data_dir };
            let config = config::load(config.as_deref(), config::environment(), &overrides)?;
            init_logging(&config);
            let app = App::open(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            tracing::info!(listen = %listener.local_addr()?, data_dir = %config.data_dir.display(),
                version = env!("CARGO_PKG_VERSION"), "berth is serving");
            app.spawn_maintenance(config.uploads.purge_interval);
            berth_registry::server::serve(listener, app.router(), shutdown_signal()).await?;
            tracing::info!("stopped");
        }
        Command::Config { config } => {
            let config = config::load(config.as_deref(), config::environment(), &Overrides::default())?;
            print!("{}", toml_text(&config)?);
        }
    }
    Ok(())
}

fn toml_text(config: &Config) -> anyhow::Result<String> {
    let value = serde_json::to_value(config)?;
    Ok(format!("{value:#}\n"))
}
