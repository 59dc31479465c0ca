//! The fan-out ceiling: a minimal WebSocket server (tokio, no Redis, no JSON, no Phoenix) that
//! accepts any number of sockets and, for each text it gets on its control connection, encodes
//! one text frame once and writes those bytes to every socket. Driven by `chfanout --raw`, which
//! times it exactly as it times refract's Channels fan-out.
//!
//! Control protocol (one connection at a time): a big-endian u32 length, then that many bytes
//! of text to broadcast; a length of 0 asks for the count of sockets held (answered as a u32).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

#[derive(clap::Args)]
pub struct Args {
    /// Where WebSocket clients connect (any path).
    #[arg(long)]
    listen: String,
    /// Where the driver sends the texts to broadcast.
    #[arg(long)]
    control: String,
    /// Exit after this long whatever happens.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

#[derive(Default)]
struct Counts {
    held: AtomicU64,
    accepted: AtomicU64,
    broadcasts: AtomicU64,
    written: AtomicU64,
    lagged: AtomicU64,
}

pub async fn run(a: Args) -> anyhow::Result<serde_json::Value> {
    let listener = TcpListener::bind(&a.listen).await?;
    let control = TcpListener::bind(&a.control).await?;
    // The frame is shared by every socket; a socket more than 1024 frames behind skips.
    let (tx, _) = broadcast::channel::<Arc<[u8]>>(1024);
    let counts = Arc::new(Counts::default());
    eprintln!(
        "rawfanout: sockets on {}, control on {}",
        a.listen, a.control
    );
    let accept = {
        let (tx, counts) = (tx.clone(), counts.clone());
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue; // out of files, say: the driver sees the count short
                };
                let (rx, counts) = (tx.subscribe(), counts.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, rx, &counts).await;
                });
            }
        }
    };
    let controls = {
        let counts = counts.clone();
        async move {
            loop {
                if let Ok((s, _)) = control.accept().await {
                    let _ = drive(s, &tx, &counts).await;
                }
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = controls => {}
        _ = tokio::time::sleep(Duration::from_secs(a.max_seconds)) => {}
        _ = crate::echo::terminated() => {}
    }
    Ok(json!({
        "scenario": "rawfanout_server",
        "accepted": counts.accepted.load(Relaxed),
        "broadcasts": counts.broadcasts.load(Relaxed),
        "frames_written": counts.written.load(Relaxed),
        "lagged": counts.lagged.load(Relaxed),
    }))
}

/// One socket: the handshake, then every broadcast frame written as it comes; what the client
/// sends is read and dropped, and its end ends the task.
async fn serve(
    mut s: TcpStream,
    mut rx: broadcast::Receiver<Arc<[u8]>>,
    counts: &Counts,
) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0 && req.len() < 16 * 1024, "bad handshake");
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let key = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .context("no Sec-WebSocket-Key")?;
    // Counted before the client can see the 101: once its connect returns, it is held.
    counts.accepted.fetch_add(1, Relaxed);
    counts.held.fetch_add(1, Relaxed);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let result = async {
        s.write_all(response.as_bytes()).await?;
        let (mut read, mut write) = s.split();
        // Counted here and added once at the end: no shared cache line per frame.
        let mut written = 0;
        let r = loop {
            tokio::select! {
                frame = rx.recv() => match frame {
                    Ok(frame) => {
                        if let Err(e) = write.write_all(&frame).await {
                            break Err(e.into());
                        }
                        written += 1;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        counts.lagged.fetch_add(n, Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => break Ok(()),
                },
                n = read.read(&mut buf) => match n {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e.into()),
                },
            }
        };
        counts.written.fetch_add(written, Relaxed);
        r
    }
    .await;
    counts.held.fetch_sub(1, Relaxed);
    result
}

/// The control connection: texts to broadcast, or a request for the count of sockets.
async fn drive(
    mut s: TcpStream,
    tx: &broadcast::Sender<Arc<[u8]>>,
    counts: &Counts,
) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    loop {
        let len = s.read_u32().await? as usize;
        if len == 0 {
            let held = u32::try_from(counts.held.load(Relaxed))?;
            s.write_all(&held.to_be_bytes()).await?;
            continue;
        }
        let mut frame = Vec::with_capacity(len + 10);
        // FIN + text; a server's frames are not masked.
        frame.push(0x81);
        match len {
            0..=125 => frame.push(len as u8),
            126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let start = frame.len();
        frame.resize(start + len, 0);
        s.read_exact(&mut frame[start..]).await?;
        counts.broadcasts.fetch_add(1, Relaxed);
        let _ = tx.send(frame.into());
    }
}
