//! Placeholder until the magnet parser lands.
/// A magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet;
