//! Object storage for attachments (being written): a local directory by default, S3 / Azure Blob
//! by configuration.

/// Where attachment bytes live.
#[derive(Clone, Default)]
pub struct Storage;
