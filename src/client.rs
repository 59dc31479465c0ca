//! `refract client URL`: a small interactive WebSocket client, so that trying the gateway needs
//! nothing but the binary. Each line read from stdin goes out as a text frame; each frame that
//! comes in is printed: text as it is, binary as `[binary N bytes] <base64>`, the close as
//! `[closed CODE reason]` (on stderr). End of input sends a 1000 close and waits for the answer.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Connects to `url` with `headers` (`Name: value`) and relays stdin and stdout until either
/// side ends. An error says what went wrong (a refused upgrade with its status and body).
pub async fn run(url: &str, headers: &[String]) -> anyhow::Result<()> {
    let mut request = url.into_client_request()?;
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header {header}: expected \"Name: value\""))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())?;
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value.trim())?);
    }
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(pair) => pair,
        Err(WsError::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let body = String::from_utf8_lossy(body);
            anyhow::bail!("refused: HTTP {} {}", response.status(), body.trim());
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!("[connected to {url}; type lines to send, end input (Ctrl-D) to close]");
    let (mut sink, mut stream) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut input_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line? {
                Some(line) => sink.send(Message::text(line)).await?,
                None => {
                    input_open = false;
                    let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    sink.send(Message::Close(Some(close))).await?;
                }
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    stdout.write_all(format!("{}\n", text.as_str()).as_bytes()).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Binary(data))) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
                    let line = format!("[binary {} bytes] {b64}\n", data.len());
                    stdout.write_all(line.as_bytes()).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Close(frame))) => {
                    match frame {
                        Some(f) => eprintln!("[closed {} {}]", u16::from(f.code), f.reason),
                        None => eprintln!("[closed]"),
                    }
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {
                    eprintln!("[connection ended]");
                    return Ok(());
                }
            },
        }
    }
}
