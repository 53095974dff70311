//! Complete Sigstore bundle verification, measured beside the reference clients in the same
//! run: provd against sigstore-js and sigstore-python, on the same bundles, artifacts,
//! identities and trusted roots (the happy-path cases of `../shared/vectors/sigstore-conformance`).
//!
//! * In-process throughput: `verification::verify` round-robin over every happy-path bundle
//!   for a fixed duration, each trusted root prepared once outside the timed loop as a
//!   long-running service holds it, beside `@sigstore/verify` doing the same in one Node.js
//!   process (`benches/peer/verify-js.mjs`).
//! * One-shot CLI latency: `provd sigstore verify-bundle --offline --trusted-root` started
//!   again for each of 20 runs on one production bundle, beside sigstore-python's
//!   `sigstore verify identity --offline` on the same bundle, the two runs alternating so
//!   that noise from other work on the machine falls on both.
//!
//! The peers are installed at pinned versions by `benches/peer/setup.sh`, which this bench
//! runs first. A peer that cannot be installed (no registry) is reported as missing and
//! provd's figures are still printed; a peer that is installed but does not verify a bundle
//! fails the bench. The `provd` binary measured is the release build: this bench runs
//! `cargo build --release --bin provd` first, which does nothing when it is up to date.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use actors::domain::verification::{
    self, Artifact, IdentityPolicy, Matcher, Request, SignerPolicy, Thresholds, TrustMaterial,
    WorkflowClaims,
};

/// The identity and issuer of the conformance bundles, unless a case names its own.
const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const GITHUB: &str = "https://token.actions.githubusercontent.com";

const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const CLI_RUNS: usize = 20;
/// A production bundle that sigstore-python verifies offline with its own embedded root.
const CLI_CASE: &str = "happy-path-v0.3";

/// Who must have signed a case's bundle.
enum Signer {
    Identity { san: String, issuer: String },
    Key(PathBuf),
}

/// One happy-path conformance case, with its inputs assembled as the suite's harness does.
struct Case {
    name: String,
    bundle: PathBuf,
    artifact: PathBuf,
    root: PathBuf,
    signer: Signer,
}

/// The vectors directory: `$PROVD_VECTORS_DIR`, or `../shared/vectors` from the project root.
fn vectors() -> PathBuf {
    std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"))
}

/// A case's own file, or the suite's default beside the cases.
fn own_or(dir: &Path, name: &str, default: PathBuf) -> PathBuf {
    let own = dir.join(name);
    if own.exists() { own } else { default }
}

fn read_line(path: &Path, default: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| default.to_owned())
}

/// Every case whose name does not end in `_fail`, sorted by name.
fn happy_path(vectors: &Path) -> Vec<Case> {
    let suite = vectors.join("sigstore-conformance");
    let prod_root = vectors.join("sigstore-python/prod_trusted_root.json");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&suite)
        .unwrap_or_else(|e| panic!("{}: {e}: set PROVD_VECTORS_DIR", suite.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir() && !p.to_string_lossy().ends_with("_fail"))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let key = dir.join("key.pub");
            let signer = if key.exists() {
                Signer::Key(key)
            } else {
                Signer::Identity {
                    san: read_line(&dir.join("identity"), BEACON),
                    issuer: read_line(&dir.join("issuer"), GITHUB),
                }
            };
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                bundle: dir.join("bundle.sigstore.json"),
                artifact: own_or(&dir, "artifact", suite.join("a.txt")),
                root: own_or(&dir, "trusted_root.json", prod_root.clone()),
                signer,
            }
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Verifies every case in turn until `d` has passed; returns how many verified and the time.
fn round_robin(d: Duration, mut verify_one: impl FnMut(usize) -> bool) -> (usize, Duration) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < d {
        assert!(verify_one(n), "a bundle stopped verifying");
        n += 1;
    }
    (n, start.elapsed())
}

/// provd's in-process throughput, in bundles per second.
fn provd_throughput(cases: &[Case]) -> f64 {
    let mut roots: HashMap<&Path, TrustMaterial> = HashMap::new();
    for c in cases {
        roots
            .entry(&c.root)
            .or_insert_with(|| TrustMaterial::from_json(&read(&c.root)).expect("trusted root"));
    }
    let work: Vec<(Vec<u8>, Vec<u8>, &TrustMaterial, SignerPolicy)> = cases
        .iter()
        .map(|c| {
            let signer = match &c.signer {
                Signer::Identity { san, issuer } => SignerPolicy::Identity(IdentityPolicy {
                    san: Matcher::Exact(san.clone()),
                    issuer: Matcher::Exact(issuer.clone()),
                    workflow: WorkflowClaims::default(),
                }),
                Signer::Key(path) => SignerPolicy::Key(
                    verification::key_from_pem(&String::from_utf8_lossy(&read(path)))
                        .expect("key.pub"),
                ),
            };
            (
                read(&c.bundle),
                read(&c.artifact),
                &roots[c.root.as_path()],
                signer,
            )
        })
        .collect();
    let verify_one = |i: usize| {
        let (bundle, artifact, trust, signer) = &work[i % work.len()];
        verification::verify(
            trust,
            &Request {
                bundle,
                artifact: Artifact::Bytes(artifact),
                signer,
                thresholds: Thresholds::default(),
            },
        )
    };
    for (i, c) in cases.iter().enumerate() {
        let report = verify_one(i);
        assert!(
            report.valid,
            "provd did not verify {}: {:?}",
            c.name,
            report.failure()
        );
    }
    round_robin(WARMUP, |i| verify_one(i).valid);
    let (n, took) = round_robin(MEASURE, |i| verify_one(i).valid);
    n as f64 / took.as_secs_f64()
}

/// What became of a peer: its figure, missing (not installed), or failed (installed, wrong).
enum Peer<T> {
    Measured(T),
    Missing(String),
    Failed(String),
}

/// sigstore-js's throughput over the same cases, in bundles per second.
fn js_throughput(peer_dir: &Path, cases: &[Case]) -> Peer<f64> {
    if !peer_dir.join("node_modules/@sigstore/verify").is_dir() {
        return Peer::Missing("benches/peer/node_modules is not installed".into());
    }
    let plan = serde_json::json!({
        "warmup_seconds": WARMUP.as_secs_f64(),
        "seconds": MEASURE.as_secs_f64(),
        "cases": cases.iter().map(|c| {
            let mut v = serde_json::json!({
                "name": c.name,
                "bundle": c.bundle,
                "artifact": c.artifact,
                "root": c.root,
            });
            match &c.signer {
                Signer::Identity { san, issuer } => {
                    v["identity"] = san.as_str().into();
                    v["issuer"] = issuer.as_str().into();
                }
                Signer::Key(path) => v["key"] = serde_json::json!(path),
            }
            v
        }).collect::<Vec<_>>(),
    });
    let file = tempfile::NamedTempFile::new().expect("plan file");
    std::fs::write(file.path(), plan.to_string()).expect("write plan");
    let out = match Command::new("node")
        .arg(peer_dir.join("verify-js.mjs"))
        .arg(file.path())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) => out,
        Err(e) => return Peer::Missing(format!("node could not be run: {e}")),
    };
    if !out.status.success() {
        return Peer::Failed(format!("verify-js.mjs exited with {}", out.status));
    }
    let figure: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return Peer::Failed(format!("verify-js.mjs printed no figure: {e}")),
    };
    match (figure["bundles"].as_f64(), figure["seconds"].as_f64()) {
        (Some(n), Some(s)) if s > 0.0 => Peer::Measured(n / s),
        _ => Peer::Failed(format!("verify-js.mjs printed {figure}")),
    }
}

/// The release build of `provd`, built (or found up to date) by cargo.
fn release_provd() -> PathBuf {
    // The bench runs from <target>/release/deps, beside which cargo puts the release binary.
    let exe = std::env::current_exe().expect("bench path");
    let release = exe.parent().and_then(Path::parent).expect("target/release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--bin", "provd"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release --bin provd failed");
    release.join("provd")
}

/// One run's wall time, after checking the command exits 0.
fn timed(cmd: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The median and the mean of some wall times, in milliseconds.
fn p50_mean(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    (ms(times[times.len() / 2]), mean)
}

/// One-shot CLI latency of provd and, alternating with it, of sigstore-python.
fn cli_latency(provd: &Path, peer_dir: &Path, case: &Case) -> ((f64, f64), Peer<(f64, f64)>) {
    let Signer::Identity { san, issuer } = &case.signer else {
        panic!("{} is not signed by an identity", case.name);
    };
    let mut ours = Command::new(provd);
    ours.args(["sigstore", "verify-bundle", "--offline", "--bundle"])
        .arg(&case.bundle)
        .args([
            "--certificate-identity",
            san,
            "--certificate-oidc-issuer",
            issuer,
        ])
        .arg("--trusted-root")
        .arg(&case.root)
        .arg(&case.artifact)
        .env_remove("PROVD_CONFIG");
    let sigstore = peer_dir.join(".venv/bin/sigstore");
    let mut peer = Command::new(&sigstore);
    peer.args(["verify", "identity", "--offline", "--bundle"])
        .arg(&case.bundle)
        .args(["--cert-identity", san, "--cert-oidc-issuer", issuer])
        .arg(&case.artifact);

    // An untimed first run of each checks that it verifies and warms the file cache.
    if let Err(e) = timed(&mut ours) {
        panic!("{} did not verify {}: {e}", provd.display(), case.name);
    }
    let mut peer_state = if !sigstore.exists() {
        Peer::Missing("benches/peer/.venv is not installed".into())
    } else {
        match timed(&mut peer) {
            Ok(_) => Peer::Measured(Vec::with_capacity(CLI_RUNS)),
            Err(e) => Peer::Failed(format!("sigstore-python did not verify {}: {e}", case.name)),
        }
    };
    let mut our_times = Vec::with_capacity(CLI_RUNS);
    for _ in 0..CLI_RUNS {
        our_times.push(timed(&mut ours).expect("provd verify-bundle"));
        if let Peer::Measured(times) = &mut peer_state {
            match timed(&mut peer) {
                Ok(t) => times.push(t),
                Err(e) => peer_state = Peer::Failed(format!("sigstore-python: {e}")),
            }
        }
    }
    let peer_figure = match peer_state {
        Peer::Measured(times) => Peer::Measured(p50_mean(times)),
        Peer::Missing(m) => Peer::Missing(m),
        Peer::Failed(m) => Peer::Failed(m),
    };
    (p50_mean(our_times), peer_figure)
}

/// The installed version of a peer, for the printed line.
fn js_version(peer_dir: &Path) -> String {
    let package = peer_dir.join("node_modules/@sigstore/verify/package.json");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    std::fs::read(package)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .map(|v| format!("@sigstore/verify {v} on Node.js {node}"))
        .unwrap_or_else(|| "@sigstore/verify".into())
}

fn python_version(peer_dir: &Path) -> String {
    Command::new(peer_dir.join(".venv/bin/sigstore"))
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace(' ', "-python ")
        })
        .unwrap_or_else(|_| "sigstore-python".into())
}

/// Prints a peer that has no figure; returns whether the bench must fail.
fn report_missing<T>(name: &str, peer: &Peer<T>) -> bool {
    match peer {
        Peer::Measured(_) => false,
        Peer::Missing(why) => {
            println!("  !! peer {name} MISSING ({why}): only provd's figure above");
            false
        }
        Peer::Failed(why) => {
            println!("  !! peer {name} FAILED: {why}");
            true
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument is not supported by this harness.
    let peer_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
    let setup = Command::new("bash").arg(peer_dir.join("setup.sh")).status();
    if !matches!(setup, Ok(s) if s.success()) {
        println!("!! benches/peer/setup.sh could not install every peer ({setup:?}): see above");
    }
    // Built before anything is timed, so that no compilation runs beside a measurement.
    let provd = release_provd();
    let vectors = vectors();
    let cases = happy_path(&vectors);
    let keyed = cases
        .iter()
        .filter(|c| matches!(c.signer, Signer::Key(_)))
        .count();
    println!(
        "Sigstore bundle verification, {} happy-path conformance bundles ({keyed} with a managed key) \
         (ours | peer from the same run | ours ÷ peer)",
        cases.len()
    );
    let mut failed = false;

    let ours = provd_throughput(&cases);
    let js = js_throughput(&peer_dir, &cases);
    match &js {
        Peer::Measured(peer) => println!(
            "in-process, round-robin for {} s: provd verify {ours:>8.0} bundles/s | {} {peer:>8.0} bundles/s | ratio {:.2}× (higher is faster)",
            MEASURE.as_secs(),
            js_version(&peer_dir),
            ours / peer
        ),
        _ => println!(
            "in-process, round-robin for {} s: provd verify {ours:>8.0} bundles/s",
            MEASURE.as_secs()
        ),
    }
    failed |= report_missing("sigstore-js", &js);

    let case = cases
        .iter()
        .find(|c| c.name == CLI_CASE)
        .expect("the CLI case");
    let ((p50, mean), py) = cli_latency(&provd, &peer_dir, case);
    let line = format!(
        "one-shot CLI, {CLI_CASE} × {CLI_RUNS}: provd sigstore verify-bundle p50 {p50:>6.1} ms, mean {mean:>6.1} ms"
    );
    match &py {
        Peer::Measured((peer_p50, peer_mean)) => println!(
            "{line} | {} `sigstore verify identity --offline` p50 {peer_p50:>6.1} ms, mean {peer_mean:>6.1} ms | ratio {:.4}× p50, {:.4}× mean (lower is faster)",
            python_version(&peer_dir),
            p50 / peer_p50,
            mean / peer_mean
        ),
        _ => println!("{line}"),
    }
    failed |= report_missing("sigstore-python", &py);

    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
