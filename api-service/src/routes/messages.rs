//! Messages routes (being written).

use poem_openapi::OpenApi;

use crate::routes::ApiTags;

pub struct MessagesApi;

#[OpenApi(tag = "ApiTags::Messages")]
impl MessagesApi {}
