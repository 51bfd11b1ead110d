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
    /// Exit 0 when the registry at ADDR answers `GET /healthz` with 200 (for container
    /// health checks: the image needs no curl).
    Health {
        /// Default: the `listen` address of the configuration (an unspecified address such
        /// as 0.0.0.0 is probed on loopback), so the same environment serves and probes.
        #[arg(long)]
        addr: Option<SocketAddr>,
        #[arg(long, env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the configuration in effect (defaults, file, environment, flags) as JSON.
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole chain of causes, e.g. an unknown config key.
            eprintln!("berth: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
        Command::Health { addr, config } => {
            let addr = match addr {
                Some(a) => a,
                None => {
                    let config = config::load(config.as_deref(), config::environment(), &Overrides::default())?;
                    probe_address(config.listen)
                }
            };
            health(addr)?
        }
        Command::Config { config } => {
            let config = config::load(config.as_deref(), config::environment(), &Overrides::default())?;
            print!("{}", config_json(&config)?);
        }
    }
    Ok(())
}

/// Where to reach a server listening on `listen`: an unspecified address means loopback.
fn probe_address(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    }
}

fn health(addr: SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer)?;
    if answer.starts_with(b"HTTP/1.1 200") {
        println!("healthy");
        Ok(())
    } else {
        anyhow::bail!(
            "unhealthy: {}",
            String::from_utf8_lossy(answer.split(|&b| b == b'\r').next().unwrap_or_default())
        )
    }
}

fn config_json(config: &Config) -> anyhow::Result<String> {
    let value = serde_json::to_value(config)?;
    Ok(format!("{value:#}\n"))
}
