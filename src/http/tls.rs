//! TLS on the listener (`[server.tls]`): the acceptor new connections use, replaced when the
//! certificate or key file changes (checked every `reload_interval`) or on SIGHUP. Connections
//! already open keep the certificate they were made with. A new pair that does not load (a
//! half-written file, a key that does not match) is refused, logged and counted, and the old
//! one stays in use.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;

use crate::Gateway;
use crate::config::{ConfigError, TlsSettings, pem};
use crate::metrics::Reload;

pub struct ServerTls {
    acceptor: RwLock<TlsAcceptor>,
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The files' modification times when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ServerTls {
    pub fn load(settings: &TlsSettings) -> Result<Self, ConfigError> {
        let config = pem::server_config(&settings.cert_file, &settings.key_file)?;
        let tls = Self {
            acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            cert_file: settings.cert_file.clone(),
            key_file: settings.key_file.clone(),
            loaded: Mutex::new((None, None)),
        };
        *tls.loaded.lock().unwrap() = tls.stamps();
        Ok(tls)
    }

    /// What a new connection's handshake uses.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap().clone()
    }

    fn stamps(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (modified(&self.cert_file), modified(&self.key_file))
    }

    /// Loads the files again if they changed since the last load (or always, with `force`).
    /// `Ok(false)`: nothing to do.
    pub fn reload(&self, force: bool) -> Result<bool, ConfigError> {
        let stamps = self.stamps();
        if !force && stamps == *self.loaded.lock().unwrap() {
            return Ok(false);
        }
        // Remembered before loading: a pair that fails is not retried until it changes again.
        *self.loaded.lock().unwrap() = stamps;
        let config = pem::server_config(&self.cert_file, &self.key_file)?;
        *self.acceptor.write().unwrap() = TlsAcceptor::from(Arc::new(config));
        Ok(true)
    }
}

/// Reloads the certificate when its files change and on SIGHUP, until shutdown.
pub async fn watch(gw: Arc<Gateway>, tls: Arc<ServerTls>, settings: TlsSettings) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(settings.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let hangup = async {
            match &mut hangups {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let force = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => false,
            _ = hangup => true,
        };
        match tls.reload(force) {
            Ok(false) => {}
            Ok(true) => {
                gw.metrics.tls_reloaded(Reload::Ok);
                tracing::info!(cert = %tls.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                gw.metrics.tls_reloaded(Reload::Failed);
                tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use");
            }
        }
    }
}
