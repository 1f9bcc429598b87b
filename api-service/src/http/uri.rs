//! The URI rules applied before routing (by the middleware of [`crate::startup::build_routes`]):
//! paths with an empty segment are unknown paths, and path segments whose percent-decoding is not
//! UTF-8 are replaced so that the route's own check order judges them. Also the U+0000 test that
//! routes apply to values taken from the path or query.

use percent_encoding::percent_decode_str;
use poem::{Response, http::Uri};

use super::envelope::not_found;

/// The URI rule that applies before routing: a path with an empty segment (`//`, or a trailing
/// `/`) matches no route — path variables are non-empty — so it is the plain 404 of an unknown
/// path (docs/api.md, "Requests"). The one exception is `/demo/`, the demo's index page when
/// `DEMO_DIR` is set (without it, `/demo/` matches no route and is the same 404).
///
/// Values that PostgreSQL cannot hold (U+0000, in a path segment or a query value) are not
/// refused here: the credential check comes first (docs/api.md, "Identity"), and then each route
/// judges them like any other value — an id containing one is not a UUID, an emoji or search
/// term containing one matches nothing stored (see [`has_nul`]).
pub fn guard_uri(uri: &Uri) -> Option<Response> {
    const DEMO_INDEX: &str = "/demo/";
    let path = uri.path();
    if path.len() > 1 && (path.contains("//") || (path.ends_with('/') && path != DEMO_INDEX)) {
        return Some(not_found());
    }
    None
}

/// The router drops a path variable whose percent-decoding is not UTF-8, and the operation then
/// fails with a plain-text 400 before the credential check. Such a segment can be no id, object
/// name or stored emoji, so it is replaced by `%00` (U+0000, which is equally none of them) and
/// the request takes the route's ordinary check order. `None` when nothing needs replacing.
///
/// A `%` not followed by two hex digits is kept as it is, and `+` is not a space in a path.
pub fn sanitize_path(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let bad = |seg: &str| seg.contains('%') && percent_decode_str(seg).decode_utf8().is_err();
    if !path.split('/').any(bad) {
        return None;
    }
    let fixed: Vec<&str> = path
        .split('/')
        .map(|seg| if bad(seg) { "%00" } else { seg })
        .collect();
    let mut path_and_query = fixed.join("/");
    if let Some(q) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

/// Whether a value taken from the path or query holds U+0000, which no stored text can contain
/// (PostgreSQL refuses it): such an emoji or search term matches nothing.
pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_that_do_not_decode_to_utf8_become_nul() {
        let fix = |s: &str| sanitize_path(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(fix("/conversations/abc"), None);
        assert_eq!(fix("/messages/x/reactions/%F0%9F%91%8D"), None);
        assert_eq!(fix("/messages/x/reactions/100%"), None);
        assert_eq!(fix("/conversations/%FF"), Some("/conversations/%00".into()));
        assert_eq!(
            fix("/conversations/%e9x/messages?limit=%FF"),
            Some("/conversations/%00/messages?limit=%FF".into())
        );
        assert_eq!(fix("/uploads/a%F0%9F"), Some("/uploads/%00".into()));
    }
}
