//! `provd trust` against a real TUF repository: python-tuf builds and changes it
//! (`tests/data/tuf/make_repo.py`: Ed25519 keys, consistent snapshots, the targets
//! `trusted_root.json` and `signing_config.v0.2.json`), a small HTTP/1.1 file server in this
//! test serves it on port 0, and every check runs the provd binary as an operator would.
//!
//! Without python-tuf the tests are skipped, except under `CI=true`, where that is a failure
//! (`.ci/tools` installs it).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Whether python-tuf can be imported; missing, the test is skipped outside CI.
fn python_tuf() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import tuf.api.metadata, securesystemslib.signer, cryptography",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let msg = "python-tuf is not importable by python3 (pip install tuf==7.0.1 'securesystemslib[crypto]'; .ci/tools installs it)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: a missing tool is a failure)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// The shared test vectors: `$PROVD_VECTORS_DIR`, or `../shared/vectors`.
fn vector(rel: &str) -> PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    let path = dir.join(rel);
    assert!(
        path.is_file(),
        "test vector {} not found: set PROVD_VECTORS_DIR to the shared/vectors directory",
        path.display()
    );
    path
}

const FIRST_ROOT: &str = "sigstore-conformance/rekor2-happy-path/trusted_root.json";
const SECOND_ROOT: &str = "sigstore-python/prod_trusted_root.json";
const SIGNING_CONFIG: &str = "sigstore-python/prod_signing_config.v0.2.json";

/// A static file server: HTTP/1.1, one connection at a time, `Connection: close`.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(dir: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = serve_one(&dir, c);
                }
            }
        });
        let server = Server {
            addr,
            stop,
            thread: Some(thread),
        };
        server.wait_ready();
        server
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Polls until a real request is answered, within a deadline.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = TcpStream::connect(self.addr).and_then(|mut s| {
                s.write_all(b"GET /timestamp.json HTTP/1.1\r\nHost: x\r\n\r\n")?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line)?;
                Ok(line.starts_with("HTTP/1.1 200"))
            });
            if answered.unwrap_or(false) {
                return;
            }
            assert!(Instant::now() < deadline, "the test server never answered");
            std::thread::yield_now();
        }
    }

    /// Stops accepting and closes the port: later connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_one(dir: &Path, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let rel = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    let safe = !rel.is_empty() && rel.split('/').all(|c| !c.is_empty() && c != "..");
    let body = safe.then(|| std::fs::read(dir.join(rel)).ok()).flatten();
    let mut out = stream;
    match body {
        Some(b) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            )?;
            out.write_all(&b)?;
        }
        None => write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}

/// A python-tuf repository served over HTTP, in its own directory.
struct Repo {
    work: tempfile::TempDir,
    server: Server,
}

impl Repo {
    /// A repository with `trusted_root.json` and, when asked, `signing_config.v0.2.json`;
    /// `None` when python-tuf is missing outside CI.
    fn new(with_signing_config: bool) -> Option<Repo> {
        if !python_tuf() {
            return None;
        }
        let work = tempfile::tempdir().expect("tempdir");
        let mut args = vec![format!(
            "trusted_root.json={}",
            vector(FIRST_ROOT).display()
        )];
        if with_signing_config {
            args.push(format!(
                "signing_config.v0.2.json={}",
                vector(SIGNING_CONFIG).display()
            ));
        }
        py(work.path(), "init", &args);
        let server = Server::start(work.path().join("repo"));
        Some(Repo { work, server })
    }

    fn py(&self, command: &str, args: &[String]) {
        py(self.work.path(), command, args);
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn initial_root(&self) -> PathBuf {
        self.work.path().join("initial_root.json")
    }

    /// What the repository serves as a target now (the script's own copy).
    fn target(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.work.path().join("content").join(name)).expect("target content")
    }

    /// A directory for a data dir or an export.
    fn dir(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `provd trust update` of this repository into `data_dir`.
    fn update(&self, data_dir: &Path) -> Output {
        provd(&[
            "trust",
            "update",
            "--tuf-url",
            &self.url(),
            "--tuf-root",
            s(&self.initial_root()),
            "--data-dir",
            s(data_dir),
        ])
    }

    /// `provd trust status --json` of this repository in `data_dir`.
    fn status(&self, data_dir: &Path) -> serde_json::Value {
        let out = provd(&[
            "trust",
            "status",
            "--tuf-url",
            &self.url(),
            "--data-dir",
            s(data_dir),
            "--json",
        ]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }
}

fn py(work: &Path, command: &str, args: &[String]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tuf/make_repo.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(command)
        .arg(work)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "make_repo.py {command} failed:\n{}",
        text(&out)
    );
}

fn provd(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_provd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PROVD_") {
            c.env_remove(k);
        }
    }
    c.args(args).output().expect("provd runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every file under `dir` with its bytes, to tell whether anything changed.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// The cached copy of a target, found through `trust status`.
fn cached_target(status: &serde_json::Value, name: &str) -> Vec<u8> {
    let dir = PathBuf::from(status["path"].as_str().expect("cache path"));
    std::fs::read(dir.join("tuf/targets").join(name)).expect("cached target")
}

#[test]
fn update_caches_the_verified_root_and_status_shows_it() {
    let Some(repo) = Repo::new(true) else { return };
    let a = repo.dir("A");
    let out = repo.update(&a);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("TUF root version 1"), "{stdout}");
    assert!(stdout.lines().count() <= 2, "{stdout}");

    let st = repo.status(&a);
    assert_eq!(st["source"], "tuf-cache");
    assert_eq!(st["repository"], repo.url());
    assert_eq!(st["instance"], "custom");
    assert_eq!(st["root_version"], 1);
    assert_eq!(st["freshness"], "fresh");
    assert_eq!(st["signing_config"], true);
    assert!(st["age_seconds"].as_u64().unwrap() < 600, "{st}");
    assert_eq!(
        cached_target(&st, "trusted_root.json"),
        repo.target("trusted_root.json")
    );
    assert_eq!(
        cached_target(&st, "signing_config.v0.2.json"),
        repo.target("signing_config.v0.2.json")
    );

    let out = provd(&[
        "trust",
        "status",
        "--tuf-url",
        &repo.url(),
        "--data-dir",
        s(&a),
    ]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("TUF cache") && human.contains("root version 1"),
        "{human}"
    );
    assert!(human.contains("fresh"), "{human}");
}

#[test]
fn a_repository_without_signing_config_is_fine() {
    let Some(repo) = Repo::new(false) else { return };
    let a = repo.dir("A");
    let out = repo.update(&a);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not in the repository"),
        "{}",
        text(&out)
    );
    let st = repo.status(&a);
    assert_eq!(st["signing_config"], false);
    assert_eq!(
        cached_target(&st, "trusted_root.json"),
        repo.target("trusted_root.json")
    );
}

#[test]
fn tampered_or_expired_metadata_is_refused_and_the_cache_is_kept() {
    let Some(mut repo) = Repo::new(true) else {
        return;
    };
    let a = repo.dir("A");
    assert_eq!(code(&repo.update(&a)), 0);
    let before = tree(&a);
    let second = format!("trusted_root.json={}", vector(SECOND_ROOT).display());

    // A new targets version whose bytes were changed after signing.
    repo.py("bump", std::slice::from_ref(&second));
    repo.py("tamper-targets", &[]);
    let out = repo.update(&a);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("signature threshold not met for role targets"),
        "{err}"
    );
    assert!(err.contains("the cache was not changed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(tree(&a) == before, "a refused update changed the cache");

    // A timestamp that expired yesterday.
    repo.py("bump", &["--expired-timestamp".to_owned()]);
    let out = repo.update(&a);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("timestamp metadata expired"), "{err}");
    assert!(tree(&a) == before, "a refused update changed the cache");

    // The same repository, signed properly again, is taken: the refusals were the checks.
    repo.py("bump", &[]);
    let out = repo.update(&a);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = repo.status(&a);
    assert_eq!(
        cached_target(&st, "trusted_root.json"),
        std::fs::read(vector(SECOND_ROOT)).unwrap()
    );
    let after = tree(&a);

    // With the repository gone, the update fails as unavailable and keeps the cache.
    repo.server.stop();
    let out = repo.update(&a);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("is unavailable"), "{}", text(&out));
    assert!(tree(&a) == after, "a failed update changed the cache");
}

#[test]
fn a_root_rotation_is_followed() {
    let Some(repo) = Repo::new(true) else { return };
    let a = repo.dir("A");
    assert_eq!(code(&repo.update(&a)), 0);
    assert_eq!(repo.status(&a)["root_version"], 1);

    // Root 2 has new root and timestamp keys (signed by the old and the new root key), and
    // the timestamp is signed by the new timestamp key only: it verifies only under root 2.
    repo.py("rotate-root", &[]);
    let out = repo.update(&a);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TUF root version 2"),
        "{}",
        text(&out)
    );
    assert_eq!(repo.status(&a)["root_version"], 2);

    // A new data directory starting from root 1 walks the same chain.
    let b = repo.dir("B");
    assert_eq!(code(&repo.update(&b)), 0);
    assert_eq!(repo.status(&b)["root_version"], 2);
}

/// Flips one hex digit of the first `"sha256"` value in one file of an export: the JSON
/// stays valid, so only TUF's own checks can refuse it.
fn flip_in_export(export: &Path, file: &str, out: &Path) {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(export).unwrap()).unwrap();
    let b64 = doc["files"][file].as_str().expect("file in export");
    let mut bytes = B64.decode(b64).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"sha256\": ")
        .expect("a sha256 in the file")
        + 11;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    doc["files"][file] = B64.encode(&bytes).into();
    std::fs::write(out, serde_json::to_vec(&doc).unwrap()).unwrap();
}

#[test]
fn an_export_imports_offline_and_a_flipped_byte_is_refused() {
    let Some(mut repo) = Repo::new(true) else {
        return;
    };
    let a = repo.dir("A");
    repo.py("rotate-root", &[]);
    assert_eq!(code(&repo.update(&a)), 0);
    let exported = repo.dir("trust-export.json");
    let out = provd(&[
        "trust",
        "export",
        "--tuf-url",
        &repo.url(),
        "--data-dir",
        s(&a),
        s(&exported),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let source = repo.status(&a);

    // The air gap: nothing answers at the repository's address any more.
    repo.server.stop();
    let b = repo.dir("B");
    let import = |file: &Path, data_dir: &Path| {
        provd(&[
            "trust",
            "import",
            s(file),
            "--tuf-root",
            s(&repo.initial_root()),
            "--data-dir",
            s(data_dir),
        ])
    };
    let out = import(&exported, &b);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = repo.status(&b);
    assert_eq!(st["root_version"], 2);
    assert_eq!(st["root_version"], source["root_version"]);
    assert_eq!(st["updated_at"], source["updated_at"]);
    assert!(st["imported_at"].is_string(), "{st}");
    assert_eq!(
        cached_target(&st, "trusted_root.json"),
        cached_target(&source, "trusted_root.json")
    );
    let b_before = tree(&b);

    // B verifies a bundle against the imported root with no network and no root file: the
    // repository's trusted root is the one of conformance case `rekor2-happy-path`.
    let cfg = repo.dir("provd-b.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[trust]\ntuf_url = {:?}\ntuf_root = {:?}\n",
            s(&b),
            repo.url(),
            s(&repo.initial_root()),
        ),
    )
    .unwrap();
    let out = verify_rekor2_happy_path(&cfg);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("OK: signed by "),
        "{}",
        text(&out)
    );
    // With an empty data directory there is no root for this repository at all.
    let empty = repo.dir("provd-empty.toml");
    std::fs::write(
        &empty,
        format!(
            "data_dir = {:?}\n[trust]\ntuf_url = {:?}\ntuf_root = {:?}\n",
            s(&repo.dir("nothing-here")),
            repo.url(),
            s(&repo.initial_root()),
        ),
    )
    .unwrap();
    let out = verify_rekor2_happy_path(&empty);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        stderr(&out).starts_with("trusted root check failed: no trusted root for"),
        "{}",
        text(&out)
    );

    // One changed digit in the targets metadata: its signature no longer verifies.
    let tampered = repo.dir("tampered-targets.json");
    flip_in_export(&exported, "targets.json", &tampered);
    // Into an empty data directory, TUF reads it and its signature fails; into B, whose
    // cache already holds that targets version, TUF keeps its own verified copy and the
    // carried file is refused for differing from it.
    for (data_dir, check) in [
        (
            repo.dir("C"),
            "signature threshold not met for role targets",
        ),
        (b.clone(), "targets.json differs from the copy TUF verified"),
    ] {
        let out = import(&tampered, &data_dir);
        assert_eq!(code(&out), 1, "{}", text(&out));
        let err = stderr(&out);
        assert!(err.contains("tampered-targets.json"), "{err}");
        assert!(err.contains(check), "{err}");
    }
    assert!(
        tree(&repo.dir("C")).is_empty(),
        "a refused import left files behind"
    );
    assert!(tree(&b) == b_before, "a refused import changed the cache");

    // One added byte (a space) in the snapshot: its signature still holds, since TUF signs
    // canonical JSON, but the timestamp pins the snapshot's length and hash.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exported).unwrap()).unwrap();
    let snapshot = doc["files"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.ends_with(".snapshot.json"))
        .expect("a versioned snapshot")
        .clone();
    let tampered = repo.dir("tampered-snapshot.json");
    std::fs::write(&tampered, {
        let mut d = doc.clone();
        let mut bytes = B64.decode(d["files"][&snapshot].as_str().unwrap()).unwrap();
        let at = bytes.iter().position(|b| *b == b'{').unwrap();
        bytes.insert(at + 1, b' ');
        d["files"][&snapshot] = B64.encode(&bytes).into();
        serde_json::to_vec(&d).unwrap()
    })
    .unwrap();
    let out = import(&tampered, &repo.dir("D"));
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        stderr(&out).contains("integrity check failed"),
        "{}",
        text(&out)
    );

    // A custom repository's export needs the root it is verified from.
    let out = provd(&[
        "trust",
        "import",
        s(&exported),
        "--data-dir",
        s(&repo.dir("E")),
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("initial root"), "{}", text(&out));
}

/// `provd sigstore verify-bundle --offline` of conformance case `rekor2-happy-path` with the
/// root `config`'s `[trust]` selects (no `--trusted-root`).
fn verify_rekor2_happy_path(config: &Path) -> Output {
    let bundle = vector("sigstore-conformance/rekor2-happy-path/bundle.sigstore.json");
    let artifact = vector("sigstore-conformance/a.txt");
    provd(&[
        "--config",
        s(config),
        "sigstore",
        "verify-bundle",
        "--offline",
        "--bundle",
        s(&bundle),
        "--certificate-identity",
        "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main",
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
        s(&artifact),
    ])
}

/// Rewrites the cache's `updated_at` as if the update had run `hours` ago: the test cannot
/// wait an hour, and this is the one field the age of a cached root counts from.
fn backdate_cache(status: &serde_json::Value, hours: i64) {
    let state = PathBuf::from(status["path"].as_str().unwrap()).join("state.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(hours);
    doc["updated_at"] = then.to_string().into();
    std::fs::write(&state, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn a_root_older_than_max_age_warns_and_with_refuse_stale_is_refused() {
    let Some(repo) = Repo::new(true) else { return };
    let a = repo.dir("A");
    assert_eq!(code(&repo.update(&a)), 0);
    let config = |refuse: bool| {
        let path = repo.dir(&format!("provd-{refuse}.toml"));
        std::fs::write(
            &path,
            format!(
                "data_dir = {:?}\n[trust]\ntuf_url = {:?}\ntuf_root = {:?}\nmax_age = \"1h\"\nrefuse_stale = {refuse}\n",
                s(&a),
                repo.url(),
                s(&repo.initial_root()),
            ),
        )
        .unwrap();
        path
    };
    let (warn, refuse) = (config(false), config(true));
    let status = |cfg: &Path, extra: &[&str]| {
        let mut args = vec!["--config", s(cfg), "trust", "status"];
        args.extend_from_slice(extra);
        provd(&args)
    };

    // Just updated: fresh, and the check passes even when stale roots are refused.
    let out = status(&refuse, &["--check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(stderr(&out).is_empty(), "{}", text(&out));

    backdate_cache(&repo.status(&a), 2);
    let out = status(&warn, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 hours (max_age 1h): stale"), "{stdout}");
    let out = status(&warn, &["--check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stderr(&out).contains(
            "warning: the trusted root is 2 hours old (max_age 1h); run `provd trust update`"
        ),
        "{}",
        text(&out)
    );

    let out = status(&refuse, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stale; verification refuses it"),
        "{}",
        text(&out)
    );
    let out = status(&refuse, &["--check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the trusted root is 2 hours old (max_age 1h)")
            && err.contains("refuse_stale"),
        "{err}"
    );

    // Verification warns on the stale root and goes on; with refuse_stale it refuses,
    // saying how old the root is.
    let out = verify_rekor2_happy_path(&warn);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stderr(&out).contains("warning: the trusted root is 2 hours old (max_age 1h)"),
        "{}",
        text(&out)
    );
    let out = verify_rekor2_happy_path(&refuse);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("trusted root check failed: the trusted root is 2 hours old (max_age 1h)"),
        "{err}"
    );

    // An explicit file is judged by its modification time.
    let file = repo.dir("trusted_root.json");
    std::fs::write(&file, repo.target("trusted_root.json")).unwrap();
    let three_hours_ago = SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(three_hours_ago)
        .unwrap();
    let out = status(&refuse, &["--trusted-root", s(&file), "--check"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(stderr(&out).contains("3 hours old"), "{}", text(&out));
    assert!(stderr(&out).contains(s(&file)), "{}", text(&out));

    // Updating again makes the cached root fresh, and the check passes.
    assert_eq!(code(&repo.update(&a)), 0);
    let out = status(&refuse, &["--check"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}
