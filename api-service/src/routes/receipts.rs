//! Receipts routes (being written).

use poem_openapi::OpenApi;

use crate::routes::ApiTags;

pub struct ReceiptsApi;

#[OpenApi(tag = "ApiTags::Receipts")]
impl ReceiptsApi {}
