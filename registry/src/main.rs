//! `berth`: the registry binary. Loads config, sets up logging, binds, serves.

mod admin_cli;
mod cli;
mod gc_cli;
mod images_cli;
mod keys_cli;
mod lifecycle_cli;
mod ops_cli;
mod pull_through_cli;
mod replication_cli;
mod templates_cli;
mod usage_cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use berth_registry::app::App;
use berth_registry::config::{self, Config, LogFormat, Overrides};
use clap::Parser;
use cli::{Cli, Command};
use keys_cli::keys;
use tracing_subscriber::EnvFilter;

/// jemalloc, with its background thread: pages freed after a burst (a flood of request heads,
/// a large manifest list) are returned to the system within its decay time (10 s) whichever
/// thread freed them. glibc's malloc kept them (RSS stayed at its peak after the connections
/// closed), and mimalloc returned them only as the owning threads allocated again.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Logs go to stderr: stdout is for what a command prints (a login token, a secret, a
    // listing), so it can be piped.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
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
        Err(e) if e.downcast_ref::<ops_cli::ScrubFoundDamage>().is_some() => {
            eprintln!("berth: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("berth: {}", cli::error_line(&e));
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
            let mut limits = berth_registry::server::Limits::from_config(&config.server);
            if let Some(open_files) = berth_registry::server::raise_open_file_limit() {
                limits = limits.fit_open_files(open_files);
            }
            // The certificate and the port first: a start that cannot serve stops before a
            // first start has created the data folder, keys and administrator.
            let tls = berth_registry::tls::Tls::from_config(&config.tls)?;
            if let Some(tls) = &tls {
                let _watch = tls.certs().watch(config.tls.reload_interval);
                #[cfg(unix)]
                berth_registry::tls::reload_on_sighup(tls.certs().clone())
                    .context("cannot install the SIGHUP handler (TLS certificate reload)")?;
            }
            let listener = bind(config.listen).await?;
            let app = App::open(&config).await?;
            tracing::info!(listen = %listener.local_addr()?, data_dir = %config.data_dir.display(),
                tls = tls.is_some(), version = env!("CARGO_PKG_VERSION"), "berth is serving");
            app.spawn_maintenance(config.uploads.purge_interval);
            app.spawn_dispatcher();
            let _scrub = app.spawn_scrub(&config.scrub);
            let _gc = app.spawn_gc(&config.gc);
            let _lifecycle = app.spawn_lifecycle(&config.lifecycle);
            berth_registry::server::serve(listener, app.router(), tls, limits, shutdown_signal()).await?;
            app.registry().flush_at_stop().await;
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
        Command::Keys { action, config, data_dir } => {
            let overrides = Overrides { listen: None, data_dir };
            let config = config::load(config.as_deref(), config::environment(), &overrides)?;
            init_logging(&config);
            let app = App::open_existing(&config).await?;
            keys(app.registry(), &config, action).await?;
        }
        Command::Admin { action, config, data_dir } => {
            let overrides = Overrides { listen: None, data_dir };
            let config = config::load(config.as_deref(), config::environment(), &overrides)?;
            init_logging(&config);
            let app = App::open_existing(&config).await?;
            admin_cli::admin(app.registry(), action).await?;
        }
        Command::Webhooks { action, config, data_dir } => {
            ops_cli::webhooks(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Deliveries { action, config, data_dir } => {
            ops_cli::deliveries(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::TaskDef { action, config, data_dir } => {
            ops_cli::task_def(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Repository { action, config, data_dir } => {
            ops_cli::repository(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Templates { action, config, data_dir } => {
            templates_cli::templates(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::PullThrough { action, config, data_dir } => {
            pull_through_cli::pull_through(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Replication { action, config, data_dir } => {
            replication_cli::replication(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Usage { repository, json, config, data_dir } => {
            usage_cli::usage(open_for_command(config, data_dir).await?.registry(), repository, json).await?
        }
        Command::Quota { action, config, data_dir } => {
            usage_cli::quota(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Images { action, config, data_dir } => {
            images_cli::images(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Lifecycle { action, config, data_dir } => {
            lifecycle_cli::lifecycle(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Gc { action, config, data_dir } => {
            gc_cli::gc(open_for_command(config, data_dir).await?.registry(), action).await?
        }
        Command::Scrub { repository, rate, json, config, data_dir } => {
            ops_cli::scrub(open_for_command(config, data_dir).await?.registry(), repository, rate, json).await?
        }
        Command::LoginToken { user, config, data_dir } => {
            let overrides = Overrides { listen: None, data_dir };
            let config = config::load(config.as_deref(), config::environment(), &overrides)?;
            init_logging(&config);
            let app = App::open_existing(&config).await?;
            admin_cli::login_token(app.registry(), &user).await?;
        }
        Command::Config { config, data_dir, listen, sources } => {
            let effective =
                config::effective(config.as_deref(), config::environment(), &Overrides { listen, data_dir })?;
            if sources {
                print!("{}", sources_table(&effective));
            } else {
                println!("{:#}", effective.to_json());
            }
        }
    }
    Ok(())
}

/// Loads the configuration and opens the stores, for a command other than `serve`: one
/// pointed where no registry is refuses, creating nothing.
async fn open_for_command(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<App> {
    let overrides = Overrides { listen: None, data_dir };
    let config = config::load(config.as_deref(), config::environment(), &overrides)?;
    init_logging(&config);
    Ok(App::open_existing(&config).await?)
}

/// Binds `serve`'s listener; the error names the flag and variable that choose another address.
async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        let next_port = SocketAddr::new(listen.ip(), listen.port().checked_add(1).unwrap_or(5000));
        let (why, other) = match e.kind() {
            std::io::ErrorKind::AddrInUse => ("another process listens there", next_port),
            std::io::ErrorKind::PermissionDenied if listen.port() < 1024 => {
                ("ports below 1024 need privileges", SocketAddr::new(listen.ip(), 5000))
            }
            std::io::ErrorKind::AddrNotAvailable => (
                "no network interface of this machine has that address",
                SocketAddr::from(([0, 0, 0, 0], listen.port())),
            ),
            _ => ("the address cannot be used", next_port),
        };
        anyhow::anyhow!(
            "cannot listen on {listen}: {e}; {why}: choose another address with --listen {other} \
             (or BERTH_LISTEN={other}, or `listen` in the configuration file)"
        )
    })
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
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| {
        format!("no registry answers at {addr} (is `berth serve` running there? --addr probes another address)")
    })?;
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

/// `berth config --sources`: one line per key, aligned: key, value (JSON), origin.
fn sources_table(effective: &config::Effective) -> String {
    let rows: Vec<(String, String, String)> =
        effective.keys.iter().map(|(k, v, o)| (k.clone(), v.to_string(), o.to_string())).collect();
    let key_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(3);
    let value_width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0).clamp(5, 40);
    let mut out = format!("{:<key_width$}  {:<value_width$}  SOURCE\n", "KEY", "VALUE");
    for (key, value, origin) in rows {
        out.push_str(&format!("{key:<key_width$}  {value:<value_width$}  {origin}\n"));
    }
    out
}
