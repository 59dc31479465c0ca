//! Certificates for TLS tests, made with the `openssl` command: a CA, a server certificate for
//! 127.0.0.1 and a client certificate, all signed by the CA, valid for a day.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Named after the directory: two sets' CAs are strangers, not namesakes.
        let tag = d.file_name().unwrap().to_string_lossy();
        let ca = format!("/CN=refract test CA {tag}");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "1",
                "-subj",
                &ca,
            ],
        );
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN=refract test {name}"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.crt"),
                    "-days",
                    "1",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `redis-server` arguments for a TLS port with the server certificate, asking clients for
    /// theirs; it logs to `redis.log` here.
    pub fn server_args(&self, tls_port: u16) -> Vec<String> {
        let p = |f: &str| self.path(f).display().to_string();
        [
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            p("server.crt"),
            "--tls-key-file".into(),
            p("server.key"),
            "--tls-ca-cert-file".into(),
            p("ca.crt"),
            "--tls-auth-clients".into(),
            "yes".into(),
            "--logfile".into(),
            p("redis.log"),
        ]
        .to_vec()
    }

    /// What the server started with [`TestCerts::server_args`] has logged.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.path("redis.log")).unwrap_or_default()
    }

    /// `[redis]` keys that trust the CA and present the client certificate.
    pub fn redis_keys(&self) -> String {
        format!(
            "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            self.path("ca.crt").display(),
            self.path("client.crt").display(),
            self.path("client.key").display()
        )
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be on PATH");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
