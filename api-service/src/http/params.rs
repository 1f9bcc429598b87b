//! The typed path and query parameters of the REST routes: conversation, message and user ids in
//! the path, and the paging values `limit`, `offset`, `after_seq`, `before_seq` and `q` in the
//! query. Each type tells the OpenAPI document what it accepts (`format: uuid`, an integer range
//! and its default), and parses the raw value during extraction.
//!
//! None of them fails extraction. poem-openapi extracts every parameter before the handler runs,
//! and a failure there ends the request with a generic 400 (`ParseParamError`, answered in
//! `startup.rs`) before any step of the route. But each route checks its request in a fixed
//! order (docs/api.md, "Errors"), with its own messages: a malformed path id is judged at the
//! route's `PATH-*` step, which comes before the body on some routes and after it on others, and
//! bad paging values only after the caller's identity (`HDR`). So each type holds its parse
//! outcome, valid or not, and the handler raises the error at its step:
//! [`ConversationId::get`], [`Paging::read`], [`SeqBound::read`], [`SearchQuery::get`].

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseFromParameter, ParseResult, Type},
};
use serde_json::json;
use uuid::Uuid;

use crate::error::{self, ApiError, Details};

/// Implements poem-openapi's [`Type`] for a parameter type: its name, whether the parameter is
/// required, and the schema the document shows for it.
macro_rules! parameter_type {
    ($ty:ty, name = $name:literal, required = $required:literal, schema = $schema:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = $required;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(std::iter::once(self))
            }
        }
    };
}

// ----- path ids ---------------------------------------------------------------------------------

/// A UUID path variable: any segment is taken, parsed with [`shared_auth::parse_uuid`] (the
/// forms of docs/api.md, "Formats"); one that is not a UUID is answered by `get` with the
/// id's own 400 `BAD_REQUEST` message, at the step where the route judges it.
macro_rules! uuid_path_id {
    ($(#[$doc:meta])* $ty:ident, $step:literal, $invalid:path) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty(Option<Uuid>);

        impl $ty {
            #[doc = concat!("The `", $step, "` step: the id, or 400 `BAD_REQUEST` when the")]
            /// segment is not a UUID.
            pub fn get(&self) -> Result<Uuid, ApiError> {
                self.0.ok_or(ApiError::BadRequest($invalid))
            }
        }

        parameter_type!(
            $ty,
            name = "string_uuid",
            required = true,
            schema = MetaSchema::new_with_format("string", "uuid")
        );

        impl ParseFromParameter for $ty {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Ok(Self(shared_auth::parse_uuid(value)))
            }
        }
    };
}

uuid_path_id!(
    /// A conversation id in the path (`/conversations/{id}/…`).
    ConversationId,
    "PATH-C",
    error::INVALID_CONVERSATION_ID
);
uuid_path_id!(
    /// A message id in the path (`/messages/{id}/…`, `/conversations/{id}/pins/{messageId}`).
    MessageId,
    "PATH-M",
    error::INVALID_MESSAGE_ID
);
uuid_path_id!(
    /// A user id in the path (`/conversations/{id}/participants/{userId}`).
    UserId,
    "PATH-U",
    error::INVALID_USER_ID
);

// ----- integers in the query --------------------------------------------------------------------

/// An integer query value as sent. An empty value (`?limit=`) counts as absent (docs/api.md,
/// "Paging"); of a repeated key the first value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decimal {
    Absent,
    /// `None` when the value is not a decimal integer.
    Given(Option<i128>),
}

impl Decimal {
    fn parse<I: IntoIterator<Item = A>, A: AsRef<str>>(values: I) -> Self {
        match values.into_iter().next() {
            Some(v) if !v.as_ref().is_empty() => Self::Given(parse_decimal(v.as_ref())),
            _ => Self::Absent,
        }
    }
}

/// Parses a decimal integer with an optional sign and leading zeros; `None` when it is not one.
/// Values beyond i64 saturate (they are only compared with limits).
fn parse_decimal(s: &str) -> Option<i128> {
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

/// An integer schema with its bounds, and its default when it has one.
fn integer_schema(
    format: &'static str,
    min: i64,
    max: Option<i64>,
    default: Option<i64>,
) -> MetaSchema {
    MetaSchema {
        minimum: Some(min as f64),
        maximum: max.map(|m| m as f64),
        default: default.map(|d| json!(d)),
        ..MetaSchema::new_with_format("integer", format)
    }
}

/// Implements [`ParseFromParameter`] for a query integer holding a [`Decimal`]: absence is
/// handled here, so the type is used as `Query<Limit>`, not `Query<Option<Limit>>`.
macro_rules! decimal_parameter {
    ($ty:ty) => {
        impl ParseFromParameter for $ty {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                Ok(Self(Decimal::parse([value])))
            }

            fn parse_from_parameters<I: IntoIterator<Item = A>, A: AsRef<str>>(
                values: I,
            ) -> ParseResult<Self> {
                Ok(Self(Decimal::parse(values)))
            }
        }
    };
}

/// Largest `limit`.
const MAX_LIMIT: i128 = 100;
/// `limit` when absent (or invalid, while its error is collected).
const DEFAULT_LIMIT: i64 = 20;
/// Largest `offset` (docs/api.md, "Paging").
const MAX_OFFSET: i128 = i32::MAX as i128;

/// `limit`: how many items a page holds, 1 to 100, default 20.
#[derive(Debug, Clone, Copy)]
pub struct Limit(Decimal);

parameter_type!(
    Limit,
    name = "integer_limit",
    required = false,
    schema = integer_schema("int32", 1, Some(MAX_LIMIT as i64), Some(DEFAULT_LIMIT))
);
decimal_parameter!(Limit);

/// `offset`: how many items to skip, 0 to 2147483647, default 0.
#[derive(Debug, Clone, Copy)]
pub struct Offset(Decimal);

parameter_type!(
    Offset,
    name = "integer_offset",
    required = false,
    schema = integer_schema("int32", 0, Some(MAX_OFFSET as i64), Some(0))
);
decimal_parameter!(Offset);

impl Offset {
    /// Whether a non-empty `offset` was sent (history cannot combine it with a `seq` bound).
    pub fn is_given(&self) -> bool {
        self.0 != Decimal::Absent
    }
}

/// The effective `limit` and `offset` of a paginated route (docs/api.md, "Paging").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
}

impl Paging {
    /// The `PAGE` step's judgement of both values: the effective ones, each failure added to
    /// `details` (a failing value takes its default meanwhile), so one `VALIDATION_ERROR` can
    /// list both.
    pub fn read(limit: &Limit, offset: &Offset, details: &mut Details) -> Self {
        let limit = match limit.0 {
            Decimal::Absent => DEFAULT_LIMIT,
            Decimal::Given(Some(n)) if n > MAX_LIMIT => {
                details.set("limit", "limit must not exceed 100");
                DEFAULT_LIMIT
            }
            Decimal::Given(Some(n)) if n >= 1 => n as i64,
            Decimal::Given(_) => {
                details.set("limit", "limit must be a positive integer");
                DEFAULT_LIMIT
            }
        };
        let offset = match offset.0 {
            Decimal::Absent => 0,
            Decimal::Given(Some(n)) if n > MAX_OFFSET => {
                details.set("offset", "offset must not exceed 2147483647");
                0
            }
            Decimal::Given(Some(n)) if n >= 0 => n as i64,
            Decimal::Given(_) => {
                details.set("offset", "offset must be a non-negative integer");
                0
            }
        };
        Self { limit, offset }
    }

    /// The `PAGE` step on its own: the effective values, or a `VALIDATION_ERROR` listing each
    /// failing one.
    pub fn check(limit: &Limit, offset: &Offset) -> Result<Self, ApiError> {
        let mut details = Details::new();
        let paging = Self::read(limit, offset, &mut details);
        details.into_result()?;
        Ok(paging)
    }
}

/// `after_seq` or `before_seq` of message history: a non-negative integer (docs/api.md,
/// "Message history by `seq`"). Values beyond i64 are taken as i64's largest.
#[derive(Debug, Clone, Copy)]
pub struct SeqBound(Decimal);

parameter_type!(
    SeqBound,
    name = "integer_seq",
    required = false,
    schema = integer_schema("int64", 0, None, None)
);
decimal_parameter!(SeqBound);

impl SeqBound {
    /// Whether a non-empty value was sent, valid or not.
    pub fn is_given(&self) -> bool {
        self.0 != Decimal::Absent
    }

    /// The bound (`None` when absent), or `None` with `"{name} must be a non-negative integer"`
    /// added to `details`.
    pub fn read(&self, name: &'static str, details: &mut Details) -> Option<i64> {
        match self.0 {
            Decimal::Absent => None,
            Decimal::Given(Some(n)) if n >= 0 => Some(n.min(i64::MAX as i128) as i64),
            Decimal::Given(_) => {
                details.set(name, format!("{name} must be a non-negative integer"));
                None
            }
        }
    }
}

// ----- search text -------------------------------------------------------------------------------

/// Longest search query `q`, in UTF-8 bytes.
const MAX_QUERY: usize = 200;

/// `q` of message search: required and at most 200 bytes. Its absence is answered by
/// [`Self::get`] like an empty value, as a `VALIDATION_ERROR` at the route's step.
pub struct SearchQuery(String);

parameter_type!(
    SearchQuery,
    name = "string_search_query",
    required = true,
    schema = MetaSchema {
        min_length: Some(1),
        ..MetaSchema::new("string")
    }
);

impl ParseFromParameter for SearchQuery {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }

    fn parse_from_parameters<I: IntoIterator<Item = A>, A: AsRef<str>>(
        values: I,
    ) -> ParseResult<Self> {
        let first = values.into_iter().next();
        Ok(Self(
            first.map(|v| v.as_ref().to_owned()).unwrap_or_default(),
        ))
    }
}

impl SearchQuery {
    /// The query, or the `VALIDATION_ERROR` of an empty or missing one, or of one over 200
    /// bytes.
    pub fn get(&self) -> Result<&str, ApiError> {
        if self.0.is_empty() {
            return Err(Details::one("q", "search query is required"));
        }
        if self.0.len() > MAX_QUERY {
            return Err(Details::one(
                "q",
                "search query must not exceed 200 characters",
            ));
        }
        Ok(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(s: &str) -> Limit {
        Limit::parse_from_parameters([s]).unwrap()
    }

    fn offset(s: &str) -> Offset {
        Offset::parse_from_parameters([s]).unwrap()
    }

    fn seq_bound(s: Option<&str>) -> Option<Option<i64>> {
        let bound = SeqBound::parse_from_parameters(s).unwrap();
        let mut d = Details::new();
        let value = bound.read("after_seq", &mut d);
        d.is_empty().then_some(value)
    }

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
        Paging::read(&limit("0"), &offset("-1"), &mut d);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"limit":"limit must be a positive integer","offset":"offset must be a non-negative integer"}"#
        );
        let mut d = error::Details::new();
        assert_eq!(
            Paging::read(&limit("0100"), &offset("2147483647"), &mut d),
            Paging {
                limit: 100,
                offset: 2147483647
            }
        );
        assert!(d.is_empty());
        assert_eq!(
            Paging::read(&limit(""), &offset(""), &mut d),
            Paging {
                limit: 20,
                offset: 0
            },
            "empty values count as absent"
        );
        assert!(d.is_empty());
        Paging::read(&limit("101"), &offset("2147483648"), &mut d);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"limit":"limit must not exceed 100","offset":"offset must not exceed 2147483647"}"#
        );
    }

    #[test]
    fn seq_bounds_accept_non_negative_decimals_only() {
        assert_eq!(seq_bound(None), Some(None));
        assert_eq!(seq_bound(Some("")), Some(None));
        assert_eq!(seq_bound(Some("007")), Some(Some(7)));
        assert_eq!(seq_bound(Some("-0")), Some(Some(0)));
        assert_eq!(
            seq_bound(Some("99999999999999999999999")),
            Some(Some(i64::MAX))
        );
        for bad in ["-1", "1.5", "x", " 1"] {
            assert_eq!(seq_bound(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn a_malformed_path_id_is_kept_for_its_step() {
        let id = Uuid::new_v4();
        let parsed = ConversationId::parse_from_parameter(&id.simple().to_string()).unwrap();
        assert_eq!(parsed.get().unwrap(), id);
        let bad = MessageId::parse_from_parameter("nope").unwrap();
        assert!(matches!(
            bad.get(),
            Err(ApiError::BadRequest(error::INVALID_MESSAGE_ID))
        ));
    }

    #[test]
    fn the_first_of_repeated_values_counts() {
        let both = Limit::parse_from_parameters(["5", "500"]).unwrap();
        assert_eq!(
            Paging::check(&both, &offset("")).unwrap(),
            Paging {
                limit: 5,
                offset: 0
            }
        );
    }
}
