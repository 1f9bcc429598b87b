//! The OpenAPI document is generated from the code; this snapshot makes every API change show in
//! review. After an intended change: `UPDATE_SNAPSHOTS=1 cargo test -p api-service --test api openapi`.

use crate::helpers::spawn_app;

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/api/snapshots/openapi.json"
);

#[tokio::test]
async fn the_openapi_document_matches_the_reviewed_snapshot() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(SNAPSHOT).parent().unwrap()).unwrap();
        std::fs::write(SNAPSHOT, &pretty).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(SNAPSHOT).expect("snapshot exists (UPDATE_SNAPSHOTS=1 creates it)");
    assert!(
        expected == pretty,
        "the OpenAPI document changed; review and run with UPDATE_SNAPSHOTS=1"
    );
}

#[tokio::test]
async fn the_document_lists_every_route_of_the_contract() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/conversations", "post"),
        ("/conversations", "get"),
        ("/conversations/discover", "get"),
        ("/conversations/{id}", "get"),
        ("/conversations/{id}", "put"),
        ("/conversations/{id}", "delete"),
        ("/conversations/{id}/join", "post"),
        ("/conversations/{id}/participants", "post"),
        ("/conversations/{id}/participants/{userId}", "put"),
        ("/conversations/{id}/participants/{userId}", "delete"),
        ("/conversations/{id}/messages", "post"),
        ("/conversations/{id}/messages", "get"),
        ("/conversations/{id}/messages/search", "get"),
        ("/conversations/{id}/typing", "get"),
        ("/conversations/{id}/read", "post"),
        ("/conversations/{id}/read", "get"),
        ("/conversations/{id}/pins", "post"),
        ("/conversations/{id}/pins/{messageId}", "delete"),
        ("/conversations/{id}/pins", "get"),
        ("/conversations/{id}/media", "get"),
        ("/messages/{id}", "get"),
        ("/messages/{id}", "put"),
        ("/messages/{id}", "delete"),
        ("/messages/{id}/reactions", "post"),
        ("/messages/{id}/reactions/{emoji}", "delete"),
        ("/messages/{id}/reactions", "get"),
        ("/messages/{id}/attachments", "post"),
        ("/messages/{id}/attachments", "get"),
        ("/uploads/{name}", "get"),
        ("/health", "get"),
        ("/ready", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the document"
        );
    }
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("openapi"),
        "docs page renders the document"
    );
}

#[tokio::test]
async fn each_operation_documents_what_it_can_answer() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    let mut operations = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            operations += 1;
            let id = op["operationId"].as_str().unwrap();
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let authenticated = op.get("security").is_some();
            assert_eq!(
                has("401"),
                authenticated,
                "{id}: 401 where a credential is required"
            );
            if authenticated {
                assert!(has("400"), "{id}: the X-User-ID check of header mode");
                assert!(has("500"), "{id}: a database failure");
            }
            let json_body = op["requestBody"]["content"]
                .get("application/json")
                .is_some();
            assert_eq!(has("413"), json_body, "{id}: 413 exactly on JSON bodies");
            assert_eq!(
                has("429"),
                id == "sendMessage",
                "{id}: only sends are rate limited"
            );
            for (status, response) in responses {
                let Some(body) = response["content"].get("application/json") else {
                    continue;
                };
                let schema = &body["schema"];
                let schema = match schema["$ref"].as_str() {
                    Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
                    None => schema,
                };
                if status.starts_with('2') {
                    assert!(
                        schema.get("example").is_some(),
                        "{id}: {status} has no example"
                    );
                }
            }
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" && param["name"] != "emoji" && param["name"] != "name" {
                    assert_eq!(
                        param["schema"]["format"], "uuid",
                        "{id}: path parameter {}",
                        param["name"]
                    );
                }
            }
        }
    }
    assert_eq!(operations, 31);
}
