//! The cross-cutting rules of docs/api.md ("Identity", "Requests", "Responses"): routing, identity
//! in both modes, body decoding and limits, path ids, error envelopes. Conversation routes serve as
//! the probe.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{As, spawn_app, spawn_app_with, token_for};

#[tokio::test]
async fn an_unknown_path_is_a_plain_text_404_and_trailing_slashes_are_not_tolerated() {
    let app = spawn_app().await;
    let user = As::User(Uuid::new_v4());
    for path in [
        "/nope",
        "/conversations/",
        "/ws",
        "/conversations/x/y/z",
        "/conversations//messages",
    ] {
        let r = app.get_as(path, user).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.text, "404 page not found", "{path}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_known_path_with_another_method_is_405_with_an_empty_body() {
    let app = spawn_app().await;
    for method in ["PATCH", "OPTIONS"] {
        let r = app
            .send(method, "/conversations", As::User(Uuid::new_v4()), None)
            .await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.text, "", "{method}");
    }
    let r = app.send("POST", "/health", As::Nobody, None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn jwt_mode_answers_401_with_www_authenticate_before_any_other_check() {
    let app = spawn_app().await;
    // Even a bad path id and a bad body lose to the missing credential.
    let r = app
        .send(
            "PUT",
            "/conversations/not-a-uuid",
            As::Nobody,
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(r.headers["content-type"], "application/json");
    // X-User-ID is ignored in jwt mode.
    let r = app
        .send("GET", "/conversations", As::Header(Uuid::new_v4()), None)
        .await;
    assert_eq!(r.status, 401);
    // A token signed with another secret, an expired one, garbage.
    let other = shared_auth::mint_token(
        &shared_auth::JwtConfig {
            secret: Some("other".into()),
            ..Default::default()
        },
        Uuid::new_v4(),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    for token in [other.as_str(), "garbage", "a.b.c"] {
        let r = app
            .client
            .get(app.url("/conversations"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{token}");
    }
}

#[tokio::test]
async fn the_token_may_come_from_the_query_and_the_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    let token = token_for(user);
    let r = app
        .client
        .get(app.url(&format!("/conversations?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(app.url("/conversations"))
        .header("Authorization", format!("bEaReR {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn header_mode_takes_x_user_id_in_every_uuid_form_and_400s_without_it() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let user = Uuid::new_v4();
    let group = {
        let r = app
            .post_json(
                "/conversations",
                As::Header(user),
                json!({"type": "group", "name": "g", "participant_ids": [Uuid::new_v4()]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.data()["id"].as_str().unwrap().to_owned()
    };
    for form in [
        user.to_string(),
        user.simple().to_string().to_uppercase(),
        format!("{{{user}}}"),
        format!("urn:uuid:{user}"),
    ] {
        let r = app
            .client
            .get(app.url(&format!("/conversations/{group}")))
            .header("X-User-ID", &form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{form}");
    }
    for bad in [None, Some("nope"), Some("")] {
        let mut req = app.client.get(app.url("/conversations"));
        if let Some(v) = bad {
            req = req.header("X-User-ID", v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": "BAD_REQUEST", "message": "Missing or invalid X-User-ID header"}})
        );
    }
    // A bearer token is not a credential in header mode.
    let r = app
        .client
        .get(app.url("/conversations"))
        .bearer_auth(token_for(user))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn in_header_mode_body_errors_come_before_the_missing_header_on_create() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let r = app
        .send(
            "POST",
            "/conversations",
            As::Nobody,
            Some(b"{oops".to_vec()),
        )
        .await;
    r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    let r = app
        .send("POST", "/conversations", As::Nobody, Some(b"{}".to_vec()))
        .await;
    r.assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
}

#[tokio::test]
async fn malformed_or_mistyped_json_is_invalid_json_body() {
    let app = spawn_app().await;
    let me = As::User(Uuid::new_v4());
    for body in [
        &b""[..],
        b"{",
        b"[]",
        b"\"x\"",
        b"42",
        br#"{"type": 5}"#,
        br#"{"type":"group","participant_ids":"x"}"#,
        br#"{"type":"group","participant_ids":[1]}"#,
        br#"{"type":"group","name":{"a":1}}"#,
        b"\xff\xfe",
    ] {
        let r = app
            .send("POST", "/conversations", me, Some(body.to_vec()))
            .await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
}

#[tokio::test]
async fn null_is_an_empty_object_trailing_bytes_are_ignored_and_keys_are_case_sensitive() {
    let app = spawn_app().await;
    let me = As::User(Uuid::new_v4());
    let r = app
        .send("POST", "/conversations", me, Some(b"null".to_vec()))
        .await;
    r.assert_validation(json!({"type": "type is required", "participant_ids": "at least one participant is required"}));
    let other = Uuid::new_v4();
    let body = format!(r#"{{"type":"direct","participant_ids":["{other}"]}} trailing garbage"#);
    let r = app
        .send("POST", "/conversations", me, Some(body.into_bytes()))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .send(
            "POST",
            "/conversations",
            me,
            Some(br#"{"Type":"group","Participant_ids":[]}"#.to_vec()),
        )
        .await;
    r.assert_validation(json!({"type": "type is required", "participant_ids": "at least one participant is required"}));
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413_whether_declared_or_streamed() {
    let app = spawn_app().await;
    let me = Uuid::new_v4();
    let mut big = br#"{"type":"group","name":""#.to_vec();
    big.resize(1024 * 1024 + 1, b'a');
    let r = app
        .send("POST", "/conversations", As::User(me), Some(big.clone()))
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    // Chunked: no Content-Length, the limit is enforced while reading.
    let stream = futures_util::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = app
        .client
        .post(app.url("/conversations"))
        .bearer_auth(token_for(me))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Exactly at the limit it is read (and judged as JSON).
    big.truncate(1024 * 1024);
    let r = app
        .send("POST", "/conversations", As::User(me), Some(big))
        .await;
    r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
}

#[tokio::test]
async fn path_ids_accept_every_uuid_form_percent_decoded_and_reject_the_rest() {
    let app = spawn_app().await;
    let me = Uuid::new_v4();
    let group = app.create_group(me, &[Uuid::new_v4()]).await;
    for form in [
        group.simple().to_string(),
        format!("%7B{group}%7D"),
        format!("urn:uuid:{}", group.to_string().to_uppercase()),
    ] {
        let r = app
            .get_as(&format!("/conversations/{form}"), As::User(me))
            .await;
        assert_eq!(r.status, 200, "{form}: {}", r.text);
        assert_eq!(
            r.data()["id"],
            group.to_string(),
            "output is lowercase canonical"
        );
    }
    for bad in ["123", "%20", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "😀"] {
        let r = app
            .get_as(&format!("/conversations/{bad}"), As::User(me))
            .await;
        r.assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    }
    // `discover` is a route of its own, never an id.
    let r = app.get_as("/conversations/discover", As::User(me)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn lengths_count_utf8_bytes_and_odd_unicode_is_stored_verbatim() {
    let app = spawn_app().await;
    let me = As::User(Uuid::new_v4());
    let other = Uuid::new_v4();
    // 50 × "é" = 100 bytes: allowed. 51 = 102 bytes: too long although 51 characters.
    let ok = "é".repeat(50);
    let r = app
        .post_json(
            "/conversations",
            me,
            json!({"type": "group", "name": ok, "participant_ids": [other]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["name"], ok);
    let r = app
        .post_json(
            "/conversations",
            me,
            json!({"type": "group", "name": "é".repeat(51), "participant_ids": [other]}),
        )
        .await;
    r.assert_validation(json!({"name": "name must not exceed 100 characters"}));
    let odd = "\u{202e}zero\u{200b}width 🏳️‍🌈 \u{10ffff}";
    let r = app
        .post_json(
            "/conversations",
            me,
            json!({"type": "channel", "name": odd, "participant_ids": [other]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["name"], odd);
}

#[tokio::test]
async fn a_nul_character_which_postgresql_cannot_store_is_refused_not_a_500() {
    let app = spawn_app().await;
    let me = As::User(Uuid::new_v4());
    let other = Uuid::new_v4();
    for body in [
        json!({"type": "group", "name": "a\u{0}b", "participant_ids": [other]}),
        json!({"type": "group", "name": "ok", "description": "\u{0}", "participant_ids": [other]}),
        json!({"type": "group", "name": "ok", "participant_ids": [other, "\u{0}"]}),
    ] {
        let r = app.post_json("/conversations", me, body).await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    // Unknown keys are ignored (docs/api.md, "Requests"), whatever they hold.
    let r = app
        .post_json(
            "/conversations",
            me,
            json!({"type": "group", "name": "ok", "participant_ids": [other], "extra": {"k\u{0}": 1}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // In the path or query a NUL is an ordinary value: no search term holding one matches…
    for path in [
        "/conversations?search=%00",
        "/conversations/discover?search=a%00b",
    ] {
        let r = app.get_as(path, me).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(
            r.json(),
            json!({"data": [], "pagination": {"total": 0, "limit": 20, "offset": 0}}),
            "{path}"
        );
    }
    // … an id holding one is not a UUID (PATH-C), and the credential check still comes first.
    let r = app.get_as("/conversations/%00", me).await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    for path in ["/conversations/%00", "/conversations?token=%00"] {
        let r = app.get_as(path, As::Nobody).await;
        r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    }
}

#[tokio::test]
async fn path_segments_that_are_not_utf8_get_the_routes_own_answers() {
    let app = spawn_app().await;
    let me = Uuid::new_v4();
    let conv = app.create_group(me, &[Uuid::new_v4()]).await;
    let r = app
        .post_json(
            &format!("/conversations/{conv}/messages"),
            As::User(me),
            json!({"content": "x"}),
        )
        .await;
    let message = r.data()["id"].as_str().unwrap().to_owned();
    // jwt: the credential check first (docs/api.md, "Identity"), never a plain-text "invalid path
    // params".
    let r = app.get_as("/conversations/%FF", As::Nobody).await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    for (path, message_text) in [
        (
            "/conversations/%FF".to_owned(),
            "Invalid conversation ID format, expected UUID",
        ),
        (
            format!("/conversations/{conv}/participants/%C3"),
            "Invalid user ID format, expected UUID",
        ),
        (
            format!("/conversations/{conv}/pins/%FE%FF"),
            "Invalid message ID format, expected UUID",
        ),
    ] {
        let method = if path.contains("/pins/") || path.contains("/participants/") {
            "DELETE"
        } else {
            "GET"
        };
        let r = app.send(method, &path, As::User(me), None).await;
        r.assert_error(400, "BAD_REQUEST", message_text);
    }
    // An emoji that is no text (or holds a NUL) was never stored: removing it is the no-op 204.
    for emoji in ["%FF", "%00", "a%F0%9F"] {
        let r = app
            .delete_as(
                &format!("/messages/{message}/reactions/{emoji}"),
                As::User(me),
            )
            .await;
        assert_eq!(r.status, 204, "{emoji}: {}", r.text);
    }
    // Not a name this service produces: the plain 404.
    let r = app.get_as("/uploads/%FF", As::Nobody).await;
    assert_eq!((r.status, r.text.as_str()), (404, "404 page not found"));
}

#[tokio::test]
async fn responses_carry_application_json_without_charset() {
    let app = spawn_app().await;
    let r = app.get_as("/conversations", As::User(Uuid::new_v4())).await;
    assert_eq!(r.headers["content-type"], "application/json");
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["data", "pagination"]);
}

#[tokio::test]
async fn demo_dir_is_served_under_demo_and_nothing_is_without_it() {
    let dir = std::env::temp_dir().join(format!("retich-demo-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
    std::fs::write(dir.join("app.js"), "export const demo = 1;").unwrap();
    let app = spawn_app_with(&[("DEMO_DIR", dir.to_str().unwrap())]).await;

    // `/demo` redirects to `/demo/`, whose index is the page (the client follows the redirect).
    let r = app.get("/demo").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/demo/");
    assert_eq!(
        r.text().await.unwrap(),
        "<!doctype html><title>demo</title>"
    );
    let r = app.get("/demo/app.js").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    // Nothing outside the folder, and the API's own routes are unchanged.
    assert_eq!(app.get("/demo/../Cargo.toml").await.status(), 404);
    assert_eq!(app.get("/demo/missing.js").await.status(), 404);
    assert_eq!(app.get("/conversations/").await.status(), 404);
    app.shutdown().await;

    let app = spawn_app().await;
    for path in ["/demo", "/demo/", "/demo/index.html"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.text().await.unwrap(), "404 page not found", "{path}");
    }
    app.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
