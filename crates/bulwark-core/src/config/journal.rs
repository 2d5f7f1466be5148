//! The `journal:` and `backup:` configuration sections (the core `Config` embeds them).

use std::path::PathBuf;
use std::time::Duration;

use super::{HumanDuration, Secret};
use serde::{Deserialize, Serialize};

/// `journal:` — where and how durably requests are recorded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// SQLite file (created with its directory when missing).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub durability: Durability,
    /// How often the writer commits in `batched` mode: the recovery point bound.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: HumanDuration,
    #[serde(default)]
    pub bodies: Bodies,
    #[serde(default)]
    pub backend: BackendKind,
    /// PostgreSQL connection string (`postgres://user:pass@host/db`), for `backend: postgres`.
    /// Usually `${BULWARK_JOURNAL_URL}`; a secret because it may hold a password.
    #[serde(default)]
    pub url: Option<Secret>,
    /// How long a completed answer is replayed for a repeated `Idempotency-Key`.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl: HumanDuration,
    /// This gateway's name in a shared (PostgreSQL) journal: recovery interrupts only
    /// this node's unfinished requests. Defaults to the host name.
    #[serde(default)]
    pub node_id: Option<String>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: default_path(),
            durability: Durability::default(),
            flush_interval: default_flush_interval(),
            bodies: Bodies::default(),
            backend: BackendKind::default(),
            url: None,
            idempotency_ttl: default_idempotency_ttl(),
            node_id: None,
        }
    }
}

impl JournalConfig {
    /// Where the journal is, for messages: the SQLite file, or the PostgreSQL one
    /// (its URL holds a password, so it is not shown).
    pub fn describe(&self) -> String {
        match self.backend {
            BackendKind::Sqlite => self.path.display().to_string(),
            BackendKind::Postgres => "the PostgreSQL journal (journal.url)".to_string(),
        }
    }

    /// A SQLite journal at `path` with the defaults otherwise.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        JournalConfig {
            path: path.into(),
            ..JournalConfig::default()
        }
    }

    /// Cross-field checks the decoder cannot make.
    pub fn validate(&self) -> Result<(), String> {
        if self.backend == BackendKind::Postgres && self.url.is_none() {
            return Err("journal.url is required with journal.backend: postgres".into());
        }
        if self.durability == Durability::Batched && self.flush_interval.0.is_zero() {
            return Err("journal.flush_interval must be more than zero".into());
        }
        if self.idempotency_ttl.0.is_zero() {
            return Err("journal.idempotency_ttl must be more than zero".into());
        }
        Ok(())
    }

    /// The node id in effect: configured, else the host name, else `local`.
    pub fn node(&self) -> String {
        if let Some(node) = self.node_id.as_deref().filter(|n| !n.is_empty()) {
            return node.to_string();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".to_string())
    }

    /// The most a crash can lose, as promised by the durability mode (None for `off`).
    pub fn rpo_bound(&self) -> Option<Duration> {
        match self.durability {
            Durability::Sync => Some(Duration::ZERO),
            Durability::Batched => Some(self.flush_interval.0),
            Durability::Off => None,
        }
    }
}

fn default_path() -> PathBuf {
    PathBuf::from("./bulwark-data/journal.db")
}

fn default_flush_interval() -> HumanDuration {
    HumanDuration::millis(50)
}

fn default_idempotency_ttl() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// An answer is released only after its record is committed (RPO 0).
    #[default]
    Sync,
    /// Committed every `flush_interval` (RPO ≤ interval).
    Batched,
    /// Nothing is written; idempotency is disabled.
    Off,
}

impl<'de> Deserialize<'de> for Durability {
    /// `sync`, `batched` or `off` — and a bare YAML `off`/`no`/`false`, which YAML
    /// parsers read as the boolean false.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(Durability::Off),
            Raw::Text(t) if t == "sync" => Ok(Durability::Sync),
            Raw::Text(t) if t == "batched" => Ok(Durability::Batched),
            Raw::Text(t) if t == "off" => Ok(Durability::Off),
            Raw::Bool(true) => Err(serde::de::Error::custom(
                "expected sync, batched or off, not `true`",
            )),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "unknown durability {t:?}: expected sync, batched or off"
            ))),
        }
    }
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Batched => "batched",
            Durability::Off => "off",
        }
    }
}

/// What of prompts and answers is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bodies {
    #[default]
    Full,
    /// Structure kept; message text, tool arguments and answer text become `[redacted N chars]`.
    Redacted,
    /// No request or response bodies at all (metadata, usage and errors only).
    None,
}

impl Bodies {
    pub fn as_str(self) -> &'static str {
        match self {
            Bodies::Full => "full",
            Bodies::Redacted => "redacted",
            Bodies::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    #[default]
    Sqlite,
    Postgres,
}

/// `backup:` — where snapshots and shipped records go.
///
/// Credentials come from the standard environment variables of each store
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`;
/// `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS`;
/// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, …), never from this file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `file:///abs/dir`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    pub to: String,
    /// How often new records are shipped: the RPO for losing the whole machine.
    #[serde(default = "default_backup_interval")]
    pub interval: HumanDuration,
    /// How often a full snapshot is taken (restore replays the records after it).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: HumanDuration,
    /// Snapshots and segments older than this are deleted (keeping what restore to
    /// any point within it needs).
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// S3-compatible servers (MinIO, moto): the endpoint URL, e.g. `http://127.0.0.1:5000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (local test servers only).
    #[serde(default)]
    pub allow_http: bool,
}

impl BackupConfig {
    pub fn new(to: impl Into<String>) -> Self {
        BackupConfig {
            to: to.into(),
            interval: default_backup_interval(),
            snapshot_interval: default_snapshot_interval(),
            retention: default_retention(),
            endpoint: None,
            region: None,
            allow_http: false,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        check_backup_url(&self.to)?;
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint, self.allow_http)?;
        }
        if self.interval.0.is_zero() {
            return Err("backup.interval must be more than zero".into());
        }
        if self.retention.0 < self.snapshot_interval.0 {
            return Err("backup.retention must be at least backup.snapshot_interval".into());
        }
        Ok(())
    }
}

/// Checks `backup.endpoint`: an http(s) URL with a host, plain HTTP only with
/// `allow_http` (the object-store client takes nothing else, and would find out only
/// when it first ships).
fn check_endpoint(raw: &str, allow_http: bool) -> Result<(), String> {
    // An endpoint with `user:password@` would carry a credential into this message
    // and into the store client; credentials come from the store's environment.
    if raw.contains('@') {
        return Err(
            "backup.endpoint must not hold credentials (user:password@): give them in the store's environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".into(),
        );
    }
    let url = url::Url::parse(raw).ok().filter(|u| u.has_host()).ok_or_else(|| {
        format!(
            "backup.endpoint {raw:?} is not a URL: write it with its scheme, e.g. \"http://{raw}\" or \"https://{raw}\""
        )
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(format!(
            "backup.endpoint {raw:?} is plain HTTP: set backup.allow_http: true (local test servers only) or use https"
        )),
        other => Err(format!(
            "backup.endpoint {raw:?}: unsupported scheme {other:?} (http or https)"
        )),
    }
}

/// Checks a `backup.to` URL: scheme among file, s3, gs, az, and a bucket or absolute path.
pub fn check_backup_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| {
        if raw.starts_with('/') {
            format!("backup.to {raw:?} is a path, not a URL: write it as \"file://{raw}\"")
        } else {
            format!("backup.to {raw:?}: {e} (write e.g. file:///var/backups/bulwark or s3://bucket/prefix)")
        }
    })?;
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(format!(
                    "backup.to {raw:?}: a file URL needs an absolute path (file:///dir)"
                ));
            }
            Ok(())
        }
        "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("backup.to {raw:?}: no bucket or container"));
            }
            Ok(())
        }
        other => Err(format!(
            "backup.to {raw:?}: unsupported scheme {other:?} (file, s3, gs, az)"
        )),
    }
}

fn default_backup_interval() -> HumanDuration {
    HumanDuration::secs(10)
}

fn default_snapshot_interval() -> HumanDuration {
    HumanDuration::secs(3600)
}

fn default_retention() -> HumanDuration {
    HumanDuration::secs(7 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_config_decodes_the_documented_example_with_defaults() {
        let cfg: JournalConfig = serde_json::from_value(serde_json::json!({
            "path": "./bulwark-data/journal.db",
            "durability": "batched",
            "flush_interval": "50ms",
            "bodies": "redacted",
        }))
        .unwrap();
        assert_eq!(cfg.durability, Durability::Batched);
        assert_eq!(cfg.flush_interval.0, Duration::from_millis(50));
        assert_eq!(cfg.bodies, Bodies::Redacted);
        assert_eq!(cfg.backend, BackendKind::Sqlite);
        assert_eq!(cfg.idempotency_ttl.0, Duration::from_secs(86_400));
        assert_eq!(cfg.rpo_bound(), Some(Duration::from_millis(50)));
        let defaults: JournalConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(defaults.durability, Durability::Sync);
        assert_eq!(defaults.path, PathBuf::from("./bulwark-data/journal.db"));
    }

    #[test]
    fn a_bare_yaml_off_read_as_false_means_off() {
        let cfg: JournalConfig =
            serde_json::from_value(serde_json::json!({"durability": false})).unwrap();
        assert_eq!(cfg.durability, Durability::Off);
        assert!(
            serde_json::from_value::<JournalConfig>(serde_json::json!({"durability": true}))
                .is_err()
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        let err = serde_json::from_value::<JournalConfig>(serde_json::json!({"durabilty": "sync"}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(
            serde_json::from_value::<JournalConfig>(serde_json::json!({"durability": "fast"}))
                .is_err()
        );
        let pg: JournalConfig =
            serde_json::from_value(serde_json::json!({"backend": "postgres"})).unwrap();
        assert!(pg.validate().is_err());
    }

    #[test]
    fn backup_config_decodes_durations_and_checks_the_url() {
        let cfg: BackupConfig = serde_json::from_value(serde_json::json!({
            "to": "s3://bucket/prefix", "interval": "10s", "retention": "7d",
            "endpoint": "http://127.0.0.1:5000", "allow_http": true,
        }))
        .unwrap();
        assert_eq!(cfg.interval.0, Duration::from_secs(10));
        assert_eq!(cfg.retention.0, Duration::from_secs(7 * 86_400));
        assert!(cfg.validate().is_ok());
        assert!(BackupConfig::new("ftp://x/y").validate().is_err());
        assert!(BackupConfig::new("file://relative/dir").validate().is_err());
        assert!(
            BackupConfig::new("file:///var/backups/bulwark")
                .validate()
                .is_ok()
        );
    }
}
