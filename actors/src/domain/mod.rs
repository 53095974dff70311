//! Pure domain logic.

pub mod merkle;
