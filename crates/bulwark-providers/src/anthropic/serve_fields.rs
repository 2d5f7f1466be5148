//! Typed accessors over a decoded JSON request for `serve.rs`: each failure is a
//! 400 [`GatewayError`] whose message starts with the field path, in the style
//! Anthropic uses (`messages.0.content: Input should be a valid list`).

use bulwark_core::GatewayError;
use serde_json::{Map, Value};

pub(super) type Object = Map<String, Value>;

pub(super) fn invalid(path: &str, message: impl std::fmt::Display) -> GatewayError {
    GatewayError::invalid_param(path, format!("{path}: {message}"))
}

pub(super) fn missing(path: &str) -> GatewayError {
    invalid(path, "Field required")
}

pub(super) fn extra(path: &str) -> GatewayError {
    invalid(path, "Extra inputs are not permitted")
}

pub(super) fn unsupported(path: &str, feature: &str) -> GatewayError {
    invalid(path, format!("{feature} is not supported by this gateway"))
}

pub(super) fn required<'a>(
    obj: &'a Object,
    key: &str,
    path: &str,
) -> Result<&'a Value, GatewayError> {
    match obj.get(key) {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(missing(&format!("{path}.{key}"))),
    }
}

pub(super) fn only_keys(obj: &Object, path: &str, allowed: &[&str]) -> Result<(), GatewayError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(extra(&format!("{path}.{key}"))),
        None => Ok(()),
    }
}

pub(super) fn object<'a>(val: &'a Value, path: &str) -> Result<&'a Object, GatewayError> {
    val.as_object()
        .ok_or_else(|| invalid(path, "Input should be an object"))
}

pub(super) fn array<'a>(val: &'a Value, path: &str) -> Result<&'a Vec<Value>, GatewayError> {
    val.as_array()
        .ok_or_else(|| invalid(path, "Input should be a valid list"))
}

pub(super) fn string<'a>(val: &'a Value, path: &str) -> Result<&'a str, GatewayError> {
    val.as_str()
        .ok_or_else(|| invalid(path, "Input should be a valid string"))
}

pub(super) fn boolean(val: &Value, path: &str) -> Result<bool, GatewayError> {
    val.as_bool()
        .ok_or_else(|| invalid(path, "Input should be a valid boolean"))
}

pub(super) fn number(val: &Value, path: &str) -> Result<f64, GatewayError> {
    val.as_f64()
        .ok_or_else(|| invalid(path, "Input should be a valid number"))
}

pub(super) fn uint(val: &Value, path: &str) -> Result<u32, GatewayError> {
    val.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(path, "Input should be a non-negative integer"))
}

pub(super) fn is_empty_array(val: &Value) -> bool {
    val.as_array().is_some_and(Vec::is_empty)
}

pub(super) fn is_empty_object(val: &Value) -> bool {
    val.as_object().is_some_and(Map::is_empty)
}

/// `null`, `false`, `[]`, `{}`: a value that asks for nothing.
pub(super) fn is_trivial(val: &Value) -> bool {
    matches!(val, Value::Null | Value::Bool(false)) || is_empty_array(val) || is_empty_object(val)
}
