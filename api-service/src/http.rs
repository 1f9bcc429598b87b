//! The request and response plumbing that lets every route apply its check order exactly:
//! nothing here fails on its own except the jwt credential check, which comes first
//! (docs/api.md, "Identity"). Everything else is captured and judged by the handler at its step:
//!
//! - [`identity`]: [`Caller`]. jwt mode verifies the token during extraction (→ 401 before
//!   anything else); header mode keeps the `X-User-ID` outcome for the route's `HDR` step.
//! - [`body`]: [`JsonBody`], the raw body read up to 1 MiB (+1 byte to detect overflow), parsed
//!   at the `BODY` step into [`JsonObject`] whose typed getters apply docs/api.md ("Requests").
//! - [`envelope`]: [`Data`], [`Page`], [`NoContent`], the success envelopes of docs/api.md
//!   ("Responses"), described to the OpenAPI document with an example ([`BodyExample`]).
//! - [`uri`]: the URI rules applied before routing ([`guard_uri`], [`sanitize_path`]).
//! - [`conv_id`], [`msg_id`], [`user_id`]: the `PATH-*` steps, judging a [`PathId`];
//!   [`pagination`]: `limit` and `offset` (docs/api.md, "Paging").

pub mod body;
pub mod envelope;
pub mod identity;
pub mod uri;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseFromParameter, ParseResult, Type},
};
use uuid::Uuid;

pub use body::{JsonBody, JsonObject, MAX_JSON_BODY, read_limited};
pub use envelope::{
    BodyExample, Data, NoContent, Page, Pagination, json_response, not_found, with_example,
};
pub use identity::{Caller, form_pairs};
pub use uri::{guard_uri, has_nul, sanitize_path};

use crate::error::{self, ApiError};

// ----- path ids ---------------------------------------------------------------------------------

/// A UUID path variable as sent, not yet judged: the route parses it at its `PATH-*` step
/// ([`conv_id`], [`msg_id`], [`user_id`]), so a malformed one gets that step's 400 in its place
/// in the check order. The OpenAPI document describes it as a `uuid` string.
pub struct PathId(String);

impl std::ops::Deref for PathId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Type for PathId {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "string_uuid".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "uuid")))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromParameter for PathId {
    /// Any segment is taken; judging it is the route's `PATH-*` step.
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

/// `PATH-C`.
pub fn conv_id(raw: &str) -> Result<Uuid, ApiError> {
    shared_auth::parse_uuid(raw).ok_or(ApiError::BadRequest(error::INVALID_CONVERSATION_ID))
}

/// `PATH-M`.
pub fn msg_id(raw: &str) -> Result<Uuid, ApiError> {
    shared_auth::parse_uuid(raw).ok_or(ApiError::BadRequest(error::INVALID_MESSAGE_ID))
}

/// `PATH-U`.
pub fn user_id(raw: &str) -> Result<Uuid, ApiError> {
    shared_auth::parse_uuid(raw).ok_or(ApiError::BadRequest(error::INVALID_USER_ID))
}

// ----- pagination parameters (§2.6) --------------------------------------------------------------

/// Parses a decimal integer with an optional sign and leading zeros; `None` when it is not one.
/// Values beyond i64 saturate (they are only compared with limits).
pub fn parse_decimal(s: &str) -> Option<i128> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    let value: i128 = if trimmed.len() > 30 {
        i128::MAX / 2
    } else {
        trimmed.parse().unwrap_or(0)
    };
    Some(if neg { -value } else { value })
}

/// Effective `limit`/`offset`, or their failures added to `details`.
pub fn pagination(
    limit: Option<&str>,
    offset: Option<&str>,
    details: &mut error::Details,
) -> (i64, i64) {
    let limit = match limit.filter(|s| !str::is_empty(s)) {
        None => 20,
        Some(s) => match parse_decimal(s) {
            Some(n) if n < 1 => {
                details.set("limit", "limit must be a positive integer");
                20
            }
            Some(n) if n > 100 => {
                details.set("limit", "limit must not exceed 100");
                20
            }
            Some(n) => n as i64,
            None => {
                details.set("limit", "limit must be a positive integer");
                20
            }
        },
    };
    let offset = match offset.filter(|s| !str::is_empty(s)) {
        None => 0,
        Some(s) => match parse_decimal(s) {
            Some(n) if n < 0 => {
                details.set("offset", "offset must be a non-negative integer");
                0
            }
            Some(n) if n > i32::MAX as i128 => {
                details.set("offset", "offset must not exceed 2147483647");
                0
            }
            Some(n) => n as i64,
            None => {
                details.set("offset", "offset must be a non-negative integer");
                0
            }
        },
    };
    (limit, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_allow_a_sign_and_leading_zeros_only() {
        assert_eq!(parse_decimal("007"), Some(7));
        assert_eq!(parse_decimal("+5"), Some(5));
        assert_eq!(parse_decimal("-0"), Some(0));
        assert_eq!(parse_decimal("-3"), Some(-3));
        for bad in ["", "+", "1.5", "1e3", " 1", "0x10", "١"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
        assert!(
            parse_decimal("99999999999999999999999999999999999999999999").unwrap()
                > i32::MAX as i128
        );
    }

    #[test]
    fn pagination_reports_both_parameters_at_once() {
        let mut d = error::Details::new();
        pagination(Some("0"), Some("-1"), &mut d);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"limit":"limit must be a positive integer","offset":"offset must be a non-negative integer"}"#
        );
        let mut d = error::Details::new();
        assert_eq!(
            pagination(Some("0100"), Some("2147483647"), &mut d),
            (100, 2147483647)
        );
        assert!(d.is_empty());
        assert_eq!(
            pagination(Some(""), Some(""), &mut d),
            (20, 0),
            "empty values count as absent"
        );
        assert!(d.is_empty());
        pagination(Some("101"), Some("2147483648"), &mut d);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"limit":"limit must not exceed 100","offset":"offset must not exceed 2147483647"}"#
        );
    }
}
