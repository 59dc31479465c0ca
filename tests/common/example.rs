//! The documented example programs (docs/examples/*.py), run for real by the tests.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::WAIT;

/// An example program, started and seen ready.
pub struct Example {
    child: tokio::process::Child,
}

impl Example {
    /// Runs `docs/examples/<script>` with `args` under `python3` (or `REFRACT_TEST_PYTHON`) and
    /// waits for its first line to start with `ready`.
    pub async fn start(script: &str, args: &[&str], ready: &str) -> Self {
        let python = std::env::var("REFRACT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = tokio::process::Command::new(python)
            .arg(format!(
                "{}/docs/examples/{script}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with redis-py (pip install -r docs/examples/requirements.txt)");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, out.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} did not start in time"))
            .unwrap()
            .unwrap_or_default();
        assert!(
            line.starts_with(ready),
            "{script} said {line:?}, not {ready:?}"
        );
        Self { child }
    }

    /// Sends SIGTERM and asserts the program exits cleanly.
    pub async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the example exits in time")
            .unwrap();
        assert!(status.success(), "the example exits cleanly on SIGTERM");
    }
}
