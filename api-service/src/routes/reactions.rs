//! Reactions routes (being written).

use poem_openapi::OpenApi;

use crate::routes::ApiTags;

pub struct ReactionsApi;

#[OpenApi(tag = "ApiTags::Reactions")]
impl ReactionsApi {}
