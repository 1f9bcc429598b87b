//! Attachments routes (being written).

use poem_openapi::OpenApi;

use crate::routes::ApiTags;

pub struct AttachmentsApi;

#[OpenApi(tag = "ApiTags::Attachments")]
impl AttachmentsApi {}
