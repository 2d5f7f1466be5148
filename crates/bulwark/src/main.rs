//! `bulwark`: the command line. Parses arguments, loads configuration, and calls the
//! library crates; no gateway logic lives here.

mod availability;
mod demo;
mod drill;
mod journal_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bulwark",
    version,
    about = "An LLM gateway that keeps answering when providers fail"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BULWARK_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short, env = "BULWARK_CONFIG")]
        config: PathBuf,
        /// Listen on this address instead of the config's `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Use this SQLite journal file instead of the config's `journal.path` (a
        /// gateway started on a restored journal).
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Admin token for /admin/* (overrides the config's `admin_token`).
        #[arg(long, env = "BULWARK_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
    },
    /// Validate a configuration file: exit 0 when it is good.
    Check {
        #[arg(long, short, env = "BULWARK_CONFIG")]
        config: PathBuf,
    },
    /// Run a fake provider speaking the OpenAI, Anthropic and Gemini APIs, with a
    /// fault-injection control API under /_mock/.
    Mock {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// The name the mock puts in its answers.
        #[arg(long, default_value = "mock")]
        name: String,
    },
    /// Read the journal: list, export (JSON lines) or count requests. Works while a
    /// gateway runs.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Ship the journal to the configured `backup.to` now (a snapshot when due, then
    /// every record not yet shipped, then retention).
    Backup {
        #[arg(long, short, env = "BULWARK_CONFIG")]
        config: PathBuf,
    },
    /// Rebuild a journal from backups, then verify it.
    Restore {
        /// Backup location: file:///dir, s3://bucket/prefix, gs://…, az://….
        #[arg(long)]
        from: String,
        /// The journal file to create (must not exist).
        #[arg(long)]
        to: PathBuf,
        /// Restore the state as of this time (RFC 3339, or a duration ago like `1h`).
        #[arg(long)]
        at: Option<String>,
        /// Take S3 endpoint/region settings from this config's `backup:` section.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a journal file: SQLite integrity, record checksums, contiguous ids, index.
    Verify { path: PathBuf },
    /// Availability in failover: `simulate` the expected value of 1, 2, 3 providers, or
    /// `--config FILE` for the availability realised, per route and provider, from the journal.
    Availability(availability::AvailabilityArgs),
    /// Show a running gateway's status: the target serving each route, provider health,
    /// failovers, alerts, journal and backup.
    Status {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "BULWARK_URL")]
        url: String,
        /// Bearer token for /admin/* (the config's `admin_token`).
        #[arg(long, env = "BULWARK_ADMIN_TOKEN")]
        admin_token: Option<String>,
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Show failover on this machine: three mock providers, the gateway, traffic,
    /// and providers breaking on a script. No keys, no network.
    Demo {
        /// How long the fault timeline runs (at least 10s).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Seed for the traffic mix (streaming or not), for repeatable runs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a DR drill: break a provider (or the gateway) on purpose on a gateway started
    /// from FILE, measure what callers got, check it against the journal and metrics,
    /// and judge it against the config's `objectives` (exit 1 when one fails, 2 when the drill cannot run).
    Drill(drill::DrillArgs),
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Requests, newest first.
    List {
        #[arg(long, short, env = "BULWARK_CONFIG")]
        config: PathBuf,
        /// in_flight, completed, failed or interrupted.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One JSON object per request (id, status, route, provider, model, attempts,
    /// request, response, usage, timestamps), oldest first.
    Export {
        #[arg(long, short, env = "BULWARK_CONFIG")]
        config: PathBuf,
        /// RFC 3339 time, or a duration ago (`1h`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    /// Counts by status, span, size, durability and the backup's RPO exposure.
    Stats {
        #[arg(long, short, env = "BULWARK_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, matches!(cli.command, Command::Demo { .. }));
    // One worker per core Bulwark may run on (affinity and cgroup limits count), or
    // tokio's own `TOKIO_WORKER_THREADS`. With one, the single-threaded scheduler does
    // the same work without the multi-threaded one's cross-thread bookkeeping
    // (bench/PROFILE.md).
    let workers = match worker_threads(std::env::var_os("TOKIO_WORKER_THREADS")) {
        Ok(workers) => workers,
        Err(err) => {
            eprintln!("bulwark: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    if matches!(cli.command, Command::Serve { .. }) {
        let scheduler = if workers == 1 {
            "current-thread"
        } else {
            "multi-thread"
        };
        tracing::info!(
            workers,
            scheduler,
            "async runtime: {workers} worker(s), {scheduler} scheduler"
        );
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bulwark: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bulwark: {}", chain_text(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: an error that prints its
/// cause in its own text (`cannot open the journal: Read-only file system`) does not
/// get that cause repeated after it.
fn chain_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The async runtime's worker threads: `TOKIO_WORKER_THREADS` when set (a whole
/// number, 1 or more; anything else is refused rather than quietly replaced), otherwise
/// one per core Bulwark may run on.
fn worker_threads(setting: Option<std::ffi::OsString>) -> Result<usize, String> {
    let per_core = || {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    };
    let Some(setting) = setting else {
        return Ok(per_core());
    };
    let text = setting.to_string_lossy();
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "TOKIO_WORKER_THREADS={text:?} is not a number of worker threads: set it to a \
             whole number of 1 or more, or unset it for one per core ({} here)",
            per_core()
        )),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    bulwark_server::install_crypto_provider();
    match command {
        Command::Serve {
            config,
            listen,
            journal,
            admin_token,
        } => {
            let mut cfg = bulwark_server::config::load(&config)?;
            if let Some(listen) = listen {
                cfg.listen = listen;
            }
            if let Some(path) = journal {
                cfg.journal.path = path;
            }
            if let Some(token) = admin_token.filter(|t| !t.is_empty()) {
                cfg.admin_token = Some(bulwark_core::config::Secret::new(token));
            }
            let listener = tokio::net::TcpListener::bind(&cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            bulwark_server::run(listener, &cfg, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => match bulwark_server::config::load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} providers, {} routes)",
                    config.display(),
                    cfg.providers.len(),
                    cfg.routes.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("{err}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Mock { listen, name } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "mock provider `{name}` listening on http://{addr} (control API under /_mock/)");
            bulwark_mock::serve(listener, name, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { duration, seed } => demo::run(duration, seed).await,
        // 1 is "an objective failed"; a drill that could not run at all (an unknown
        // scenario, a bad config) is 2, so a CI job can tell the two apart.
        // Stopped by SIGTERM or Ctrl-C (a CI timeout, systemd), the drill is dropped,
        // which kills the gateways it started (with their chaos and the journal's
        // lock) instead of leaving them running after it.
        Command::Drill(args) => tokio::select! {
            result = drill::run(args) => match result {
                Ok(code) => Ok(code),
                Err(err) => {
                    eprintln!("bulwark drill: {}", chain_text(&err));
                    Ok(ExitCode::from(2))
                }
            },
            () = shutdown_signal() => {
                eprintln!("bulwark drill: stopped by a signal before it ended; its gateways were stopped and no report was written");
                Ok(ExitCode::from(2))
            }
        },
        Command::Availability(args) => availability::run(args).await,
        Command::Journal { command } => match command {
            JournalCommand::List {
                config,
                status,
                limit,
            } => {
                let (journal, _) = bulwark_server::config::load_storage(&config)?;
                journal_cli::journal_list(&journal, status.as_deref(), limit).await
            }
            JournalCommand::Export {
                config,
                since,
                status,
            } => {
                let (journal, _) = bulwark_server::config::load_storage(&config)?;
                journal_cli::journal_export(&journal, since.as_deref(), status.as_deref()).await
            }
            JournalCommand::Stats { config } => {
                let (journal, backup) = bulwark_server::config::load_storage(&config)?;
                journal_cli::journal_stats(&journal, backup.as_ref()).await
            }
        },
        Command::Backup { config } => {
            let (journal, backup) = bulwark_server::config::load_storage(&config)?;
            let Some(backup) = backup.as_ref() else {
                anyhow::bail!(
                    "{}: no `backup:` section (add `backup: {{to: file:///var/backups/bulwark}}`)",
                    config.display()
                );
            };
            journal_cli::backup(&journal, backup).await
        }
        Command::Restore {
            from,
            to,
            at,
            config,
        } => {
            let backup = match config {
                Some(path) => bulwark_server::config::load_storage(&path)?.1,
                None => None,
            };
            journal_cli::restore(&from, &to, at.as_deref(), backup.as_ref()).await
        }
        Command::Verify { path } => journal_cli::verify(&path).await,
        Command::Status {
            url,
            admin_token,
            json,
        } => status(&url, admin_token.as_deref(), json).await,
    }
}

async fn status(url: &str, token: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    if json {
        let report = bulwark_observe::render::fetch_status(&client, url, token).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        bulwark_observe::render::status_command(&client, url, token).await?
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat, quiet: bool) {
    // The demo prints alerts itself; the log notifier would say the same on stderr.
    let default = if quiet {
        "error,bulwark_observe::alerts=off"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a terminal: escape codes in a file, journald or a log shipper
    // are noise (`NO_COLOR` turns them off on a terminal too).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
