//! Wire structs of the anthropic API (stub: to be written).
