//! Where backups go: a `backup.to` URL turned into an object store rooted at its prefix.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use url::Url;

use crate::config::BackupConfig;
use crate::error::{JournalError, Result};

/// An object store whose paths (`snapshots/…`, `segments/…`) are relative to the URL's prefix.
#[derive(Clone, Debug)]
pub struct BackupTarget {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) url: String,
}

/// Checks that `url` names a store this build can write to.
pub(crate) fn check_url(raw: &str) -> Result<(), String> {
    bulwark_core::config::journal::check_backup_url(raw)
}

impl BackupTarget {
    pub fn open(cfg: &BackupConfig) -> Result<Self> {
        Self::from_url(
            &cfg.to,
            cfg.endpoint.as_deref(),
            cfg.region.as_deref(),
            cfg.allow_http,
        )
    }

    /// Opens `url`. Credentials come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn from_url(
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        allow_http: bool,
    ) -> Result<Self> {
        check_url(url).map_err(JournalError::Config)?;
        let parsed = Url::parse(url).map_err(|e| JournalError::Config(e.to_string()))?;
        let prefix = ObjectPath::from_url_path(parsed.path().trim_start_matches('/'))
            .map_err(|e| JournalError::Config(format!("backup.to {url:?}: {e}")))?;
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| JournalError::Config(format!("backup.to {url:?}: not a path")))?;
                std::fs::create_dir_all(&dir)?;
                return Ok(BackupTarget {
                    store: Arc::new(LocalFileSystem::new_with_prefix(&dir)?),
                    url: url.to_string(),
                });
            }
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env().with_url(url);
                if let Some(endpoint) = endpoint {
                    // S3-compatible servers are addressed by path (`endpoint/bucket/key`).
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                Arc::new(builder.with_allow_http(allow_http).build()?)
            }
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()?,
            ),
            _ => Arc::new(
                MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_allow_http(allow_http)
                    .build()?,
            ),
        };
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(BackupTarget {
            store,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}
