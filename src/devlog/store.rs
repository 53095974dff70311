//! The dev log's data directory: identity (`meta.json`), keys, and the append-only entry
//! file.
//!
//! `entries.log` is a sequence of records `u64 BE integrated time ‖ u32 BE length ‖ body`.
//! A record is written and `fsync`ed before the entry is acknowledged, so a crash can only
//! leave an incomplete last record that nobody was told about; it is cut off at start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use actors::domain::keys::{Algorithm, PrivateKey};
use serde::{Deserialize, Serialize};

use super::DevLogError;

/// The entry file's name in the data directory.
pub const ENTRIES_FILE: &str = "entries.log";
/// The identity file's name: origin and tree ID.
pub const META_FILE: &str = "meta.json";
/// The Rekor v1 log key (ECDSA P-256, PKCS#8 PEM), generated on first start.
pub const V1_KEY_FILE: &str = "log-v1.key.pem";
/// The Rekor v1 public key (SPKI PEM), written at every start.
pub const V1_PUB_FILE: &str = "log-v1.pub.pem";
/// The Rekor v1 checkpoint verifier key (C2SP vkey, name = origin), written at every start.
pub const V1_VKEY_FILE: &str = "log-v1.vkey";
/// The Rekor v2 checkpoint key (Ed25519 by default, PKCS#8 PEM), generated on first start.
pub const V2_KEY_FILE: &str = "log-v2.key.pem";
/// The Rekor v2 checkpoint public key (SPKI PEM), written at every start.
pub const V2_PUB_FILE: &str = "log-v2.pub.pem";
/// The Rekor v2 checkpoint verifier key (C2SP vkey, name = origin), written at every start.
pub const V2_VKEY_FILE: &str = "log-v2.vkey";

/// Bytes of a record header: time and length.
const HEADER: usize = 12;

/// The log's identity, fixed on first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The origin: v2 checkpoint origin and the key name of both checkpoints.
    pub origin: String,
    /// The Rekor v1 tree ID (v1 origin `<origin> - <tree ID>`, entry ID prefix).
    pub tree_id: u64,
}

fn io_err(path: &Path, source: std::io::Error) -> DevLogError {
    DevLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `meta.json`, or creates it with `origin` (default `localhost`) and a random tree ID.
/// A different `origin` than the stored one is refused: the keys' names and every checkpoint
/// already handed out depend on it.
pub fn load_meta(dir: &Path, origin: Option<&str>) -> Result<Meta, DevLogError> {
    let path = dir.join(META_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let meta: Meta = serde_json::from_str(&text)
            .map_err(|e| DevLogError::Corrupt(format!("{}: {e}", path.display())))?;
        if let Some(o) = origin
            && o != meta.origin
        {
            return Err(DevLogError::Config(format!(
                "--origin {o:?} differs from the origin {:?} this data directory was created \
                 with; use a new --data directory",
                meta.origin
            )));
        }
        return Ok(meta);
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| DevLogError::Key(e.to_string()))?;
    // Trillian tree IDs are positive int64.
    let tree_id = (u64::from_be_bytes(bytes) >> 1).max(1);
    let meta = Meta {
        origin: origin.unwrap_or("localhost").to_owned(),
        tree_id,
    };
    let json = serde_json::to_string_pretty(&meta).unwrap_or_default();
    write_file(&path, json.as_bytes(), false)?;
    Ok(meta)
}

/// Writes a file and syncs it; private files are readable by the owner only.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), DevLogError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(path).map_err(|e| io_err(path, e))?;
    file.write_all(bytes).map_err(|e| io_err(path, e))?;
    file.sync_all().map_err(|e| io_err(path, e))
}

/// Loads a key: the PEM given on the command line, else the one stored in the directory,
/// else a fresh `algorithm` key stored there.
pub fn load_key(
    dir: &Path,
    file: &str,
    given: Option<&str>,
    algorithm: Algorithm,
) -> Result<PrivateKey, DevLogError> {
    if let Some(pem) = given {
        return PrivateKey::from_pem(pem).map_err(|e| DevLogError::Key(format!("{file}: {e}")));
    }
    let path = dir.join(file);
    if path.exists() {
        let pem = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        return PrivateKey::from_pem(&pem)
            .map_err(|e| DevLogError::Key(format!("{}: {e}", path.display())));
    }
    let key = PrivateKey::generate(algorithm, &mut |buf| {
        getrandom::fill(buf).map_err(|e| e.to_string())
    })
    .map_err(|e| DevLogError::Key(e.to_string()))?;
    let pem = key.to_pem().map_err(|e| DevLogError::Key(e.to_string()))?;
    write_file(&path, pem.as_bytes(), true)?;
    Ok(key)
}

/// The append-only entry file.
pub struct EntryFile {
    path: PathBuf,
    file: File,
}

impl EntryFile {
    /// Opens (or creates) the entry file and returns it with every complete record as
    /// `(integrated time, body)`. An incomplete last record is cut off.
    pub fn open(dir: &Path) -> Result<(Self, Vec<(i64, Vec<u8>)>), DevLogError> {
        let path = dir.join(ENTRIES_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io_err(&path, e))?;
        let mut records = Vec::new();
        let mut offset = 0usize;
        while bytes.len() - offset >= HEADER {
            let time = i64::from_be_bytes(bytes[offset..offset + 8].try_into().unwrap_or_default());
            let len = u32::from_be_bytes(
                bytes[offset + 8..offset + HEADER]
                    .try_into()
                    .unwrap_or_default(),
            ) as usize;
            let end = offset + HEADER + len;
            if end > bytes.len() {
                break;
            }
            records.push((time, bytes[offset + HEADER..end].to_vec()));
            offset = end;
        }
        if offset < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - offset,
                "dev log: cutting off an incomplete last record (never acknowledged)"
            );
            file.set_len(offset as u64).map_err(|e| io_err(&path, e))?;
            file.sync_all().map_err(|e| io_err(&path, e))?;
        }
        Ok((Self { path, file }, records))
    }

    /// Appends one record and syncs it to disk.
    pub fn append(&mut self, time: i64, body: &[u8]) -> Result<(), DevLogError> {
        let len = u32::try_from(body.len())
            .map_err(|_| DevLogError::Corrupt("entry larger than 4 GiB".into()))?;
        let mut record = Vec::with_capacity(HEADER + body.len());
        record.extend_from_slice(&time.to_be_bytes());
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(body);
        self.file
            .write_all(&record)
            .map_err(|e| io_err(&self.path, e))?;
        self.file.sync_data().map_err(|e| io_err(&self.path, e))
    }
}
