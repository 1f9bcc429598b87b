//! Attachments (docs/api.md, "Uploads and downloads"): the upload's ten ordered steps with their
//! exact errors, content sniffing for every allowed type, size limits, server-chosen object names,
//! thumbnails of real images, durations and video sizes of real audio and video (`tests/fixtures`,
//! made as its README says), bad media stored without them, the download's headers and ranges, the
//! per-message list and the media gallery.
//!
//! Every test stores into its own `UPLOAD_DIR`, so "nothing was stored" is checked by listing it.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{As, Reply, TestApp, spawn_app_with, token_for};

const BOUNDARY: &str = "retich-test-7MA4YWxkTrZu0gW";
const MIB: usize = 1024 * 1024;

const INVALID_FORM: &str = "File too large or invalid multipart form";
const MISSING_FILE: &str = "Missing 'file' field in multipart form";

// ----- fixtures -----------------------------------------------------------------------------------

/// A per-test upload directory, removed at the end.
struct UploadDir(PathBuf);

impl UploadDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("retich-uploads-{}", Uuid::new_v4())))
    }

    /// Names of the stored objects, sorted.
    fn objects(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.0) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

impl Drop for UploadDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An app with its own upload directory, a group (owner + member) and one message in it.
struct Setup {
    app: TestApp,
    dir: UploadDir,
    owner: Uuid,
    member: Uuid,
    conv: Uuid,
    message: Uuid,
}

async fn setup_with(extra: &[(&str, &str)]) -> Setup {
    let dir = UploadDir::new();
    let mut vars = vec![("UPLOAD_DIR", dir.0.to_str().unwrap())];
    vars.extend_from_slice(extra);
    let app = spawn_app_with(&vars).await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[member]).await;
    let message = send(&app, conv, As::User(owner)).await;
    Setup {
        app,
        dir,
        owner,
        member,
        conv,
        message,
    }
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

/// Sends a text message as `who`; returns its id.
async fn send(app: &TestApp, conversation: Uuid, who: As) -> Uuid {
    let r = app
        .post_json(
            &format!("/conversations/{conversation}/messages"),
            who,
            json!({"content": "see attached"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()["id"].as_str().unwrap().parse().unwrap()
}

/// One part of a hand-built multipart body.
struct Part {
    name: &'static str,
    filename: Option<String>,
    /// `None`: no Content-Type header at all.
    content_type: Option<String>,
    data: Vec<u8>,
}

impl Part {
    fn file(filename: &str, content_type: Option<&str>, data: impl Into<Vec<u8>>) -> Self {
        Self {
            name: "file",
            filename: Some(filename.to_owned()),
            content_type: content_type.map(str::to_owned),
            data: data.into(),
        }
    }

    fn field(name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name,
            filename: None,
            content_type: None,
            data: value.into(),
        }
    }
}

/// The body of a multipart form with [`BOUNDARY`].
fn form(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"",
                p.name
            )
            .as_bytes(),
        );
        if let Some(f) = &p.filename {
            body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = &p.content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// POSTs a raw body to `path` with the given Content-Type, as `who`.
async fn post_raw(
    app: &TestApp,
    path: &str,
    who: As,
    content_type: Option<&str>,
    body: reqwest::Body,
) -> Reply {
    let mut req = app.client.post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    match who {
        As::Nobody => {}
        As::User(u) => req = req.bearer_auth(token_for(u)),
        As::Header(u) => req = req.header("X-User-ID", u.to_string()),
    }
    let resp = req.send().await.expect("request");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap_or_default(),
    }
}

/// Uploads a form to `message` as `who`.
async fn upload(app: &TestApp, message: Uuid, who: As, parts: &[Part]) -> Reply {
    post_raw(
        app,
        &format!("/messages/{message}/attachments"),
        who,
        Some(&multipart_type()),
        form(parts).into(),
    )
    .await
}

/// Uploads one file as the message's owner.
async fn upload_file(
    s: &Setup,
    filename: &str,
    content_type: Option<&str>,
    data: impl Into<Vec<u8>>,
) -> Reply {
    upload(
        &s.app,
        s.message,
        As::User(s.owner),
        &[Part::file(filename, content_type, data)],
    )
    .await
}

/// Asserts the upload failed at step 7, 8 or 9 with this `file` message.
#[track_caller]
fn assert_file_error(r: &Reply, message: &str) {
    r.assert_validation(json!({ "file": message }));
}

fn not_allowed(mime: &str) -> String {
    format!("File type '{mime}' is not allowed")
}

const MISMATCH: &str = "File content does not match its declared type";
const TOO_LARGE: &str = "File exceeds maximum allowed size";

async fn attachment_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from attachments")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Nothing in the object store, nothing in the table.
async fn assert_nothing_stored(s: &Setup) {
    assert_eq!(
        s.dir.objects(),
        Vec::<String>::new(),
        "no object may be stored"
    );
    assert_eq!(
        attachment_rows(&s.app).await,
        0,
        "no attachment row may exist"
    );
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut d = b"\x89PNG\r\n\x1A\n\0\0\0\x0DIHDR".to_vec();
    d.extend_from_slice(&width.to_be_bytes());
    d.extend_from_slice(&height.to_be_bytes());
    d.extend_from_slice(b"\x08\x06\0\0\0\x1F\x15\xC4\x89\0\0\0\0IEND\xAE\x42\x60\x82");
    d
}

/// A JPEG whose baseline frame header says 8×4.
fn jpeg() -> Vec<u8> {
    let mut d = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
    d.extend_from_slice(
        b"\xFF\xC0\x00\x11\x08\x00\x04\x00\x08\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    );
    d.extend_from_slice(b"\xFF\xD9");
    d
}

/// A small file of one allowed type: (type, stored extension, good bytes, dimensions).
type Sample = (&'static str, &'static str, Vec<u8>, Option<(i64, i64)>);

/// A small file of each allowed type.
fn samples() -> Vec<Sample> {
    vec![
        ("image/jpeg", ".jpg", jpeg(), Some((8, 4))),
        ("image/png", ".png", png(3, 2), Some((3, 2))),
        (
            "image/gif",
            ".gif",
            b"GIF89a\x05\x00\x06\x00\x80\x00\x00;".to_vec(),
            Some((5, 6)),
        ),
        (
            "image/webp",
            ".webp",
            b"RIFF\x16\0\0\0WEBPVP8X\x0A\0\0\0\0\0\0\0\x0F\0\0\x08\0\0".to_vec(),
            Some((16, 9)),
        ),
        (
            "video/mp4",
            ".mp4",
            b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec(),
            None,
        ),
        (
            "video/quicktime",
            ".mov",
            b"\0\0\0\x08wide\0\0\0\x10mdat\0\0\0\0\0\0\0\0".to_vec(),
            None,
        ),
        (
            "video/webm",
            ".webm",
            b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01".to_vec(),
            None,
        ),
        (
            "audio/webm",
            ".weba",
            b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01".to_vec(),
            None,
        ),
        (
            "audio/mp4",
            ".m4a",
            b"\0\0\0\x18ftypM4A \0\0\0\0M4A isom".to_vec(),
            None,
        ),
        (
            "audio/mpeg",
            ".mp3",
            b"ID3\x04\0\0\0\0\0\0\xFF\xFB\x90\x00".to_vec(),
            None,
        ),
        (
            "audio/ogg",
            ".ogg",
            b"OggS\0\x02\0\0\0\0\0\0\0\0".to_vec(),
            None,
        ),
        (
            "audio/wav",
            ".wav",
            b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0".to_vec(),
            None,
        ),
        (
            "application/pdf",
            ".pdf",
            b"%PDF-1.7\n%%EOF\n".to_vec(),
            None,
        ),
        (
            "text/plain",
            ".txt",
            "héllo, wörld\n\ttabs and a <tag> later\n"
                .as_bytes()
                .to_vec(),
            None,
        ),
        (
            "application/zip",
            ".zip",
            b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
            None,
        ),
        (
            "application/msword",
            ".doc",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0\0\0\0".to_vec(),
            None,
        ),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ".docx",
            b"PK\x03\x04\x14\0\x06\0\x08\0".to_vec(),
            None,
        ),
    ]
}

/// The object name at the end of a file_url.
fn object_name(file_url: &Value) -> String {
    file_url
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[track_caller]
fn assert_server_name(name: &str, ext: &str) {
    let (uuid, rest) = name.split_at(36);
    let parsed = Uuid::parse_str(uuid).unwrap_or_else(|_| panic!("{name} is not <uuid>{ext}"));
    assert_eq!(parsed.to_string(), uuid, "{name}");
    assert_eq!(rest, ext, "{name}");
}

// ----- upload: success ----------------------------------------------------------------------------

#[tokio::test]
async fn an_upload_stores_the_file_under_a_server_chosen_name_and_publishes_the_updated_message() {
    let s = setup().await;
    let mut events = s.app.conversation_events(s.conv).await;
    let bytes = png(640, 480);

    // Any participant may attach to any message of the conversation.
    let r = upload(
        &s.app,
        s.message,
        As::User(s.member),
        &[Part::file("holiday.png", Some("image/png"), bytes.clone())],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let a = r.data();
    let mut keys: Vec<_> = a.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "file_name",
            "file_size",
            "file_type",
            "file_url",
            "height",
            "id",
            "message_id",
            "width"
        ]
    );
    assert_eq!(a["message_id"], s.message.to_string());
    assert_eq!(a["file_name"], "holiday.png");
    assert_eq!(a["file_type"], "image/png");
    assert_eq!(a["file_size"], bytes.len());
    assert_eq!(
        (a["width"].clone(), a["height"].clone()),
        (json!(640), json!(480))
    );

    // file_url = default base (the bound port) + "/" + <uuid>.png; the object holds the bytes.
    let port = s.app.address.rsplit(':').next().unwrap();
    let name = object_name(&a["file_url"]);
    assert_eq!(
        a["file_url"],
        format!("http://localhost:{port}/uploads/{name}")
    );
    assert_server_name(&name, ".png");
    assert_eq!(s.dir.objects(), std::slice::from_ref(&name));
    assert_eq!(std::fs::read(s.dir.0.join(&name)).unwrap(), bytes);

    let (file_name, file_type, size, url, w, h): (String, String, i64, String, Option<i32>, Option<i32>) =
        sqlx::query_as("select file_name, file_type, file_size, file_url, width, height from attachments where id = $1")
            .bind(Uuid::parse_str(a["id"].as_str().unwrap()).unwrap())
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    assert_eq!(
        (
            file_name.as_str(),
            file_type.as_str(),
            size,
            url.as_str(),
            w,
            h
        ),
        (
            "holiday.png",
            "image/png",
            bytes.len() as i64,
            a["file_url"].as_str().unwrap(),
            Some(640),
            Some(480)
        )
    );

    // message.updated carries the message with its attachments, as GET /messages/{id} shows it.
    let frame = events.next_frame().await;
    assert_eq!(frame["type"], "message.updated");
    assert_eq!(frame["conversation_id"], s.conv.to_string());
    let message = s
        .app
        .get_as(&format!("/messages/{}", s.message), As::User(s.owner))
        .await
        .data();
    assert_eq!(message["attachments"], json!([a]));
    assert_eq!(frame["payload"], message);
    events.assert_quiet(200).await;
}

#[tokio::test]
async fn every_allowed_type_is_accepted_with_its_magic_bytes_and_rejected_without_them() {
    let s = setup().await;
    let mut stored = Vec::new();
    for (mime, ext, good, dims) in samples() {
        let r = upload_file(&s, &format!("sample{ext}"), Some(mime), good.clone()).await;
        assert_eq!(r.status, 201, "{mime}: {}", r.text);
        let a = r.data();
        assert_eq!(a["file_type"], mime);
        assert_eq!(a["file_size"], good.len());
        let name = object_name(&a["file_url"]);
        assert_server_name(&name, ext);
        match dims {
            Some((w, h)) => assert_eq!(
                (a["width"].as_i64(), a["height"].as_i64()),
                (Some(w), Some(h)),
                "{mime}"
            ),
            None => assert!(
                a.get("width").is_none() && a.get("height").is_none(),
                "{mime}: {a}"
            ),
        }
        stored.push(name);

        let bad: &[u8] = if mime == "text/plain" {
            b"\x00\x01\x02 binary"
        } else {
            b"just some text, not that kind of file"
        };
        let r = upload_file(&s, &format!("sample{ext}"), Some(mime), bad).await;
        assert_file_error(&r, MISMATCH);
    }
    stored.sort();
    assert_eq!(
        s.dir.objects(),
        stored,
        "only the accepted files are stored"
    );
    assert_eq!(attachment_rows(&s.app).await, stored.len() as i64);
}

#[tokio::test]
async fn text_plain_must_be_utf8_without_control_bytes_or_leading_markup() {
    let s = setup().await;
    for bad in [
        &b"<html><body>hi</body></html>"[..],
        b"\xEF\xBB\xBF \r\n <svg onload=alert(1)>",
        b"<!DOCTYPE html>",
        b"<?xml version=\"1.0\"?>",
        b"colour \x1B[31mred",
        b"caf\xE9 latin-1",
    ] {
        let r = upload_file(&s, "notes.txt", Some("text/plain"), bad).await;
        assert_file_error(&r, MISMATCH);
    }
    assert_nothing_stored(&s).await;
    for good in [
        &b"1 < 2 and <3 hearts"[..],
        b"\xEF\xBB\xBFwith a BOM\r\n",
        b"form\x0Cfeed",
    ] {
        let r = upload_file(&s, "notes.txt", Some("text/plain"), good).await;
        assert_eq!(r.status, 201, "{good:?}: {}", r.text);
    }
}

#[tokio::test]
async fn an_empty_file_is_accepted_only_as_text_plain() {
    let s = setup().await;
    for (mime, ext, _, _) in samples().into_iter().filter(|(m, ..)| *m != "text/plain") {
        let r = upload_file(&s, &format!("empty{ext}"), Some(mime), b"").await;
        assert_file_error(&r, MISMATCH);
    }
    assert_nothing_stored(&s).await;
    let r = upload_file(&s, "empty.txt", Some("text/plain"), b"").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["file_size"], 0);
}

#[tokio::test]
async fn the_declared_type_is_the_part_content_type_in_any_case_without_parameters() {
    let s = setup().await;
    // (declared, bytes, stored type, stored extension)
    for (declared, data, mime, ext) in [
        (
            "audio/webm;codecs=opus",
            fixture("clip.webm"),
            "audio/webm",
            ".weba",
        ),
        (
            "audio/ogg; codecs=opus",
            fixture("tone.ogg"),
            "audio/ogg",
            ".ogg",
        ),
        ("IMAGE/PNG", png(1, 1), "image/png", ".png"),
        ("Image/Png; charset=x", png(1, 1), "image/png", ".png"),
        ("image/png ;", png(1, 1), "image/png", ".png"),
        ("  image/png  ", png(1, 1), "image/png", ".png"),
    ] {
        let r = upload_file(&s, "upload.bin", Some(declared), data).await;
        assert_eq!(r.status, 201, "{declared}: {}", r.text);
        let a = r.data();
        assert_eq!(a["file_type"], mime, "{declared}");
        assert_server_name(&object_name(&a["file_url"]), ext);
    }
    // A voice note recorded as WebM gets its duration from the WebM segment.
    let r = upload_file(
        &s,
        "voice.webm",
        Some("audio/webm;codecs=opus"),
        fixture("clip.webm"),
    )
    .await;
    assert_eq!(r.data()["duration"], json!(2.008));
}

#[tokio::test]
async fn a_type_that_is_not_allowed_is_quoted_verbatim() {
    let s = setup().await;
    for declared in [
        "application/x-msdownload",
        "Application/X-MSDownload; name=\"a.exe\"",
        "image/svg+xml",
        "text/html; charset=utf-8",
        "image",
        "audio/x-webm",
    ] {
        let r = upload_file(&s, "a.png", Some(declared), png(1, 1)).await;
        assert_file_error(&r, &not_allowed(declared));
    }
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn the_declared_type_wins_over_the_extension_and_is_still_content_checked() {
    let s = setup().await;
    for (filename, declared, data) in [
        // A PNG declared as PDF.
        ("a.png", "application/pdf", png(1, 1)),
        // Ogg audio declared as WebM, parameters or not.
        ("voice.webm", "audio/webm;codecs=opus", fixture("tone.ogg")),
        // An alias is checked like its canonical type.
        ("a.wav", "audio/x-wav", fixture("tone.ogg")),
        ("a.m4a", "audio/x-m4a", fixture("clip.webm")),
        // QuickTime needs one of its atoms at bytes 4–7.
        (
            "a.mov",
            "video/quicktime",
            b"\0\0\0\x08skip\0\0\0\0".to_vec(),
        ),
        ("a.mov", "VIDEO/QUICKTIME", png(1, 1)),
    ] {
        let r = upload_file(&s, filename, Some(declared), data).await;
        assert_file_error(&r, MISMATCH);
    }
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn aliases_are_stored_as_their_canonical_type() {
    let s = setup().await;
    // (declared, bytes, stored type, stored extension, duration)
    for (declared, data, mime, ext, duration) in [
        (
            "audio/x-wav",
            wav(8000, 8000),
            "audio/wav",
            ".wav",
            json!(1.0),
        ),
        (
            "audio/wave",
            wav(8000, 4000),
            "audio/wav",
            ".wav",
            json!(0.5),
        ),
        (
            "audio/mp3",
            fixture("tone-cbr.mp3"),
            "audio/mpeg",
            ".mp3",
            json!(2.56),
        ),
        (
            "audio/x-m4a",
            fixture("clip.mp4"),
            "audio/mp4",
            ".m4a",
            json!(2.0),
        ),
        (
            "Audio/X-Wav; rate=8000",
            wav(8000, 8000),
            "audio/wav",
            ".wav",
            json!(1.0),
        ),
    ] {
        let r = upload_file(&s, "upload.bin", Some(declared), data).await;
        assert_eq!(r.status, 201, "{declared}: {}", r.text);
        let a = r.data();
        assert_eq!(a["file_type"], mime, "{declared}");
        assert_eq!(a["duration"], duration, "{declared}");
        assert_server_name(&object_name(&a["file_url"]), ext);
        // The stored object is served with the canonical type too.
        let got = s
            .app
            .get(&format!("/uploads/{}", object_name(&a["file_url"])))
            .await;
        assert_eq!(got.headers()["content-type"], mime, "{declared}");
    }
}

#[tokio::test]
async fn quicktime_and_m4a_uploads_are_accepted_with_their_duration() {
    let s = setup().await;
    // (filename, declared, bytes, stored type, stored extension, duration)
    for (filename, declared, data, mime, ext, duration) in [
        (
            "clip.mov",
            Some("video/quicktime"),
            fixture("clip.mp4"),
            "video/quicktime",
            ".mov",
            Some(json!(2.0)),
        ),
        (
            "CLIP.MOV",
            None,
            fixture("clip.mp4"),
            "video/quicktime",
            ".mov",
            Some(json!(2.0)),
        ),
        (
            "old.mov",
            Some("video/quicktime"),
            b"\0\0\0\x08moov\0\0\0\0".to_vec(),
            "video/quicktime",
            ".mov",
            None,
        ),
        (
            "voice.m4a",
            Some("audio/mp4"),
            fixture("clip.mp4"),
            "audio/mp4",
            ".m4a",
            Some(json!(2.0)),
        ),
        (
            "voice.M4A",
            Some(""),
            fixture("clip.mp4"),
            "audio/mp4",
            ".m4a",
            Some(json!(2.0)),
        ),
    ] {
        let r = upload_file(&s, filename, declared, data).await;
        assert_eq!(r.status, 201, "{filename}: {}", r.text);
        let a = r.data();
        assert_eq!(a["file_type"], mime, "{filename}");
        assert_eq!(a.get("duration").cloned(), duration, "{filename}");
        assert_server_name(&object_name(&a["file_url"]), ext);
    }
}

#[tokio::test]
async fn without_a_content_type_the_type_comes_from_the_filename_extension() {
    let s = setup().await;
    // No header, or an empty one: derived from the extension, case-insensitively.
    for (filename, content_type, data, mime, ext) in [
        ("PHOTO.JPG", None, jpeg(), "image/jpeg", ".jpg"),
        ("scan.jpeg", Some(""), jpeg(), "image/jpeg", ".jpg"),
        ("a.png", None, png(1, 1), "image/png", ".png"),
        (
            "a.GIF",
            None,
            b"GIF89a\x05\x00\x06\x00\x80\x00\x00;".to_vec(),
            "image/gif",
            ".gif",
        ),
        (
            "a.webp",
            None,
            b"RIFF\x16\0\0\0WEBPVP8X\x0A\0\0\0\0\0\0\0\x0F\0\0\x08\0\0".to_vec(),
            "image/webp",
            ".webp",
        ),
        ("clip.mp4", None, fixture("clip.mp4"), "video/mp4", ".mp4"),
        (
            "clip.mov",
            None,
            fixture("clip.mp4"),
            "video/quicktime",
            ".mov",
        ),
        (
            "clip.WebM",
            None,
            fixture("clip.webm"),
            "video/webm",
            ".webm",
        ),
        (
            "song.Mp3",
            None,
            b"ID3\x04\0\0".to_vec(),
            "audio/mpeg",
            ".mp3",
        ),
        ("voice.m4a", None, fixture("clip.mp4"), "audio/mp4", ".m4a"),
        ("voice.ogg", None, fixture("tone.ogg"), "audio/ogg", ".ogg"),
        (
            "voice.oga",
            Some(""),
            fixture("tone.ogg"),
            "audio/ogg",
            ".ogg",
        ),
        ("voice.OPUS", None, fixture("tone.ogg"), "audio/ogg", ".ogg"),
        ("note.wav", None, wav(8000, 80), "audio/wav", ".wav"),
        (
            "doc.pdf",
            None,
            b"%PDF-1.4\n".to_vec(),
            "application/pdf",
            ".pdf",
        ),
        ("notes.TXT", None, b"hello".to_vec(), "text/plain", ".txt"),
        // The extension of the base name, not of a directory.
        ("dir.v2/photo.png", None, png(1, 1), "image/png", ".png"),
    ] {
        let r = upload_file(&s, filename, content_type, data).await;
        assert_eq!(r.status, 201, "{filename}: {}", r.text);
        assert_eq!(r.data()["file_type"], mime, "{filename}");
        assert_server_name(&object_name(&r.data()["file_url"]), ext);
    }
    let accepted = s.dir.objects().len();
    // Anything not in the derivation table is application/octet-stream, which is not allowed,
    // even for types that are allowed when declared.
    for (filename, content_type) in [
        ("archive.zip", None),
        ("letter.doc", None),
        ("voice.weba", None),
        ("README", None),
        ("x.png.exe", Some("")),
        ("setup.exe", None),
        (r"dir.png\README", None),
    ] {
        let r = upload_file(&s, filename, content_type, b"hello").await;
        assert_file_error(&r, &not_allowed("application/octet-stream"));
    }
    // The derived type is then sniffed like a declared one.
    for (filename, data) in [
        ("fake.png", b"not a png".to_vec()),
        ("fake.mov", b"not a movie".to_vec()),
        ("fake.txt", b"<html>".to_vec()),
        ("fake.ogg", fixture("clip.webm")),
    ] {
        let r = upload_file(&s, filename, None, data).await;
        assert_file_error(&r, MISMATCH);
    }
    assert_eq!(s.dir.objects().len(), accepted, "nothing more is stored");
}

#[tokio::test]
async fn an_image_just_over_10_mib_exceeds_the_size_limit_and_other_types_may_be_larger() {
    let s = setup().await;
    let padded = |mut head: Vec<u8>, size: usize| {
        head.resize(size, 0);
        head
    };
    let r = upload_file(
        &s,
        "big.png",
        Some("image/png"),
        padded(png(1, 1), 10 * MIB + 1),
    )
    .await;
    assert_file_error(&r, TOO_LARGE);
    assert_nothing_stored(&s).await;

    let r = upload_file(
        &s,
        "max.png",
        Some("image/png"),
        padded(png(1, 1), 10 * MIB),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["file_size"], 10 * MIB);
    let r = upload_file(
        &s,
        "big.pdf",
        Some("application/pdf"),
        padded(b"%PDF-1.7\n".to_vec(), 10 * MIB + 1),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn a_file_just_over_50_mib_exceeds_the_size_limit_of_other_types() {
    let s = setup().await;
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.resize(50 * MIB + 1, b' ');
    let r = upload_file(&s, "huge.pdf", Some("application/pdf"), pdf).await;
    assert_file_error(&r, TOO_LARGE);
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn the_type_is_judged_before_the_content_and_the_content_before_the_size() {
    let s = setup().await;
    let mut oversized_garbage = b"garbage".to_vec();
    oversized_garbage.resize(11 * MIB, b'x');
    // Not allowed and wrong content and too large: the type decides.
    let r = upload_file(
        &s,
        "a.exe",
        Some("application/x-msdownload"),
        oversized_garbage.clone(),
    )
    .await;
    assert_file_error(&r, &not_allowed("application/x-msdownload"));
    // Allowed but wrong content and too large: the content decides.
    let r = upload_file(&s, "a.png", Some("image/png"), oversized_garbage).await;
    assert_file_error(&r, MISMATCH);
    assert_nothing_stored(&s).await;
}

// ----- upload: the steps before the body ----------------------------------------------------------

#[tokio::test]
async fn identity_path_message_and_membership_are_checked_before_the_body() {
    let s = setup().await;
    let garbage = || reqwest::Body::from(b"this is not multipart".to_vec());
    let at = |id: &str| format!("/messages/{id}/attachments");
    let ct = Some("text/plain");
    let deleted = send(&s.app, s.conv, As::User(s.owner)).await;
    assert_eq!(
        s.app
            .delete_as(&format!("/messages/{deleted}"), As::User(s.owner))
            .await
            .status,
        204
    );
    let outsider = Uuid::new_v4();

    let r = post_raw(&s.app, &at("nope"), As::Nobody, ct, garbage()).await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    let r = post_raw(&s.app, &at("nope"), As::User(s.owner), ct, garbage()).await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    // MSG before MEMBER, both before the body: unknown and deleted messages are 404 for anyone.
    for missing in [Uuid::new_v4(), deleted] {
        for who in [s.owner, outsider] {
            let r = post_raw(
                &s.app,
                &at(&missing.to_string()),
                As::User(who),
                ct,
                garbage(),
            )
            .await;
            r.assert_error(404, "NOT_FOUND", "Message not found");
        }
    }
    // A non-member gets 403 even with a bad multipart body, or a perfectly good one.
    let r = post_raw(
        &s.app,
        &at(&s.message.to_string()),
        As::User(outsider),
        ct,
        garbage(),
    )
    .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let r = upload(
        &s.app,
        s.message,
        As::User(outsider),
        &[Part::file("a.png", Some("image/png"), png(1, 1))],
    )
    .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    // A former participant is not one.
    let r = s
        .app
        .delete_as(
            &format!("/conversations/{}/participants/{}", s.conv, s.member),
            As::User(s.member),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = upload(
        &s.app,
        s.message,
        As::User(s.member),
        &[Part::file("a.png", Some("image/png"), png(1, 1))],
    )
    .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    // Only now the body: step 5.
    let r = post_raw(
        &s.app,
        &at(&s.message.to_string()),
        As::User(s.owner),
        ct,
        garbage(),
    )
    .await;
    r.assert_error(400, "BAD_REQUEST", INVALID_FORM);
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn message_and_membership_are_answered_without_reading_any_of_the_body() {
    let s = setup().await;
    // A body that sends a first chunk and then never ends: only an answer given without reading
    // the body can arrive.
    let stalled = || {
        let first =
            futures_util::stream::once(async { Ok::<_, std::io::Error>(b"--x\r\n".to_vec()) });
        reqwest::Body::wrap_stream(futures_util::StreamExt::chain(
            first,
            futures_util::stream::pending(),
        ))
    };
    let at = |id: Uuid| format!("/messages/{id}/attachments");
    let ct = Some("multipart/form-data; boundary=x");
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        post_raw(
            &s.app,
            &at(s.message),
            As::User(Uuid::new_v4()),
            ct,
            stalled(),
        ),
    )
    .await
    .expect("403 without reading the body");
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        post_raw(
            &s.app,
            &at(Uuid::new_v4()),
            As::User(s.owner),
            ct,
            stalled(),
        ),
    )
    .await
    .expect("404 without reading the body");
    r.assert_error(404, "NOT_FOUND", "Message not found");
}

#[tokio::test]
async fn the_file_is_judged_as_it_streams_in_and_reading_stops_at_the_first_failure() {
    let s = setup().await;
    // Each body sends the start of a form and then never ends: an answer can only come from a
    // decision taken on what has arrived, without waiting for (or reading) the rest.
    let stalled = |head: Vec<u8>| {
        let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) });
        reqwest::Body::wrap_stream(futures_util::StreamExt::chain(
            first,
            futures_util::stream::pending(),
        ))
    };
    let part_head = |content_type: &str| {
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\nContent-Type: {content_type}\r\n\r\n")
            .into_bytes()
    };
    let mut too_large = part_head("image/png");
    too_large.extend_from_slice(&png(1, 1));
    too_large.resize(too_large.len() + 10 * MIB, 0);
    let mut mismatch = part_head("image/png");
    mismatch.extend_from_slice(&[b'x'; 600]);
    let cases = [
        (
            part_head("application/x-msdownload"),
            not_allowed("application/x-msdownload"),
        ),
        (mismatch, MISMATCH.to_owned()),
        (too_large, TOO_LARGE.to_owned()),
    ];
    let path = format!("/messages/{}/attachments", s.message);
    for (head, message) in cases {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            post_raw(
                &s.app,
                &path,
                As::User(s.owner),
                Some(&multipart_type()),
                stalled(head),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{message}: answered without the rest of the body"));
        assert_file_error(&r, &message);
    }
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn a_message_deleted_or_a_membership_ended_while_the_file_streams_in_gets_the_step_answer() {
    // A row that disappears between check and write yields the answer the check would have given
    // (docs/api.md, "Errors"); nothing is stored and no event goes out (a deleted message is never
    // sent).
    let s = setup().await;
    let mut events = s.app.conversation_events(s.conv).await;
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    );
    // 1. the message is deleted (by its sender) while the member uploads to it.
    // 2. the uploader leaves while uploading to another message.
    let other = send(&s.app, s.conv, As::User(s.owner)).await;
    let cases: [(Uuid, &str, u16, &str); 2] = [
        (s.message, "delete", 404, "Message not found"),
        (
            other,
            "leave",
            403,
            "You are not a participant of this conversation",
        ),
    ];
    for (message, what, status, text) in cases {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Vec<u8>, std::io::Error>>();
        let mut first = head.clone().into_bytes();
        first.extend_from_slice(&png(1, 1));
        tx.send(Ok(first)).unwrap();
        let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|chunk| (chunk, rx))
        }));
        let app = &s.app;
        let path = format!("/messages/{message}/attachments");
        let content_type = multipart_type();
        let request = post_raw(app, &path, As::User(s.member), Some(&content_type), body);
        let interfere = async {
            // The message and membership checks run before the body is read.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let r = match what {
                "delete" => {
                    app.delete_as(&format!("/messages/{message}"), As::User(s.owner))
                        .await
                }
                _ => {
                    app.delete_as(
                        &format!("/conversations/{}/participants/{}", s.conv, s.member),
                        As::User(s.member),
                    )
                    .await
                }
            };
            assert_eq!(r.status, 204, "{what}: {}", r.text);
            tx.send(Ok(format!("\r\n--{BOUNDARY}--\r\n").into_bytes()))
                .unwrap();
            drop(tx);
        };
        let (r, ()) = tokio::join!(request, interfere);
        r.assert_error(
            status,
            if status == 404 {
                "NOT_FOUND"
            } else {
                "FORBIDDEN"
            },
            text,
        );
    }
    assert_nothing_stored(&s).await;
    // Only the events of the interference itself: no message.updated.
    let kinds = [events.next_frame().await, events.next_frame().await];
    let types: Vec<&str> = kinds.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["message.new", "message.deleted"]);
    let frame = events.next_frame().await;
    assert_eq!(frame["type"], "participant.removed");
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn in_header_mode_the_user_header_is_checked_after_the_path_id_and_before_the_message() {
    let dir = UploadDir::new();
    let app = spawn_app_with(&[
        ("AUTH_MODE", "header"),
        ("UPLOAD_DIR", dir.0.to_str().unwrap()),
    ])
    .await;
    let owner = Uuid::new_v4();
    let r = app
        .post_json(
            "/conversations",
            As::Header(owner),
            json!({"type": "group", "name": "g", "participant_ids": [Uuid::new_v4()]}),
        )
        .await;
    let conv: Uuid = r.data()["id"].as_str().unwrap().parse().unwrap();
    let message = send(&app, conv, As::Header(owner)).await;
    let header = "Missing or invalid X-User-ID header";
    let file = || [Part::file("a.png", Some("image/png"), png(2, 2))];

    let r = post_raw(
        &app,
        "/messages/nope/attachments",
        As::Nobody,
        None,
        reqwest::Body::from("x"),
    )
    .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    for target in [message, Uuid::new_v4()] {
        let r = upload(&app, target, As::Nobody, &file()).await;
        r.assert_error(400, "BAD_REQUEST", header);
    }
    let r = upload(&app, message, As::Header(owner), &file()).await;
    assert_eq!(r.status, 201, "{}", r.text);

    for path in [
        format!("/messages/{message}/attachments"),
        format!("/conversations/{conv}/media"),
    ] {
        let r = app.get_as(&path, As::Nobody).await;
        r.assert_error(400, "BAD_REQUEST", header);
        let r = app.get_as(&path, As::Header(owner)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.data().as_array().unwrap().len(), 1);
    }
    // media: HDR before PAGE.
    let r = app
        .get_as(&format!("/conversations/{conv}/media?limit=0"), As::Nobody)
        .await;
    r.assert_error(400, "BAD_REQUEST", header);
}

// ----- upload: the form (steps 5 and 6) -----------------------------------------------------------

#[tokio::test]
async fn a_body_that_is_not_a_readable_multipart_form_is_rejected() {
    let s = setup().await;
    let path = format!("/messages/{}/attachments", s.message);
    let good = form(&[Part::file("a.png", Some("image/png"), png(1, 1))]);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 10);
    let cases: Vec<(Option<String>, Vec<u8>)> = vec![
        (None, good.clone()),
        (Some("application/json".into()), good.clone()),
        (Some("multipart/form-data".into()), good.clone()),
        (
            Some("multipart/form-data; boundary=other".into()),
            good.clone(),
        ),
        (Some(multipart_type()), truncated),
        (Some(multipart_type()), Vec::new()),
        (
            Some(multipart_type()),
            b"garbage without any boundary".to_vec(),
        ),
    ];
    for (ct, body) in cases {
        let r = post_raw(&s.app, &path, As::User(s.owner), ct.as_deref(), body.into()).await;
        r.assert_error(400, "BAD_REQUEST", INVALID_FORM);
    }
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn other_parts_are_discarded_up_to_1_mib_in_total() {
    let s = setup().await;
    let file = || Part::file("a.png", Some("image/png"), png(1, 1));
    // Exactly 1 MiB of other parts, before and after the file: fine.
    let r = upload(
        &s.app,
        s.message,
        As::User(s.owner),
        &[
            Part::field("caption", vec![b'a'; MIB / 2]),
            file(),
            Part::field("note", vec![b'b'; MIB / 2]),
        ],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // One byte more: step 5, and nothing stored.
    let before = s.dir.objects();
    let r = upload(
        &s.app,
        s.message,
        As::User(s.owner),
        &[
            Part::field("caption", vec![b'a'; MIB / 2]),
            file(),
            Part::field("note", vec![b'b'; MIB / 2 + 1]),
        ],
    )
    .await;
    r.assert_error(400, "BAD_REQUEST", INVALID_FORM);
    assert_eq!(s.dir.objects(), before);
    assert_eq!(attachment_rows(&s.app).await, 1);
}

#[tokio::test]
async fn a_form_without_a_file_part_carrying_a_filename_is_missing_the_file_field() {
    let s = setup().await;
    let unnamed = Part {
        filename: None,
        ..Part::file("x", Some("image/png"), png(1, 1))
    };
    let empty_name = Part::file("", Some("image/png"), png(1, 1));
    let other_name = Part {
        name: "upload",
        ..Part::file("a.png", Some("image/png"), png(1, 1))
    };
    for parts in [
        vec![],
        vec![Part::field("caption", "hi")],
        vec![unnamed],
        vec![empty_name],
        vec![other_name],
    ] {
        let r = upload(&s.app, s.message, As::User(s.owner), &parts).await;
        r.assert_error(400, "BAD_REQUEST", MISSING_FILE);
    }
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn of_several_file_parts_the_first_with_a_filename_is_used() {
    let s = setup().await;
    let no_filename = Part {
        filename: None,
        ..Part::file("x", Some("application/pdf"), b"%PDF-1.1".to_vec())
    };
    let r = upload(
        &s.app,
        s.message,
        As::User(s.owner),
        &[
            no_filename,
            Part::file(
                "first.gif",
                Some("image/gif"),
                b"GIF87a\x01\0\x01\0".to_vec(),
            ),
            Part::file(
                "second.exe",
                Some("application/x-msdownload"),
                b"MZ".to_vec(),
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["file_name"], "first.gif");
    assert_eq!(r.data()["file_type"], "image/gif");
    assert_eq!(s.dir.objects().len(), 1);
}

#[tokio::test]
async fn client_filenames_are_kept_as_base_names_and_never_name_the_object() {
    let s = setup().await;
    let long = format!("{}.png", "é".repeat(150)); // 304 bytes
    for (sent, kept) in [
        ("../../etc/passwd.png".to_owned(), "passwd.png".to_owned()),
        (r"C:\x\a.png".to_owned(), "a.png".to_owned()),
        ("/abs/dir\\mixed/evil.png".to_owned(), "evil.png".to_owned()),
        (long.clone(), "é".repeat(127)),
    ] {
        let r = upload_file(&s, &sent, Some("image/png"), png(1, 1)).await;
        assert_eq!(r.status, 201, "{sent}: {}", r.text);
        assert_eq!(r.data()["file_name"], kept.as_str());
        assert_server_name(&object_name(&r.data()["file_url"]), ".png");
    }
    // Objects only ever land directly in UPLOAD_DIR, under server names.
    let objects = s.dir.objects();
    assert_eq!(objects.len(), 4);
    for name in &objects {
        assert_server_name(name, ".png");
    }
    assert!(!s.dir.0.parent().unwrap().join("etc").exists());
}

/// Makes every insert into `attachments` fail in this test's database (the row insert is the
/// last step of an upload, after the objects are stored).
async fn reject_attachment_inserts(app: &TestApp) {
    sqlx::raw_sql(
        "create function reject_attachments() returns trigger language plpgsql as
             $$ begin raise exception 'attachments are read-only in this test'; end $$;
         create trigger reject_attachments before insert on attachments
             for each row execute function reject_attachments();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failed_insert_deletes_the_stored_object() {
    let s = setup().await;
    reject_attachment_inserts(&s.app).await;
    let mut events = s.app.conversation_events(s.conv).await;
    let r = upload_file(&s, "a.png", Some("image/png"), png(1, 1)).await;
    r.assert_error(500, "INTERNAL_ERROR", "An unexpected error occurred");
    assert_nothing_stored(&s).await;
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn upload_base_url_is_the_prefix_of_every_file_url() {
    let s = setup_with(&[("UPLOAD_BASE_URL", "https://cdn.example.com/media/")]).await;
    let r = upload_file(&s, "a.pdf", Some("application/pdf"), b"%PDF-1.7".to_vec()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let name = object_name(&r.data()["file_url"]);
    assert_eq!(
        r.data()["file_url"],
        format!("https://cdn.example.com/media/{name}")
    );
}

// ----- download -----------------------------------------------------------------------------------

/// Uploads and returns the `/uploads/<name>` path of the stored object.
async fn stored(s: &Setup, filename: &str, mime: &str, data: Vec<u8>) -> String {
    let r = upload_file(s, filename, Some(mime), data).await;
    assert_eq!(r.status, 201, "{}", r.text);
    format!("/uploads/{}", object_name(&r.data()["file_url"]))
}

#[tokio::test]
async fn a_stored_file_downloads_publicly_with_its_type_and_safe_headers() {
    let s = setup().await;
    for (mime, ext, data, _) in samples() {
        let path = stored(&s, &format!("x{ext}"), mime, data.clone()).await;
        // Public: no credentials needed in jwt mode.
        let r = s.app.get(&path).await;
        assert_eq!(r.status(), 200, "{mime}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], mime);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(h["content-length"], data.len().to_string().as_str());
        let inline = ["image/", "audio/", "video/"]
            .iter()
            .any(|p| mime.starts_with(p));
        assert_eq!(
            h.get("content-disposition").map(|v| v.to_str().unwrap()),
            (!inline).then_some("attachment"),
            "{mime}"
        );
        assert_eq!(r.bytes().await.unwrap().to_vec(), data, "{mime}");
    }
}

#[tokio::test]
async fn a_single_range_is_answered_with_206_and_content_range() {
    let s = setup().await;
    let data = b"%PDF-1.7 0123456789".to_vec(); // 19 bytes
    let path = stored(&s, "doc.pdf", "application/pdf", data.clone()).await;
    let get = |range: &'static str| {
        s.app
            .client
            .get(s.app.url(&path))
            .header("Range", range)
            .send()
    };

    for (range, content_range, body) in [
        ("bytes=0-4", "bytes 0-4/19", &data[0..5]),
        ("bytes=9-", "bytes 9-18/19", &data[9..]),
        ("bytes=-3", "bytes 16-18/19", &data[16..]),
        ("bytes=15-1000", "bytes 15-18/19", &data[15..]),
    ] {
        let r = get(range).await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], content_range, "{range}");
        assert_eq!(r.headers()["content-type"], "application/pdf");
        assert_eq!(
            r.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(r.bytes().await.unwrap().to_vec(), body, "{range}");
    }
    for range in ["bytes=19-", "bytes=100-200", "bytes=-0"] {
        let r = get(range).await.unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */19");
    }
    // Several ranges, or one that cannot be parsed: the whole file.
    for range in ["bytes=0-1,4-5", "bytes=5-2", "lines=1-2"] {
        let r = get(range).await.unwrap();
        assert_eq!(r.status(), 200, "{range}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    }
    // Not even text: ignored as well, never a 400.
    let not_text = reqwest::header::HeaderValue::from_bytes(b"bytes=\xFF-").unwrap();
    let r = s
        .app
        .client
        .get(s.app.url(&path))
        .header("Range", not_text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn head_answers_the_headers_without_the_body_and_other_methods_are_405() {
    let s = setup().await;
    let path = stored(&s, "a.png", "image/png", png(4, 4)).await;
    let r = s.app.client.head(s.app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        r.headers()["content-length"],
        png(4, 4).len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = s.app.send(method, &path, As::User(s.owner), None).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.text, "", "{method}");
    }
    assert_eq!(s.dir.objects().len(), 1, "the object is still there");
}

#[tokio::test]
async fn only_names_this_service_produces_are_served_and_everything_else_is_a_plain_404() {
    let s = setup().await;
    let path = stored(&s, "a.png", "image/png", png(4, 4)).await;
    let name = path.trim_start_matches("/uploads/").to_owned();
    let uuid = &name[..36];
    // A file in UPLOAD_DIR that this service did not produce is not served either.
    std::fs::write(s.dir.0.join("secret.txt"), "not for you").unwrap();
    for probe in [
        "/uploads".to_owned(),
        "/uploads/".to_owned(),
        "/uploads/secret.txt".to_owned(),
        format!("/uploads/{}", name.to_uppercase()),
        format!("/uploads/{}.png", uuid.replace('-', "")),
        format!("/uploads/{uuid}.exe"),
        format!("/uploads/{uuid}"),
        format!("/uploads/{name}.png"),
        format!("/uploads/..%2F{name}"),
        "/uploads/..%2F..%2Fetc%2Fpasswd".to_owned(),
        format!("/uploads/{}.png", Uuid::new_v4()),
    ] {
        let r = s.app.get(&probe).await;
        assert_eq!(r.status(), 404, "{probe}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{probe}"
        );
        assert_eq!(r.text().await.unwrap(), "404 page not found", "{probe}");
    }
    // A name the service did produce, whose object is gone: 404 too.
    std::fs::remove_file(s.dir.0.join(&name)).unwrap();
    assert_eq!(s.app.get(&path).await.status(), 404);
}

// ----- list and gallery ---------------------------------------------------------------------------

#[tokio::test]
async fn a_message_lists_its_attachments_oldest_first_even_once_deleted() {
    let s = setup().await;
    let first = upload_file(&s, "1.png", Some("image/png"), png(1, 1))
        .await
        .data();
    let second = upload_file(&s, "2.pdf", Some("application/pdf"), b"%PDF-1.7".to_vec())
        .await
        .data();
    let path = format!("/messages/{}/attachments", s.message);

    let r = s.app.get_as(&path, As::User(s.member)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data(), json!([first, second]));
    assert!(r.json().get("pagination").is_none());

    // MSG*: a deleted message still lists its attachments.
    assert_eq!(
        s.app
            .delete_as(&format!("/messages/{}", s.message), As::User(s.owner))
            .await
            .status,
        204
    );
    assert_eq!(
        s.app.get_as(&path, As::User(s.owner)).await.data(),
        json!([first, second])
    );

    let r = s.app.get_as("/messages/nope/attachments", As::Nobody).await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    let r = s
        .app
        .get_as("/messages/nope/attachments", As::User(s.owner))
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    for who in [s.owner, Uuid::new_v4()] {
        let r = s
            .app
            .get_as(
                &format!("/messages/{}/attachments", Uuid::new_v4()),
                As::User(who),
            )
            .await;
        r.assert_error(404, "NOT_FOUND", "Message not found");
    }
    let r = s.app.get_as(&path, As::User(Uuid::new_v4())).await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let other = send(&s.app, s.conv, As::User(s.owner)).await;
    let r = s
        .app
        .get_as(&format!("/messages/{other}/attachments"), As::User(s.owner))
        .await;
    assert_eq!(r.text, r#"{"data":[]}"#);
}

#[tokio::test]
async fn the_media_gallery_lists_attachments_of_live_messages_newest_first_in_pages() {
    let s = setup().await;
    let m2 = send(&s.app, s.conv, As::User(s.member)).await;
    let doomed = send(&s.app, s.conv, As::User(s.owner)).await;
    let mut uploaded = Vec::new();
    for (i, message) in [s.message, m2, s.message, m2].into_iter().enumerate() {
        let r = upload(
            &s.app,
            message,
            As::User(s.owner),
            &[Part::file(&format!("{i}.txt"), Some("text/plain"), "hi")],
        )
        .await;
        uploaded.push(r.data());
    }
    let r = upload(
        &s.app,
        doomed,
        As::User(s.owner),
        &[Part::file("gone.txt", Some("text/plain"), "bye")],
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        s.app
            .delete_as(&format!("/messages/{doomed}"), As::User(s.owner))
            .await
            .status,
        204
    );
    uploaded.reverse();

    let path = format!("/conversations/{}/media", s.conv);
    let r = s.app.get_as(&path, As::User(s.member)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"data": uploaded, "pagination": {"total": 4, "limit": 20, "offset": 0}})
    );
    let r = s
        .app
        .get_as(&format!("{path}?limit=2&offset=1"), As::User(s.member))
        .await;
    assert_eq!(
        r.json(),
        json!({"data": uploaded[1..3], "pagination": {"total": 4, "limit": 2, "offset": 1}})
    );
    let r = s
        .app
        .get_as(&format!("{path}?offset=10"), As::User(s.member))
        .await;
    assert_eq!(
        r.json(),
        json!({"data": [], "pagination": {"total": 4, "limit": 20, "offset": 10}})
    );
}

#[tokio::test]
async fn media_checks_run_in_the_documented_order() {
    let s = setup().await;
    let outsider = Uuid::new_v4();
    let r = s
        .app
        .get_as("/conversations/nope/media?limit=0", As::Nobody)
        .await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    let r = s
        .app
        .get_as("/conversations/nope/media?limit=0", As::User(s.owner))
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    // PAGE before MEMBER, both parameters reported at once.
    for target in [s.conv, Uuid::new_v4()] {
        let r = s
            .app
            .get_as(
                &format!("/conversations/{target}/media?limit=101&offset=-1"),
                As::User(outsider),
            )
            .await;
        r.assert_validation(json!({"limit": "limit must not exceed 100", "offset": "offset must be a non-negative integer"}));
    }
    // A conversation that does not exist is a 403, like one the caller is not in.
    for target in [s.conv, Uuid::new_v4()] {
        let r = s
            .app
            .get_as(
                &format!("/conversations/{target}/media"),
                As::User(outsider),
            )
            .await;
        r.assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    }
    let r = s
        .app
        .get_as(
            &format!("/conversations/{}/media", s.conv),
            As::User(s.owner),
        )
        .await;
    assert_eq!(
        r.text,
        r#"{"data":[],"pagination":{"total":0,"limit":20,"offset":0}}"#
    );
}

// ----- thumbnails, durations and video sizes -----------------------------------------------------

/// `width`×`height`, red on the left half and blue on the right.
fn two_tone(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    })
}

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg_of(img: image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A JPEG with an EXIF APP1 segment (big-endian TIFF, one IFD entry: Orientation = `orientation`)
/// right after its SOI.
fn with_exif_orientation(jpeg: Vec<u8>, orientation: u8) -> Vec<u8> {
    let mut payload = b"Exif\0\0MM\0\x2A\0\0\0\x08\0\x01".to_vec();
    payload.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0]);
    payload.extend_from_slice(&[0, 0, 0, 0]);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A canonical 16-bit PCM mono WAV of `samples` silent samples at `rate` Hz.
fn wav(rate: u32, samples: u32) -> Vec<u8> {
    let data = samples * 2;
    let mut d = b"RIFF".to_vec();
    d.extend_from_slice(&(36 + data).to_le_bytes());
    d.extend_from_slice(b"WAVEfmt \x10\0\0\0\x01\0\x01\0");
    d.extend_from_slice(&rate.to_le_bytes());
    d.extend_from_slice(&(rate * 2).to_le_bytes());
    d.extend_from_slice(b"\x02\0\x10\0data");
    d.extend_from_slice(&data.to_le_bytes());
    d.resize(d.len() + data as usize, 0);
    d
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose (valid, checksummed) header announces `width`×`height` RGB pixels, followed by one
/// tiny compressed row: a decompression bomb's header without its payload.
fn png_announcing(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], body: &[u8]| {
        let mut c = (body.len() as u32).to_be_bytes().to_vec();
        let mut typed = kind.to_vec();
        typed.extend_from_slice(body);
        c.extend_from_slice(&typed);
        c.extend_from_slice(&crc32(&typed).to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut d = b"\x89PNG\r\n\x1A\n".to_vec();
    d.extend(chunk(b"IHDR", &ihdr));
    d.extend(chunk(b"IDAT", b"\x78\x9C\x63\x00\x00\x00\x01\x00\x01"));
    d.extend(chunk(b"IEND", b""));
    d
}

/// Downloads a stored object by its URL and decodes it as an image.
async fn thumbnail_of(s: &Setup, attachment: &Value) -> image::RgbImage {
    let url = &attachment["thumbnail_url"];
    assert!(url.is_string(), "no thumbnail_url in {attachment}");
    let name = object_name(url);
    assert_server_name(&name, ".jpg");
    let r = s.app.get(&format!("/uploads/{name}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Jpeg
    );
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

#[track_caller]
fn assert_colour(img: &image::RgbImage, x: u32, y: u32, want: [u8; 3]) {
    let got = img.get_pixel(x, y).0;
    let close = got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) < 60);
    assert!(
        close,
        "pixel ({x}, {y}) is {got:?}, expected about {want:?}"
    );
}

#[tokio::test]
async fn images_get_a_jpeg_thumbnail_within_320_pixels_stored_and_served_like_any_upload() {
    use image::{DynamicImage, ImageFormat};
    let s = setup().await;
    let animated = {
        let mut out = Vec::new();
        let frame =
            |c: [u8; 4]| image::Frame::new(image::RgbaImage::from_pixel(400, 200, image::Rgba(c)));
        image::codecs::gif::GifEncoder::new(&mut out)
            .encode_frames([frame([255, 0, 0, 255]), frame([0, 0, 255, 255])])
            .unwrap();
        out
    };
    let transparent_left = image::RgbaImage::from_fn(100, 50, |x, _| {
        if x < 50 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([0, 255, 0, 255])
        }
    });
    // (filename, type, bytes, thumbnail size)
    type Case = (&'static str, &'static str, Vec<u8>, (u32, u32));
    let cases: Vec<Case> = vec![
        (
            "big.jpg",
            "image/jpeg",
            jpeg_of(two_tone(640, 480)),
            (320, 240),
        ),
        (
            "small.jpg",
            "image/jpeg",
            jpeg_of(two_tone(100, 50)),
            (100, 50),
        ),
        (
            "wide.png",
            "image/png",
            encoded(
                DynamicImage::ImageRgb8(two_tone(1000, 100)),
                ImageFormat::Png,
            ),
            (320, 32),
        ),
        (
            "tall.webp",
            "image/webp",
            encoded(
                DynamicImage::ImageRgb8(two_tone(500, 1000)),
                ImageFormat::WebP,
            ),
            (160, 320),
        ),
        ("animated.gif", "image/gif", animated, (320, 160)),
        (
            "alpha.png",
            "image/png",
            encoded(DynamicImage::ImageRgba8(transparent_left), ImageFormat::Png),
            (100, 50),
        ),
    ];
    let mut names = Vec::new();
    for (file, mime, bytes, (tw, th)) in cases {
        let r = upload_file(&s, file, Some(mime), bytes.clone()).await;
        assert_eq!(r.status, 201, "{file}: {}", r.text);
        let a = r.data();
        assert!(a.get("duration").is_none(), "{file}");
        let thumb = thumbnail_of(&s, &a).await;
        assert_eq!(thumb.dimensions(), (tw, th), "{file}");
        match file {
            // The first frame of an animation.
            "animated.gif" => assert_colour(&thumb, 10, 10, [255, 0, 0]),
            // Transparency over white.
            "alpha.png" => {
                assert_colour(&thumb, 5, 25, [255, 255, 255]);
                assert_colour(&thumb, 95, 25, [0, 255, 0]);
            }
            _ => {
                assert_colour(&thumb, 2, th / 2, [255, 0, 0]);
                assert_colour(&thumb, tw - 3, th / 2, [0, 0, 255]);
            }
        }
        // The upload itself is stored untouched next to its thumbnail.
        let file_name = object_name(&a["file_url"]);
        assert_eq!(std::fs::read(s.dir.0.join(&file_name)).unwrap(), bytes);
        names.push(file_name);
        names.push(object_name(&a["thumbnail_url"]));
        let stored: Option<String> =
            sqlx::query_scalar("select thumbnail_url from attachments where id = $1")
                .bind(Uuid::parse_str(a["id"].as_str().unwrap()).unwrap())
                .fetch_one(&s.app.pool)
                .await
                .unwrap();
        assert_eq!(stored.as_deref(), a["thumbnail_url"].as_str());
    }
    names.sort();
    assert_eq!(s.dir.objects(), names);
}

#[tokio::test]
async fn a_jpeg_exif_orientation_turns_its_size_and_its_thumbnail() {
    let s = setup().await;
    // Stored 600×400 (red left, blue right); orientation 6 displays it turned 90° clockwise:
    // 400×600, red on top, blue below.
    let bytes = with_exif_orientation(jpeg_of(two_tone(600, 400)), 6);
    let r = upload_file(&s, "portrait.jpg", Some("image/jpeg"), bytes).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let a = r.data();
    assert_eq!(
        (a["width"].clone(), a["height"].clone()),
        (json!(400), json!(600))
    );
    let thumb = thumbnail_of(&s, &a).await;
    assert_eq!(thumb.dimensions(), (213, 320));
    assert_colour(&thumb, 106, 5, [255, 0, 0]);
    assert_colour(&thumb, 106, 314, [0, 0, 255]);
}

#[tokio::test]
async fn audio_and_video_get_their_duration_and_videos_their_size_everywhere() {
    let s = setup().await;
    let mut events = s.app.conversation_events(s.conv).await;
    // (filename, type, bytes, duration, video size)
    type Case = (
        &'static str,
        &'static str,
        Vec<u8>,
        Value,
        Option<(i64, i64)>,
    );
    let cases: Vec<Case> = vec![
        (
            "note.wav",
            "audio/wav",
            wav(8000, 12_345),
            json!(1.543),
            None,
        ),
        (
            "cbr.mp3",
            "audio/mpeg",
            fixture("tone-cbr.mp3"),
            json!(2.56),
            None,
        ),
        (
            "vbr.mp3",
            "audio/mpeg",
            fixture("tone-vbr.mp3"),
            json!(3.265),
            None,
        ),
        (
            "tone.ogg",
            "audio/ogg",
            fixture("tone.ogg"),
            json!(1.75),
            None,
        ),
        (
            "clip.mp4",
            "video/mp4",
            fixture("clip.mp4"),
            json!(2.0),
            Some((64, 48)),
        ),
        (
            "clip.webm",
            "video/webm",
            fixture("clip.webm"),
            json!(2.008),
            Some((64, 48)),
        ),
    ];
    let mut uploaded = Vec::new();
    for (file, mime, bytes, duration, size) in cases {
        let r = upload_file(&s, file, Some(mime), bytes).await;
        assert_eq!(r.status, 201, "{file}: {}", r.text);
        let a = r.data();
        assert_eq!(a["duration"], duration, "{file}");
        assert!(
            a["duration"].is_f64(),
            "{file}: a JSON number with a fraction part"
        );
        assert!(a.get("thumbnail_url").is_none(), "{file}");
        match size {
            Some((w, h)) => assert_eq!(
                (a["width"].clone(), a["height"].clone()),
                (json!(w), json!(h)),
                "{file}"
            ),
            None => assert!(
                a.get("width").is_none() && a.get("height").is_none(),
                "{file}"
            ),
        }
        let stored: Option<String> =
            sqlx::query_scalar("select duration::text from attachments where id = $1")
                .bind(Uuid::parse_str(a["id"].as_str().unwrap()).unwrap())
                .fetch_one(&s.app.pool)
                .await
                .unwrap();
        assert_eq!(
            stored.unwrap().parse::<f64>().unwrap(),
            duration.as_f64().unwrap()
        );
        // message.updated carries the attachment as the answer gave it.
        let frame = events.next_frame().await;
        assert_eq!(frame["type"], "message.updated");
        assert_eq!(
            frame["payload"]["attachments"].as_array().unwrap().last(),
            Some(&a)
        );
        uploaded.push(a);
    }
    let listed = s
        .app
        .get_as(
            &format!("/messages/{}/attachments", s.message),
            As::User(s.member),
        )
        .await
        .data();
    assert_eq!(listed, Value::Array(uploaded.clone()));
    let gallery = s
        .app
        .get_as(
            &format!("/conversations/{}/media?limit=100", s.conv),
            As::User(s.member),
        )
        .await
        .data();
    uploaded.reverse();
    assert_eq!(gallery, Value::Array(uploaded));
    // The thumbnail too is in the list and the event.
    let r = upload_file(
        &s,
        "a.png",
        Some("image/png"),
        encoded(
            image::DynamicImage::ImageRgb8(two_tone(8, 8)),
            image::ImageFormat::Png,
        ),
    )
    .await;
    let a = r.data();
    assert!(a["thumbnail_url"].is_string());
    let frame = events.next_frame().await;
    assert_eq!(
        frame["payload"]["attachments"].as_array().unwrap().last(),
        Some(&a)
    );
    let listed = s
        .app
        .get_as(
            &format!("/messages/{}/attachments", s.message),
            As::User(s.member),
        )
        .await
        .data();
    assert_eq!(listed.as_array().unwrap().last(), Some(&a));
}

#[tokio::test]
async fn bad_media_is_stored_as_uploaded_without_thumbnail_or_duration() {
    let s = setup().await;
    let good_png = encoded(
        image::DynamicImage::ImageRgb8(two_tone(64, 64)),
        image::ImageFormat::Png,
    );
    let mut wav_without_rate = wav(8000, 100);
    wav_without_rate[28..32].copy_from_slice(&[0, 0, 0, 0]);
    wav_without_rate[24..28].copy_from_slice(&[0, 0, 0, 0]);
    let mut garbled_webm = fixture("clip.webm");
    for b in garbled_webm.iter_mut().skip(4).step_by(3) {
        *b = 0xFF;
    }
    // (filename, type, bytes, image header size)
    type Case = (&'static str, &'static str, Vec<u8>, Option<(i64, i64)>);
    let cases: Vec<Case> = vec![
        // More than 50 million pixels announced: never decoded.
        (
            "bomb.png",
            "image/png",
            png_announcing(10_000, 6_000),
            Some((10_000, 6_000)),
        ),
        (
            "cut.png",
            "image/png",
            good_png[..good_png.len() / 2].to_vec(),
            Some((64, 64)),
        ),
        ("header-only.jpg", "image/jpeg", jpeg(), Some((8, 4))),
        (
            "garbage.webp",
            "image/webp",
            b"RIFF\x10\0\0\0WEBPVP8 \xFF\xFF\xFF\xFF".to_vec(),
            None,
        ),
        (
            "garbage.gif",
            "image/gif",
            b"GIF89a\xFF\xFF\xFF\xFF\0\0\0garbage".to_vec(),
            Some((65535, 65535)),
        ),
        ("zero-rate.wav", "audio/wav", wav_without_rate, None),
        (
            "cut.mp4",
            "video/mp4",
            fixture("clip.mp4")[..64].to_vec(),
            None,
        ),
        (
            "header.webm",
            "video/webm",
            fixture("clip.webm")[..40].to_vec(),
            None,
        ),
        ("garbled.webm", "video/webm", garbled_webm, None),
        (
            "zeros.mp3",
            "audio/mpeg",
            [b"ID3\x04\0\0\0\0\0\0".as_slice(), &[0; 4000]].concat(),
            None,
        ),
        (
            "cut.ogg",
            "audio/ogg",
            fixture("tone.ogg")[..30].to_vec(),
            None,
        ),
    ];
    let count = cases.len();
    for (file, mime, bytes, size) in cases {
        let r = upload_file(&s, file, Some(mime), bytes.clone()).await;
        assert_eq!(r.status, 201, "{file}: {}", r.text);
        let a = r.data();
        assert!(a.get("thumbnail_url").is_none(), "{file}: {a}");
        assert!(a.get("duration").is_none(), "{file}: {a}");
        let dims = size.map(|(w, h)| (json!(w), json!(h)));
        let got = a.get("width").map(|w| (w.clone(), a["height"].clone()));
        if mime.starts_with("image/") {
            assert_eq!(got, dims, "{file}");
        }
        let name = object_name(&a["file_url"]);
        assert_eq!(std::fs::read(s.dir.0.join(&name)).unwrap(), bytes, "{file}");
    }
    // One object per upload: no thumbnail was stored.
    assert_eq!(s.dir.objects().len(), count);
    assert_eq!(attachment_rows(&s.app).await, count as i64);
}

#[tokio::test]
async fn a_failed_insert_deletes_the_stored_file_and_its_thumbnail() {
    let s = setup().await;
    reject_attachment_inserts(&s.app).await;
    let r = upload_file(&s, "a.jpg", Some("image/jpeg"), jpeg_of(two_tone(500, 400))).await;
    r.assert_error(500, "INTERNAL_ERROR", "An unexpected error occurred");
    assert_nothing_stored(&s).await;
}

#[tokio::test]
async fn concurrent_large_photo_uploads_all_get_thumbnails_while_other_requests_are_answered() {
    let s = setup().await;
    let photo = jpeg_of(image::RgbImage::from_fn(1600, 1200, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    }));
    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let app = &s.app;
            let part = Part::file(&format!("{i}.jpg"), Some("image/jpeg"), photo.clone());
            let message = s.message;
            let owner = s.owner;
            async move { upload(app, message, As::User(owner), &[part]).await }
        })
        .collect();
    // A request that needs no decoding, sent while the uploads are being inspected. How long it
    // waits is measured by the upload benchmark (bench/uploads.py), not asserted here.
    let health = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.app.get("/health").await.status()
    };
    let (replies, health) = tokio::join!(futures_util::future::join_all(uploads), health);
    assert_eq!(health, 200);
    for r in replies {
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(r.data()["thumbnail_url"].is_string());
    }
}
