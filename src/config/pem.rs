//! PEM files named in the config (`redis.tls_*`, `server.tls.*`): read and checked at validation,
//! so a wrong path or a file that is not what its key says fails `refract check` naming the key.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{ConfigError, ensure};

/// The bytes of a PEM file of certificates, after checking it holds at least one.
pub fn certificates(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    let found = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    let message = format!("{}: no PEM certificate", path.display());
    ensure(found > 0, key, message)?;
    Ok(pem)
}

/// The bytes of a PEM private key file, after checking it holds a key.
pub fn private_key(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(key, path)?;
    let message = format!("{}: no PEM private key", path.display());
    ensure(PrivateKeyDer::from_pem_slice(&pem).is_ok(), key, message)?;
    Ok(pem)
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(key, format!("{}: {e}", path.display())))
}

/// Makes ring rustls's crypto provider for the process (every TLS: the listener, `rediss://`,
/// `https://` services and hooks); a second call does nothing.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS server configuration from a certificate chain and its key (HTTP/1.1 only), checked
/// to go together.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::ServerConfig, ConfigError> {
    let certs = certificates("server.tls.cert_file", cert_file)?;
    let key = private_key("server.tls.key_file", key_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs)
        .filter_map(Result::ok)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&key).expect("checked above");
    install_crypto_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ConfigError::new("server.tls.key_file", format!("{e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A TLS client configuration for `rediss://` servers: trusting the certificates in `ca` (PEM)
/// or else the system's roots, and presenting `client` (certificate chain and key, PEM) to
/// servers that ask for one. Both were checked by validation.
pub fn client_config(
    ca: Option<&[u8]>,
    client: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, ConfigError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok);
            roots.add_parsable_certificates(certs);
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((certs, key)) => {
            let chain = CertificateDer::pem_slice_iter(certs)
                .filter_map(Result::ok)
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key).expect("checked by validation");
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::new("redis.tls_key_file", format!("{e}")))
        }
    }
}
