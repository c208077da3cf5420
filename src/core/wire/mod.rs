//! Placeholder until the wire codec lands.
