//! The local Rekor-compatible log (`provd dev-log serve`) started in-process on port 0 and
//! driven over real HTTP; every answer is checked with the domain verification code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey};
use actors::domain::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use actors::domain::note::{Checkpoint, NoteError, Verifier, verify_checkpoint};
use actors::domain::receipt::{Receipt, ReceiptError, TransparencyLogEntry, parse_v1_response};
use actors::domain::tiles::{TiledTree, entry_bundles_for_size, hash_tiles_for_size, verify_tiles};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use provd::devlog::{DevLog, DevLogConfig, DevLogError, DevLogInfo, Faults, ForkFault};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A dev log served in-process.
struct Server {
    base: String,
    info: DevLogInfo,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DevLogError>>,
}

impl Server {
    async fn start(dir: &Path, allow_faults: bool) -> Server {
        Self::start_with(DevLogConfig {
            data_dir: dir.to_path_buf(),
            allow_faults,
            ..DevLogConfig::default()
        })
        .await
    }

    async fn start_with(config: DevLogConfig) -> Server {
        let log = DevLog::open(config).expect("dev log opens");
        let info = log.info().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(log.serve(listener, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Server {
            base,
            info,
            http,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    async fn set_faults(&self, faults: Value) -> Value {
        let resp = self.post("/__faults", &faults).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn v1_info(&self) -> Value {
        let resp = self.get("/api/v1/log").await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// The v2 checkpoint, verified with the log's vkey and origin.
    async fn v2_checkpoint(&self) -> Checkpoint {
        let text = self.get("/checkpoint").await.text().await.unwrap();
        verify_checkpoint(
            text.as_bytes(),
            &[self.v2_verifier()],
            Some(&self.info.origin),
        )
        .unwrap_or_else(|e| panic!("checkpoint {text:?} does not verify: {e}"))
    }

    fn v2_verifier(&self) -> Verifier {
        Verifier::from_vkey(&self.info.v2_vkey).unwrap()
    }

    fn v1_verifier(&self) -> Verifier {
        Verifier::from_vkey(&self.info.v1_vkey).unwrap()
    }
}

fn p256() -> PrivateKey {
    PrivateKey::generate(Algorithm::P256, &mut |b| {
        getrandom::fill(b).map_err(|e| e.to_string())
    })
    .unwrap()
}

fn pem_b64(key: &PrivateKey) -> String {
    B64.encode(key.public_key().to_pem().unwrap())
}

fn envelope(key: &PrivateKey, payload: &str) -> Envelope {
    Envelope::sign("application/vnd.in-toto+json", payload.as_bytes(), key, "")
}

fn dsse_request(key: &PrivateKey, payload: &str) -> Value {
    json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
        "envelope": envelope(key, payload).to_json(),
        "verifiers": [pem_b64(key)],
    }}})
}

fn hashedrekord_request(key: &PrivateKey, artifact: &[u8]) -> Value {
    json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(artifact))}},
        "signature": {"content": B64.encode(key.sign(artifact)),
                      "publicKey": {"content": pem_b64(key)}},
    }})
}

/// A v2 hashedrekord request for a DSSE envelope: digest = SHA-256(PAE), the envelope's
/// signature.
fn v2_request(key: &PrivateKey, payload: &str) -> Value {
    let env = envelope(key, payload);
    json!({"hashedRekordRequestV002": {
        "digest": B64.encode(Sha256::digest(env.pae().unwrap())),
        "signature": {"content": env.signatures[0].sig,
                      "verifier": {"publicKey": {"rawBytes": B64.encode(key.public_key().to_spki_der())},
                                   "keyDetails": "PKIX_ECDSA_P256_SHA_256"}},
    }})
}

/// Parses a one-entry v1 response into (entry ID, receipt).
async fn v1_receipt(resp: reqwest::Response) -> (String, Receipt) {
    let bytes = resp.bytes().await.unwrap();
    let mut entries = parse_v1_response(&bytes).unwrap();
    assert_eq!(entries.len(), 1, "one entry per response");
    let (id, entry) = entries.remove(0);
    let receipt = Receipt::from_v1(&id, &entry).unwrap();
    (id, receipt)
}

fn root_of(info: &Value) -> Hash {
    hex::decode(info["rootHash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn v1_dsse_and_hashedrekord_entries_verify_by_index_and_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), false).await;
    let trusted = log.info.trusted_v1();
    let key = p256();

    for (kind, request) in [
        (
            "dsse",
            dsse_request(&key, r#"{"_type":"https://in-toto.io/Statement/v1"}"#),
        ),
        (
            "hashedrekord",
            hashedrekord_request(&key, b"artifact bytes"),
        ),
    ] {
        let resp = log.post("/api/v1/log/entries", &request).await;
        assert_eq!(resp.status(), 201, "{kind}");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let (id, created) = v1_receipt(resp).await;
        assert_eq!(id.len(), 80);
        assert_eq!(etag, id);
        assert_eq!(location, format!("/api/v1/log/entries/{id}"));
        assert!(id.starts_with(&format!("{:016x}", log.info.tree_id)));
        let verified = created.verify(&trusted).unwrap();
        assert!(verified.integrated_time.is_some());
        assert_eq!(verified.checkpoint.origin, log.info.v1_origin);
        let body: Value = serde_json::from_slice(&created.canonical_body).unwrap();
        assert_eq!(body["kind"], kind);
        assert_eq!(body["apiVersion"], "0.0.1");
        assert_eq!(created.kind_version.as_ref().unwrap().kind, kind);

        let index = created.log_index;
        let by_index = log
            .get(&format!("/api/v1/log/entries?logIndex={index}"))
            .await;
        assert_eq!(by_index.status(), 200);
        let (id_i, by_index) = v1_receipt(by_index).await;
        let (id_u, by_uuid) = v1_receipt(
            log.get(&format!("/api/v1/log/entries/{}", created.uuid()))
                .await,
        )
        .await;
        let (id_e, by_entry_id) = v1_receipt(log.get(&location).await).await;
        for (got_id, got) in [(id_i, &by_index), (id_u, &by_uuid), (id_e, &by_entry_id)] {
            assert_eq!(got_id, id);
            assert_eq!(
                got, &created,
                "the same entry, proof and SET on every read path"
            );
            got.verify(&trusted).unwrap();
            assert_eq!(got.signed_entry_timestamp, created.signed_entry_timestamp);
            assert_eq!(got.inclusion_proof.as_ref().unwrap().log_index, index);
        }
        // The bundle form verifies the same way.
        let tle = created.to_tle();
        Receipt::from_tle(&tle).unwrap().verify(&trusted).unwrap();
    }

    // The log state, public key and misses.
    let info = log.v1_info().await;
    assert_eq!(info["treeSize"], 2);
    assert_eq!(info["treeID"], log.info.tree_id.to_string());
    let sth = info["signedTreeHead"].as_str().unwrap();
    let cp = verify_checkpoint(
        sth.as_bytes(),
        &[log.v1_verifier()],
        Some(&log.info.v1_origin),
    )
    .unwrap();
    assert_eq!(cp.root, root_of(&info));
    let pem = log.get("/api/v1/log/publicKey").await.text().await.unwrap();
    assert_eq!(pem, log.info.v1_public_key_pem);
    let miss = log.get("/api/v1/log/entries?logIndex=99").await;
    assert_eq!(miss.status(), 404);
    assert!(
        miss.bytes().await.unwrap().is_empty(),
        "Rekor answers 404 with an empty body"
    );
    assert_eq!(
        log.get(&format!("/api/v1/log/entries/{}", "ab".repeat(32)))
            .await
            .status(),
        404
    );

    // retrieve: found entries only, in a JSON array.
    let found = log
        .post(
            "/api/v1/log/entries/retrieve",
            &json!({"logIndexes": [0, 1, 7]}),
        )
        .await;
    let found: Vec<Value> = found.json().await.unwrap();
    assert_eq!(found.len(), 2);
    log.stop().await;
}

#[tokio::test]
async fn v1_duplicates_conflict_with_the_existing_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), false).await;
    let key = p256();
    let request = dsse_request(&key, "{}");
    let (id, first) = v1_receipt(log.post("/api/v1/log/entries", &request).await).await;
    let again = log.post("/api/v1/log/entries", &request).await;
    assert_eq!(again.status(), 409);
    let location = again.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/log/entries/{id}"));
    let err: Value = again.json().await.unwrap();
    assert_eq!(err["code"], 409);
    assert_eq!(
        err["message"],
        format!("an equivalent entry already exists in the transparency log with UUID {id}")
    );
    let (_, existing) = v1_receipt(log.get(&location).await).await;
    assert_eq!(existing.log_index, first.log_index);
    assert_eq!(log.v1_info().await["treeSize"], 1);
    log.stop().await;
}

#[tokio::test]
async fn bad_signatures_and_bad_input_are_refused_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), false).await;
    let key = p256();
    let other = p256();

    // A DSSE envelope whose verifier did not sign it.
    let mut request = dsse_request(&key, "{}");
    request["spec"]["proposedContent"]["verifiers"] = json!([pem_b64(&other)]);
    let resp = log.post("/api/v1/log/entries", &request).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], 400);
    assert!(
        err["message"].as_str().unwrap().contains("does not verify"),
        "{err}"
    );

    // A hashedrekord signature over other bytes.
    let mut request = hashedrekord_request(&key, b"artifact");
    request["spec"]["data"]["hash"]["value"] = json!(hex::encode(Sha256::digest(b"other")));
    let resp = log.post("/api/v1/log/entries", &request).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("does not verify"),
        "{err}"
    );

    // Unknown kind, and not JSON at all.
    let resp = log
        .post(
            "/api/v1/log/entries",
            &json!({"apiVersion": "0.0.1", "kind": "rpm", "spec": {}}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("rpm"), "{err}");
    let resp = log
        .http
        .post(log.url("/api/v1/log/entries"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // v2: a bad signature, and DSSE requests, which Rekor v2 refuses too.
    let mut request = v2_request(&key, "{}");
    request["hashedRekordRequestV002"]["signature"]["verifier"]["publicKey"]["rawBytes"] =
        json!(B64.encode(other.public_key().to_spki_der()));
    let resp = log.post("/api/v2/log/entries", &request).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], 3, "gRPC InvalidArgument");
    assert!(
        err["message"].as_str().unwrap().contains("does not verify"),
        "{err}"
    );
    let resp = log
        .post("/api/v2/log/entries", &json!({"dsseRequestV002": {}}))
        .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("must be hashedrekord"),
        "{err}"
    );

    assert_eq!(log.v1_info().await["treeSize"], 0, "nothing was logged");
    log.stop().await;
}

/// Fetches every tile and entry bundle a tree of `size` needs.
async fn fetch_tiles(log: &Server, size: u64) -> HashMap<String, Vec<u8>> {
    let mut map = HashMap::new();
    for tile in hash_tiles_for_size(size)
        .into_iter()
        .chain(entry_bundles_for_size(size))
    {
        let resp = log.get(&format!("/{}", tile.path())).await;
        assert_eq!(resp.status(), 200, "{}", tile.path());
        map.insert(tile.path(), resp.bytes().await.unwrap().to_vec());
    }
    map
}

#[tokio::test]
async fn v2_entries_verify_and_tiles_rebuild_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), false).await;
    let trusted = log.info.trusted_v2();
    let key = p256();

    // Enough entries for a full tile and a partial one, written through both APIs.
    let mut v2_entries = Vec::new();
    for i in 0..300 {
        if i % 3 == 0 {
            let resp = log
                .post(
                    "/api/v2/log/entries",
                    &v2_request(&key, &format!("{{\"n\":{i}}}")),
                )
                .await;
            assert_eq!(resp.status(), 201);
            let raw: Value = resp.json().await.unwrap();
            v2_entries.push(raw);
        } else {
            let resp = log
                .post(
                    "/api/v1/log/entries",
                    &dsse_request(&key, &format!("{{\"n\":{i}}}")),
                )
                .await;
            assert_eq!(resp.status(), 201);
        }
    }
    let raw = &v2_entries[50];
    // The real Rekor v2 shape: int64 as strings, no integrated time, no promise.
    assert_eq!(raw["integratedTime"], "0");
    assert!(raw["inclusionPromise"].is_null());
    assert!(
        raw.get("inclusionPromise").is_some(),
        "unpopulated fields are emitted"
    );
    assert_eq!(
        raw["kindVersion"],
        json!({"kind": "hashedrekord", "version": "0.0.2"})
    );
    assert_eq!(raw["logIndex"], "150");
    assert_eq!(raw["inclusionProof"]["logIndex"], "150");
    let tle: TransparencyLogEntry = serde_json::from_value(raw.clone()).unwrap();
    let receipt = Receipt::from_tle(&tle).unwrap();
    let verified = receipt.verify(&trusted).unwrap();
    assert_eq!(verified.checkpoint.origin, log.info.origin);
    assert_eq!(verified.integrated_time, None);
    assert_eq!(tle.log_id.key_id, B64.encode(log.info.v2_log_id));
    let body: Value = serde_json::from_slice(&receipt.canonical_body).unwrap();
    assert_eq!(
        body["spec"]["hashedRekordV002"]["data"]["algorithm"],
        "SHA2_256"
    );

    // Duplicate: 409 with x-log-index and no proof.
    let again = log
        .post("/api/v2/log/entries", &v2_request(&key, "{\"n\":150}"))
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["x-log-index"], "150");
    let err: Value = again.json().await.unwrap();
    assert_eq!(err["code"], 6);

    // Checkpoint and tiles: the tiles give the checkpoint's root, every entry hashes to its
    // leaf, and an inclusion proof built from tiles verifies the v2 entry.
    let cp = log.v2_checkpoint().await;
    assert_eq!(cp.size, 300);
    let mut tiles = fetch_tiles(&log, 300).await;
    let report = verify_tiles(&mut tiles, 300, &cp.root, true).unwrap();
    assert_eq!(report.entry_bundles, 2);
    assert!(tiles.contains_key("tile/0/000") && tiles.contains_key("tile/0/001.p/44"));
    let mut tree = TiledTree::new(tiles, 300);
    let proof = tree.inclusion_proof(150, 300).unwrap();
    verify_inclusion(&receipt.leaf_hash(), 150, 300, &proof, &cp.root).unwrap();
    // v1 and v2 share one tree: the v1 tree head has the same root.
    assert_eq!(root_of(&log.v1_info().await), cp.root);
    // Unknown or malformed tiles.
    assert_eq!(log.get("/tile/0/002").await.status(), 404);
    assert_eq!(log.get("/tile/0/001").await.status(), 404, "not full yet");
    assert_eq!(log.get("/tile/0/x000/001").await.status(), 400);
    log.stop().await;
}

#[tokio::test]
async fn consistency_proofs_verify_between_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), false).await;
    let key = p256();
    let mut heads = Vec::new();
    for i in 0..13 {
        log.post("/api/v1/log/entries", &dsse_request(&key, &i.to_string()))
            .await;
        heads.push(log.v1_info().await);
    }
    for (a, b) in [(1usize, 13usize), (4, 8), (7, 13), (13, 13)] {
        let (old, new) = (&heads[a - 1], &heads[b - 1]);
        let resp = log
            .get(&format!("/api/v1/log/proof?firstSize={a}&lastSize={b}"))
            .await;
        assert_eq!(resp.status(), 200);
        let proof: Value = resp.json().await.unwrap();
        assert_eq!(proof["rootHash"], new["rootHash"]);
        let hashes: Vec<Hash> = proof["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                hex::decode(h.as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap()
            })
            .collect();
        verify_consistency(a as u64, b as u64, &hashes, &root_of(old), &root_of(new)).unwrap();
    }
    let too_big = log.get("/api/v1/log/proof?firstSize=1&lastSize=14").await;
    assert_eq!(too_big.status(), 400);
    let err: Value = too_big.json().await.unwrap();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("greater than what is currently observable")
    );
    assert_eq!(
        log.get("/api/v1/log/proof?firstSize=5&lastSize=3")
            .await
            .status(),
        400
    );
    assert_eq!(log.get("/api/v1/log/proof?firstSize=1").await.status(), 400);
    log.stop().await;
}

#[tokio::test]
async fn the_log_survives_a_restart_and_keeps_appending() {
    let dir = tempfile::tempdir().unwrap();
    let key = p256();
    let log = Server::start(dir.path(), false).await;
    for i in 0..5 {
        log.post("/api/v1/log/entries", &dsse_request(&key, &i.to_string()))
            .await;
    }
    log.post("/api/v2/log/entries", &v2_request(&key, "v2"))
        .await;
    let before = log.v1_info().await;
    let info = log.info.clone();
    log.stop().await;
    for file in [
        "entries.log",
        "meta.json",
        "log-v1.key.pem",
        "log-v1.pub.pem",
        "log-v1.vkey",
        "log-v2.key.pem",
        "log-v2.pub.pem",
        "log-v2.vkey",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }

    let log = Server::start(dir.path(), false).await;
    assert_eq!(
        log.info.v1_public_key_pem, info.v1_public_key_pem,
        "same keys"
    );
    assert_eq!(log.info.v2_vkey, info.v2_vkey);
    assert_eq!(log.info.tree_id, info.tree_id);
    let after = log.v1_info().await;
    assert_eq!(after["treeSize"], 6);
    assert_eq!(after["rootHash"], before["rootHash"]);
    // Old entries keep their integrated time and verify; duplicates are still found.
    let (_, first) = v1_receipt(log.get("/api/v1/log/entries?logIndex=0").await).await;
    first.verify(&log.info.trusted_v1()).unwrap();
    let dup = log
        .post("/api/v1/log/entries", &dsse_request(&key, "0"))
        .await;
    assert_eq!(dup.status(), 409);
    let resp = log
        .post("/api/v1/log/entries", &dsse_request(&key, "after restart"))
        .await;
    assert_eq!(resp.status(), 201);
    let (_, next) = v1_receipt(resp).await;
    assert_eq!(next.log_index, 6);
    let grown = log.v1_info().await;
    let proof = log.get("/api/v1/log/proof?firstSize=6&lastSize=7").await;
    let proof: Value = proof.json().await.unwrap();
    let hashes: Vec<Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    verify_consistency(6, 7, &hashes, &root_of(&before), &root_of(&grown)).unwrap();
    log.stop().await;

    // A different origin for the same directory is refused.
    let err = DevLog::open(DevLogConfig {
        data_dir: dir.path().to_path_buf(),
        origin: Some("elsewhere.example".into()),
        ..DevLogConfig::default()
    })
    .err()
    .expect("origin change refused");
    assert!(err.to_string().contains("elsewhere.example"), "{err}");
}

#[tokio::test]
async fn faults_are_refused_without_allow_faults() {
    let dir = tempfile::tempdir().unwrap();
    let err = DevLog::open(DevLogConfig {
        data_dir: dir.path().to_path_buf(),
        faults: Faults {
            down: true,
            ..Faults::default()
        },
        ..DevLogConfig::default()
    })
    .err()
    .expect("faults without allow_faults are refused");
    assert!(matches!(err, DevLogError::FaultsNotAllowed));
    assert!(err.to_string().contains("--allow-faults"));

    let log = Server::start(dir.path(), false).await;
    assert_eq!(log.get("/__faults").await.status(), 403);
    let resp = log.post("/__faults", &json!({"down": true})).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(log.get("/api/v1/log").await.status(), 200, "still honest");
    log.stop().await;
}

#[tokio::test]
async fn failure_bursts_down_and_latency_are_observable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), true).await;
    let key = p256();

    let set = log
        .set_faults(json!({"fail_next": 2, "fail_status": 503, "retry_after_secs": 3}))
        .await;
    assert_eq!(set["fail_next"], 2);
    for _ in 0..2 {
        let resp = log
            .post("/api/v1/log/entries", &dsse_request(&key, "burst"))
            .await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "3");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], 503);
    }
    let resp = log
        .post("/api/v1/log/entries", &dsse_request(&key, "burst"))
        .await;
    assert_eq!(resp.status(), 201, "the burst is over");

    log.set_faults(json!({"fail_next": 1, "fail_status": 429}))
        .await;
    let resp = log
        .post("/api/v2/log/entries", &v2_request(&key, "x"))
        .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], 8, "gRPC ResourceExhausted");
    assert_eq!(log.get("/api/v1/log").await.status(), 200);

    log.set_faults(json!({"down": true})).await;
    for path in ["/api/v1/log", "/checkpoint", "/tile/0/000.p/1"] {
        let resp = log.get(path).await;
        assert_eq!(resp.status(), 503, "{path}");
        assert!(resp.headers().contains_key("retry-after"));
    }
    let current: Value = log.get("/__faults").await.json().await.unwrap();
    assert_eq!(current["down"], true);
    log.set_faults(json!({})).await;
    assert_eq!(log.get("/api/v1/log").await.status(), 200, "cleared");

    log.set_faults(json!({"latency_ms": 300})).await;
    let started = Instant::now();
    assert_eq!(log.get("/api/v1/log").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    log.set_faults(json!({})).await;

    let bad = log.post("/__faults", &json!({"fail_status": 500})).await;
    assert_eq!(bad.status(), 400);
    let bad = log.post("/__faults", &json!({"no_such_fault": 1})).await;
    assert_eq!(bad.status(), 400);
    log.stop().await;
}

#[tokio::test]
async fn a_dropped_response_was_committed_and_the_retry_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), true).await;
    let key = p256();
    log.set_faults(json!({"drop_next_writes": 2})).await;

    let request = dsse_request(&key, "lost answer");
    let first = log
        .http
        .post(log.url("/api/v1/log/entries"))
        .json(&request)
        .send()
        .await;
    assert!(first.is_err(), "the client sees no response: {first:?}");
    let retry = log.post("/api/v1/log/entries", &request).await;
    assert_eq!(
        retry.status(),
        409,
        "the entry was committed before the drop"
    );
    assert_eq!(log.v1_info().await["treeSize"], 1);

    let v2 = v2_request(&key, "lost v2 answer");
    let first = log
        .http
        .post(log.url("/api/v2/log/entries"))
        .json(&v2)
        .send()
        .await;
    assert!(first.is_err(), "{first:?}");
    let retry = log.post("/api/v2/log/entries", &v2).await;
    assert_eq!(retry.status(), 409);
    assert_eq!(retry.headers()["x-log-index"], "1");

    // The tokens are used up: the next write is answered.
    let resp = log
        .post("/api/v1/log/entries", &dsse_request(&key, "answered"))
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(log.v1_info().await["treeSize"], 3);
    log.stop().await;
}

#[tokio::test]
async fn forks_rollbacks_and_wrong_keys_are_detectable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), true).await;
    let key = p256();
    for i in 0..5 {
        log.post("/api/v1/log/entries", &dsse_request(&key, &i.to_string()))
            .await;
    }
    let honest = log.v2_checkpoint().await;

    // Forked view for requests with a header: correctly signed, same size, another root.
    log.set_faults(json!({"fork": {"mode": "header", "header": "x-dev-log-fork"}}))
        .await;
    let forked_text = log
        .http
        .get(log.url("/checkpoint"))
        .header("x-dev-log-fork", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forked = verify_checkpoint(
        forked_text.as_bytes(),
        &[log.v2_verifier()],
        Some(&log.info.origin),
    )
    .unwrap();
    assert_eq!(forked.size, honest.size);
    assert_ne!(forked.root, honest.root, "a split view");
    assert_eq!(
        log.v2_checkpoint().await,
        honest,
        "others see the honest tree"
    );
    // The fork's tiles match the fork's checkpoint, not the honest one.
    let mut tiles = HashMap::new();
    for tile in hash_tiles_for_size(5) {
        let bytes = log
            .http
            .get(log.url(&format!("/{}", tile.path())))
            .header("x-dev-log-fork", "1")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        tiles.insert(tile.path(), bytes.to_vec());
    }
    verify_tiles(&mut tiles, 5, &forked.root, false).unwrap();
    // The fork stays stable while it is on, and the log grows only on the honest side.
    log.post("/api/v1/log/entries", &dsse_request(&key, "5"))
        .await;
    let grown = log.v2_checkpoint().await;
    assert_eq!(grown.size, 6);
    let info_forked: Value = log
        .http
        .get(log.url("/api/v1/log"))
        .header("x-dev-log-fork", "yes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info_forked["treeSize"], 5);
    let proof: Value = log
        .get("/api/v1/log/proof?firstSize=5&lastSize=6")
        .await
        .json()
        .await
        .unwrap();
    let hashes: Vec<Hash> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    verify_consistency(5, 6, &hashes, &honest.root, &grown.root).unwrap();
    assert!(
        verify_consistency(5, 6, &hashes, &forked.root, &grown.root).is_err(),
        "the fork is not consistent with the honest log"
    );

    // Alternate: every other reader sees the fork.
    log.set_faults(json!({"fork": {"mode": "alternate"}})).await;
    let a = log.v2_checkpoint().await;
    let b = log.v2_checkpoint().await;
    assert_ne!(a.root, b.root);

    // Rollback: checkpoints show an older size, correctly signed.
    log.set_faults(json!({"rollback_to": 2})).await;
    let rolled = log.v2_checkpoint().await;
    assert_eq!(rolled.size, 2);
    assert_eq!(log.v1_info().await["treeSize"], 2);

    // Wrong key: signatures under the log's name and hint that do not verify.
    log.set_faults(json!({"wrong_key": true})).await;
    let text = log.get("/checkpoint").await.text().await.unwrap();
    assert!(matches!(
        verify_checkpoint(text.as_bytes(), &[log.v2_verifier()], None),
        Err(NoteError::InvalidSignature { .. })
    ));
    let (_, receipt) = v1_receipt(log.get("/api/v1/log/entries?logIndex=0").await).await;
    assert!(matches!(
        receipt.verify(&log.info.trusted_v1()),
        Err(ReceiptError::Checkpoint(NoteError::InvalidSignature { .. }))
    ));

    log.set_faults(json!({})).await;
    assert_eq!(log.v2_checkpoint().await.size, 6, "honest again");
    log.stop().await;
}

#[tokio::test]
async fn faults_given_at_start_are_active() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start_with(DevLogConfig {
        data_dir: dir.path().to_path_buf(),
        allow_faults: true,
        faults: Faults {
            fail_next: 1,
            fork: Some(ForkFault::Alternate),
            ..Faults::default()
        },
        ..DevLogConfig::default()
    })
    .await;
    assert_eq!(log.get("/api/v1/log").await.status(), 503);
    let current: Value = log.get("/__faults").await.json().await.unwrap();
    assert_eq!(current["fail_next"], 0);
    assert_eq!(current["fork"], json!({"mode": "alternate"}));
    log.stop().await;
}

/// The shared real vectors (`$PROVD_VECTORS_DIR` overrides); missing vectors fail the test.
fn vectors() -> PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    assert!(dir.is_dir(), "test vectors not found at {}", dir.display());
    dir
}

/// The keys of a JSON object, recursively, with the JSON type of each leaf.
fn shape(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                shape(v, &format!("{prefix}.{k}"), out);
            }
        }
        Value::Array(a) => {
            if let Some(first) = a.first() {
                shape(first, &format!("{prefix}[]"), out);
            }
        }
        Value::String(_) => out.push(format!("{prefix}:string")),
        Value::Number(_) => out.push(format!("{prefix}:number")),
        Value::Bool(_) => out.push(format!("{prefix}:bool")),
        Value::Null => out.push(format!("{prefix}:null")),
    }
}

fn shape_of(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    shape(v, "", &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn responses_have_the_shapes_of_real_rekor_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = Server::start(dir.path(), false).await;
    let key = p256();

    // v2: the write response has the shape of the real rekor-tiles entry in the conformance
    // bundle (which leaves out the unpopulated integratedTime and inclusionPromise).
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(
            vectors().join("sigstore-conformance/rekor2-happy-path/bundle.sigstore.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let real = &bundle["verificationMaterial"]["tlogEntries"][0];
    let mut ours: Value = log
        .post("/api/v2/log/entries", &v2_request(&key, "shape"))
        .await
        .json()
        .await
        .unwrap();
    let obj = ours.as_object_mut().unwrap();
    assert_eq!(obj.remove("integratedTime"), Some(json!("0")));
    assert_eq!(obj.remove("inclusionPromise"), Some(Value::Null));
    // One entry in a one-entry tree has no proof hashes; compare with a real hash list.
    ours["inclusionProof"]["hashes"] = json!(["AAAA"]);
    assert_eq!(shape_of(&ours), shape_of(real));
    // The real body and ours are the same kind of JCS document.
    let real_body: Value = serde_json::from_slice(
        &B64.decode(real["canonicalizedBody"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let our_body: Value = serde_json::from_slice(
        &B64.decode(ours["canonicalizedBody"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let strip = |mut v: Value| {
        let verifier = &mut v["spec"]["hashedRekordV002"]["signature"]["verifier"];
        let obj = verifier.as_object_mut().unwrap();
        obj.remove("x509Certificate");
        obj.remove("publicKey");
        shape_of(&v)
    };
    assert_eq!(strip(our_body), strip(real_body));

    // v1: the REST entry, converted the way rekor's tle.go does, has the shape of the real
    // Rekor v1 entry in the conformance bundle.
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(vectors().join("sigstore-conformance/happy-path-v0.3/bundle.sigstore.json"))
            .unwrap(),
    )
    .unwrap();
    let real = &bundle["verificationMaterial"]["tlogEntries"][0];
    log.post("/api/v1/log/entries", &hashedrekord_request(&key, b"shape"))
        .await;
    let (_, receipt) = v1_receipt(log.get("/api/v1/log/entries?logIndex=1").await).await;
    let ours = serde_json::to_value(receipt.to_tle()).unwrap();
    assert_eq!(shape_of(&ours), shape_of(real));
    let real_body: Value = serde_json::from_slice(
        &B64.decode(real["canonicalizedBody"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        shape_of(&serde_json::from_slice(&receipt.canonical_body).unwrap()),
        shape_of(&real_body)
    );
    // And the real entry itself goes through the same parsing code.
    let real_tle: TransparencyLogEntry = serde_json::from_value(real.clone()).unwrap();
    let real_receipt = Receipt::from_tle(&real_tle).unwrap();
    real_receipt.verify_inclusion_proof().unwrap();
    assert_eq!(
        leaf_hash(&real_receipt.canonical_body),
        real_receipt.leaf_hash()
    );
    log.stop().await;
}

#[test]
fn cli_help_says_lab_tool_and_faults_need_allow_faults() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let help = Command::new(bin)
        .args(["dev-log", "serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("NOT A PRODUCTION LOG"), "{text}");
    assert!(text.contains("Example"), "{text}");
    assert!(text.contains("--allow-faults"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(bin)
        .args([
            "dev-log",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--fail-next",
            "3",
            "--data",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--allow-faults"), "{err}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was created"
    );
}
