//! Pure, synchronous domain logic: no I/O, no async, no clocks except those passed in.

pub mod epoch;
pub mod invalidation;

/// Errors of the domain layer.
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
}
