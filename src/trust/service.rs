//! The trusted root a running service verifies with: loaded offline by [`super::load_root`],
//! prepared once, and prepared again only when the root's bytes change (a `provd trust
//! update` or `import` beside the running service, or a replaced `trust.trusted_root`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actors::domain::verification::{TrustMaterial, VerificationError};
use jiff::Timestamp;
use sha2::{Digest as _, Sha256};

use crate::config::trust::TrustConfig;
use crate::http::verify::{CurrentRoot, TrustedRoots};

/// A prepared root: the SHA-256 of its bytes, the material built from them, and the bytes.
type Prepared = ([u8; 32], Arc<TrustMaterial>, Arc<Vec<u8>>);

/// The service's trusted roots: the configured `[trust]` selection in `data_dir`.
pub struct ServiceRoots {
    data_dir: PathBuf,
    config: TrustConfig,
    prepared: Mutex<Option<Prepared>>,
}

impl ServiceRoots {
    /// Roots from `config`'s selection; nothing is read until the first verification.
    pub fn new(data_dir: PathBuf, config: TrustConfig) -> Self {
        ServiceRoots {
            data_dir,
            config,
            prepared: Mutex::new(None),
        }
    }
}

impl TrustedRoots for ServiceRoots {
    fn current(&self) -> Result<CurrentRoot, String> {
        let root = super::load_root(&self.data_dir, &self.config, None, Timestamp::now())
            .map_err(|e| e.to_string())?;
        let digest: [u8; 32] = Sha256::digest(&root.bytes).into();
        let mut prepared = self
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (material, json) = match prepared.as_ref() {
            Some((d, m, j)) if *d == digest => (m.clone(), j.clone()),
            _ => {
                let material =
                    Arc::new(TrustMaterial::from_json(&root.bytes).map_err(|e| match e {
                        VerificationError::TrustedRoot(detail) => detail,
                        other => other.to_string(),
                    })?);
                let json = Arc::new(root.bytes.clone());
                *prepared = Some((digest, material.clone(), json.clone()));
                (material, json)
            }
        };
        Ok(CurrentRoot {
            material,
            json,
            source: root.source.to_string(),
            warning: root.warning(),
        })
    }
}
