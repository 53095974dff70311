//! Verify-then-cache through the real HTTP server, embedded mode (no services needed).
//!
//! Each figure is printed beside a baseline measured in the same run:
//! - a **hit** of `POST /api/v1/provcache/evaluate` (p50 / p99 over HTTP) beside a plain
//!   `GET /api/v1/provcache/entries/{veri_key}` of the same entry: what answering from the
//!   cache costs on top of reading the entry;
//! - a **miss** (every request a new VeriKey: verification, policy, evidence, receipts and the
//!   write) beside the complete verification of the same attestation alone, in process.
//!
//! The attestation is npm's real SLSA provenance of sigstore 1.3.0 from the shared vectors,
//! against Sigstore's public-good trusted root.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actors::domain::verification::{
    Artifact, ArtifactDigest, IdentityPolicy, Matcher, Request, SignerPolicy, Thresholds,
    TrustMaterial, WorkflowClaims, verify,
};
use base64::Engine as _;
use provd::app::App;
use provd::config::RawConfig;
use serde_json::{Value, json};

const TOKEN: &str = "bench-token-0123456789";
const GITHUB: &str = "https://token.actions.githubusercontent.com";
const SIGSTORE_JS: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";
const HITS: usize = 2000;
const MISSES: usize = 40;

fn vectors() -> PathBuf {
    std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn timed<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i).await;
        times.push(start.elapsed());
    }
    times.sort();
    times
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let root_path = vectors().join("sigstore-go-examples/trusted-root-public-good.json");
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(vectors().join("sigstore-go-examples/bundle-provenance.json"))
            .expect("the npm provenance vector"),
    )
    .expect("json");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    let digest = format!(
        "sha512:{}",
        statement["subject"][0]["digest"]["sha512"]
            .as_str()
            .unwrap()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut raw = RawConfig::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\n[[auth.tokens]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\nscopes = [\"admin\"]\n"
    ))
    .expect("config");
    raw.data_dir = Some(dir.path().display().to_string());
    raw.trust.trusted_root = Some(root_path.display().to_string());
    let config = raw.validate().expect("valid config");
    let app = App::start(config).await.expect("provd starts");
    let base = format!("http://{}", app.local_addr());
    let http = reqwest::Client::new();

    let policy = json!({"identities": [{"issuer": GITHUB, "san": SIGSTORE_JS}],
                        "predicate_types": ["https://slsa.dev/provenance/v0.2"]});
    let resp = http
        .put(format!("{base}/api/v1/policies/bench"))
        .bearer_auth(TOKEN)
        .json(&policy)
        .send()
        .await
        .expect("put policy");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);

    let body = |sbom: String| {
        json!({"artifact_digest": digest, "policy": "bench", "attestations": [bundle],
               "sbom_digest": sbom})
    };
    let evaluate = |body: Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let resp = http
                .post(format!("{base}/api/v1/provcache/evaluate"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("evaluate");
            assert!(resp.status().is_success());
            let v: Value = resp.json().await.expect("json");
            assert_eq!(v["decision"], "allow", "{v}");
            v
        }
    };

    // Misses: a new SBOM digest makes every request a new VeriKey, decided now.
    let misses = timed(MISSES, |i| {
        let f = evaluate(body(format!("sha256:{i:064x}")));
        async move {
            let v = f.await;
            assert_eq!(v["cached"], false);
        }
    })
    .await;
    // Verification alone, in process, the same attestation and identity.
    let trust = TrustMaterial::from_json(&std::fs::read(&root_path).unwrap()).expect("root");
    let artifact: ArtifactDigest = digest.parse().unwrap();
    let bytes = serde_json::to_vec(&bundle).unwrap();
    let signer = SignerPolicy::Identity(IdentityPolicy {
        san: Matcher::Exact(SIGSTORE_JS.into()),
        issuer: Matcher::Exact(GITHUB.into()),
        workflow: WorkflowClaims::default(),
    });
    let verifications = timed(MISSES, |_| {
        let report = verify(
            &trust,
            &Request {
                bundle: &bytes,
                artifact: Artifact::Digest(&artifact),
                signer: &signer,
                thresholds: Thresholds::default(),
            },
        );
        assert!(report.valid);
        async {}
    })
    .await;

    // Hits: the first request's verdict, again and again, beside a GET of its entry.
    let first = evaluate(body("sha256:hit".into())).await;
    let veri_key = first["veri_key"].as_str().unwrap().to_owned();
    let hit_body = body("sha256:hit".into());
    let hits = timed(HITS, |_| {
        let f = evaluate(hit_body.clone());
        async move {
            let v = f.await;
            assert_eq!(v["cached"], true);
        }
    })
    .await;
    let gets = timed(HITS, |_| {
        let http = http.clone();
        let url = format!("{base}/api/v1/provcache/entries/{veri_key}");
        async move {
            let resp = http.get(url).bearer_auth(TOKEN).send().await.expect("get");
            assert!(resp.status().is_success());
            let _ = resp.bytes().await;
        }
    })
    .await;

    println!(
        "verify-then-cache over HTTP, embedded mode, npm provenance of sigstore 1.3.0 (ours | baseline from the same run | ratio)"
    );
    println!(
        "hit  ({HITS}): evaluate p50 {:8.1} µs p99 {:8.1} µs | GET of the entry p50 {:8.1} µs p99 {:8.1} µs | {:.2}× p50, {:.2}× p99",
        micros(percentile(&hits, 0.5)),
        micros(percentile(&hits, 0.99)),
        micros(percentile(&gets, 0.5)),
        micros(percentile(&gets, 0.99)),
        micros(percentile(&hits, 0.5)) / micros(percentile(&gets, 0.5)),
        micros(percentile(&hits, 0.99)) / micros(percentile(&gets, 0.99)),
    );
    println!(
        "miss ({MISSES}): evaluate p50 {:8.1} µs p99 {:8.1} µs | verification alone p50 {:8.1} µs p99 {:8.1} µs | {:.2}× p50",
        micros(percentile(&misses, 0.5)),
        micros(percentile(&misses, 0.99)),
        micros(percentile(&verifications, 0.5)),
        micros(percentile(&verifications, 0.99)),
        micros(percentile(&misses, 0.5)) / micros(percentile(&verifications, 0.5)),
    );
    app.stop().await;
}
