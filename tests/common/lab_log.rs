//! The local Rekor-compatible log (`provd dev-log`), served in-process on port 0 with its
//! fault modes allowed: a real log over real HTTP for the tests that submit to it, sync
//! from it or break it. Each test adds the configuration it needs in its own `impl LabLog`.

use std::path::PathBuf;

use actors::domain::keys::{Algorithm, PrivateKey};
use provd::devlog::{DevLog, DevLogConfig, DevLogInfo, Faults};
use tokio::sync::oneshot;

/// One local log, stopped when dropped.
pub struct LabLog {
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub base: String,
    /// Its keys, origins and IDs.
    pub info: DevLogInfo,
    /// A client for its fault switch.
    pub http: reqwest::Client,
    /// A P-256 key for signing the envelopes a test submits.
    pub signer: PrivateKey,
    _stop: oneshot::Sender<()>,
    dir: tempfile::TempDir,
}

impl LabLog {
    /// Opens a fresh log in a temporary directory and serves it.
    pub async fn start() -> LabLog {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DevLog::open(DevLogConfig {
            data_dir: dir.path().join("log"),
            allow_faults: true,
            ..DevLogConfig::default()
        })
        .expect("dev log opens");
        let info = log.info().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(log.serve(listener, async {
            let _ = stopped.await;
        }));
        let signer = PrivateKey::generate(Algorithm::P256, &mut |buf: &mut [u8]| {
            getrandom::fill(buf).map_err(|e| e.to_string())
        })
        .expect("key");
        LabLog {
            base,
            info,
            http: reqwest::Client::new(),
            signer,
            _stop: stop,
            dir,
        }
    }

    /// Replaces the log's fault settings (`Faults::default()` makes it honest again).
    pub async fn set_faults(&self, faults: &Faults) {
        let resp = self
            .http
            .post(format!("{}/__faults", self.base))
            .json(faults)
            .send()
            .await
            .expect("faults");
        assert!(resp.status().is_success(), "faults refused: {resp:?}");
    }

    /// A directory beside the log's, living as long as it (e.g. a tile cache).
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }
}
