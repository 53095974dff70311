//! The TUF cache of one instance: `<data_dir>/trust/<name>/` holds `state.json` (repository,
//! instance, root version, when it was fetched) and `tuf/`, the TUF client's `FileStore`
//! (verified metadata, and the targets under `tuf/targets/`).
//!
//! A cache is never changed in place. An update or import builds the new one in a staging
//! directory beside it (`.<name>.staging-*`), seeded with the old one's metadata so TUF's
//! rollback floors carry over, and [`Staging::commit`] swaps it in with one rename once every
//! file is written and synced. A reader sees the old cache or the new one; a failure or a
//! crash before the swap leaves the old one as it was.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::TrustError;

/// The state file's name inside a cache directory.
pub const STATE_FILE: &str = "state.json";
/// The TUF store's directory inside a cache directory.
pub const STORE_DIR: &str = "tuf";
/// The format tag of the state file.
const STATE_FORMAT: &str = "provd-trust-state/v1";
/// Staging directories older than this are left over from a crash and removed.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// How a cache was filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSource {
    /// `provd trust update`: fetched from the repository.
    Update,
    /// `provd trust import`: carried in an export.
    Import,
}

/// What `state.json` records about a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheState {
    /// The TUF repository's URL.
    pub repository: String,
    /// `production`, `staging` or `custom`.
    pub instance: String,
    /// The version of the newest TUF root the client reached.
    pub root_version: u64,
    /// When the metadata was fetched from the repository (for an import: when the exporting
    /// side fetched it); the root's age counts from here.
    pub updated_at: Timestamp,
    /// How the cache was filled.
    pub source: CacheSource,
    /// When it was imported, for an import.
    pub imported_at: Option<Timestamp>,
    /// SHA-256 of the cached `trusted_root.json`, lowercase hex.
    pub trusted_root_sha256: String,
    /// Whether the repository had `signing_config.v0.2.json`.
    pub signing_config: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireState {
    format: String,
    repository: String,
    instance: String,
    root_version: u64,
    updated_at: String,
    source: CacheSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imported_at: Option<String>,
    trusted_root_sha256: String,
    signing_config: bool,
}

impl CacheState {
    fn to_bytes(&self) -> Vec<u8> {
        let wire = WireState {
            format: STATE_FORMAT.to_owned(),
            repository: self.repository.clone(),
            instance: self.instance.clone(),
            root_version: self.root_version,
            updated_at: self.updated_at.to_string(),
            source: self.source,
            imported_at: self.imported_at.map(|t| t.to_string()),
            trusted_root_sha256: self.trusted_root_sha256.clone(),
            signing_config: self.signing_config,
        };
        let mut out = serde_json::to_vec_pretty(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let w: WireState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if w.format != STATE_FORMAT {
            return Err(format!("format {:?} is not {STATE_FORMAT:?}", w.format));
        }
        let instant = |v: &str| {
            v.parse::<Timestamp>()
                .map_err(|e| format!("{v:?} is not an RFC 3339 instant: {e}"))
        };
        Ok(CacheState {
            repository: w.repository,
            instance: w.instance,
            root_version: w.root_version,
            updated_at: instant(&w.updated_at)?,
            source: w.source,
            imported_at: w.imported_at.as_deref().map(instant).transpose()?,
            trusted_root_sha256: w.trusted_root_sha256,
            signing_config: w.signing_config,
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::io(path, source)
}

/// One instance's cache directory.
#[derive(Debug, Clone)]
pub struct CacheDir {
    dir: PathBuf,
    name: String,
}

impl CacheDir {
    /// The cache named `name` in `data_dir`.
    pub fn new(data_dir: &Path, name: &str) -> Self {
        CacheDir {
            dir: data_dir.join("trust").join(name),
            name: name.to_owned(),
        }
    }

    /// `<data_dir>/trust/<name>`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where a store file is kept.
    pub fn store_path(&self, store_name: &str) -> PathBuf {
        self.dir.join(STORE_DIR).join(store_name)
    }

    /// The state, `None` when there is no cache.
    pub fn read_state(&self) -> Result<Option<CacheState>, TrustError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        CacheState::parse(&bytes)
            .map(Some)
            .map_err(|reason| TrustError::Refused {
                what: path.display().to_string(),
                reason,
            })
    }

    /// One store file, `None` when absent.
    pub fn read_store_file(&self, store_name: &str) -> Result<Option<Vec<u8>>, TrustError> {
        let path = self.store_path(store_name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Every store file by store name.
    pub fn store_files(&self) -> Result<BTreeMap<String, Vec<u8>>, TrustError> {
        read_tree(&self.dir.join(STORE_DIR))
    }

    /// A staging directory for the next version of this cache, seeded with this one's
    /// metadata (not its targets, which are fetched again and verified against the new
    /// targets role, and not versioned copies, which only the updater's own names need).
    pub fn stage(&self) -> Result<Staging, TrustError> {
        let trust_dir = self.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(trust_dir).map_err(io(trust_dir))?;
        let prefix = format!(".{}.staging-", self.name);
        remove_leftovers(trust_dir, &prefix);
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(trust_dir)
            .map_err(io(trust_dir))?;
        let staging = Staging {
            tmp,
            live: self.dir.clone(),
        };
        for (name, bytes) in self.store_files()? {
            let versioned = name
                .split_once('.')
                .is_some_and(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            if name.starts_with("targets/") || versioned {
                continue;
            }
            let path = staging.store_dir().join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        Ok(staging)
    }
}

/// Removes staging directories a crashed update left behind; young ones may belong to an
/// update running now, so they stay.
fn remove_leftovers(trust_dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(trust_dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_STAGING);
        if old && e.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Every regular file under `dir` by its `/`-joined relative name, skipping hidden names
/// (the store's temporary files).
fn read_tree(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, TrustError> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.is_empty() => {
                return Ok(out);
            }
            Err(e) => return Err(io(&d)(e)),
        };
        for e in entries {
            let e = e.map_err(io(&d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = e.file_type().map_err(io(&e.path()))?;
            if kind.is_dir() {
                todo.push((e.path(), rel));
            } else if kind.is_file() {
                let bytes = std::fs::read(e.path()).map_err(io(&e.path()))?;
                out.insert(rel, bytes);
            }
        }
    }
    Ok(out)
}

/// A cache being built; dropped without [`Staging::commit`], it is removed.
#[derive(Debug)]
pub struct Staging {
    tmp: tempfile::TempDir,
    live: PathBuf,
}

impl Staging {
    /// The TUF store directory to hand to the `FileStore`.
    pub fn store_dir(&self) -> PathBuf {
        self.tmp.path().join(STORE_DIR)
    }

    /// Every store file written so far.
    pub fn store_files(&self) -> Result<BTreeMap<String, Vec<u8>>, TrustError> {
        read_tree(&self.store_dir())
    }

    /// Writes the state, syncs every file, and swaps the staging directory in for the live
    /// cache. Returns the live cache's path.
    pub fn commit(self, state: &CacheState) -> Result<PathBuf, TrustError> {
        let state_path = self.tmp.path().join(STATE_FILE);
        let mut f = std::fs::File::create(&state_path).map_err(io(&state_path))?;
        f.write_all(&state.to_bytes()).map_err(io(&state_path))?;
        drop(f);
        sync_tree(self.tmp.path())?;
        let live = self.live.clone();
        let parent = live.parent().unwrap_or(Path::new(".")).to_owned();
        if live.symlink_metadata().is_ok() {
            swap(self.tmp.path(), &live).map_err(io(&live))?;
            // The staging path now holds the old cache; dropping it removes it.
            drop(self.tmp);
        } else {
            match std::fs::rename(self.tmp.path(), &live) {
                Ok(()) => {
                    let _ = self.tmp.keep();
                }
                // Another update created the cache meanwhile: swap with it instead.
                Err(_) if live.symlink_metadata().is_ok() => {
                    swap(self.tmp.path(), &live).map_err(io(&live))?;
                    drop(self.tmp);
                }
                Err(e) => return Err(io(&live)(e)),
            }
        }
        sync_dir(&parent)?;
        Ok(live)
    }
}

/// Exchanges two directories in one step.
#[cfg(target_os = "linux")]
fn swap(staging: &Path, live: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, staging, CWD, live, RenameFlags::EXCHANGE).map_err(Into::into)
}

/// Exchanges two directories with two renames (no atomic exchange here): a crash between
/// them leaves no live cache, so the next load falls back to the embedded root and the next
/// update rebuilds it; never a mix of two caches.
#[cfg(not(target_os = "linux"))]
fn swap(staging: &Path, live: &Path) -> std::io::Result<()> {
    let mut aside = staging.as_os_str().to_owned();
    aside.push("-old");
    let aside = PathBuf::from(aside);
    std::fs::rename(live, &aside)?;
    std::fs::rename(staging, live)?;
    std::fs::rename(&aside, staging)
}

/// Syncs every file and directory under `dir`, so the swap never publishes unwritten data.
fn sync_tree(dir: &Path) -> Result<(), TrustError> {
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))? {
            let e = e.map_err(io(&d))?;
            let path = e.path();
            if e.file_type().map_err(io(&path))?.is_dir() {
                todo.push(path);
            } else {
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(io(&path))?;
            }
        }
        sync_dir(&d)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), TrustError> {
    // Directories cannot be opened for syncing everywhere; where they cannot, the rename's
    // own ordering is all there is.
    match std::fs::File::open(dir) {
        Ok(f) => f.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename, so `path` is
/// either absent, the old file, or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> CacheState {
        CacheState {
            repository: "https://tuf.example.com".into(),
            instance: "custom".into(),
            root_version: 3,
            updated_at: "2026-12-01T00:00:00Z".parse().unwrap(),
            source: CacheSource::Import,
            imported_at: Some("2026-12-02T00:00:00Z".parse().unwrap()),
            trusted_root_sha256: "00".repeat(32),
            signing_config: false,
        }
    }

    #[test]
    fn a_commit_replaces_the_whole_cache_and_a_dropped_staging_leaves_it() {
        let data = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(data.path(), "custom-host");
        assert_eq!(cache.read_state().unwrap(), None);

        let s = cache.stage().unwrap();
        std::fs::create_dir_all(s.store_dir().join("root_history")).unwrap();
        std::fs::create_dir_all(s.store_dir().join("targets")).unwrap();
        for name in [
            "root_history/1.root.json",
            "timestamp.json",
            "4.snapshot.json",
            "targets/trusted_root.json",
        ] {
            std::fs::write(s.store_dir().join(name), name).unwrap();
        }
        s.commit(&state()).unwrap();
        assert_eq!(cache.read_state().unwrap(), Some(state()));
        assert_eq!(cache.store_files().unwrap().len(), 4);

        // The next staging starts from the metadata only, and dropping it changes nothing.
        let s = cache.stage().unwrap();
        let seeded: Vec<String> = s.store_files().unwrap().into_keys().collect();
        assert_eq!(seeded, ["root_history/1.root.json", "timestamp.json"]);
        std::fs::write(s.store_dir().join("timestamp.json"), "half").unwrap();
        drop(s);
        assert_eq!(
            cache.read_store_file("timestamp.json").unwrap().unwrap(),
            b"timestamp.json"
        );

        // A second commit swaps; nothing of the first cache but what was seeded survives.
        let s = cache.stage().unwrap();
        std::fs::write(s.store_dir().join("timestamp.json"), "v2").unwrap();
        let mut st = state();
        st.root_version = 4;
        s.commit(&st).unwrap();
        assert_eq!(cache.read_state().unwrap().unwrap().root_version, 4);
        let names: Vec<String> = cache.store_files().unwrap().into_keys().collect();
        assert_eq!(names, ["root_history/1.root.json", "timestamp.json"]);
        let left: Vec<_> = std::fs::read_dir(data.path().join("trust"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["custom-host"], "no staging directory is left behind");
    }

    #[test]
    fn the_state_file_round_trips_and_refuses_another_format() {
        let s = state();
        assert_eq!(CacheState::parse(&s.to_bytes()).unwrap(), s);
        let mut v: serde_json::Value = serde_json::from_slice(&s.to_bytes()).unwrap();
        v["format"] = "other".into();
        assert!(
            CacheState::parse(&serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .contains("other")
        );
    }
}
