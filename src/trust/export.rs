//! The air-gap export file and the offline repository that replays it to the TUF client.
//!
//! An export is one JSON document: a format tag, the repository URL, the instance, when the
//! exporting cache was updated, and every file of that cache's TUF store (metadata and
//! targets) as base64 under its store name (`root_history/2.root.json`, `timestamp.json`,
//! `targets/trusted_root.json`, ...). Nothing in it is trusted: [`CarriedRepository`] hands
//! its files to the same `Updater` that talks to the network, under the names the updater asks
//! for, and TUF decides. Pure: no files, no network.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sigstore_tuf::Repository;
use sigstore_tuf::transport::FetchFuture;

/// The format tag of an export.
pub const FORMAT: &str = "provd-trust-export/v1";

/// The JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    repository: String,
    instance: String,
    updated_at: String,
    exported_at: String,
    files: BTreeMap<String, String>,
}

/// An export, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// The TUF repository's URL.
    pub repository: String,
    /// `production`, `staging` or `custom`.
    pub instance: String,
    /// When the exporting cache last fetched from the repository.
    pub updated_at: Timestamp,
    /// When the export was written.
    pub exported_at: Timestamp,
    /// Every store file by its store name.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl ExportFile {
    /// The JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            format: FORMAT.to_owned(),
            repository: self.repository.clone(),
            instance: self.instance.clone(),
            updated_at: self.updated_at.to_string(),
            exported_at: self.exported_at.to_string(),
            files: self
                .files
                .iter()
                .map(|(k, v)| (k.clone(), B64.encode(v)))
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Decodes an export; the message says what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| format!("not a provd trust export: {e}"))?;
        if wire.format != FORMAT {
            return Err(format!(
                "format {:?} is not {FORMAT:?}; export it again with this provd",
                wire.format
            ));
        }
        let instant = |key: &str, v: &str| {
            v.parse::<Timestamp>()
                .map_err(|e| format!("{key} {v:?} is not an RFC 3339 instant: {e}"))
        };
        let updated_at = instant("updated_at", &wire.updated_at)?;
        let exported_at = instant("exported_at", &wire.exported_at)?;
        let mut files = BTreeMap::new();
        for (name, b64) in wire.files {
            if !is_safe_store_name(&name) {
                return Err(format!("file name {name:?} is not a TUF store name"));
            }
            let data = B64
                .decode(b64.as_bytes())
                .map_err(|e| format!("file {name:?} is not base64: {e}"))?;
            files.insert(name, data);
        }
        Ok(ExportFile {
            repository: wire.repository,
            instance: wire.instance,
            updated_at,
            exported_at,
            files,
        })
    }
}

/// Whether `name` can be a store name: relative, `/`-separated, no empty, `.` or `..`
/// component, printable ASCII without `\`. Everything else could leave the store directory.
pub fn is_safe_store_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The store names that may hold the metadata file the updater asks for, best first.
///
/// The updater asks for `N.root.json` (kept as `root_history/N.root.json`; never answered
/// with another version, since a missing one ends the root chain), `timestamp.json`, and
/// with consistent snapshots `N.snapshot.json` / `N.targets.json` (the store keeps the
/// targets role, and possibly the snapshot, without the version prefix).
pub fn metadata_candidates(requested: &str) -> Vec<String> {
    match split_version(requested) {
        Some((version, "root.json")) => vec![format!("root_history/{version}.root.json")],
        Some((_, unversioned)) => vec![requested.to_owned(), unversioned.to_owned()],
        None => vec![requested.to_owned()],
    }
}

/// The store names that may hold the target the updater asks for, best first: with
/// consistent snapshots it asks for `dir/<hash>.name`, kept as `targets/dir/name`.
pub fn target_candidates(requested: &str) -> Vec<String> {
    let (dir, file) = match requested.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, requested),
    };
    let join = |f: &str| match dir {
        Some(d) => format!("targets/{d}/{f}"),
        None => format!("targets/{f}"),
    };
    let mut out = Vec::new();
    if let Some((hash, name)) = file.split_once('.')
        && matches!(hash.len(), 64 | 128)
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        out.push(join(name));
    }
    out.push(join(file));
    out
}

/// `N.rest` as `(N, rest)`.
fn split_version(name: &str) -> Option<(u64, &str)> {
    let (v, rest) = name.split_once('.')?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    Some((v.parse().ok()?, rest))
}

/// A TUF repository serving an export's files, for the updater to verify with no network.
/// A file the export lacks is "not found"; a file with the wrong content is whatever the
/// updater makes of it (it fails verification).
#[derive(Debug)]
pub struct CarriedRepository {
    files: BTreeMap<String, Vec<u8>>,
}

impl CarriedRepository {
    /// Serves `files`, keyed by store name.
    pub fn new(files: BTreeMap<String, Vec<u8>>) -> Self {
        CarriedRepository { files }
    }

    fn first(&self, names: Vec<String>, max_length: u64) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        match names.iter().find_map(|n| self.files.get(n).map(|b| (n, b))) {
            Some((name, bytes)) if bytes.len() as u64 > max_length => {
                Err(sigstore_tuf::Error::transport(format!(
                    "{name} in the export is {} bytes, over the limit of {max_length}",
                    bytes.len()
                )))
            }
            Some((_, bytes)) => Ok(Some(bytes.clone())),
            None => Ok(None),
        }
    }
}

impl Repository for CarriedRepository {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        let r = self.first(metadata_candidates(name), max_length);
        Box::pin(async move { r })
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        let r = self.first(target_candidates(path), max_length);
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ExportFile {
        let mut files = BTreeMap::new();
        files.insert("root_history/2.root.json".to_owned(), b"{\"r\":2}".to_vec());
        files.insert("timestamp.json".to_owned(), vec![0, 1, 2, 255]);
        files.insert("targets/trusted_root.json".to_owned(), b"{}".to_vec());
        ExportFile {
            repository: "https://tuf.example.com".into(),
            instance: "custom".into(),
            updated_at: "2026-12-01T00:00:00Z".parse().unwrap(),
            exported_at: "2026-12-02T00:00:00.5Z".parse().unwrap(),
            files,
        }
    }

    #[test]
    fn the_export_round_trips_and_refuses_what_is_not_one() {
        let e = sample();
        let bytes = e.to_bytes();
        assert_eq!(ExportFile::parse(&bytes).unwrap(), e);

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["format"] = "provd-trust-export/v0".into();
        let err = ExportFile::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.contains("provd-trust-export/v0"), "{err}");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["files"]["../escape.json"] = "e30=".into();
        let err = ExportFile::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.contains("escape"), "{err}");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["files"]["timestamp.json"] = "not base64!".into();
        let err = ExportFile::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.contains("timestamp.json"), "{err}");

        assert!(
            ExportFile::parse(b"{}")
                .unwrap_err()
                .contains("not a provd trust export")
        );
    }

    #[test]
    fn store_names_stay_inside_the_store() {
        for ok in [
            "root.json",
            "root_history/3.root.json",
            "targets/trusted_root.json",
            "a%2Fb.json",
        ] {
            assert!(is_safe_store_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a\\b",
            "a b",
            "tab\t",
        ] {
            assert!(!is_safe_store_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn requested_names_map_to_store_names() {
        assert_eq!(
            metadata_candidates("3.root.json"),
            ["root_history/3.root.json"]
        );
        assert_eq!(metadata_candidates("timestamp.json"), ["timestamp.json"]);
        assert_eq!(
            metadata_candidates("7.snapshot.json"),
            ["7.snapshot.json", "snapshot.json"]
        );
        assert_eq!(
            metadata_candidates("12.targets.json"),
            ["12.targets.json", "targets.json"]
        );
        assert_eq!(metadata_candidates("x.targets.json"), ["x.targets.json"]);
        let h = "ab".repeat(32);
        assert_eq!(
            target_candidates(&format!("{h}.trusted_root.json")),
            [
                "targets/trusted_root.json".to_owned(),
                format!("targets/{h}.trusted_root.json")
            ]
        );
        assert_eq!(
            target_candidates(&format!("dir/{h}.x.json"))[0],
            "targets/dir/x.json"
        );
        assert_eq!(
            target_candidates("signing_config.v0.2.json"),
            ["targets/signing_config.v0.2.json"]
        );
    }

    #[test]
    fn the_carried_repository_serves_by_the_updaters_names() {
        let e = sample();
        let repo = CarriedRepository::new(e.files.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                repo.fetch_metadata("2.root.json", 100).await.unwrap(),
                Some(b"{\"r\":2}".to_vec())
            );
            assert_eq!(repo.fetch_metadata("3.root.json", 100).await.unwrap(), None);
            let h = "0f".repeat(32);
            assert_eq!(
                repo.fetch_target(&format!("{h}.trusted_root.json"), 100)
                    .await
                    .unwrap(),
                Some(b"{}".to_vec())
            );
            let err = repo.fetch_metadata("timestamp.json", 3).await.unwrap_err();
            assert!(err.to_string().contains("over the limit"), "{err}");
        });
    }
}
