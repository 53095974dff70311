//! Pure domain logic.

pub mod merkle;
pub mod tiles;
