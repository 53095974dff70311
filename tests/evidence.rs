//! Merkle-chunked evidence and the proofs API against the real server, in both modes (PostgreSQL
//! and SQLite).
//!
//! Roots and proofs are checked with an independent RFC 6962 implementation written here on
//! `sha2`, not through provd's code.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type H = [u8; 32];

fn sha(parts: &[&[u8]]) -> H {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn leaf(chunk: &[u8]) -> H {
    sha(&[&[0u8], &sha(&[chunk])])
}

fn node(l: &H, r: &H) -> H {
    sha(&[&[1u8], l, r])
}

/// RFC 6962 §2.1 MTH, recursively.
fn mth(leaves: &[H]) -> H {
    match leaves.len() {
        0 => sha(&[]),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.2 inclusion verification.
fn root_from_path(index: u64, size: u64, leaf: H, path: &[H]) -> Option<H> {
    if index >= size {
        return None;
    }
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

fn sha_text(h: &H) -> String {
    format!("sha256:{}", hex::encode(h))
}

fn unhex(s: &str) -> H {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

/// Deterministic, incompressible-looking bytes (xorshift64).
fn evidence(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn upload(t: &TestApp, body: Vec<u8>, content_type: &str) -> reqwest::Response {
    t.http
        .post(t.url("/api/v1/proofs"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("upload")
}

async fn get_json(t: &TestApp, path: &str) -> (u16, Value) {
    let r = t
        .http
        .get(t.url(path))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json body"))
}

async fn stored_rows(t: &TestApp) -> (i64, i64) {
    let chunks = t
        .query_i64("SELECT count(*) FROM provcache.prov_evidence_chunks")
        .await;
    let manifests = t
        .query_i64("SELECT count(*) FROM provcache.prov_evidence_manifests")
        .await;
    (chunks, manifests)
}

/// Flips one byte of a stored chunk behind provd's back, as disk corruption would.
async fn corrupt_chunk(t: &TestApp, root: &str, index: i64, offset: usize) -> u64 {
    let parts = t.app.parts();
    if let Some(pg) = parts.store.pg_pool() {
        return sqlx::query(
            "UPDATE provcache.prov_evidence_chunks \
             SET blob = set_byte(blob, $3, (get_byte(blob, $3) + 1) % 256) \
             WHERE proof_root = $1 AND chunk_index = $2",
        )
        .bind(root)
        .bind(index)
        .bind(i32::try_from(offset).expect("offset"))
        .execute(pg)
        .await
        .expect("corrupt a chunk")
        .rows_affected();
    }
    let lite = parts.sqlite.as_ref().expect("embedded mode");
    let mut blob: Vec<u8> = sqlx::query_scalar(
        "SELECT blob FROM prov_evidence_chunks WHERE proof_root = ?1 AND chunk_index = ?2",
    )
    .bind(root)
    .bind(index)
    .fetch_one(lite.sqlite_reader().expect("sqlite"))
    .await
    .expect("read the chunk");
    blob[offset] = blob[offset].wrapping_add(1);
    sqlx::query(
        "UPDATE prov_evidence_chunks SET blob = ?1 WHERE proof_root = ?2 AND chunk_index = ?3",
    )
    .bind(blob)
    .bind(root)
    .bind(index)
    .execute(lite.sqlite_writer().expect("sqlite"))
    .await
    .expect("corrupt a chunk")
    .rows_affected()
}

both_modes! {
async fn a_5_mib_upload_has_the_independent_root_and_every_chunk_proof_verifies() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let chunk_size = t.config.provcache.chunk_size;
    let data = evidence(5 * 1024 * 1024, 42);
    let pieces: Vec<&[u8]> = data.chunks(chunk_size).collect();
    let leaves: Vec<H> = pieces.iter().map(|c| leaf(c)).collect();
    let expected_root = sha_text(&mth(&leaves));

    let resp = upload(&t, data.clone(), "application/spdx+json").await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let m: Value = resp.json().await.expect("manifest");
    assert_eq!(m["proof_root"], expected_root.as_str());
    assert_eq!(location, format!("/api/v1/proofs/{expected_root}"));
    assert_eq!(m["total_chunks"], pieces.len() as u64);
    assert_eq!(m["total_size"], data.len() as u64);
    assert_eq!(m["chunk_size"], chunk_size as u64);
    assert_eq!(m["content_type"], "application/spdx+json");
    for (i, c) in pieces.iter().enumerate() {
        assert_eq!(m["chunks"][i]["index"], i as u64);
        assert_eq!(m["chunks"][i]["hash"], sha_text(&sha(&[c])).as_str());
        assert_eq!(m["chunks"][i]["size"], c.len() as u64);
    }

    let (status, stored) = get_json(&t, &format!("/api/v1/proofs/{expected_root}/manifest")).await;
    assert_eq!(status, 200);
    assert_eq!(stored, m);

    for (i, c) in pieces.iter().enumerate() {
        let r = t
            .http
            .get(t.url(&format!("/api/v1/proofs/{expected_root}/chunks/{i}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("chunk");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/spdx+json");
        assert_eq!(r.headers()["x-chunk-hash"], sha_text(&sha(&[c])).as_str());
        let bytes = r.bytes().await.expect("chunk bytes");
        assert_eq!(&bytes[..], *c, "chunk {i}");

        let (status, p) = get_json(
            &t,
            &format!("/api/v1/proofs/{expected_root}/chunks/{i}/proof"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(p["proof_root"], expected_root.as_str());
        assert_eq!(p["index"], i as u64);
        assert_eq!(p["tree_size"], pieces.len() as u64);
        assert_eq!(p["chunk_hash"], sha_text(&sha(&[&bytes])).as_str());
        let path: Vec<H> = p["audit_path"]
            .as_array()
            .expect("audit path")
            .iter()
            .map(|h| unhex(h.as_str().expect("string")))
            .collect();
        let root = root_from_path(i as u64, pieces.len() as u64, leaf(&bytes), &path)
            .expect("well-formed proof");
        assert_eq!(sha_text(&root), expected_root, "proof of chunk {i}");
    }

    let r = t
        .http
        .post(t.url(&format!("/api/v1/proofs/{expected_root}/verify")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.expect("report");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["computed_root"], expected_root.as_str());

    // The same evidence again changes nothing.
    let again = upload(&t, data.clone(), "text/plain").await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.expect("manifest");
    assert_eq!(again["proof_root"], expected_root.as_str());
    assert_eq!(stored_rows(&t).await, (pieces.len() as i64, 1));
    assert!(t.metric("provd_evidence_bytes_total", &[]).await >= 5.0 * 1024.0 * 1024.0);
    t.finish().await;
}
}

both_modes! {
async fn verify_names_a_corrupted_stored_chunk() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let data = evidence(10 * t.config.provcache.chunk_size - 17, 7);
    let resp = upload(&t, data, "application/octet-stream").await;
    assert_eq!(resp.status(), 201);
    let m: Value = resp.json().await.expect("manifest");
    let root = m["proof_root"].as_str().expect("root").to_owned();

    let changed = corrupt_chunk(&t, &root, 7, 100).await;
    assert_eq!(changed, 1);

    let r = t
        .http
        .post(t.url(&format!("/api/v1/proofs/{root}/verify")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.expect("report");
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["bad_chunks"], serde_json::json!([7]));
    assert_eq!(report["missing_chunks"], serde_json::json!([]));
    assert_eq!(report["checked_chunks"], 10);
    assert_eq!(report["manifest_root_matches"], true);
    assert_ne!(report["computed_root"], root.as_str());
    t.finish().await;
}
}

/// Sends a chunked-encoding request (no Content-Length) and returns the status line and body.
async fn send_chunked(t: &TestApp, body: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(t.addr())
        .await
        .expect("connect");
    let mut req = format!(
        "POST /api/v1/proofs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        t.addr()
    )
    .into_bytes();
    for piece in body.chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

both_modes! {
async fn oversize_evidence_is_refused_with_413_and_nothing_is_stored() {
    let Some(t) = TestApp::start_with(|c| {
        c.provcache.chunk_size = 1024;
        c.provcache.max_chunks_per_entry = 4;
    })
    .await
    else {
        return;
    };
    // With a Content-Length the refusal comes before the body is read.
    let r = upload(&t, evidence(4 * 1024 + 1, 3), "text/plain").await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.expect("error json");
    assert_eq!(e["error"]["code"], "payload_too_large");
    assert_eq!(stored_rows(&t).await, (0, 0));

    // Without one, the streaming chunker stops at the limit.
    let answer = send_chunked(&t, &evidence(6 * 1024, 4)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(stored_rows(&t).await, (0, 0));
    assert!(
        t.metric("provd_evidence_uploads_total", &[("outcome", "too_large")])
            .await
            >= 2.0
    );

    // Exactly at the limit is fine, streamed or not.
    let answer = send_chunked(&t, &evidence(4 * 1024, 5)).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let r = upload(&t, evidence(4 * 1024, 6), "text/plain").await;
    assert_eq!(r.status(), 201);
    assert_eq!(stored_rows(&t).await, (8, 2));
    t.finish().await;
}
}

both_modes! {
async fn paging_returns_the_right_slices() {
    let Some(t) = TestApp::start_with(|c| c.provcache.chunk_size = 1024).await else {
        return;
    };
    let data = evidence(25 * 1024 + 100, 9);
    let r = upload(&t, data.clone(), "application/json").await;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.expect("manifest");
    let root = m["proof_root"].as_str().expect("root").to_owned();

    for (page, expected) in [(0u64, 0..10u64), (1, 10..20), (2, 20..26), (3, 0..0)] {
        let (status, p) = get_json(
            &t,
            &format!("/api/v1/proofs/{root}?page={page}&pageSize=10"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(p["total_chunks"], 26);
        assert_eq!(p["total_pages"], 3);
        assert_eq!(p["total_size"], data.len() as u64);
        assert_eq!(p["page"], page);
        assert_eq!(p["page_size"], 10);
        let chunks = p["chunks"].as_array().expect("chunks");
        let indexes: Vec<u64> = chunks
            .iter()
            .map(|c| c["index"].as_u64().expect("index"))
            .collect();
        assert_eq!(indexes, expected.clone().collect::<Vec<_>>(), "page {page}");
        for c in chunks {
            let i = c["index"].as_u64().expect("index") as usize;
            assert_eq!(c, &m["chunks"][i]);
            assert!(c.get("blob").is_none() && c.get("data").is_none());
        }
        assert_eq!(p["has_more"], page < 2);
    }
    let (status, p) = get_json(&t, &format!("/api/v1/proofs/{root}")).await;
    assert_eq!(status, 200);
    assert_eq!(p["chunks"].as_array().expect("chunks").len(), 26);
    for bad in ["pageSize=0", "pageSize=1001", "page=-1", "pageSize=x"] {
        let (status, e) = get_json(&t, &format!("/api/v1/proofs/{root}?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(e["error"]["code"], "bad_request");
    }
    t.finish().await;
}
}

both_modes! {
async fn auth_malformed_and_unknown_requests_get_json_errors() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let r = upload(&t, b"some evidence".to_vec(), "text/plain").await;
    assert_eq!(r.status(), 201);
    let root = r.json::<Value>().await.expect("manifest")["proof_root"]
        .as_str()
        .expect("root")
        .to_owned();
    let unknown = format!("sha256:{}", "ab".repeat(32));

    // No token: 401 everywhere; the read token cannot upload.
    for (method, path) in [
        ("POST", "/api/v1/proofs".to_owned()),
        ("GET", format!("/api/v1/proofs/{root}")),
        ("GET", format!("/api/v1/proofs/{root}/manifest")),
        ("GET", format!("/api/v1/proofs/{root}/chunks/0")),
        ("GET", format!("/api/v1/proofs/{root}/chunks/0/proof")),
        ("POST", format!("/api/v1/proofs/{root}/verify")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = t.http.request(m, t.url(&path)).send().await.expect("send");
        assert_eq!(r.status(), 401, "{method} {path}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], "unauthorized");
    }
    let r = t
        .http
        .post(t.url("/api/v1/proofs"))
        .bearer_auth(READ_TOKEN)
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);

    for (path, status, code) in [
        ("/api/v1/proofs/sha256:xyz".to_owned(), 400, "bad_request"),
        (
            format!("/api/v1/proofs/{}/manifest", root.to_uppercase()),
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/proofs/{root}/chunks/abc"),
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/proofs/{root}/chunks/-1/proof"),
            400,
            "bad_request",
        ),
        (format!("/api/v1/proofs/{unknown}"), 404, "not_found"),
        (
            format!("/api/v1/proofs/{unknown}/manifest"),
            404,
            "not_found",
        ),
        (
            format!("/api/v1/proofs/{unknown}/chunks/0"),
            404,
            "not_found",
        ),
        (
            format!("/api/v1/proofs/{unknown}/chunks/0/proof"),
            404,
            "not_found",
        ),
        (format!("/api/v1/proofs/{root}/chunks/1"), 404, "not_found"),
        (
            format!("/api/v1/proofs/{root}/chunks/1/proof"),
            404,
            "not_found",
        ),
    ] {
        let (s, e) = get_json(&t, &path).await;
        assert_eq!(s, status, "{path}");
        assert_eq!(e["error"]["code"], code, "{path}");
    }
    let r = t
        .http
        .post(t.url(&format!("/api/v1/proofs/{unknown}/verify")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 404);

    // Empty evidence and a silly content type are refused.
    assert_eq!(upload(&t, Vec::new(), "text/plain").await.status(), 400);
    assert_eq!(upload(&t, b"x".to_vec(), "nonsense").await.status(), 400);
    t.finish().await;
}
}

#[test]
fn the_independent_merkle_code_agrees_with_the_documented_example() {
    let leaves: Vec<H> = [&b"hell"[..], b"o wo", b"rld"]
        .iter()
        .map(|c| leaf(c))
        .collect();
    assert_eq!(
        hex::encode(mth(&leaves)),
        "2af22b3a0aecb656c889dabc2fd11affb6e06216989921d80dd2223a22816a50"
    );
}
