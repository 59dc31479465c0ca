//! The gateway's own connection to one server, for the two things the hot path does: hold a
//! subscription, and publish pipelines. RESP2 over TCP, TLS (`rediss://`) or a Unix socket,
//! written and read by its owner's task, with no task or channel between the socket and the
//! code that handles what it hears. Clusters are reached through redis-rs instead.
//!
//! Each read takes as much as the socket has and parses every whole frame in it, so a burst of
//! messages costs one wake-up; a message's payload is a slice of the bytes that were read.
//! (un)subscribing waits for the server's confirmation, keeping the messages that arrive
//! meanwhile for [`Conn::next`], in order. [`Conn::publish`] writes a whole batch of PUBLISH
//! commands at once and reads their replies in order.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::redis::error::RedisError;
use crate::redis::resp::{self, Heard, Value};

/// The largest frame taken: Redis's own bulk-string maximum (`proto-max-bulk-len`). Messages
/// over the gateway's own limits are counted and dropped by the code that decodes them.
const MAX_FRAME: usize = 512 * 1024 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

async fn tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect((host, port)).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn tls_stream(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    connector.connect(name, tcp(host, port).await?).await
}

/// What validation keeps from getting here.
fn unsupported(what: &str) -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{what} is not supported"),
    )
    .into()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A published message: its channel and payload.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: Bytes,
    pub payload: Bytes,
}

impl Message {
    /// The channel's name, if it is UTF-8 (every channel the gateway subscribes to is).
    pub fn channel(&self) -> Option<&str> {
        std::str::from_utf8(&self.channel).ok()
    }
}

pub struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    out: BytesMut,
    /// Messages heard while waiting for a confirmation.
    heard: VecDeque<Message>,
}

impl Conn {
    /// Connects and authenticates as `info` says: over TCP, a Unix socket, or TLS through
    /// `tls` (which every `rediss://` config has; validation refuses `#insecure`).
    pub async fn connect(
        info: &ConnectionInfo,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Self, RedisError> {
        let io: Box<dyn Io> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Box::new(tcp(host, *port).await?),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                ..
            } => {
                let connector = tls.ok_or_else(|| unsupported("rediss:// without TLS settings"))?;
                Box::new(tls_stream(connector, host, *port).await?)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            _ => return Err(unsupported("rediss:// without a certificate check")),
        };
        let mut conn = Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::new(),
            heard: VecDeque::new(),
        };
        let redis = info.redis_settings();
        if let Some(password) = redis.password() {
            conn.auth(redis.username(), password).await?;
        }
        Ok(conn)
    }

    async fn auth(&mut self, user: Option<&str>, password: &str) -> Result<(), RedisError> {
        let args: &[&[u8]] = match user {
            Some(user) => &[b"AUTH", user.as_bytes(), password.as_bytes()],
            None => &[b"AUTH", password.as_bytes()],
        };
        self.send(args).await?;
        match self.read_value().await? {
            Value::Error(e) => Err(RedisError::Refused(String::from_utf8_lossy(&e).into())),
            _ => Ok(()),
        }
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        self.out.clear();
        resp::encode(&mut self.out, args);
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), RedisError> {
        self.io.write_all(&self.out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends a PUBLISH for every `(channel, payload)` as one pipeline; returns how many
    /// subscribers each reached. Not for a subscribed connection.
    pub async fn publish(&mut self, batch: &[(&str, &[u8])]) -> Result<Vec<i64>, RedisError> {
        self.out.clear();
        for (channel, payload) in batch {
            resp::encode(&mut self.out, &[b"PUBLISH", channel.as_bytes(), payload]);
        }
        self.flush().await?;
        let mut receivers = Vec::with_capacity(batch.len());
        let mut refused = None;
        for _ in batch {
            match self.read_value().await? {
                Value::Int(n) => receivers.push(n),
                // Read the rest, so the connection stays in step.
                Value::Error(e) => {
                    refused.get_or_insert(String::from_utf8_lossy(&e).into_owned());
                    receivers.push(0);
                }
                other => return Err(RedisError::Refused(format!("unexpected reply {other:?}"))),
            }
        }
        match refused {
            Some(e) => Err(RedisError::Refused(e)),
            None => Ok(receivers),
        }
    }

    /// Sends `command` (`SUBSCRIBE`, `PUNSUBSCRIBE`, ...) for one name and waits until the server
    /// confirms it.
    pub async fn command(&mut self, command: &'static str, name: &str) -> Result<(), RedisError> {
        self.send(&[command.as_bytes(), name.as_bytes()]).await?;
        loop {
            match Heard::of(self.read_value().await?) {
                Heard::Confirmed { kind, name: n }
                    if kind.eq_ignore_ascii_case(command.as_bytes()) && n == name.as_bytes() =>
                {
                    return Ok(());
                }
                Heard::Message { channel, payload } => {
                    self.heard.push_back(Message { channel, payload })
                }
                Heard::Error(e) => {
                    return Err(RedisError::Refused(String::from_utf8_lossy(&e).into()));
                }
                Heard::Confirmed { .. } | Heard::Other => {}
            }
        }
    }

    /// The next message. Cancel-safe: what was read stays in the buffer.
    pub async fn next(&mut self) -> Result<Message, RedisError> {
        if let Some(m) = self.heard.pop_front() {
            return Ok(m);
        }
        loop {
            if let Heard::Message { channel, payload } = Heard::of(self.read_value().await?) {
                return Ok(Message { channel, payload });
            }
        }
    }

    /// The next whole value, reading as needed.
    async fn read_value(&mut self) -> Result<Value, RedisError> {
        loop {
            if let Some(v) = resp::take(&mut self.buf, MAX_FRAME)? {
                return Ok(v);
            }
            if self.buf.len() > MAX_FRAME {
                return Err(resp::RespError::TooLarge(MAX_FRAME).into());
            }
            self.buf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(RedisError::Closed);
            }
        }
    }
}
