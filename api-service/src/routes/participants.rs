//! Participants routes (being written).

use poem_openapi::OpenApi;

use crate::routes::ApiTags;

pub struct ParticipantsApi;

#[OpenApi(tag = "ApiTags::Participants")]
impl ParticipantsApi {}
