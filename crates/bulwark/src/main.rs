//! `bulwark`: the command line. Parses arguments, loads configuration, and calls the
//! library crates; no gateway logic lives here.

mod demo;

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
    /// Show failover on this machine: three mock providers, the gateway, traffic,
    /// and providers breaking on a script. No keys, no network.
    Demo {
        /// Requests sent in each phase of the script.
        #[arg(long, default_value_t = 5)]
        requests_per_phase: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, matches!(cli.command, Command::Demo { .. }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("bulwark: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bulwark: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    bulwark_server::install_crypto_provider();
    match command {
        Command::Serve { config, listen } => {
            let mut cfg = bulwark_server::config::load(&config)?;
            if let Some(listen) = listen {
                cfg.listen = listen;
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
        Command::Demo { requests_per_phase } => demo::run(requests_per_phase).await,
    }
}

fn init_logging(format: LogFormat, quiet: bool) {
    let default = if quiet { "error" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
