//! The tile client, the filesystem tile cache, the tile proxy, the tile-sync actor, the
//! mirror (`provd tiles sync`) and the proof builder (`provd rekor prove`), against the local
//! log (`provd dev-log`) served in-process over real HTTP, with provd on real PostgreSQL and
//! NATS.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey};
use actors::domain::merkle::{
    Hash, hash_from_slice, leaf_hash, verify_consistency, verify_inclusion,
};
use actors::domain::note::{Verifier, verify_checkpoint};
use actors::domain::tiles::{Tile, TileKind, entry_bundles_for_size, hash_tiles_for_size};
use actors::ports::{RekorClient, RekorSubmission};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestApp, both_modes, eventually};
use events::data::CheckpointObserved;
use events::{CloudEvent, EventKind, Subjects};
use provd::adapters::rekor::build_backend;
use provd::adapters::tiles::client::TileClient;
use provd::config::rekor::RawRekorBackend;
use provd::config::{RawRekor, RekorConfig, TilesConfig};
use provd::devlog::store::EntryFile;
use provd::devlog::{DevLog, DevLogConfig, DevLogError, DevLogInfo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The local log, served in-process on port 0, prefilled with entries.
struct Lab {
    base: String,
    info: DevLogInfo,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DevLogError>>,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// A log holding `prefill` entries, written to its data directory before it opens.
    async fn start(prefill: u64) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut file, _) = EntryFile::open(dir.path()).expect("entries file");
        let bodies: Vec<Vec<u8>> = (0..prefill)
            .map(|i| format!(r#"{{"kind":"lab-entry","n":{i}}}"#).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        file.append_all(1_700_000_000, &refs).expect("prefill");
        drop(file);
        let log = DevLog::open(DevLogConfig {
            data_dir: dir.path().to_path_buf(),
            ..DevLogConfig::default()
        })
        .expect("dev log opens");
        assert_eq!(log.size(), prefill);
        let info = log.info().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(log.serve(listener, async {
            let _ = stopped.await;
        }));
        Lab {
            base,
            info,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Stops serving; afterwards the log cannot be reached.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
    }

    async fn get(&self, path: &str) -> Vec<u8> {
        let resp = self
            .http
            .get(format!("{}/{path}", self.base))
            .send()
            .await
            .expect("upstream");
        assert!(resp.status().is_success(), "upstream {path}: {resp:?}");
        resp.bytes().await.expect("body").to_vec()
    }

    fn backend(&self) -> RawRekorBackend {
        RawRekorBackend {
            kind: Some("private".into()),
            api: Some("v2".into()),
            url: Some(self.base.clone()),
            keys: Some(vec![self.info.v2_vkey.clone()]),
            origin: Some(self.info.origin.clone()),
            max_attempts: Some(1),
            read_timeout: Some("10s".into()),
            ..RawRekorBackend::default()
        }
    }

    fn rekor(&self) -> RekorConfig {
        RawRekor {
            default_backend: Some("lab".into()),
            backends: [("lab".to_owned(), self.backend())].into(),
            queue: None,
        }
        .validate()
        .expect("valid rekor config")
    }

    /// Appends `n` entries through the Rekor v2 write API.
    async fn grow(&self, n: usize) {
        let client: Arc<dyn RekorClient> =
            build_backend(&self.rekor().backends["lab"]).expect("client");
        let key = PrivateKey::generate(Algorithm::P256, &mut |buf: &mut [u8]| {
            getrandom::fill(buf).map_err(|e| e.to_string())
        })
        .expect("key");
        for i in 0..n {
            let payload = format!(r#"{{"n":{i},"nonce":"{}"}}"#, uuid::Uuid::new_v4());
            let envelope =
                Envelope::sign("application/vnd.in-toto+json", payload.as_bytes(), &key, "");
            client
                .submit(&RekorSubmission {
                    envelope,
                    verifiers: vec![key.public_key()],
                })
                .await
                .expect("logged");
        }
    }

    fn verifier(&self) -> Verifier {
        Verifier::from_vkey(&self.info.v2_vkey).expect("vkey")
    }
}

async fn start_provd(lab: &Lab, cache_dir: &Path, prefetch: bool) -> Option<TestApp> {
    let rekor = lab.rekor();
    let tiles = TilesConfig {
        cache_dir: cache_dir.to_path_buf(),
        max_bytes: 64 << 20,
        backends: vec!["lab".into()],
        prefetch,
        require_token: false,
    };
    TestApp::start_with(move |c| {
        c.rekor = rekor;
        c.tiles = Some(tiles);
    })
    .await
}

impl TestApp {
    async fn proxy(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/tiles/lab/{path}")))
            .send()
            .await
            .expect("proxy")
    }
}

/// Every tile and entry bundle of a tree of `size` leaves.
fn all_tiles(size: u64) -> Vec<Tile> {
    hash_tiles_for_size(size)
        .into_iter()
        .chain(entry_bundles_for_size(size))
        .collect()
}

both_modes! {
/// The seed's step 7: tiles fetched by the tile client, cached in the filesystem cache and
/// served by the tile proxy, byte-identical to the log's.
async fn tiles_are_fetched_cached_and_served_byte_identical_to_upstream() {
    let lab = Lab::start(700).await;
    let cache = tempfile::tempdir().unwrap();
    let Some(app) = start_provd(&lab, cache.path(), false).await else {
        return;
    };

    // The tile client reads the same bytes the log serves.
    let client = TileClient::for_backend(&lab.rekor().backends["lab"]).expect("client");
    let upstream_checkpoint = lab.get("checkpoint").await;
    assert_eq!(client.checkpoint().await.unwrap(), upstream_checkpoint);
    let partial = Tile::new(TileKind::Hash(0), 2, 188).unwrap();
    assert_eq!(
        client.tile_or_full(&partial).await.unwrap().unwrap(),
        lab.get(&partial.path()).await
    );

    // The checkpoint through the proxy: the log's, verified, never cached by HTTP caches.
    let resp = app.proxy("checkpoint").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert_eq!(resp.bytes().await.unwrap(), upstream_checkpoint);
    verify_checkpoint(
        &upstream_checkpoint,
        &[lab.verifier()],
        Some(&lab.info.origin),
    )
    .unwrap();

    // Every tile: a miss first, then a hit, both byte-identical to the log's.
    let tiles = all_tiles(700);
    assert_eq!(
        tiles.len(),
        4 + 3,
        "3 level-0 tiles, 1 level-1 tile, 3 bundles"
    );
    for tile in &tiles {
        let upstream = lab.get(&tile.path()).await;
        for expected in ["miss", "hit"] {
            let resp = app.proxy(&tile.path()).await;
            assert_eq!(resp.status(), 200, "{}", tile.path());
            assert_eq!(resp.headers()["x-provd-cache"], expected, "{}", tile.path());
            let cache_control = if tile.is_full() {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            assert_eq!(resp.headers()["cache-control"], cache_control);
            assert_eq!(resp.bytes().await.unwrap(), upstream, "{}", tile.path());
        }
        let stored = std::fs::read(cache.path().join("lab").join(tile.path())).expect("cached");
        assert_eq!(stored, upstream, "{} on disk", tile.path());
    }
    // A narrower partial tile than the checkpoint implies is served from the cached one.
    let narrow = "tile/0/002.p/10";
    let resp = app.proxy(narrow).await;
    assert_eq!(resp.headers()["x-provd-cache"], "hit");
    assert_eq!(resp.bytes().await.unwrap(), lab.get(narrow).await);
    // The cache also holds the verified checkpoint, so it is a mirror `tiles verify` reads.
    assert_eq!(
        std::fs::read(cache.path().join("lab/checkpoint")).unwrap(),
        upstream_checkpoint
    );

    // A tile beyond the verified tree is not served.
    let resp = app.proxy("tile/0/003").await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tile_not_found");

    let labels = [("backend", "lab"), ("kind", "tile")];
    assert!(app.metric("provd_tile_cache_hits_total", &labels).await >= 4.0);
    assert!(app.metric("provd_tile_cache_misses_total", &labels).await >= 4.0);
    assert!(app.metric("provd_tile_cache_bytes", &[]).await > 0.0);
    app.finish().await;
}
}

both_modes! {
/// A tile changed on disk is refused: re-fetched and re-verified while the log is up, and
/// not served at all (502) while it is down.
async fn a_tampered_cached_tile_is_refused_not_served() {
    let mut lab = Lab::start(600).await;
    let cache = tempfile::tempdir().unwrap();
    let Some(app) = start_provd(&lab, cache.path(), false).await else {
        return;
    };
    let labels = [("backend", "lab"), ("kind", "tile")];
    // Metrics are process-wide (the other mode's run counts too): compare with the start.
    let corrupt_before = app.metric("provd_tile_cache_corrupt_total", &labels).await;
    let path = "tile/0/001";
    let file = cache.path().join("lab").join(path);
    let good = lab.get(path).await;
    assert_eq!(app.proxy(path).await.bytes().await.unwrap(), good);
    let bundle = "tile/entries/000";
    let good_bundle = lab.get(bundle).await;
    assert_eq!(app.proxy(bundle).await.bytes().await.unwrap(), good_bundle);
    // Every other tile too, so the cache can verify offline later.
    for tile in all_tiles(600) {
        assert_eq!(app.proxy(&tile.path()).await.status(), 200);
    }

    let flip = |file: &Path, at: usize| {
        let mut bytes = std::fs::read(file).unwrap();
        bytes[at] ^= 0x01;
        std::fs::write(file, &bytes).unwrap();
        bytes
    };
    let tampered = flip(&file, 100);
    let resp = app.proxy(path).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provd-cache"], "miss", "fetched again");
    let served = resp.bytes().await.unwrap();
    assert_eq!(served, good);
    assert_ne!(served, tampered);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "the cache file is repaired"
    );
    assert_eq!(
        app.metric("provd_tile_cache_corrupt_total", &labels).await - corrupt_before,
        1.0
    );

    // An entry bundle changed on disk is refused the same way.
    let bundle_file = cache.path().join("lab").join(bundle);
    flip(&bundle_file, 7);
    let resp = app.proxy(bundle).await;
    assert_eq!(resp.headers()["x-provd-cache"], "miss");
    assert_eq!(resp.bytes().await.unwrap(), good_bundle);

    // With the log gone, a tampered tile cannot be replaced: it is refused outright, while
    // intact tiles are still served from the cache.
    lab.stop().await;
    let tampered = flip(&file, 5000);
    let resp = app.proxy(path).await;
    assert_eq!(resp.status(), 502, "refused while the log is down");
    let body = resp.bytes().await.unwrap();
    assert_ne!(body.as_ref(), tampered.as_slice());
    let body: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    let resp = app.proxy(bundle).await;
    assert_eq!(resp.status(), 200, "intact tiles are served offline");
    assert_eq!(resp.bytes().await.unwrap(), good_bundle);
    let resp = app.proxy("checkpoint").await;
    assert_eq!(
        resp.status(),
        200,
        "the verified checkpoint is served offline"
    );
    app.finish().await;
}
}

/// Sends one raw HTTP/1.1 GET with the path exactly as given (no client-side
/// normalisation) and returns the status and body.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

both_modes! {
/// Requests that would reach outside the cache directory are refused with clear errors.
async fn paths_escaping_the_cache_directory_are_refused() {
    let lab = Lab::start(300).await;
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    std::fs::write(root.path().join("secret"), b"do not serve").unwrap();
    let Some(app) = start_provd(&lab, &cache, false).await else {
        return;
    };
    // Warm the cache so the log directory exists.
    assert_eq!(app.proxy("tile/0/001.p/44").await.status(), 200);
    let cases: &[(&str, u16, &str)] = &[
        ("/tiles/lab/tile/../../../secret", 400, "bad_tile_path"),
        ("/tiles/lab/tile/0/../../../../secret", 400, "bad_tile_path"),
        (
            "/tiles/lab/tile/..%2F..%2F..%2Fsecret",
            400,
            "bad_tile_path",
        ),
        (
            "/tiles/lab/tile/%2e%2e/%2e%2e/%2e%2e/secret",
            400,
            "bad_tile_path",
        ),
        (
            "/tiles/lab/tile/%2E%2E%2F%2E%2E%2Fsecret",
            400,
            "bad_tile_path",
        ),
        (
            "/tiles/lab/tile/0/000%2F..%2F..%2Fsecret",
            400,
            "bad_tile_path",
        ),
        ("/tiles/lab/tile/0/%5C..%5Csecret", 400, "bad_tile_path"),
        ("/tiles/lab/tile/entries/..%00/000", 400, "bad_tile_path"),
        ("/tiles/%2e%2e/checkpoint", 404, "unknown_log"),
        ("/tiles/..%2F..%2Fsecret/checkpoint", 404, "unknown_log"),
        ("/tiles/%2e%2e/tile/0/000", 404, "unknown_log"),
    ];
    for (path, status, code) in cases {
        let (got, body) = raw_get(app.addr(), path).await;
        assert_eq!(got, *status, "{path}: {body}");
        assert!(!body.contains("do not serve"), "{path}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(v["error"]["code"], *code, "{path}: {body}");
    }
    // A literal `..` normalised by the server's router never lands inside the proxy either.
    let (got, body) = raw_get(app.addr(), "/tiles/lab/../../secret").await;
    assert_ne!(got, 200, "{body}");
    assert!(!body.contains("do not serve"));
    app.finish().await;
}
}

both_modes! {
/// The tile-sync actor prefetches every tile of a checkpoint observed on
/// `rekor.checkpoints.observed`.
async fn the_tile_sync_actor_prefetches_tiles_of_observed_checkpoints() {
    let lab = Lab::start(520).await;
    let cache = tempfile::tempdir().unwrap();
    let Some(app) = start_provd(&lab, cache.path(), true).await else {
        return;
    };
    let note = String::from_utf8(lab.get("checkpoint").await).unwrap();
    let checkpoint = verify_checkpoint(note.as_bytes(), &[lab.verifier()], None).unwrap();
    let event = CloudEvent::new(
        "urn:provd:test",
        CheckpointObserved {
            backend: "lab".into(),
            origin: checkpoint.origin.clone(),
            tree_size: checkpoint.size,
            root_hash: hex::encode(checkpoint.root),
            note: note.clone(),
            observed_by: "another-node".into(),
        },
    );
    let subject =
        Subjects::new(app.config.nats_prefix.clone()).subject(EventKind::CheckpointObserved);
    app.app
        .bus()
        .publish(&subject, &event.id, event.to_json())
        .await
        .expect("published");
    let dir = cache.path().join("lab");
    eventually("every tile prefetched", Duration::from_secs(30), || {
        let dir = dir.clone();
        async move {
            all_tiles(520)
                .iter()
                .all(|t| dir.join(t.path()).is_file())
                .then_some(())
        }
    })
    .await;
    for tile in all_tiles(520) {
        assert_eq!(
            std::fs::read(dir.join(tile.path())).unwrap(),
            lab.get(&tile.path()).await,
            "{}",
            tile.path()
        );
    }
    eventually("prefetch counted", Duration::from_secs(10), || async {
        (app.metric("provd_tile_prefetch_total", &[("outcome", "ok")])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // Served from the cache without asking the log for the tile.
    let resp = app.proxy("tile/entries/002.p/8").await;
    assert_eq!(resp.headers()["x-provd-cache"], "hit");
    app.finish().await;
}
}

fn provd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_provd"))
}

fn write_config(dir: &Path, lab: &Lab) -> PathBuf {
    let path = dir.join("provd.toml");
    let text = format!(
        r#"
[rekor]
default_backend = "lab"

[rekor.backends.lab]
kind = "private"
api = "v2"
url = "{url}"
keys = ["{vkey}"]
origin = "{origin}"
"#,
        url = lab.base,
        vkey = lab.info.v2_vkey,
        origin = lab.info.origin,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| hash_from_slice(&hex::decode(h.as_str().unwrap()).unwrap()).unwrap())
        .collect()
}

fn hash(v: &Value) -> Hash {
    hash_from_slice(&hex::decode(v.as_str().unwrap()).unwrap()).unwrap()
}

/// `provd tiles sync` builds a mirror `provd tiles verify` accepts, and extends it after the
/// log grew; `provd rekor prove` prints proofs the domain's Merkle verification accepts.
#[tokio::test]
async fn tiles_sync_builds_and_extends_a_verified_mirror_and_prove_prints_checkable_proofs() {
    let lab = Lab::start(700).await;
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &lab);
    let mirror = work.path().join("mirror");
    let vkey = lab.info.v2_vkey.clone();

    let sync = |config: PathBuf, mirror: PathBuf| {
        tokio::task::spawn_blocking(move || {
            run_json(
                provd()
                    .arg("--config")
                    .arg(&config)
                    .args(["tiles", "sync", "--backend", "lab", "--json", "--dir"])
                    .arg(&mirror),
            )
        })
    };
    let verify = |mirror: PathBuf, vkey: String| {
        tokio::task::spawn_blocking(move || {
            run_json(
                provd()
                    .args(["tiles", "verify", "--json", "--key", &vkey])
                    .arg(&mirror),
            )
        })
    };

    let first = sync(config.clone(), mirror.clone()).await.unwrap();
    assert_eq!(first["size"], 700);
    assert_eq!(first["previous_size"], Value::Null);
    assert_eq!(first["fetched"], 7);
    let checked = verify(mirror.clone(), vkey.clone()).await.unwrap();
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["checkpoints"][0]["size"], 700);
    assert!(mirror.join("tile/0/002.p/188").is_file());

    // The log grows across a tile boundary; the next sync extends the mirror.
    lab.grow(70).await;
    let second = sync(config.clone(), mirror.clone()).await.unwrap();
    assert_eq!(second["size"], 770);
    assert_eq!(second["previous_size"], 700);
    assert!(
        second["present"].as_u64().unwrap() >= 4,
        "full tiles already mirrored are not fetched again: {second}"
    );
    assert!(mirror.join("tile/0/002").is_file());
    assert!(
        !mirror.join("tile/0/002.p").exists(),
        "a full tile replaces the partial ones"
    );
    let checked = verify(mirror.clone(), vkey.clone()).await.unwrap();
    assert_eq!(checked["valid"], true, "{checked}");
    assert_eq!(checked["checkpoints"][0]["size"], 770);

    // A tampered mirror fails `tiles verify`, and `--json | head` does not panic.
    let out = tokio::task::spawn_blocking({
        let mirror = mirror.clone();
        let vkey = vkey.clone();
        move || {
            let mut child = provd()
                .args(["tiles", "verify", "--json", "--key", &vkey])
                .arg(&mirror)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take());
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // `provd rekor prove`: an inclusion proof in an older tree and a consistency proof to the
    // checkpoint, checked here with the domain's verification and the log's key.
    let proof = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            run_json(provd().arg("--config").arg(&config).args([
                "rekor",
                "prove",
                "--backend",
                "lab",
                "--index",
                "300",
                "--size",
                "650",
            ]))
        }
    })
    .await
    .unwrap();
    let checkpoint = verify_checkpoint(
        proof["checkpoint"].as_str().unwrap().as_bytes(),
        &[lab.verifier()],
        Some(&lab.info.origin),
    )
    .expect("the checkpoint verifies with the log's key");
    assert_eq!(checkpoint.size, 770);
    let entry = B64.decode(proof["entry"].as_str().unwrap()).unwrap();
    assert_eq!(entry, br#"{"kind":"lab-entry","n":300}"#);
    let leaf = leaf_hash(&entry);
    assert_eq!(hash(&proof["leaf_hash"]), leaf);
    let inclusion = &proof["inclusion"];
    let root_650 = hash(&inclusion["root_hash"]);
    verify_inclusion(&leaf, 300, 650, &hashes(&inclusion["hashes"]), &root_650)
        .expect("inclusion verifies");
    let consistency = &proof["consistency"];
    assert_eq!(consistency["from_size"], 650);
    verify_consistency(
        650,
        770,
        &hashes(&consistency["hashes"]),
        &root_650,
        &checkpoint.root,
    )
    .expect("consistency verifies");
    // A wrong leaf does not verify against the same proof.
    assert!(
        verify_inclusion(
            &leaf_hash(b"forged"),
            300,
            650,
            &hashes(&inclusion["hashes"]),
            &root_650
        )
        .is_err()
    );

    // Tampering with a mirrored tile makes `tiles verify` fail.
    let file = mirror.join("tile/0/001");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let out = provd()
        .args(["tiles", "verify", "--key", &vkey])
        .arg(&mirror)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// An interrupted sync resumes from its staged tiles; a staged tile that does not verify
/// fails the sync and is thrown away, so the next run fetches afresh and succeeds.
#[tokio::test]
async fn an_interrupted_sync_resumes_and_a_bad_staged_tile_is_thrown_away() {
    use provd::adapters::tiles::mirror::{Quiet, STAGING, sync_mirror};
    let lab = Lab::start(700).await;
    let client = TileClient::for_backend(&lab.rekor().backends["lab"]).expect("client");
    let verifiers = [lab.verifier()];
    let work = tempfile::tempdir().unwrap();
    let note = lab.get("checkpoint").await;

    // Three tiles staged by a run that stopped early are not fetched again.
    let mirror = work.path().join("resumed");
    for path in ["tile/0/000", "tile/entries/000", "tile/1/000.p/2"] {
        let staged = mirror.join(STAGING).join(path);
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::write(&staged, lab.get(path).await).unwrap();
    }
    let report = sync_mirror(
        &client,
        &verifiers,
        &lab.info.origin,
        note.clone(),
        &mirror,
        4,
        &Quiet,
    )
    .await
    .expect("sync verifies");
    assert_eq!((report.present, report.fetched), (3, 4));
    assert!(!mirror.join(STAGING).exists(), "staging is emptied");
    assert!(mirror.join("tile/entries/000").is_file());
    assert_eq!(std::fs::read(mirror.join("checkpoint")).unwrap(), note);

    // A bad staged tile: the sync fails naming the problem and keeps nothing unverified.
    let mirror = work.path().join("poisoned");
    let staged = mirror.join(STAGING).join("tile/0/001");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    let mut bad = lab.get("tile/0/001").await;
    bad[17] ^= 1;
    std::fs::write(&staged, bad).unwrap();
    let err = sync_mirror(
        &client,
        &verifiers,
        &lab.info.origin,
        note.clone(),
        &mirror,
        4,
        &Quiet,
    )
    .await
    .expect_err("a bad tile fails the sync");
    assert!(err.to_string().contains("not verified"), "{err}");
    assert!(
        !mirror.join(STAGING).exists(),
        "the bad staged tile is gone"
    );
    assert!(
        !mirror.join("checkpoint").exists(),
        "no checkpoint without its tiles"
    );
    let report = sync_mirror(
        &client,
        &verifiers,
        &lab.info.origin,
        note,
        &mirror,
        4,
        &Quiet,
    )
    .await
    .expect("the next sync succeeds");
    assert_eq!((report.present, report.fetched), (0, 7));
}
