//! refract-bench: the load generator, echo service and fan-out driver behind `bench/run.sh`.
//!
//! Every subcommand speaks only the Prism wire format (WebSocket text frames on the client side,
//! JSON on Redis pub/sub on the service side), so the same harness measures any gateway that
//! speaks it. Each measuring subcommand prints one JSON object on stdout; logs go to stderr.
//!
//! - [`echo`]: the service: answers every `message` event on its request channel (sharded, in a
//!   Redis Cluster, with `--cluster`).
//! - [`ceiling`]: the same closed loop without a gateway, straight to Redis.
//! - [`ws`]: the closed loop through a gateway over real WebSockets.
//! - [`idle`]: many idle connections: accept time, gateway memory, a round trip while held.
//! - [`fanout`]: one "publish" delivered to every connection (the Channels stand-in).
//! - [`chfanout`]: Channels fan-out: one `PUBLISH to:<topic>:tick` to N joined Phoenix sockets
//!   (`SPUBLISH to:{<topic>}` with `--sharded`).
//! - [`polling`]: N connections on a route whose HTTP service is polled; polls/s achieved.
//! - [`rawfanout`]: the fan-out ceiling, a minimal WebSocket server that writes one pre-encoded
//!   frame to every socket (driven by `chfanout --raw`).
//! - [`massclose`]: N Channels members of one topic close at once; time until the gateway's
//!   membership gauge and the presence hash are clean.
//! - [`reload`]: a SIGHUP that removes a route with N clients on it; time until each has its 1001
//!   close, the service every `disconnect` and the gateway its reload counted, and the kept
//!   route's clients still open and answered.

mod ceiling;
mod chfanout;
mod common;
mod echo;
mod fanout;
mod idle;
mod massclose;
mod polling;
mod rawfanout;
mod reload;
mod ws;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "refract-bench",
    about = "Benchmarks for refract and any Prism gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The echo service: SUBSCRIBE the request channel, answer each `message` event on its
    /// `responseChannel` with the same text (SSUBSCRIBE and SPUBLISH with `--cluster`).
    Echo(echo::Args),
    /// Closed loop without a gateway: virtual clients PUBLISH `message` events, one subscriber
    /// routes the replies back by id.
    Ceiling(ceiling::Args),
    /// Closed loop through a gateway: WebSocket clients send text and await its echo.
    Ws(ws::Args),
    /// Hold many idle connections; measure accept time, gateway RSS and a round trip.
    Idle(idle::Args),
    /// Broadcast one reply to every connection of a route, by id; measure publish-to-last.
    Fanout(fanout::Args),
    /// Channels: N sockets join a topic; one PUBLISH timed to the last socket's frame.
    Chfanout(chfanout::Args),
    /// N connections on a polled route; polls/s achieved against the configured rate.
    Polling(polling::Args),
    /// The fan-out ceiling's server: accepts sockets, writes each broadcast text to all of them.
    Rawfanout(rawfanout::Args),
    /// Channels: N members of one topic close at once; time until membership and presence are clean.
    Massclose(massclose::Args),
    /// Config reload: SIGHUP removes a route with N clients; time to their closes, their
    /// disconnects and the reload counted, with the kept route's clients checked.
    Reload(reload::Args),
}

fn main() -> anyhow::Result<()> {
    // Thousands of sockets per process: take the whole hard limit.
    let nofile = rlimit::increase_nofile_limit(u64::MAX)?;
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Echo(a) => echo::run(a).await,
            Command::Ceiling(a) => ceiling::run(a).await,
            Command::Ws(a) => ws::run(a).await,
            Command::Idle(a) => idle::run(a, nofile).await,
            Command::Fanout(a) => fanout::run(a).await,
            Command::Chfanout(a) => chfanout::run(a).await,
            Command::Polling(a) => polling::run(a).await,
            Command::Rawfanout(a) => rawfanout::run(a).await,
            Command::Massclose(a) => massclose::run(a).await,
            Command::Reload(a) => reload::run(a, nofile).await,
        }
    })?;
    let mut result = result;
    if let Some(obj) = result.as_object_mut() {
        obj.insert("loadgen_cpu_s".into(), common::cpu_seconds("self").into());
    }
    println!("{result}");
    // Do not wait for lingering sockets or tasks: the measurement is printed.
    runtime.shutdown_background();
    Ok(())
}
