//! Pure domain logic.

pub mod dsse;
pub mod keys;
pub mod merkle;
pub mod note;
