//! The caller's identity ([`Caller`]), taken as docs/api.md ("Identity") describes: in jwt mode
//! the token (`Authorization: Bearer`, else `?token=`) is verified during extraction, so a bad
//! credential is answered 401 before anything else; in header mode the `X-User-ID` outcome is
//! kept for the route's `HDR` step.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaSecurityScheme, Registry},
};
use uuid::Uuid;

use crate::{
    config::AuthMode,
    error::{self, ApiError},
    state::AppState,
};

/// The caller's identity as far as it is known after extraction.
pub struct Caller {
    /// jwt mode: the verified user. header mode: the parsed `X-User-ID`, or `None` when it is
    /// missing or invalid (reported at the route's `HDR` step).
    user: Option<Uuid>,
    /// The bearer token, forwarded to the user service (jwt mode only; never logged).
    pub token: Option<String>,
}

impl Caller {
    /// The `HDR` step: the caller's id, or 400 in header mode.
    pub fn user(&self) -> Result<Uuid, ApiError> {
        self.user
            .ok_or(ApiError::BadRequest(error::INVALID_USER_HEADER))
    }
}

fn query_param<'a>(req: &'a Request, name: &str) -> Option<Cow<'a, str>> {
    let query = req.uri().query()?;
    form_pairs(query).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs of a query string, percent-decoded (`+` is a space).
pub fn form_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k), decode_component(v))
    })
}

/// One percent-decoded component of a query string: `+` is a space, then `%XX` is the byte `XX`
/// (a `%` not followed by two hex digits is kept as it is); bytes that are not UTF-8 become
/// U+FFFD.
fn decode_component(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return s.into();
    }
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
        .into()
}

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            "bearer",
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "AUTH_MODE=jwt: `Authorization: Bearer <JWT>` (or `?token=`). AUTH_MODE=header: `X-User-ID` set by the ReTiCh API gateway.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["bearer"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .expect("AppState is attached to every route");
        match state.settings.auth.mode {
            AuthMode::Header => {
                let user = req
                    .headers()
                    .get("x-user-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(shared_auth::parse_uuid);
                Ok(Caller { user, token: None })
            }
            AuthMode::Jwt => {
                let header = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let query = query_param(req, "token");
                let token = shared_auth::bearer_token(header, query.as_deref())
                    .ok_or(ApiError::Unauthorized)?;
                match state.verifier.verify(token).await {
                    Ok(user) => Ok(Caller {
                        user: Some(user),
                        token: Some(token.to_owned()),
                    }),
                    Err(e) => {
                        tracing::debug!(reason = %e, "credential rejected");
                        Err(ApiError::Unauthorized.into())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(decode_component("a%20b+c"), "a b c");
        assert_eq!(decode_component("%F0%9F%91%8D"), "👍");
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz"), "%zz");
        assert_eq!(
            decode_component("1%2B1"),
            "1+1",
            "an encoded plus stays a plus"
        );
    }
}
