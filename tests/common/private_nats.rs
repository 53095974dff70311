//! A NATS server of a test's own (its own port and store directory), started from the
//! machine's `nats-server` binary, so the test can take it away and bring it back without
//! disturbing other tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to listen.
const WAIT: Duration = Duration::from_secs(60);

/// A NATS server with JetStream owned by one test: its own port and store directory.
pub struct PrivateNats {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    /// Finds `nats-server` (`PROVD_TEST_NATS_SERVER`, `PATH`, `/usr/sbin`), or `None` after
    /// saying why; under `CI=true` a missing binary is a failure.
    fn binary() -> Option<PathBuf> {
        let candidates = std::env::var_os("PROVD_TEST_NATS_SERVER")
            .map(PathBuf::from)
            .into_iter()
            .chain(
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| d.join("nats-server")),
            )
            .chain([PathBuf::from("/usr/sbin/nats-server")]);
        for c in candidates {
            if c.is_file() {
                return Some(c);
            }
        }
        let msg = "nats-server not found (set PROVD_TEST_NATS_SERVER, or install it as \
                   `just services` expects)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg} (CI=true: a missing service is a failure)");
        }
        eprintln!("SKIPPED: {msg}");
        None
    }

    pub fn start() -> Option<PrivateNats> {
        let mut nats = PrivateNats {
            binary: Self::binary()?,
            port: super::dead_port(),
            store: tempfile::tempdir().expect("store dir"),
            child: None,
        };
        nats.spawn();
        Some(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server on this port and store, and waits until it accepts connections.
    pub fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private nats-server never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server at once, as a crash or a cut link would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}
