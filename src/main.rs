//! The `refract` binary: parse the command line, load and validate config, start logging, run,
//! and turn signals into the one shutdown.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "refract",
    version,
    about = "A WebSocket gateway onto Redis",
    long_about = "A WebSocket gateway onto Redis.\n\n\
        `refract --config FILE` runs the gateway; `refract check --config FILE` validates the \
        file and exits. Any key can be overridden from the environment as \
        REFRACT__SECTION__KEY (for example REFRACT__SERVER__LISTEN=127.0.0.1:9000)."
)]
struct Cli {
    /// Config file (TOML) to run with.
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        default_value = "routes.toml"
    )]
    config: PathBuf,
    /// This node's id (unique among nodes on one Redis); overrides `node_id` in the file.
    /// Generated at start when neither is given.
    #[arg(long, env = "REFRACT_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config file and exit: 0 when valid, 64 with the key at fault otherwise.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match refract::Settings::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("refract: config error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(id) = cli.node_id {
        settings.node_id = Some(id);
        if let Err(e) = settings.validate() {
            eprintln!(
                "refract: config error: --node-id/REFRACT_NODE_ID: {}",
                e.message
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if let Some(Command::Check) = cli.command {
        println!(
            "{}: ok ({} routes)",
            cli.config.display(),
            settings.routes.len()
        );
        return ExitCode::SUCCESS;
    }

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REFRACT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refract: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refract: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: refract::Settings) -> anyhow::Result<()> {
    let listen = settings.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    refract::run(settings, listener, shutdown).await?;
    Ok(())
}

/// The first SIGTERM or Ctrl-C starts a graceful shutdown; a second one exits at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
