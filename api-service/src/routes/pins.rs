//! Pins routes (being written).

use poem_openapi::OpenApi;

use crate::routes::ApiTags;

pub struct PinsApi;

#[OpenApi(tag = "ApiTags::Pins")]
impl PinsApi {}
