//! Sigstore trust roots: kept fresh through TUF, cached in `data_dir`, carried across air gaps.
//!
//! - [`update`] runs the TUF client (`sigstore-tuf`) against an instance's repository, from
//!   the instance's initial root, and caches the verified metadata and the targets
//!   `trusted_root.json` and (when the repository has it) `signing_config.v0.2.json` in
//!   `<data_dir>/trust/<instance-or-host>/` ([`cache`]).
//! - [`load_root`] is what verification calls, offline: an explicit file, else the instance's
//!   TUF cache, else the root compiled into provd ([`embedded`]), with its age judged by the
//!   `[trust]` freshness policy ([`freshness`]).
//! - [`export`] writes a cache as one file; [`import`] replays that file through the same
//!   TUF client with no network ([`export::CarriedRepository`]) and caches it only if every
//!   check passes.
//!
//! - [`service::ServiceRoots`] is the running service's root for `POST /api/v1/verify`,
//!   prepared once and again only when its bytes change.
//!
//! A cache is replaced whole, and only after TUF verified all of it, and then verified again
//! offline from the files about to be committed, so what is cached is always a set of files
//! TUF accepts from the initial root.

pub mod cache;
pub mod embedded;
pub mod export;
pub mod freshness;
pub mod service;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use sha2::{Digest as _, Sha256};
use sigstore_tuf::{FileStore, HttpRepository, Repository, Updater};

use self::cache::{CacheDir, CacheSource, CacheState};
use self::embedded::Embedded;
use self::export::{CarriedRepository, ExportFile};
use self::freshness::{Freshness, FreshnessPolicy, compact_duration, describe_age};
use crate::config::trust::TrustConfig;

/// The default `trust.max_age`: 30 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
/// The TUF target holding the Sigstore trusted root.
pub const TRUSTED_ROOT_TARGET: &str = "trusted_root.json";
/// The TUF target holding the Sigstore signing configuration (optional).
pub const SIGNING_CONFIG_TARGET: &str = "signing_config.v0.2.json";
/// The production TUF repository.
pub const PRODUCTION_URL: &str = "https://tuf-repo-cdn.sigstore.dev";
/// The staging TUF repository.
pub const STAGING_URL: &str = "https://tuf-repo-cdn.sigstage.dev";
/// The largest export `import` reads.
const MAX_EXPORT_BYTES: u64 = 64 * 1024 * 1024;

/// Errors of the trust layer. The variants are the kinds a caller tells apart: retry later
/// ([`TrustError::Unavailable`]), do not trust ([`TrustError::Refused`],
/// [`TrustError::Stale`], [`TrustError::NoRoot`]), fix the command ([`TrustError::BadInput`]),
/// fix the machine ([`TrustError::Io`]).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The TUF repository could not be reached or did not answer (connection, timeout, HTTP
    /// status); nothing was refused and a later attempt may succeed.
    #[error("the TUF repository {url} is unavailable: {message}")]
    Unavailable {
        /// The repository.
        url: String,
        /// What failed.
        message: String,
    },
    /// TUF verification refused metadata or a target (signature threshold, expiry, rollback,
    /// version or hash pins, root chain), or a file is not what it must be.
    #[error("refused {what}: {reason}")]
    Refused {
        /// What was refused (the repository's metadata, an export, a cache).
        what: String,
        /// The check that failed, as TUF names it.
        reason: String,
    },
    /// The selected trusted root is older than `trust.max_age` and `trust.refuse_stale` is
    /// set.
    #[error(
        "the trusted root is {age} old (max_age {max_age}) and trust.refuse_stale is set: {root}; run `provd trust update`"
    )]
    Stale {
        /// Where the root came from.
        root: String,
        /// Its age, in words.
        age: String,
        /// The configured `trust.max_age`.
        max_age: String,
    },
    /// A custom repository has no cache yet, and nothing is compiled in for it.
    #[error(
        "no trusted root for {repository}: run `provd trust update` or `provd trust import` first"
    )]
    NoRoot {
        /// The repository.
        repository: String,
    },
    /// An input the caller gave is unusable: an unreadable file, a bad URL, an initial root
    /// that is missing or does not fit the instance.
    #[error("{0}")]
    BadInput(String),
    /// Reading or writing the cache or a file failed.
    #[error("{what}: {source}")]
    Io {
        /// The file or directory, or what was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

impl TrustError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrustError::Io {
            what: path.display().to_string(),
            source,
        }
    }
}

/// An error and its causes, `: `-joined, since `sigstore-tuf` keeps the detail in sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Maps a TUF client error. Transport errors are the network's (`Unavailable`) when a real
/// repository was asked; from an export they mean a file it lacks, which is a refusal.
fn tuf_error(e: sigstore_tuf::Error, what: &str, network_url: Option<&str>) -> TrustError {
    match (&e, network_url) {
        (sigstore_tuf::Error::Transport { .. }, Some(url)) => TrustError::Unavailable {
            url: url.to_owned(),
            message: chain(&e),
        },
        (sigstore_tuf::Error::Io { .. }, _) => TrustError::Io {
            what: what.to_owned(),
            source: std::io::Error::other(chain(&e)),
        },
        _ => TrustError::Refused {
            what: what.to_owned(),
            reason: chain(&e),
        },
    }
}

/// A Sigstore instance: which TUF repository keeps its trust root, and whose root is
/// compiled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instance {
    /// Sigstore's public good instance.
    Production,
    /// Sigstore's staging instance.
    Staging,
    /// Another TUF repository; its initial root is given by the operator.
    Custom {
        /// The repository's base URL, without a trailing `/`.
        url: String,
    },
}

impl Instance {
    /// A custom repository; the error says what a URL must be.
    pub fn custom(url: &str) -> Result<Instance, String> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| "an http(s) URL".to_owned())?;
        if !matches!(parsed.scheme(), "http" | "https")
            || !parsed.has_host()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err("an http:// or https:// URL without query or fragment".into());
        }
        Ok(Instance::Custom {
            url: parsed.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// The instance an export names, checked against the repository it names.
    fn from_export(instance: &str, repository: &str) -> Result<Instance, String> {
        let i = match instance {
            "production" => Instance::Production,
            "staging" => Instance::Staging,
            "custom" => Instance::custom(repository)
                .map_err(|e| format!("repository {repository:?} is not {e}"))?,
            other => return Err(format!("unknown instance {other:?}")),
        };
        if i.url() != repository.trim_end_matches('/') {
            return Err(format!(
                "the {instance} instance's repository is {}, not {repository}",
                i.url()
            ));
        }
        Ok(i)
    }

    /// `production`, `staging` or `custom`.
    pub fn kind(&self) -> &'static str {
        match self {
            Instance::Production => "production",
            Instance::Staging => "staging",
            Instance::Custom { .. } => "custom",
        }
    }

    /// The TUF repository's URL.
    pub fn url(&self) -> &str {
        match self {
            Instance::Production => PRODUCTION_URL,
            Instance::Staging => STAGING_URL,
            Instance::Custom { url } => url,
        }
    }

    /// What is compiled in for it.
    pub fn embedded(&self) -> Option<&'static Embedded> {
        match self {
            Instance::Production => Some(&embedded::PRODUCTION),
            Instance::Staging => Some(&embedded::STAGING),
            Instance::Custom { .. } => None,
        }
    }

    /// The cache directory's name under `<data_dir>/trust/`: the instance, or for a custom
    /// repository its host, port and path with every other character as `_`.
    pub fn cache_name(&self) -> String {
        let Instance::Custom { url } = self else {
            return self.kind().to_owned();
        };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let name: String = rest
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // A host must not take the name of an embedded instance's cache, nor hide it.
        if name == "production" || name == "staging" || name.starts_with('.') {
            format!("host_{name}")
        } else {
            name
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instance::Custom { url } => write!(f, "{url}"),
            other => write!(f, "{} ({})", other.kind(), other.url()),
        }
    }
}

/// The HTTP client for TUF repositories: rustls, and timeouts so a stalled mirror cannot
/// hang an update (TUF's slow-retrieval attack).
pub fn http_client() -> Result<reqwest::Client, TrustError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("provd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TrustError::BadInput(format!("cannot build the HTTP client: {e}")))
}

/// What an update or import cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOutcome {
    /// The cache directory.
    pub dir: PathBuf,
    /// The instance.
    pub instance: Instance,
    /// The version of the newest TUF root reached.
    pub root_version: u64,
    /// When the metadata was fetched from the repository.
    pub updated_at: Timestamp,
    /// SHA-256 of `trusted_root.json`, lowercase hex.
    pub trusted_root_sha256: String,
    /// Whether `signing_config.v0.2.json` was in the repository (and is cached).
    pub signing_config: bool,
}

/// What TUF verified from one set of files.
struct Verified {
    root_version: u64,
    trusted_root: Vec<u8>,
    signing_config: Option<Vec<u8>>,
}

/// Runs the TUF workflow (root chain, timestamp, snapshot, targets, then the two targets)
/// over `repo`, from `initial_root`, writing what it verifies through to `store`.
async fn run_tuf(
    repo: impl Repository + 'static,
    initial_root: &[u8],
    store: Option<FileStore>,
    now: Timestamp,
) -> Result<Verified, sigstore_tuf::Error> {
    let mut updater = Updater::new(repo, initial_root)?;
    if let Some(s) = store {
        updater = updater.with_store(s);
    }
    updater.refresh(now).await?;
    let trusted_root = updater.get_target(TRUSTED_ROOT_TARGET, now).await?;
    let signing_config = match updater.get_target(SIGNING_CONFIG_TARGET, now).await {
        Ok(b) => Some(b),
        // Optional: older and private repositories do not publish it.
        Err(sigstore_tuf::Error::TargetNotFound(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(Verified {
        root_version: updater.trusted().root().version,
        trusted_root,
        signing_config,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that a verified `trusted_root.json` is a Sigstore trusted root at all, so a
/// repository publishing something else under that name is refused rather than cached.
fn check_trusted_root(bytes: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{TRUSTED_ROOT_TARGET}: {e}"))?;
    match v["mediaType"].as_str() {
        Some(m) if m.starts_with("application/vnd.dev.sigstore.trustedroot") => Ok(()),
        _ => Err(format!(
            "{TRUSTED_ROOT_TARGET} has no Sigstore trusted-root mediaType"
        )),
    }
}

/// The initial root for `instance`: the embedded one, or the operator's for a custom
/// repository (and only there).
fn initial_root<'a>(instance: &Instance, given: Option<&'a [u8]>) -> Result<&'a [u8], TrustError> {
    match (instance.embedded(), given) {
        (Some(e), None) => Ok(e.tuf_root),
        (None, Some(r)) => Ok(r),
        (Some(_), Some(_)) => Err(TrustError::BadInput(format!(
            "the {} instance starts from its embedded TUF root; an initial root is only for a custom repository",
            instance.kind()
        ))),
        (None, None) => Err(TrustError::BadInput(format!(
            "the custom repository {} needs its initial root.json (--tuf-root or trust.tuf_root)",
            instance.url()
        ))),
    }
}

/// Verifies the staged store once more, offline, from the initial root, and checks it gives
/// the targets just verified: the updater writes through best-effort, so this is what makes
/// sure the cache about to be committed is complete and verifies on its own.
async fn check_staged(
    files: BTreeMap<String, Vec<u8>>,
    initial: &[u8],
    verified: &Verified,
    now: Timestamp,
) -> Result<(), TrustError> {
    let again = run_tuf(CarriedRepository::new(files), initial, None, now)
        .await
        .map_err(|e| TrustError::Io {
            what: "the staged cache".into(),
            source: std::io::Error::other(format!("does not verify offline: {}", chain(&e))),
        })?;
    if again.trusted_root != verified.trusted_root
        || again.signing_config != verified.signing_config
    {
        return Err(TrustError::Io {
            what: "the staged cache".into(),
            source: std::io::Error::other("its targets differ from the ones verified"),
        });
    }
    Ok(())
}

/// Fetches and verifies the instance's metadata and targets over HTTP, and replaces its
/// cache in `data_dir` with them. `initial_root` is for a custom repository only (the
/// others use their embedded root). On any failure the previous cache is untouched.
pub async fn update(
    data_dir: &Path,
    instance: &Instance,
    initial_root: Option<&[u8]>,
    http: reqwest::Client,
    now: Timestamp,
) -> Result<CacheOutcome, TrustError> {
    let initial = self::initial_root(instance, initial_root)?;
    let url = instance.url();
    let repo = HttpRepository::new(url)
        .map_err(|e| TrustError::BadInput(chain(&e)))?
        .with_http_client(http);
    let cache = CacheDir::new(data_dir, &instance.cache_name());
    let staging = cache.stage()?;
    let what = format!("the TUF metadata of {url}");
    let verified = run_tuf(
        repo,
        initial,
        Some(FileStore::new(staging.store_dir())),
        now,
    )
    .await
    .map_err(|e| tuf_error(e, &what, Some(url)))?;
    check_trusted_root(&verified.trusted_root)
        .map_err(|reason| TrustError::Refused { what, reason })?;
    check_staged(staging.store_files()?, initial, &verified, now).await?;
    let state = CacheState {
        repository: url.to_owned(),
        instance: instance.kind().to_owned(),
        root_version: verified.root_version,
        updated_at: now,
        source: CacheSource::Update,
        imported_at: None,
        trusted_root_sha256: sha256_hex(&verified.trusted_root),
        signing_config: verified.signing_config.is_some(),
    };
    let dir = staging.commit(&state)?;
    Ok(outcome(dir, instance.clone(), &state))
}

fn outcome(dir: PathBuf, instance: Instance, s: &CacheState) -> CacheOutcome {
    CacheOutcome {
        dir,
        instance,
        root_version: s.root_version,
        updated_at: s.updated_at,
        trusted_root_sha256: s.trusted_root_sha256.clone(),
        signing_config: s.signing_config,
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOutcome {
    /// The file.
    pub file: PathBuf,
    /// How many store files it carries.
    pub files: usize,
    /// The exported cache's state.
    pub root_version: u64,
    /// When the exported cache was fetched.
    pub updated_at: Timestamp,
}

/// Writes the instance's cache to `file` (through a temporary file and a rename) so it can
/// be carried to a machine with no network and imported there.
pub fn export(
    data_dir: &Path,
    instance: &Instance,
    file: &Path,
    now: Timestamp,
) -> Result<ExportOutcome, TrustError> {
    let cache = CacheDir::new(data_dir, &instance.cache_name());
    let state = cache.read_state()?.ok_or_else(|| TrustError::NoRoot {
        repository: instance.url().to_owned(),
    })?;
    check_state_matches(&cache, &state, instance)?;
    let files = cache.store_files()?;
    let export = ExportFile {
        repository: state.repository.clone(),
        instance: instance.kind().to_owned(),
        updated_at: state.updated_at,
        exported_at: now,
        files,
    };
    cache::write_atomic(file, &export.to_bytes())?;
    Ok(ExportOutcome {
        file: file.to_owned(),
        files: export.files.len(),
        root_version: state.root_version,
        updated_at: state.updated_at,
    })
}

/// An export read from a file: the instance it names, nothing in it verified yet.
#[derive(Debug, Clone)]
pub struct CarriedExport {
    /// The file it was read from.
    pub file: PathBuf,
    /// The instance it names (checked against the repository it names).
    pub instance: Instance,
    export: ExportFile,
}

impl CarriedExport {
    fn what(&self) -> String {
        format!("the export {}", self.file.display())
    }
}

/// Reads and decodes an export, so the caller can choose the root to verify it from.
pub fn read_export(file: &Path) -> Result<CarriedExport, TrustError> {
    let bytes = read_limited(file, MAX_EXPORT_BYTES)?;
    let refused = |reason: String| TrustError::Refused {
        what: format!("the export {}", file.display()),
        reason,
    };
    let export = ExportFile::parse(&bytes).map_err(refused)?;
    let instance = Instance::from_export(&export.instance, &export.repository).map_err(refused)?;
    Ok(CarriedExport {
        file: file.to_owned(),
        instance,
        export,
    })
}

/// Verifies everything in an export by the TUF rules with no network (root chain from
/// `pinned_root` — the instance's embedded root, or for a custom repository the one the
/// operator trusts — signatures, thresholds, expiry at `now`, version and hash pins, target
/// hashes), and only then replaces the instance's cache with it.
pub async fn import(
    data_dir: &Path,
    carried: &CarriedExport,
    pinned_root: Option<&[u8]>,
    now: Timestamp,
) -> Result<CacheOutcome, TrustError> {
    let what = carried.what();
    let refused = |reason: String| TrustError::Refused {
        what: what.clone(),
        reason,
    };
    let (instance, export) = (&carried.instance, &carried.export);
    let initial = initial_root(instance, pinned_root)?;
    let cache = CacheDir::new(data_dir, &instance.cache_name());
    let staging = cache.stage()?;
    let verified = run_tuf(
        CarriedRepository::new(export.files.clone()),
        initial,
        Some(FileStore::new(staging.store_dir())),
        now,
    )
    .await
    .map_err(|e| tuf_error(e, &what, None))?;
    check_trusted_root(&verified.trusted_root).map_err(refused)?;
    let staged = staging.store_files()?;
    // A carried file that TUF also verified must be that very file: a changed copy of a
    // file the updater did not need to read (such as root.json beside its versioned twin) is
    // still a tampered export.
    for (name, bytes) in &export.files {
        if staged.get(name).is_some_and(|v| v != bytes) {
            return Err(refused(format!(
                "{name} differs from the copy TUF verified"
            )));
        }
    }
    check_staged(staged, initial, &verified, now).await?;
    let state = CacheState {
        repository: instance.url().to_owned(),
        instance: instance.kind().to_owned(),
        root_version: verified.root_version,
        // The root is as old as the exporter's fetch; a claim from the future counts as now.
        updated_at: export.updated_at.min(now),
        source: CacheSource::Import,
        imported_at: Some(now),
        trusted_root_sha256: sha256_hex(&verified.trusted_root),
        signing_config: verified.signing_config.is_some(),
    };
    let dir = staging.commit(&state)?;
    Ok(outcome(dir, instance.clone(), &state))
}

fn read_limited(file: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    use std::io::Read as _;
    let f = std::fs::File::open(file)
        .map_err(|e| TrustError::BadInput(format!("cannot read {}: {e}", file.display())))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TrustError::BadInput(format!("cannot read {}: {e}", file.display())))?;
    if bytes.len() as u64 > limit {
        return Err(TrustError::BadInput(format!(
            "{} is larger than {limit} bytes; not an export",
            file.display()
        )));
    }
    Ok(bytes)
}

/// Where a trusted root came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A file given on the command line or as `trust.trusted_root`.
    File {
        /// The file.
        path: PathBuf,
        /// Its modification time (its age counts from here).
        modified: Timestamp,
    },
    /// The instance's TUF cache.
    TufCache {
        /// The cache directory.
        dir: PathBuf,
        /// The TUF repository.
        repository: String,
        /// `production`, `staging` or `custom`.
        instance: String,
        /// The newest TUF root version reached.
        root_version: u64,
        /// When it was fetched from the repository.
        updated_at: Timestamp,
        /// When it was imported, if it was carried in.
        imported_at: Option<Timestamp>,
        /// Whether `signing_config.v0.2.json` is cached beside it.
        signing_config: bool,
    },
    /// The root compiled into provd.
    Embedded {
        /// `production` or `staging`.
        instance: &'static str,
        /// When it was taken.
        taken: Timestamp,
    },
}

impl RootSource {
    /// `file`, `tuf-cache` or `embedded`.
    pub fn kind(&self) -> &'static str {
        match self {
            RootSource::File { .. } => "file",
            RootSource::TufCache { .. } => "tuf-cache",
            RootSource::Embedded { .. } => "embedded",
        }
    }

    /// The instant its age counts from.
    pub fn since(&self) -> Timestamp {
        match self {
            RootSource::File { modified, .. } => *modified,
            RootSource::TufCache { updated_at, .. } => *updated_at,
            RootSource::Embedded { taken, .. } => *taken,
        }
    }
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSource::File { path, modified } => {
                write!(f, "file {} (modified {modified})", path.display())
            }
            RootSource::TufCache {
                dir,
                repository,
                root_version,
                updated_at,
                imported_at,
                ..
            } => {
                write!(
                    f,
                    "TUF cache {} (repository {repository}, root version {root_version}, updated_at {updated_at}",
                    dir.display()
                )?;
                if let Some(t) = imported_at {
                    write!(f, ", imported {t}")?;
                }
                write!(f, ")")
            }
            RootSource::Embedded { instance, taken } => {
                write!(f, "embedded {instance} root (taken {taken})")
            }
        }
    }
}

/// A trusted root ready for verification, with where it came from and how old it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRoot {
    /// The `trusted_root.json` bytes.
    pub bytes: Vec<u8>,
    /// Where they came from.
    pub source: RootSource,
    /// How old the root is.
    pub age: Duration,
    /// The policy it was judged by.
    pub policy: FreshnessPolicy,
}

impl LoadedRoot {
    /// Fresh or stale by the policy.
    pub fn freshness(&self) -> Freshness {
        self.policy.judge(self.age)
    }

    /// The warning to print or log for a stale root; `None` when it is fresh.
    pub fn warning(&self) -> Option<String> {
        self.policy.warning(self.age)
    }
}

/// The root verification would use, without refusing a stale one: `explicit` (a
/// `--trusted-root` file), else `trust.trusted_root`, else the instance's TUF cache, else
/// its embedded root. Offline.
pub fn inspect(
    data_dir: &Path,
    config: &TrustConfig,
    explicit: Option<&Path>,
    now: Timestamp,
) -> Result<LoadedRoot, TrustError> {
    let loaded = |bytes, source: RootSource| LoadedRoot {
        age: freshness::age(source.since(), now),
        bytes,
        source,
        policy: config.policy,
    };
    if let Some(path) = explicit.or(config.trusted_root.as_deref()) {
        let unreadable = |e: std::io::Error| {
            TrustError::BadInput(format!("cannot read {}: {e}", path.display()))
        };
        let bytes = std::fs::read(path).map_err(unreadable)?;
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(unreadable)?;
        let modified = Timestamp::try_from(modified).unwrap_or(Timestamp::UNIX_EPOCH);
        return Ok(loaded(
            bytes,
            RootSource::File {
                path: path.to_owned(),
                modified,
            },
        ));
    }
    let instance = &config.instance;
    if let Some((bytes, source)) = read_cached_root(data_dir, instance)? {
        return Ok(loaded(bytes, source));
    }
    match instance.embedded() {
        Some(e) => Ok(loaded(
            e.trusted_root.to_vec(),
            RootSource::Embedded {
                instance: instance.kind(),
                taken: e.taken_at(),
            },
        )),
        None => Err(TrustError::NoRoot {
            repository: instance.url().to_owned(),
        }),
    }
}

/// What verification calls: [`inspect`], then the freshness policy. A stale root is an
/// error with `trust.refuse_stale`, and otherwise comes with [`LoadedRoot::warning`] for
/// the caller to print or log.
pub fn load_root(
    data_dir: &Path,
    config: &TrustConfig,
    explicit: Option<&Path>,
    now: Timestamp,
) -> Result<LoadedRoot, TrustError> {
    let root = inspect(data_dir, config, explicit, now)?;
    if root.freshness() == Freshness::Stale && root.policy.refuse_stale {
        return Err(TrustError::Stale {
            root: root.source.to_string(),
            age: describe_age(root.age),
            max_age: compact_duration(root.policy.max_age),
        });
    }
    Ok(root)
}

/// The cached `signing_config.v0.2.json` of the instance, when its repository has one.
pub fn cached_signing_config(
    data_dir: &Path,
    instance: &Instance,
) -> Result<Option<Vec<u8>>, TrustError> {
    let cache = CacheDir::new(data_dir, &instance.cache_name());
    match cache.read_state()? {
        Some(state) if state.signing_config => {
            check_state_matches(&cache, &state, instance)?;
            cache.read_store_file(&format!("targets/{SIGNING_CONFIG_TARGET}"))
        }
        _ => Ok(None),
    }
}

fn check_state_matches(
    cache: &CacheDir,
    state: &CacheState,
    instance: &Instance,
) -> Result<(), TrustError> {
    if state.repository != instance.url() {
        return Err(TrustError::Refused {
            what: format!("the TUF cache {}", cache.path().display()),
            reason: format!(
                "it holds {}, not {}; run `provd trust update` for this repository",
                state.repository,
                instance.url()
            ),
        });
    }
    Ok(())
}

/// The cached root and its source, `None` when the instance has no cache. The bytes must
/// match the digest recorded when TUF verified them.
fn read_cached_root(
    data_dir: &Path,
    instance: &Instance,
) -> Result<Option<(Vec<u8>, RootSource)>, TrustError> {
    let cache = CacheDir::new(data_dir, &instance.cache_name());
    let Some(state) = cache.read_state()? else {
        return Ok(None);
    };
    check_state_matches(&cache, &state, instance)?;
    let name = format!("targets/{TRUSTED_ROOT_TARGET}");
    let refused = |reason: String| TrustError::Refused {
        what: format!("the TUF cache {}", cache.path().display()),
        reason,
    };
    let bytes = cache
        .read_store_file(&name)?
        .ok_or_else(|| refused(format!("{name} is missing")))?;
    if sha256_hex(&bytes) != state.trusted_root_sha256 {
        return Err(refused(format!(
            "{name} does not match the digest recorded when TUF verified it"
        )));
    }
    Ok(Some((
        bytes,
        RootSource::TufCache {
            dir: cache.path().to_owned(),
            repository: state.repository,
            instance: state.instance,
            root_version: state.root_version,
            updated_at: state.updated_at,
            imported_at: state.imported_at,
            signing_config: state.signing_config,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_name_their_repository_and_cache() {
        assert_eq!(Instance::Production.cache_name(), "production");
        assert_eq!(Instance::Staging.url(), STAGING_URL);
        let c = Instance::custom("http://127.0.0.1:8123/").unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:8123");
        assert_eq!(c.cache_name(), "127.0.0.1_8123");
        let c = Instance::custom("https://tuf.example.com/sigstore/repo").unwrap();
        assert_eq!(c.cache_name(), "tuf.example.com_sigstore_repo");
        assert_eq!(
            Instance::custom("https://production").unwrap().cache_name(),
            "host_production"
        );
        for bad in ["ftp://x.example", "not a url", "https://x.example/?a=b"] {
            assert!(Instance::custom(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_export_must_name_its_instances_own_repository() {
        assert_eq!(
            Instance::from_export("production", PRODUCTION_URL),
            Ok(Instance::Production)
        );
        assert!(Instance::from_export("production", "https://evil.example").is_err());
        assert!(Instance::from_export("dev", PRODUCTION_URL).is_err());
        assert_eq!(
            Instance::from_export("custom", "http://127.0.0.1:9/"),
            Ok(Instance::Custom {
                url: "http://127.0.0.1:9".into()
            })
        );
    }

    #[test]
    fn the_selection_order_is_file_then_cache_then_embedded() {
        let data = tempfile::tempdir().unwrap();
        let now: Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        let config = TrustConfig::default();
        let r = inspect(data.path(), &config, None, now).unwrap();
        assert_eq!(r.bytes, embedded::PRODUCTION.trusted_root);
        assert_eq!(r.source.kind(), "embedded");
        assert_eq!(r.age, freshness::age(embedded::PRODUCTION.taken_at(), now));

        let file = data.path().join("root.json");
        std::fs::write(&file, b"{}").unwrap();
        let r = inspect(data.path(), &config, Some(&file), Timestamp::now()).unwrap();
        assert_eq!(r.bytes, b"{}");
        assert_eq!(r.source.kind(), "file");
        assert!(r.age < Duration::from_secs(3600), "{:?}", r.age);

        let custom = TrustConfig {
            instance: Instance::custom("http://127.0.0.1:9").unwrap(),
            ..TrustConfig::default()
        };
        assert!(matches!(
            inspect(data.path(), &custom, None, now),
            Err(TrustError::NoRoot { .. })
        ));
    }

    #[test]
    fn a_stale_root_warns_or_is_refused_by_policy() {
        let data = tempfile::tempdir().unwrap();
        let taken = embedded::PRODUCTION.taken_at();
        let later = taken + jiff::SignedDuration::from_hours(24 * 45);
        let mut config = TrustConfig::default();
        let r = load_root(data.path(), &config, None, later).unwrap();
        assert_eq!(r.freshness(), Freshness::Stale);
        assert_eq!(
            r.warning().unwrap(),
            "the trusted root is 45 days old (max_age 30d); run `provd trust update`"
        );
        config.policy.refuse_stale = true;
        let err = load_root(data.path(), &config, None, later).unwrap_err();
        assert!(matches!(err, TrustError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("45 days old"), "{err}");
        let early = taken + jiff::SignedDuration::from_hours(24);
        assert!(
            load_root(data.path(), &config, None, early)
                .unwrap()
                .warning()
                .is_none()
        );
    }
}
