//! Path-aware, typed reads of a JSON request body for the OpenAI serve side, and the
//! 400 errors they produce in OpenAI's words (`Invalid type for 'x': ...`,
//! `Missing required parameter: 'x'.`, `Unrecognized request argument supplied: x`),
//! each naming the field's path as `param`. `null` reads as absent, as the OpenAI API
//! treats it.

use bulwark_core::GatewayError;
use serde_json::{Map, Value};

pub(super) type Result<T> = std::result::Result<T, GatewayError>;

/// Up to this many keys, a lookup compares keys instead of hashing (see [`Obj::get`]).
const LINEAR_LOOKUP: usize = 16;

pub(super) struct Obj<'a> {
    pub(super) map: &'a Map<String, Value>,
    /// The object's own path (`""` at top level).
    pub(super) path: String,
}

impl<'a> Obj<'a> {
    pub(super) fn of(value: &'a Value, path: &str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Obj {
                map,
                path: path.to_string(),
            }),
            other => Err(invalid_type(path, "an object", other)),
        }
    }

    pub(super) fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(key) => Err(unknown_param(&self.child(key))),
            None => Ok(()),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        // A request's objects hold a handful of keys, and the decoder asks each for
        // dozens it may not have: comparing the few keys there are costs less than
        // hashing the one asked for (the map keeps its keys in order, hashed).
        let found = if self.map.len() <= LINEAR_LOOKUP {
            self.map.iter().find_map(|(k, v)| (k == key).then_some(v))
        } else {
            self.map.get(key)
        };
        found.filter(|v| !v.is_null())
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(invalid_type(&self.child(key), "a string", other)),
        }
    }

    pub(super) fn req_str(&self, key: &str) -> Result<&'a str> {
        self.str(key)?.ok_or_else(|| missing(&self.child(key)))
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(invalid_type(&self.child(key), "a boolean", other)),
        }
    }

    pub(super) fn arr(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(invalid_type(&self.child(key), "an array", other)),
        }
    }

    pub(super) fn obj(&self, key: &str) -> Result<Option<Obj<'a>>> {
        self.get(key)
            .map(|v| Obj::of(v, &self.child(key)))
            .transpose()
    }

    pub(super) fn i64(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid_type(&self.child(key), "an integer", value)),
        }
    }

    pub(super) fn u32(&self, key: &str) -> Result<Option<u32>> {
        let Some(n) = self.i64(key)? else {
            return Ok(None);
        };
        u32::try_from(n).map(Some).map_err(|_| {
            invalid_value(
                &self.child(key),
                &format!(
                    "Invalid value for '{}': {n} is out of range.",
                    self.child(key)
                ),
            )
        })
    }

    pub(super) fn positive_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.u32(key)? {
            Some(0) => Err(invalid_value(
                &self.child(key),
                &format!(
                    "Invalid value for '{}': it must be at least 1.",
                    self.child(key)
                ),
            )),
            other => Ok(other),
        }
    }

    pub(super) fn ranged_f64(&self, key: &str, min: f64, max: f64) -> Result<Option<f64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let Some(x) = value.as_f64() else {
            return Err(invalid_type(&self.child(key), "a number", value));
        };
        if !(min..=max).contains(&x) {
            return Err(invalid_value(
                &self.child(key),
                &format!(
                    "Invalid value for '{}': {x} must be between {min} and {max}.",
                    self.child(key)
                ),
            ));
        }
        Ok(Some(x))
    }
}

pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn unknown_param(path: &str) -> GatewayError {
    GatewayError::invalid_param(
        path,
        format!("Unrecognized request argument supplied: {path}"),
    )
    .with_code("unknown_parameter")
}

pub(super) fn unsupported_param(path: &str, why: &str) -> GatewayError {
    GatewayError::invalid_param(path, format!("Unsupported parameter: '{path}': {why}."))
        .with_code("unsupported_parameter")
}

pub(super) fn unsupported_value(path: &str, message: &str) -> GatewayError {
    GatewayError::invalid_param(path, message).with_code("unsupported_value")
}

pub(super) fn invalid_value(path: &str, message: &str) -> GatewayError {
    GatewayError::invalid_param(path, message).with_code("invalid_value")
}

pub(super) fn invalid_type(path: &str, expected: &str, got: &Value) -> GatewayError {
    GatewayError::invalid_param(
        path,
        format!(
            "Invalid type for '{path}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
    )
    .with_code("invalid_type")
}

pub(super) fn missing(path: &str) -> GatewayError {
    GatewayError::invalid_param(path, format!("Missing required parameter: '{path}'."))
        .with_code("missing_required_parameter")
}
