//! The `alerts:` section (types re-exported from `bulwark_core::config::alerts`).

pub use bulwark_core::config::alerts::*;
