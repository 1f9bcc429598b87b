//! Attachments (docs/api.md, "Uploads and downloads"): upload a file to a message, list a message's
//! files, the conversation's media gallery, and the public download of stored objects.
//!
//! Uploads are judged in a fixed order (docs/api.md, "Errors") with nothing stored until every
//! check has passed: identity, message and membership are checked before one byte of the body is
//! read; the multipart stream is then parsed as it arrives, the file held in memory up to its
//! type's limit (10 MiB images, 50 MiB otherwise — reading stops as soon as it is exceeded), its
//! content sniffed against the declared type, then inspected (a thumbnail of an image, the duration
//! and size of audio and video: [`crate::media`]), and only then written to the object store under
//! server-chosen names and recorded. A failed insert deletes the stored objects again.

use bytes::{Bytes, BytesMut};
use poem::{
    Body, IntoResponse, Request, RequestBody, Response,
    error::NotFoundError,
    http::{StatusCode, header},
    web::Data as State,
};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, OpenApi,
    param::{Path, Query},
    registry::{
        MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef,
        Registry,
    },
};
use shared_proto::events::{EventKind, event::Body as EventBody};

use crate::{
    db::{self, attachments::NewAttachment},
    error::{self, ApiError, Details, E400, E401, E403, E404, E500, Fail},
    events::Audience,
    http::{
        Caller, Data, Page,
        params::{ConversationId, Limit, MessageId, Offset, Paging},
    },
    resources::Attachment,
    routes::{ApiTags, messages::live_message, require_member},
    sniff::{self, FileKind, TEXT_WINDOW},
    state::AppState,
    storage::{ByteRange, ObjectName},
};

/// The answer to a body that is not a readable multipart form (or too large overall).
const INVALID_FORM: &str = "File too large or invalid multipart form";
/// The answer when no `file` part has a filename.
const MISSING_FILE: &str = "Missing 'file' field in multipart form";
/// Parts other than the file are read and dropped, up to this many bytes in total.
const MAX_DISCARDED: usize = 1024 * 1024;
/// Backstop on the whole multipart stream (the largest file, the discarded parts, and room for
/// part headers and boundaries), so no part header can make the parser buffer without end.
const MAX_FORM: u64 = (sniff::MAX_OTHER_SIZE + MAX_DISCARDED + 1024 * 1024) as u64;

/// Downloads are immutable objects under unique names: cache them for a year.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

pub struct AttachmentsApi;

// ----- the upload body ----------------------------------------------------------------------------

/// The multipart body of an upload, not yet read: extraction only takes hold of it, so the
/// handler can check the message and membership first (docs/api.md, "Uploading a file").
pub struct UploadForm {
    content_type: Option<String>,
    body: Option<Body>,
}

fn binary_schema() -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        format: Some("binary"),
        ..MetaSchema::new("string")
    }))
}

impl<'a> ApiExtractor<'a> for UploadForm {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some(
                "A part named `file` with a filename. Other parts are ignored (at most 1 MiB in all).",
            ),
            content: vec![MetaMediaType {
                content_type: "multipart/form-data",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                    required: vec!["file"],
                    properties: vec![("file", binary_schema())],
                    ..MetaSchema::new("object")
                })),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self {
            content_type: req.content_type().map(str::to_owned),
            body: body.take().ok(),
        })
    }
}

/// A file that passed the form, type, content and size checks.
struct UploadedFile {
    /// The client's filename without directory, at most 255 bytes.
    file_name: String,
    kind: &'static FileKind,
    bytes: Bytes,
}

fn invalid_form() -> ApiError {
    ApiError::BadRequest(INVALID_FORM)
}

fn content_mismatch() -> ApiError {
    Details::one("file", "File content does not match its declared type")
}

/// The declared value of the file part: its `Content-Type` exactly as sent, or — when that is
/// absent or empty — the type of the filename's extension. The allowed type it names is
/// [`FileKind::declared`]; a rejection quotes this value verbatim.
fn declared_type(field: &multer::Field<'_>, file_name: &str) -> String {
    match field.headers().get(header::CONTENT_TYPE) {
        Some(v) if !v.is_empty() => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        _ => sniff::type_from_filename(sniff::base_name(file_name)).to_owned(),
    }
}

/// Steps 5–9: parses the form as it streams in and returns the first `file` part that has a
/// filename, verified. A file whose type is not allowed, or whose first bytes do not match it,
/// is rejected as soon as that is known; one over its size limit as soon as the limit is passed.
async fn read_upload(form: UploadForm) -> Result<UploadedFile, ApiError> {
    let boundary = form
        .content_type
        .as_deref()
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(invalid_form)?;
    let body = form.body.ok_or_else(invalid_form)?;
    let limits =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(MAX_FORM));
    let mut form = multer::Multipart::with_constraints(body.into_bytes_stream(), boundary, limits);

    let mut file = None;
    let mut discarded = 0;
    while let Some(mut field) = form.next_field().await.map_err(|_| invalid_form())? {
        let client_name = field
            .file_name()
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let client_name = match client_name {
            Some(name) if file.is_none() && field.name() == Some("file") => name,
            // Anything else (other fields, a `file` part without filename, later `file` parts)
            // is read and dropped, within a total budget.
            _ => {
                while let Some(chunk) = field.chunk().await.map_err(|_| invalid_form())? {
                    discarded += chunk.len();
                    if discarded > MAX_DISCARDED {
                        return Err(invalid_form());
                    }
                }
                continue;
            }
        };
        let declared = declared_type(&field, &client_name);
        let kind = FileKind::declared(&declared).ok_or_else(|| {
            Details::one("file", format!("File type '{declared}' is not allowed"))
        })?;
        let limit = kind.max_size();
        let mut bytes = BytesMut::new();
        let mut sniffed = false;
        while let Some(chunk) = field.chunk().await.map_err(|_| invalid_form())? {
            bytes.extend_from_slice(&chunk);
            // Every content rule is decided within the first TEXT_WINDOW (+1) bytes.
            if !sniffed && bytes.len() > TEXT_WINDOW {
                if !kind.matches(&bytes) {
                    return Err(content_mismatch());
                }
                sniffed = true;
            }
            if bytes.len() > limit {
                return Err(Details::one("file", "File exceeds maximum allowed size"));
            }
        }
        if !sniffed && !kind.matches(&bytes) {
            return Err(content_mismatch());
        }
        // The buffer grew by doubling: an upload waiting for inspection and storage holds only
        // its file's bytes, not up to twice as many.
        let bytes = if bytes.capacity() - bytes.len() > bytes.len() / 8 {
            Bytes::copy_from_slice(&bytes)
        } else {
            bytes.freeze()
        };
        file = Some(UploadedFile {
            file_name: sniff::base_name(&client_name).to_owned(),
            kind,
            bytes,
        });
    }
    file.ok_or(ApiError::BadRequest(MISSING_FILE))
}

// ----- downloads ----------------------------------------------------------------------------------

/// What a `Range` header asks of an object of a given size (RFC 9110 §14.2). Only a single range
/// is honoured; anything else that is not understood is ignored and the whole object is sent.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    Slice { start: u64, end: u64 },
    Unsatisfiable,
}

fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header
        .and_then(|h| h.trim().split_once('='))
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, set)| set.trim())
    else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    match (number(first), number(last)) {
        // `-n`: the last n bytes.
        (None, Some(n)) if first.trim().is_empty() => {
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Slice {
                    start: size - n.min(size),
                    end: size - 1,
                }
            }
        }
        // `a-`: from a to the end.
        (Some(start), None) if last.trim().is_empty() => {
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Slice {
                    start,
                    end: size - 1,
                }
            }
        }
        (Some(start), Some(end)) if start <= end => {
            if start >= size {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Slice {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        _ => RangeRequest::Whole,
    }
}

/// A stored file, or the answers a download can give besides it.
pub struct FileResponse(Response);

impl IntoResponse for FileResponse {
    fn into_response(self) -> Response {
        self.0
    }
}

impl ApiResponse for FileResponse {
    fn meta() -> MetaResponses {
        let bytes = || {
            vec![MetaMediaType {
                content_type: "application/octet-stream",
                schema: binary_schema(),
            }]
        };
        let response = |status, description, content| MetaResponse {
            description,
            status: Some(status),
            status_range: None,
            content,
            headers: vec![],
        };
        let mut responses = vec![
            response(
                200,
                "The file, with Content-Type = its verified type, X-Content-Type-Options: nosniff, Content-Security-Policy: default-src 'none'; sandbox, and Content-Disposition: attachment unless it is an image, audio or video",
                bytes(),
            ),
            response(
                206,
                "One range of the file (single `Range` requests)",
                bytes(),
            ),
            response(
                404,
                "Not a name this service produces, or no such file (the plain 404 of an unknown path)",
                vec![MetaMediaType {
                    content_type: "text/plain",
                    schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
                        example: Some("404 page not found".into()),
                        ..MetaSchema::new("string")
                    })),
                }],
            ),
            response(416, "The range starts beyond the end of the file", vec![]),
        ];
        // The object store failing.
        responses.extend(Fail::<E500>::meta().responses);
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        Fail::<E500>::register(registry);
    }
}

/// Deletes the objects of an upload that could not be recorded.
async fn delete_objects(state: &AppState, names: &[ObjectName]) {
    for name in names {
        if let Err(cleanup) = state.storage.delete(name).await {
            tracing::error!(error = format!("{cleanup:#}"), "orphaned attachment object");
        }
    }
}

fn not_found() -> poem::Error {
    // The same answer as an unknown path: nothing tells a missing object from a bad name.
    NotFoundError.into()
}

// ----- routes -------------------------------------------------------------------------------------

#[OpenApi(tag = "ApiTags::Attachments")]
impl AttachmentsApi {
    /// Upload a file to a message (multipart, part `file`). Any participant may attach to any
    /// message of the conversation. Images up to 10 MiB, other files up to 50 MiB; the content
    /// must match the declared type.
    #[oai(
        path = "/messages/:id/attachments",
        method = "post",
        operation_id = "uploadAttachment"
    )]
    async fn upload(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
        form: UploadForm,
    ) -> Result<Data<Attachment, 201>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let message = {
            let mut conn = state.pool.acquire().await?;
            let message = live_message(&mut conn, id).await?;
            require_member(&mut conn, message.conversation_id, user).await?;
            message
        };
        // The connection goes back to the pool while the client sends the file.
        let file = read_upload(form).await?;

        let info = state
            .media
            .inspect(file.kind.mime, file.bytes.clone())
            .await;
        let (width, height) = info.size.unzip();
        let name = ObjectName::generate(file.kind);
        let file_url = state.storage.file_url(&name);
        let file_size = file.bytes.len() as i64;
        state.storage.put(&name, file.bytes).await?;
        let mut stored = vec![name];
        let thumbnail_url = match info.thumbnail {
            Some(bytes) => {
                let thumb = ObjectName::generate(sniff::THUMBNAIL_KIND);
                if let Err(e) = state.storage.put(&thumb, bytes).await {
                    delete_objects(&state, &stored).await;
                    return Err(ApiError::Internal(e).into());
                }
                let url = state.storage.file_url(&thumb);
                stored.push(thumb);
                Some(url)
            }
            None => None,
        };
        let new = NewAttachment {
            file_name: &file.file_name,
            file_type: file.kind.mime,
            file_size,
            file_url: &file_url,
            thumbnail_url: thumbnail_url.as_deref(),
            width,
            height,
            duration: info.duration,
        };
        let inserted: Result<Attachment, ApiError> = async {
            let mut conn = state.pool.acquire().await?;
            match db::attachments::insert(&mut conn, &message, user, &new).await? {
                Some(a) => Ok(a),
                // The message was deleted, or the uploader left, while the file streamed in:
                // the answer the message and membership checks would give now.
                None => Err(match live_message(&mut conn, id).await {
                    Ok(_) => ApiError::Forbidden(error::NOT_A_PARTICIPANT),
                    Err(e) => e,
                }),
            }
        }
        .await;
        let attachment = match inserted {
            Ok(a) => a,
            Err(e) => {
                delete_objects(&state, &stored).await;
                return Err(e.into());
            }
        };
        tracing::info!(
            attachment.id = %attachment.id,
            message.id = %message.id,
            file.r#type = file.kind.mime,
            file.size = file_size,
            "attachment stored"
        );

        let mut conn = state.pool.acquire().await?;
        // A deleted message is never sent out, not even in an event.
        if let Some(row) = db::messages::find(&mut conn, id)
            .await?
            .filter(|m| !m.is_deleted)
        {
            let updated = db::messages::embed_one(&mut conn, row).await?;
            state
                .events
                .publish(
                    EventKind::MessageUpdated,
                    Audience::Room,
                    updated.conversation_id,
                    user,
                    EventBody::Message((&updated).into()),
                )
                .await;
        }
        Ok(Data(attachment))
    }

    /// The attachments of a message (also of a deleted one), oldest first.
    #[oai(
        path = "/messages/:id/attachments",
        method = "get",
        operation_id = "listAttachments"
    )]
    async fn list(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<MessageId>,
    ) -> Result<Data<Vec<Attachment>>, Fail<{ E400 | E401 | E403 | E404 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let mut conn = state.pool.acquire().await?;
        let message = db::messages::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound(error::MESSAGE_NOT_FOUND))?;
        require_member(&mut conn, message.conversation_id, user).await?;
        Ok(Data(db::messages::attachments_of(&mut conn, &[id]).await?))
    }

    /// The conversation's media gallery: attachments of every type on its non-deleted messages,
    /// newest first.
    #[oai(
        path = "/conversations/:id/media",
        method = "get",
        operation_id = "listMedia"
    )]
    async fn media(
        &self,
        caller: Caller,
        state: State<&AppState>,
        id: Path<ConversationId>,
        limit: Query<Limit>,
        offset: Query<Offset>,
    ) -> Result<Page<Attachment>, Fail<{ E400 | E401 | E403 | E500 }>> {
        let id = id.get()?;
        let user = caller.user()?;
        let Paging { limit, offset } = Paging::check(&limit, &offset)?;
        let mut conn = state.pool.acquire().await?;
        // A conversation that does not exist has no participants: 403, never 404.
        require_member(&mut conn, id, user).await?;
        let (total, data) = db::attachments::gallery(&mut conn, id, limit, offset).await?;
        Ok(Page {
            data,
            total,
            limit,
            offset,
        })
    }

    /// Download a stored file (public). Honours a single `Range` (`bytes=a-b`, `bytes=a-`,
    /// `bytes=-n`; anything else is ignored); responses are immutable and cacheable.
    #[oai(path = "/uploads/:name", method = "get", operation_id = "downloadFile")]
    async fn download(
        &self,
        req: &Request,
        state: State<&AppState>,
        name: Path<String>,
    ) -> poem::Result<FileResponse> {
        let name = ObjectName::parse(&name).ok_or_else(not_found)?;
        let storage = &state.storage;
        // Read here rather than as a typed header parameter: a Range that is not even text is
        // ignored like any other unusable Range, never a 400.
        let range = req
            .headers()
            .get(header::RANGE)
            .map(|v| v.to_str().unwrap_or_default());
        let wanted = match range {
            None => ByteRange::All,
            Some(header) => {
                let size = storage
                    .size(&name)
                    .await
                    .map_err(ApiError::Internal)?
                    .ok_or_else(not_found)?;
                match parse_range(Some(header), size) {
                    RangeRequest::Whole => ByteRange::All,
                    RangeRequest::Slice { start, end } => ByteRange::Slice { start, end },
                    RangeRequest::Unsatisfiable => {
                        return Ok(FileResponse(
                            Response::builder()
                                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                                .header(header::ACCEPT_RANGES, "bytes")
                                .finish(),
                        ));
                    }
                }
            }
        };
        let object = storage
            .get(&name, wanted)
            .await
            .map_err(ApiError::Internal)?
            .ok_or_else(not_found)?;

        let mime = name.kind().mime;
        let mut resp = Response::builder()
            .header(header::CONTENT_TYPE, mime)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox",
            )
            .header(header::CACHE_CONTROL, CACHE_FOREVER)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(
                header::CONTENT_LENGTH,
                object.range.end - object.range.start,
            );
        // Anything a browser could render as a document is downloaded, never displayed.
        if !["image/", "audio/", "video/"]
            .iter()
            .any(|p| mime.starts_with(p))
        {
            resp = resp.header(header::CONTENT_DISPOSITION, "attachment");
        }
        if let ByteRange::Slice { .. } = wanted {
            resp = resp.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!(
                    "bytes {}-{}/{}",
                    object.range.start,
                    object.range.end - 1,
                    object.size
                ),
            );
        }
        Ok(FileResponse(
            resp.body(Body::from_bytes_stream(object.bytes)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_resolved_against_the_size() {
        use RangeRequest::*;
        let cases = [
            (Some("bytes=0-4"), 10, Slice { start: 0, end: 4 }),
            (Some("bytes=5-"), 10, Slice { start: 5, end: 9 }),
            (Some("bytes=-3"), 10, Slice { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Slice { start: 0, end: 9 }),
            (Some("bytes=8-100"), 10, Slice { start: 8, end: 9 }),
            (Some("Bytes = 2-3 "), 10, Slice { start: 2, end: 3 }),
            (Some("bytes=9-9"), 10, Slice { start: 9, end: 9 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=99999999999999999999999-"), 10, Unsatisfiable),
            (None, 10, Whole),
            (Some("bytes=0-1,3-4"), 10, Whole),
            (Some("bytes=5-2"), 10, Whole),
            (Some("bytes=a-b"), 10, Whole),
            (Some("bytes=-"), 10, Whole),
            (Some("bytes=1"), 10, Whole),
            (Some("items=0-1"), 10, Whole),
            (Some("bytes=+1-2"), 10, Whole),
            (Some(""), 10, Whole),
        ];
        for (header, size, want) in cases {
            assert_eq!(parse_range(header, size), want, "{header:?} of {size}");
        }
    }
}
