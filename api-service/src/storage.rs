//! Object storage for attachments (docs/api.md, "Uploads and downloads"): a local directory by
//! default, an S3 bucket or an Azure Blob container by configuration (`STORAGE_BACKEND`), all
//! through the `object_store` crate so the upload and download routes never know which one is in
//! use.
//!
//! Objects are written once, whole, under a server-chosen [`ObjectName`] (`<uuid><ext>`), and
//! never changed: that is what lets downloads be cached for a year and their `Content-Type` be
//! read off the name. Nothing here logs file bytes.

use std::{ops::Range, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{StreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder,
    azure::MicrosoftAzureBuilder, local::LocalFileSystem, path::Path,
};
use uuid::Uuid;

use crate::{
    config::{Settings, StorageBackend},
    sniff::FileKind,
};

/// Longest `file_url` the `attachments` table holds (`varchar(500)`).
const MAX_FILE_URL: usize = 500;

/// A name this service gives an object: a random UUID (lowercase, hyphenated) followed by the
/// extension of its verified type. Client filenames never reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    name: String,
    kind: &'static FileKind,
}

impl ObjectName {
    /// A fresh random name for an object of `kind`.
    pub fn generate(kind: &'static FileKind) -> Self {
        Self {
            name: format!("{}{}", Uuid::new_v4(), kind.ext),
            kind,
        }
    }

    /// Accepts exactly the names [`generate`](Self::generate) produces (canonical lowercase UUID
    /// plus a known extension); anything else — other spellings, paths, dot segments — is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let (uuid, ext) = raw.split_at_checked(36)?;
        let id = Uuid::try_parse(uuid).ok()?;
        if id.hyphenated().to_string() != uuid {
            return None;
        }
        Some(Self {
            name: raw.to_owned(),
            kind: FileKind::by_ext(ext)?,
        })
    }

    /// The object's name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The verified type the object was stored with (the extension encodes it one-to-one).
    pub fn kind(&self) -> &'static FileKind {
        self.kind
    }

    fn path(&self) -> Path {
        Path::from(self.name.as_str())
    }
}

/// An object read back: its total size, the byte range being returned, and those bytes.
pub struct StoredObject {
    pub size: u64,
    pub range: Range<u64>,
    pub bytes: BoxStream<'static, std::io::Result<Bytes>>,
}

/// Which bytes of an object a download asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole object.
    All,
    /// `start..=end`, already checked against the object's size.
    Slice { start: u64, end: u64 },
}

/// Where attachment bytes live. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// `file_url` prefix, without a trailing slash.
    base_url: String,
}

impl Storage {
    /// Builds the configured backend. `port` is the port actually bound, which the default
    /// `file_url` base (`http://localhost:<port>/uploads`) names; it equals `PORT` except when
    /// `PORT=0` asks for any free port.
    pub fn from_settings(settings: &Settings, port: u16) -> anyhow::Result<Self> {
        let store: Arc<dyn ObjectStore> = match &settings.storage_backend {
            StorageBackend::Local => {
                std::fs::create_dir_all(&settings.upload_dir).with_context(|| {
                    format!("cannot create UPLOAD_DIR {:?}", settings.upload_dir)
                })?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(&settings.upload_dir).with_context(|| {
                        format!("cannot use UPLOAD_DIR {:?}", settings.upload_dir)
                    })?,
                )
            }
            StorageBackend::S3 {
                bucket,
                region,
                endpoint,
            } => {
                // Credentials (and anything not configured here) from the standard AWS variables.
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                Arc::new(builder.build().context("invalid S3 storage settings")?)
            }
            StorageBackend::Azure { account, container } => {
                let builder = MicrosoftAzureBuilder::from_env()
                    .with_account(account)
                    .with_container_name(container);
                Arc::new(builder.build().context("invalid Azure storage settings")?)
            }
        };
        let base_url = settings
            .upload_base_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{port}/uploads"));
        // `<base>/<uuid>.<longest ext>` must fit the file_url column, or every upload would fail.
        let longest = base_url.len() + 1 + 36 + ".docx".len();
        anyhow::ensure!(
            longest <= MAX_FILE_URL,
            "UPLOAD_BASE_URL is too long: file URLs would exceed {MAX_FILE_URL} bytes"
        );
        Ok(Self { store, base_url })
    }

    /// The public URL of an object (`UPLOAD_BASE_URL/<name>`).
    pub fn file_url(&self, name: &ObjectName) -> String {
        format!("{}/{}", self.base_url, name.as_str())
    }

    /// Writes a whole object (atomically: readers never see part of it).
    pub async fn put(&self, name: &ObjectName, bytes: Bytes) -> anyhow::Result<()> {
        self.store
            .put(&name.path(), PutPayload::from_bytes(bytes))
            .await
            .with_context(|| format!("storing object {}", name.as_str()))?;
        Ok(())
    }

    /// Deletes an object (used when its attachment row could not be written).
    pub async fn delete(&self, name: &ObjectName) -> anyhow::Result<()> {
        self.store
            .delete(&name.path())
            .await
            .with_context(|| format!("deleting object {}", name.as_str()))
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn size(&self, name: &ObjectName) -> anyhow::Result<Option<u64>> {
        match self.store.head(&name.path()).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("reading object {}", name.as_str())))
            }
        }
    }

    /// Opens an object for reading (whole, or one range checked against its size by the caller),
    /// or `None` when there is no such object.
    pub async fn get(
        &self,
        name: &ObjectName,
        range: ByteRange,
    ) -> anyhow::Result<Option<StoredObject>> {
        let options = GetOptions {
            range: match range {
                ByteRange::All => None,
                ByteRange::Slice { start, end } => Some(GetRange::Bounded(start..end + 1)),
            },
            ..GetOptions::default()
        };
        match self.store.get_opts(&name.path(), options).await {
            Ok(result) => Ok(Some(StoredObject {
                size: result.meta.size,
                range: result.range.clone(),
                bytes: result
                    .into_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("reading object {}", name.as_str())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sniff::ALLOWED;

    #[test]
    fn generated_names_parse_back_with_their_type() {
        for kind in ALLOWED {
            let name = ObjectName::generate(kind);
            assert_eq!(ObjectName::parse(name.as_str()), Some(name.clone()));
            assert_eq!(name.kind(), kind);
        }
    }

    #[test]
    fn only_names_this_service_produces_parse() {
        let id = "0b5e3f0e-8a43-4f4e-9d6c-2a3e8f1c9b7a";
        assert!(ObjectName::parse(&format!("{id}.png")).is_some());
        for bad in [
            id.to_owned(),
            format!("{id}."),
            format!("{id}.PNG"),
            format!("{id}.exe"),
            format!("{id}.png.png"),
            format!("{}.png", id.to_uppercase()),
            format!("{}.png", id.replace('-', "")),
            format!("{{{id}}}.png"),
            format!("../{id}.png"),
            format!("{id}/.png"),
            "..".to_owned(),
            String::new(),
            "é".repeat(20),
        ] {
            assert_eq!(ObjectName::parse(&bad), None, "{bad}");
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_map(&vars).unwrap()
    }

    #[test]
    fn the_default_file_url_names_the_bound_port() {
        let dir = std::env::temp_dir().join(format!("uploads-{}", Uuid::new_v4()));
        let s = settings(&[("UPLOAD_DIR", dir.to_str().unwrap())]);
        let storage = Storage::from_settings(&s, 41234).unwrap();
        assert!(dir.is_dir(), "UPLOAD_DIR is created");
        let name = ObjectName::parse("0b5e3f0e-8a43-4f4e-9d6c-2a3e8f1c9b7a.pdf").unwrap();
        assert_eq!(
            storage.file_url(&name),
            "http://localhost:41234/uploads/0b5e3f0e-8a43-4f4e-9d6c-2a3e8f1c9b7a.pdf"
        );
        let s = settings(&[
            ("UPLOAD_DIR", dir.to_str().unwrap()),
            ("UPLOAD_BASE_URL", "https://cdn.example.com/files/"),
        ]);
        let storage = Storage::from_settings(&s, 1).unwrap();
        assert_eq!(
            storage.file_url(&name),
            "https://cdn.example.com/files/0b5e3f0e-8a43-4f4e-9d6c-2a3e8f1c9b7a.pdf"
        );
        let long = format!("https://cdn.example.com/{}", "a".repeat(460));
        let s = settings(&[
            ("UPLOAD_DIR", dir.to_str().unwrap()),
            ("UPLOAD_BASE_URL", &long),
        ]);
        assert!(Storage::from_settings(&s, 1).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cloud_backends_are_built_from_settings_without_connecting() {
        let s = settings(&[
            ("STORAGE_BACKEND", "s3"),
            ("S3_BUCKET", "media"),
            ("S3_REGION", "eu-west-3"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000"),
        ]);
        assert!(Storage::from_settings(&s, 8082).is_ok());
        let s = settings(&[
            ("STORAGE_BACKEND", "azure"),
            ("AZURE_STORAGE_ACCOUNT", "retich"),
            ("AZURE_CONTAINER", "media"),
        ]);
        assert!(Storage::from_settings(&s, 8082).is_ok());
    }

    #[tokio::test]
    async fn objects_round_trip_through_the_local_directory() {
        let dir = std::env::temp_dir().join(format!("uploads-{}", Uuid::new_v4()));
        let s = settings(&[("UPLOAD_DIR", dir.to_str().unwrap())]);
        let storage = Storage::from_settings(&s, 1).unwrap();
        let name = ObjectName::generate(FileKind::by_mime("text/plain").unwrap());
        assert!(storage.get(&name, ByteRange::All).await.unwrap().is_none());
        assert_eq!(storage.size(&name).await.unwrap(), None);
        storage
            .put(&name, Bytes::from_static(b"hello world"))
            .await
            .unwrap();
        assert_eq!(storage.size(&name).await.unwrap(), Some(11));
        let read = |range| {
            let storage = storage.clone();
            let name = name.clone();
            async move {
                let obj = storage.get(&name, range).await.unwrap().unwrap();
                let chunks: Vec<_> = obj.bytes.collect().await;
                let bytes: Vec<u8> = chunks
                    .into_iter()
                    .flat_map(|c| c.unwrap().to_vec())
                    .collect();
                (obj.size, obj.range, bytes)
            }
        };
        assert_eq!(
            read(ByteRange::All).await,
            (11, 0..11, b"hello world".to_vec())
        );
        assert_eq!(
            read(ByteRange::Slice { start: 6, end: 10 }).await,
            (11, 6..11, b"world".to_vec())
        );
        storage.delete(&name).await.unwrap();
        assert!(storage.get(&name, ByteRange::All).await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
