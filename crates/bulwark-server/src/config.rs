//! Loading and validating the YAML configuration.
//!
//! Three passes, each of which names the file and the field at fault:
//! 1. YAML → a generic value tree (syntax errors carry line and column);
//! 2. `${VAR}` / `${VAR:-default}` expanded inside string values only (so an
//!    environment value can never inject YAML structure), then decoded into
//!    [`Config`] with the path of the failing field (`providers[1].kind`);
//! 3. [`validate`]: cross-checks (routes name providers that exist, names unique,
//!    URLs well formed).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bulwark_core::config::{Config, ProviderKind};
use serde_json::Value;

/// A configuration error: which file, which field, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the field at fault (`routes[0].targets[1].provider`), empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads, expands, decodes and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(path, &read(path)?, &|name| std::env::var(name).ok())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: path.to_path_buf(),
        field: String::new(),
        message: format!("cannot read the file: {err}"),
    })
}

/// The journal and backup sections, as [`load_storage`] reads them.
pub type StorageConfig = (
    bulwark_core::config::journal::JournalConfig,
    Option<bulwark_core::config::journal::BackupConfig>,
);

/// The `journal` and `backup` sections of a configuration file, read, expanded and
/// checked without the rest: reading the journal or shipping a backup needs no
/// provider keys, so `${VAR}`s elsewhere (an `api_key`) need not be set. The whole
/// file is `bulwark check`'s and `serve`'s to judge.
pub fn load_storage(path: &Path) -> Result<StorageConfig, ConfigError> {
    parse_storage(path, &read(path)?, &|name| std::env::var(name).ok())
}

fn parse_storage(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StorageConfig, ConfigError> {
    let err = at(path);
    let tree = yaml_tree(path, text)?;
    let section = |name: &str| -> Result<Value, ConfigError> {
        let mut value = tree.get(name).cloned().unwrap_or(Value::Null);
        let mut field = name.to_string();
        expand_env(&mut value, &mut field, env).map_err(|(field, msg)| err(field, msg))?;
        Ok(value)
    };
    let journal = match section("journal")? {
        Value::Null => Default::default(),
        value => decode(path, "journal", value)?,
    };
    let backup = match section("backup")? {
        Value::Null => None,
        value => Some(decode(path, "backup", value)?),
    };
    validate_storage(&journal, backup.as_ref()).map_err(|(field, msg)| err(field, msg))?;
    Ok((journal, backup))
}

/// A configuration error in `path`, from a field and a message.
fn at(path: &Path) -> impl Fn(String, String) -> ConfigError + '_ {
    move |field, message| ConfigError {
        file: path.to_path_buf(),
        field,
        message,
    }
}

/// The file's YAML as a tree of values.
fn yaml_tree(path: &Path, text: &str) -> Result<Value, ConfigError> {
    serde_saphyr::from_str(text)
        // Without the excerpt of the file the parser would quote: the lines around a
        // mistake can hold an `api_key` or header value written in clear.
        .map_err(|e| {
            at(path)(
                String::new(),
                format!("not valid YAML: {}", e.without_snippet()),
            )
        })
}

/// `value` decoded as a `T`; an error names its field under `prefix` (the section the
/// value came from; empty for the whole file).
fn decode<T: serde::de::DeserializeOwned>(
    path: &Path,
    prefix: &str,
    value: Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (inner.as_str(), prefix) {
            (".", prefix) => prefix.to_string(),
            (inner, "") => inner.to_string(),
            (inner, prefix) => format!("{prefix}.{inner}"),
        };
        at(path)(field, explain_serde(&e.into_inner().to_string()))
    })
}

/// Parses configuration text; `env` looks up environment variables (injectable for tests).
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let err = at(path);
    let mut tree = yaml_tree(path, text)?;
    if tree.is_null() {
        return Err(err(
            String::new(),
            "the file is empty; it needs at least `providers:`".into(),
        ));
    }
    expand_env(&mut tree, &mut String::new(), env).map_err(|(field, msg)| err(field, msg))?;
    let config: Config = decode(path, "", tree)?;
    validate(&config).map_err(|(field, msg)| err(field, msg))?;
    Ok(config)
}

fn explain_serde(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message} (remove it or check its spelling)")
    } else if message.starts_with("missing field") {
        format!("{message} (add it)")
    } else {
        message.to_string()
    }
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value; `$$` is a literal `$`.
fn expand_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = expand_str(s, env).map_err(|m| (path.clone(), m))?;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn expand_str(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!(
                    "unclosed `${{` in {input:?} (write `${{VAR}}`, or `$$` for a literal `$`)"
                ));
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{expr}}}` is not a valid variable reference (use `${{NAME}}` or `${{NAME:-default}}`)"
                ));
            }
            let value = env(name);
            match (value.as_deref().filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) if value.is_some() => {
                    return Err(format!(
                        "environment variable {name} is set but empty (give it a value, or write `${{{name}:-default}}`)"
                    ));
                }
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (export it, or write `${{{name}:-default}}`)"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Cross-field checks. Returns the failing field's path and a message with the fix.
pub fn validate(config: &Config) -> Result<(), (String, String)> {
    if config.listen.parse::<SocketAddr>().is_err() {
        return Err((
            "listen".into(),
            format!(
                "{:?} is not an address to listen on (write IP:PORT, e.g. 127.0.0.1:8080)",
                config.listen
            ),
        ));
    }
    if config.providers.is_empty() {
        return Err((
            "providers".into(),
            "no providers are configured (add at least one)".into(),
        ));
    }
    let mut names = HashSet::new();
    for (i, p) in config.providers.iter().enumerate() {
        let field = format!("providers[{i}]");
        if p.name.is_empty() || p.name.contains('/') || p.name.trim() != p.name {
            return Err((
                format!("{field}.name"),
                format!(
                    "{:?} is not a usable provider name (non-empty, no `/`, no surrounding spaces)",
                    p.name
                ),
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err((
                format!("{field}.name"),
                format!(
                    "duplicate provider name {:?} (names must be unique)",
                    p.name
                ),
            ));
        }
        match (&p.base_url, p.kind) {
            (None, ProviderKind::OpenaiCompatible) => {
                return Err((
                    format!("{field}.base_url"),
                    "an openai-compatible provider needs a base_url (e.g. http://127.0.0.1:11434/v1)"
                        .into(),
                ));
            }
            (Some(url), _) => {
                check_url(url, p.kind).map_err(|m| (format!("{field}.base_url"), m))?
            }
            (None, _) => {}
        }
        if matches!(
            p.kind,
            ProviderKind::Anthropic | ProviderKind::Openai | ProviderKind::Gemini
        ) && p
            .api_key
            .as_ref()
            .is_none_or(|k| k.expose().trim().is_empty())
        {
            return Err((
                format!("{field}.api_key"),
                format!(
                    "a provider of kind {} needs an api_key (write `api_key: ${{ENV_VAR}}`)",
                    p.kind
                ),
            ));
        }
        for name in p.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err((
                    format!("{field}.headers.{name}"),
                    "not a valid HTTP header name".into(),
                ));
            }
        }
        for (name, value) in &p.headers {
            if http::HeaderValue::from_str(value.expose()).is_err() {
                return Err((
                    format!("{field}.headers.{name}"),
                    "the value is not a valid HTTP header value (no newlines or control characters)"
                        .into(),
                ));
            }
        }
        if let Some(check) = &p.health_check {
            if check.model.is_empty() {
                return Err((
                    format!("{field}.health_check.model"),
                    "the probe needs an upstream model to ask".into(),
                ));
            }
            if check.interval.0.is_zero() || check.timeout.0.is_zero() {
                return Err((
                    format!("{field}.health_check"),
                    "interval and timeout must be longer than zero".into(),
                ));
            }
        }
        if p.default_max_tokens == Some(0) {
            return Err((
                format!("{field}.default_max_tokens"),
                "must be at least 1".into(),
            ));
        }
    }
    let budget = &config.retry_budget;
    if !(0.0..=10.0).contains(&budget.ratio) || budget.min_per_second < 0.0 {
        return Err((
            "retry_budget".into(),
            "ratio must be between 0 and 10 (0.2 = retries may add 20 % to upstream load) and min_per_second at least 0".into(),
        ));
    }
    let mut routes = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let field = format!("routes[{i}]");
        if r.model.is_empty() {
            return Err((
                format!("{field}.model"),
                "a route needs a model name".into(),
            ));
        }
        if !routes.insert(r.model.as_str()) {
            return Err((
                format!("{field}.model"),
                format!(
                    "duplicate route {:?} (route model names must be unique)",
                    r.model
                ),
            ));
        }
        if r.targets.is_empty() {
            return Err((
                format!("{field}.targets"),
                "a route needs at least one target".into(),
            ));
        }
        validate_policy(r).map_err(|(f, m)| (format!("{field}.{f}"), m))?;
        for (j, t) in r.targets.iter().enumerate() {
            if t.weight == 0 {
                return Err((
                    format!("{field}.targets[{j}].weight"),
                    "must be at least 1 (remove the target to stop sending it traffic)".into(),
                ));
            }
            if t.context_window == Some(0) {
                return Err((
                    format!("{field}.targets[{j}].context_window"),
                    "must be a number of tokens above zero".into(),
                ));
            }
            if !names.contains(t.provider.as_str()) {
                let known: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
                return Err((
                    format!("{field}.targets[{j}].provider"),
                    format!(
                        "no provider is named {:?} (configured: {})",
                        t.provider,
                        known.join(", ")
                    ),
                ));
            }
            if t.model.is_empty() {
                return Err((
                    format!("{field}.targets[{j}].model"),
                    "a target needs the upstream model name".into(),
                ));
            }
        }
    }
    validate_sections(config)
}

/// The `journal`, `backup`, `alerts` and `objectives` sections.
fn validate_sections(config: &Config) -> Result<(), (String, String)> {
    validate_storage(&config.journal, config.backup.as_ref())?;
    let routes: Vec<String> = config.routes.iter().map(|r| r.model.clone()).collect();
    let providers: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
    config
        .alerts
        .validate(&routes, &providers)
        .map_err(|e| (format!("alerts.{}", e.field), e.message))?;
    if let Some(a) = config.objectives.availability
        && !(a > 0.0 && a <= 1.0)
    {
        return Err((
            "objectives.availability".into(),
            format!("{a} is not a share of requests (write e.g. 0.999)"),
        ));
    }
    Ok(())
}

/// The `journal` and `backup` sections, and how they go together.
fn validate_storage(
    journal: &bulwark_core::config::journal::JournalConfig,
    backup: Option<&bulwark_core::config::journal::BackupConfig>,
) -> Result<(), (String, String)> {
    let field_of = |msg: &str, default: &str| {
        msg.split_whitespace()
            .next()
            .filter(|w| w.starts_with(default))
            .unwrap_or(default)
            .to_string()
    };
    journal
        .validate()
        .map_err(|msg| (field_of(&msg, "journal"), msg))?;
    if let Some(backup) = backup {
        backup
            .validate()
            .map_err(|msg| (field_of(&msg, "backup"), msg))?;
        if journal.backend == bulwark_core::config::journal::BackendKind::Postgres {
            return Err((
                "backup".into(),
                "backup: applies to the SQLite journal; back up PostgreSQL with its own tools (pg_basebackup, WAL archiving) and remove this section".into(),
            ));
        }
        if journal.durability == bulwark_core::config::journal::Durability::Off {
            return Err((
                "backup".into(),
                "backup: with journal.durability off there is no journal to back up; set journal.durability to batched or sync, or remove this section".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a route's failover policy values.
fn validate_policy(r: &bulwark_core::config::RouteConfig) -> Result<(), (String, String)> {
    let retry = &r.retry;
    if retry.max_attempts == 0 {
        return Err((
            "retry.max_attempts".into(),
            "must be at least 1 (1 means no retry on the same target)".into(),
        ));
    }
    if retry.base_delay.0 > retry.max_delay.0 {
        return Err((
            "retry.base_delay".into(),
            "must not be longer than retry.max_delay".into(),
        ));
    }
    let t = &r.timeouts;
    for (name, value) in [
        ("connect", t.connect.0),
        ("first_token", t.first_token.0),
        ("idle", t.idle.0),
        ("total", t.total.0),
    ] {
        if value.is_zero() {
            return Err((
                format!("timeouts.{name}"),
                "must be longer than zero".into(),
            ));
        }
    }
    if t.first_token.0 > t.total.0 {
        return Err((
            "timeouts.first_token".into(),
            "must not be longer than timeouts.total".into(),
        ));
    }
    let b = &r.circuit_breaker;
    if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
        return Err((
            "circuit_breaker.failure_rate".into(),
            "must be a share above 0 and at most 1 (e.g. 0.5)".into(),
        ));
    }
    if b.open_for.0.is_zero() || b.open_for.0 > b.max_open_for.0 {
        return Err((
            "circuit_breaker.open_for".into(),
            "must be longer than zero and not longer than max_open_for".into(),
        ));
    }
    if b.window.0.is_zero() {
        return Err((
            "circuit_breaker.window".into(),
            "must be longer than zero".into(),
        ));
    }
    if r.hedge.is_some() && r.targets.len() < 2 {
        return Err((
            "hedge".into(),
            "hedging needs at least two targets to hedge between".into(),
        ));
    }
    Ok(())
}

fn check_url(raw: &str, kind: ProviderKind) -> Result<(), String> {
    let url = url::Url::parse(raw)
        .map_err(|e| format!("{raw:?} is not a valid URL ({e}); write e.g. https://host/v1"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed (use api_key or headers)".into());
    }
    let path = url.path().trim_end_matches('/');
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible
            if !path.ends_with("/v1") && !path.contains("/v1") =>
        {
            Err(format!(
                "{raw:?}: an {kind} base_url is the form the OpenAI SDK takes, ending in /v1 (e.g. http://127.0.0.1:11434/v1)"
            ))
        }
        ProviderKind::Anthropic | ProviderKind::Gemini
            if path.ends_with("/v1") || path.ends_with("/v1beta") =>
        {
            Err(format!(
                "{raw:?}: a {kind} base_url is the host root, as its official SDK takes it (drop the trailing {})",
                if path.ends_with("/v1") {
                    "/v1"
                } else {
                    "/v1beta"
                }
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ANTHROPIC_API_KEY" => Some("sk-ant-test".into()),
            "OPENAI_API_KEY" => Some("sk-test".into()),
            "GOOGLE_API_KEY" => Some("g-test".into()),
            _ => None,
        }
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("bulwark.yaml"), text, &env)
    }

    const ISSUE_EXAMPLE: &str = r#"
listen: 127.0.0.1:8080
providers:
  - name: anthropic
    kind: anthropic
    api_key: ${ANTHROPIC_API_KEY}
  - name: openai
    kind: openai
    api_key: ${OPENAI_API_KEY}
  - name: google
    kind: gemini
    api_key: ${GOOGLE_API_KEY}
  - name: local
    kind: openai-compatible
    base_url: http://127.0.0.1:11434/v1
routes:
  - model: chat
    targets:
      - {provider: anthropic, model: claude-sonnet-4-5}
      - {provider: openai, model: gpt-4.1}
      - {provider: google, model: gemini-2.5-pro}
"#;

    #[test]
    fn the_documented_example_loads() {
        let config = parse_str(ISSUE_EXAMPLE).unwrap();
        assert_eq!(config.providers.len(), 4);
        assert_eq!(
            config.providers[0].api_key.as_ref().unwrap().expose(),
            "sk-ant-test"
        );
        assert_eq!(config.routes[0].targets[2].model, "gemini-2.5-pro");
    }

    #[test]
    fn backup_mistakes_name_the_field_and_the_fix() {
        let with_backup = |backup: &str| format!("{ISSUE_EXAMPLE}backup: {backup}\n");
        for (backup, field, fix) in [
            (
                r#"{to: "s3://bkt/p", endpoint: "127.0.0.1:9000", allow_http: true}"#,
                "backup.endpoint",
                "http://127.0.0.1:9000",
            ),
            (
                r#"{to: "s3://bkt/p", endpoint: "http://127.0.0.1:9000"}"#,
                "backup.endpoint",
                "allow_http: true",
            ),
            (
                r#"{to: "/var/backups/b"}"#,
                "backup.to",
                "file:///var/backups/b",
            ),
            (
                r#"{to: "s3://bkt/p", endpoint: "https://AKIA:s3cr3t-canary@minio:9000"}"#,
                "backup.endpoint",
                "environment variables",
            ),
        ] {
            let err = parse_str(&with_backup(backup)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(fix), "{err}");
            // Never the credential an endpoint was written with.
            assert!(!err.to_string().contains("canary"), "{err}");
        }
        let bare = with_backup(r#"{to: "file:///tmp/b", interval: 10}"#);
        let err = parse_str(&bare).unwrap_err();
        assert_eq!(err.field, "backup.interval", "{err}");
        assert!(err.to_string().contains(r#""10s""#), "{err}");
        let off = format!(
            "{ISSUE_EXAMPLE}journal: {{durability: \"off\"}}\nbackup: {{to: \"file:///tmp/b\"}}\n"
        );
        let err = parse_str(&off).unwrap_err();
        assert_eq!(err.field, "backup");
        assert!(err.to_string().contains("batched or sync"), "{err}");
    }

    #[test]
    fn a_yaml_mistake_next_to_a_key_names_the_place_without_quoting_the_key() {
        let text = "providers:\n  - name: a\n    kind: openai\n    api_key: sk-canary-123\n    headers: {x-custom: hdr-canary-456}\n    base_url: [unclosed\nroutes: []\n";
        let err = parse_str(text).unwrap_err().to_string();
        assert!(err.contains("line 7"), "{err}");
        assert!(!err.contains("canary"), "{err}");
    }

    /// A block mis-indented under a duration field is named by its kind, and what
    /// it holds (keys, once `${VAR}` is expanded) stays out of the message.
    #[test]
    fn a_map_where_a_duration_goes_is_named_without_quoting_it() {
        let text = "providers:\n  - name: a\n    kind: openai\n    health_check:\n      timeout:\n        api_key: sk-canary-123\nroutes: []\n";
        let err = parse_str(text).unwrap_err().to_string();
        assert!(err.contains("a map is not a duration"), "{err}");
        assert!(err.contains("timeout"), "{err}");
        assert!(!err.contains("canary"), "{err}");
    }

    #[test]
    fn unset_variable_names_field_and_variable() {
        let text = ISSUE_EXAMPLE.replace("${GOOGLE_API_KEY}", "${MISSING_KEY}");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "providers[2].api_key");
        assert!(err.message.contains("MISSING_KEY is not set"), "{err}");
        assert!(
            err.to_string()
                .starts_with("bulwark.yaml: providers[2].api_key:")
        );
    }

    #[test]
    fn an_empty_variable_or_key_is_named_for_what_it_is() {
        let text = ISSUE_EXAMPLE.replace("${GOOGLE_API_KEY}", "${EMPTY_KEY}");
        let empty = |name: &str| {
            (name == "EMPTY_KEY")
                .then(String::new)
                .or_else(|| env(name))
        };
        let err = parse(Path::new("bulwark.yaml"), &text, &empty).unwrap_err();
        assert_eq!(err.field, "providers[2].api_key");
        assert!(err.message.contains("EMPTY_KEY is set but empty"), "{err}");
        // A key written empty can never work either.
        let text = ISSUE_EXAMPLE.replace("${GOOGLE_API_KEY}", "\"\"");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "providers[2].api_key");
    }

    #[test]
    fn the_journal_and_backup_sections_need_no_provider_keys() {
        let text = format!(
            "{}journal: {{path: /var/lib/bulwark/journal.db}}\nbackup: {{to: \"file://${{BACKUP_DIR}}\"}}\n",
            ISSUE_EXAMPLE.replace("${GOOGLE_API_KEY}", "${UNSET_KEY}")
        );
        let only_backup_dir = |name: &str| (name == "BACKUP_DIR").then(|| "/backups".to_string());
        let (journal, backup) =
            parse_storage(Path::new("bulwark.yaml"), &text, &only_backup_dir).unwrap();
        assert_eq!(journal.path, Path::new("/var/lib/bulwark/journal.db"));
        assert!(backup.is_some());
        // What the storage sections themselves need is still checked, by name.
        let err = parse_storage(Path::new("bulwark.yaml"), &text, &|_| None).unwrap_err();
        assert_eq!(err.field, "backup.to");
        assert!(err.message.contains("BACKUP_DIR is not set"), "{err}");
        let err = parse_storage(
            Path::new("bulwark.yaml"),
            "journal: {durability: sometimes}\n",
            &|_| None,
        )
        .unwrap_err();
        assert!(err.field.starts_with("journal"), "{err}");
    }

    #[test]
    fn default_value_used_when_unset() {
        let text = ISSUE_EXAMPLE.replace("${GOOGLE_API_KEY}", "${MISSING_KEY:-fallback}");
        let config = parse_str(&text).unwrap();
        assert_eq!(
            config.providers[2].api_key.as_ref().unwrap().expose(),
            "fallback"
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let text =
            ISSUE_EXAMPLE.replace("    kind: openai\n", "    kind: openai\n    api_kye: x\n");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "providers[1].api_kye");
        assert!(err.message.contains("unknown field `api_kye`"), "{err}");
    }

    #[test]
    fn route_naming_missing_provider_is_rejected() {
        let text = ISSUE_EXAMPLE.replace("{provider: openai,", "{provider: opena1,");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "routes[0].targets[1].provider");
        assert!(err.message.contains("\"opena1\""), "{err}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let text = ISSUE_EXAMPLE.replace("name: google", "name: openai");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "providers[2].name");
        assert!(err.message.contains("duplicate"));
    }

    #[test]
    fn malformed_url_is_rejected() {
        let text = ISSUE_EXAMPLE.replace("http://127.0.0.1:11434/v1", "127.0.0.1:11434");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "providers[3].base_url");
    }

    #[test]
    fn unknown_kind_lists_the_choices() {
        let text = ISSUE_EXAMPLE.replace("kind: gemini", "kind: bard");
        let err = parse_str(&text).unwrap_err();
        assert_eq!(err.field, "providers[2].kind");
        assert!(err.message.contains("openai-compatible"), "{err}");
    }

    #[test]
    fn route_policy_values_are_checked() {
        let bad = [
            (
                "    targets:\n      - {provider: anthropic",
                "    retry: {max_attempts: 0}\n    targets:\n      - {provider: anthropic",
                "routes[0].retry.max_attempts",
            ),
            (
                "    targets:\n      - {provider: anthropic",
                "    timeouts: {first_token: 0s}\n    targets:\n      - {provider: anthropic",
                "routes[0].timeouts.first_token",
            ),
            (
                "    targets:\n      - {provider: anthropic",
                "    circuit_breaker: {failure_rate: 1.5}\n    targets:\n      - {provider: anthropic",
                "routes[0].circuit_breaker.failure_rate",
            ),
            (
                "    targets:\n      - {provider: anthropic",
                "    timeouts: {idle: soon}\n    targets:\n      - {provider: anthropic",
                "routes[0].timeouts.idle",
            ),
            (
                "{provider: openai, model: gpt-4.1}",
                "{provider: openai, model: gpt-4.1, weight: 0}",
                "routes[0].targets[1].weight",
            ),
        ];
        for (from, to, field) in bad {
            let text = ISSUE_EXAMPLE.replace(from, to);
            assert_ne!(text, ISSUE_EXAMPLE);
            let err = parse_str(&text).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let good = ISSUE_EXAMPLE.replace(
            "    targets:\n      - {provider: anthropic",
            "    retry: {max_attempts: 3, base_delay: 500ms, max_delay: 8s}\n    timeouts: {connect: 5s, first_token: 15s, idle: 20s, total: 120s}\n    circuit_breaker: {consecutive_failures: 5, failure_rate: 0.5, min_calls: 20, window: 60s, open_for: 30s, max_open_for: 5m}\n    hedge: {after: p95}\n    targets:\n      - {provider: anthropic",
        );
        parse_str(&good).unwrap();
    }

    #[test]
    fn expansion_cannot_inject_structure() {
        let got = expand_str("${X}", &|_| Some("a\n  b: c".into())).unwrap();
        assert_eq!(got, "a\n  b: c");
        assert_eq!(expand_str("$$5 and $", &|_| None).unwrap(), "$5 and $");
    }
}
