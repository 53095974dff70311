//! Pure domain logic.

pub mod dsse;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod sigstore;
pub mod tiles;
