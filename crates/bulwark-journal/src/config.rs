//! The `journal:` and `backup:` sections (types re-exported from `bulwark_core::config::journal`).

pub use bulwark_core::config::journal::*;
