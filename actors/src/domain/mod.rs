//! Pure, synchronous domain logic: no I/O, no async, no clocks except those passed in.
//!
//! * Transparency logs: [`merkle`] (RFC 6962/9162), [`note`] (C2SP signed notes and
//!   checkpoints), [`tiles`] (C2SP tlog-tiles), [`dsse`] and [`keys`], [`receipt`] (Rekor
//!   entries and their verification), [`sigstore`] (bundles and trusted roots, and the
//!   transparency-log check of a bundle), [`sigstore_bundle`] (the bundle of an attestation
//!   provd logged), [`entry_binding`] (whether a log entry is about a
//!   bundle's content), [`verification`] (complete Sigstore bundle verification), [`log`] and
//!   [`rekor_entry`] (the append-only log and entry validation behind `provd dev-log`).
//! * Log monitoring: [`divergence`] (fork, rollback, consistency and receipt re-verification
//!   rules).
//! * Provenance cache: [`epoch`] (feed epochs), [`invalidation`] (criteria and ledger rows),
//!   [`evidence`] (Merkle-chunked evidence, manifests and chunk proofs).
//!   [`verikey`] (the cache key), [`entry`] (cached verdicts and write-behind writes),
//!   [`bundle`] (air-gap proof bundles: format, canonical JSON, signing, offline checks),
//!   [`policy`] (policy documents, their hashes, and verdicts decided by verifying
//!   attestations against them).
//!
//! * Input limits: [`limits`] (the one list of what both stores can hold).
//!
//! Each module has its own error enum; [`DomainError`] covers the provenance-cache rules.

pub mod bundle;
pub mod divergence;
pub mod dsse;
pub mod entry;
pub mod entry_binding;
pub mod epoch;
pub mod evidence;
pub mod invalidation;
pub mod keys;
pub mod limits;
pub mod log;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod receipt;
pub mod rekor_entry;
pub mod sigstore;
pub mod sigstore_bundle;
pub mod submission;
pub mod tile_check;
pub mod tiles;
pub mod verification;
pub mod verikey;

/// Errors of the provenance-cache rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A feed epoch is neither a semantic version nor an RFC 3339 timestamp.
    #[error("invalid feed epoch {epoch:?}: {why}")]
    InvalidEpoch {
        /// The epoch as given.
        epoch: String,
        /// What is wrong with it.
        why: String,
    },
    /// An invalidation criterion is missing or malformed.
    #[error("invalid invalidation criterion: {0}")]
    InvalidCriterion(String),
    /// A field is longer than the stores hold, or holds NUL.
    #[error(transparent)]
    Limit(#[from] limits::LimitError),
}
