//! The core.
pub mod domain;
