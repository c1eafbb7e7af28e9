//! Reference server (work in progress).
pub(crate) mod admission;
pub mod names;
pub mod token;
