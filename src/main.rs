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
        file and exits; `refract client URL` is a small WebSocket client for trying it. Any key can be overridden from the environment as \
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
    /// Mint a token that a route's `auth.jwt` accepts (HMAC routes only), for testing:
    /// `refract token --config F --route /secure --sub alice --claim role=admin`.
    Token {
        /// The route whose JWT settings (secret, issuer, audience) the token is for.
        #[arg(long)]
        route: String,
        /// The `sub` claim: who the token is about.
        #[arg(long)]
        sub: Option<String>,
        /// Lifetime, e.g. `1h`, `15m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Extra claim `key=value`; the value is JSON if it parses as JSON, else a string.
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
    },
    /// Try a route or endpoint: `refract client ws://127.0.0.1:8080/quotes`. Lines typed are
    /// sent as text frames; frames received are printed. Needs no config file.
    Client {
        /// The WebSocket URL, `ws://host:port/path[?query]`.
        url: String,
        /// An extra request header, `"Name: value"` (for example an `Origin` or a token).
        #[arg(long = "header", short = 'H', value_name = "HEADER")]
        headers: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Client { url, headers }) = &cli.command {
        return client(url, headers);
    }
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
    if settings.routes.is_empty() && settings.channels.is_none() {
        eprintln!(
            "refract: warning: {}: no routes and no [channels]: nothing to serve but /healthz, \
             /readyz and /metrics",
            cli.config.display()
        );
    }
    match cli.command {
        Some(Command::Check) => {
            println!(
                "{}: ok ({} routes)",
                cli.config.display(),
                settings.routes.len()
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::Token {
            route,
            sub,
            ttl,
            claims,
        }) => {
            return match mint(&settings, &route, sub, ttl, &claims) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("refract: token: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::Client { .. }) | None => {}
    }

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REFRACT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();

    raise_file_limit();
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

fn client(url: &str, headers: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refract: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(refract::client::run(url, headers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refract client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A token for `route`, signed with the route's own HMAC secret and carrying its issuer and
/// first audience.
fn mint(
    settings: &refract::Settings,
    route: &str,
    sub: Option<String>,
    ttl: std::time::Duration,
    extra: &[String],
) -> anyhow::Result<String> {
    let jwt = settings
        .routes
        .get(route)
        .ok_or_else(|| anyhow::anyhow!("no route \"{route}\" in the config"))?
        .auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .ok_or_else(|| anyhow::anyhow!("route \"{route}\" has no auth.jwt"))?;
    if jwt.public_key_file.is_some() {
        anyhow::bail!("route \"{route}\" verifies with a public key: sign with your private key");
    }
    let algorithm = jwt
        .algorithm
        .as_deref()
        .unwrap_or("HS256")
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown algorithm"))?;
    let mut claims = serde_json::Map::new();
    if let Some(sub) = sub {
        claims.insert("sub".into(), sub.into());
    }
    let first = |v: &Option<refract::auth::OneOrMany>| match v {
        Some(refract::auth::OneOrMany::One(s)) => Some(s.clone()),
        Some(refract::auth::OneOrMany::Many(list)) => list.first().cloned(),
        None => None,
    };
    if let Some(iss) = first(&jwt.issuer) {
        claims.insert("iss".into(), iss.into());
    }
    if let Some(aud) = first(&jwt.audience) {
        claims.insert("aud".into(), aud.into());
    }
    for pair in extra {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--claim {pair}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
        claims.insert(k.to_owned(), value);
    }
    let secret = jwt.secret_bytes().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(refract::auth::mint_hmac(&secret, algorithm, claims, ttl)?)
}

async fn serve(settings: refract::Settings) -> anyhow::Result<()> {
    let listen = settings.server.listen;
    let listener = refract::http::serve::bind(listen, settings.server.listen_backlog)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    refract::run(settings, listener, shutdown).await?;
    Ok(())
}

/// Every connection is a file descriptor: raise the soft limit to the hard one, so the process
/// can hold as many connections as the system allows without a `ulimit` in front of it.
fn raise_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files = limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
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
