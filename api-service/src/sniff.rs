//! What an uploaded file is (docs/api.md, "Uploads and downloads"): the allowed MIME types with the
//! extension each is stored under and the magic bytes its content must begin with, the type a
//! part's `Content-Type` declares (or, when it declares none, its filename's extension), and image
//! dimensions read from the file header.
//!
//! Everything here is pure and works on a prefix of the file: the upload route keeps the bytes in
//! memory and asks before anything is stored.

/// How many leading bytes the `text/plain` rule looks at.
pub const TEXT_WINDOW: usize = 512;

/// One allowed type: its MIME name, the extension its objects are stored under, and the content
/// rule of the table of allowed types.
#[derive(Debug, PartialEq, Eq)]
pub struct FileKind {
    /// The canonical MIME type, lowercase and without parameters, as stored (`file_type`).
    pub mime: &'static str,
    /// The stored object's extension, with its dot (`.jpg`). One per type, so an object name's
    /// extension says which verified type the object has.
    pub ext: &'static str,
    magic: Magic,
}

/// How a type's content is recognised.
#[derive(Debug, PartialEq, Eq)]
enum Magic {
    /// Begins with one of these byte strings.
    Prefix(&'static [&'static [u8]]),
    /// `RIFF`, four size bytes, then this form type (`WEBP`, `WAVE`).
    Riff(&'static [u8; 4]),
    /// Bytes 4–7 are one of these box types (ISO base media / QuickTime: `ftyp`, `moov`, …).
    Atom(&'static [&'static [u8; 4]]),
    /// `ID3`, or an MPEG audio frame sync (`FF`, then a byte ≥ `E0`).
    Mpeg,
    /// The plain-text rule (see [`is_plain_text`]).
    Text,
}

/// The allowed types (docs/api.md, "Uploading a file").
pub const ALLOWED: &[FileKind] = &[
    FileKind {
        mime: "image/jpeg",
        ext: ".jpg",
        magic: Magic::Prefix(&[b"\xFF\xD8\xFF"]),
    },
    FileKind {
        mime: "image/png",
        ext: ".png",
        magic: Magic::Prefix(&[b"\x89PNG\r\n\x1A\n"]),
    },
    FileKind {
        mime: "image/gif",
        ext: ".gif",
        magic: Magic::Prefix(&[b"GIF87a", b"GIF89a"]),
    },
    FileKind {
        mime: "image/webp",
        ext: ".webp",
        magic: Magic::Riff(b"WEBP"),
    },
    FileKind {
        mime: "video/mp4",
        ext: ".mp4",
        magic: Magic::Atom(&[b"ftyp"]),
    },
    FileKind {
        mime: "video/quicktime",
        ext: ".mov",
        magic: Magic::Atom(&[b"ftyp", b"moov", b"mdat", b"wide", b"free"]),
    },
    FileKind {
        mime: "video/webm",
        ext: ".webm",
        magic: Magic::Prefix(&[b"\x1A\x45\xDF\xA3"]),
    },
    FileKind {
        mime: "audio/webm",
        ext: ".weba",
        magic: Magic::Prefix(&[b"\x1A\x45\xDF\xA3"]),
    },
    FileKind {
        mime: "audio/mp4",
        ext: ".m4a",
        magic: Magic::Atom(&[b"ftyp"]),
    },
    FileKind {
        mime: "audio/mpeg",
        ext: ".mp3",
        magic: Magic::Mpeg,
    },
    FileKind {
        mime: "audio/ogg",
        ext: ".ogg",
        magic: Magic::Prefix(&[b"OggS"]),
    },
    FileKind {
        mime: "audio/wav",
        ext: ".wav",
        magic: Magic::Riff(b"WAVE"),
    },
    FileKind {
        mime: "application/pdf",
        ext: ".pdf",
        magic: Magic::Prefix(&[b"%PDF-"]),
    },
    FileKind {
        mime: "text/plain",
        ext: ".txt",
        magic: Magic::Text,
    },
    FileKind {
        mime: "application/zip",
        ext: ".zip",
        magic: Magic::Prefix(&[b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"]),
    },
    FileKind {
        mime: "application/msword",
        ext: ".doc",
        magic: Magic::Prefix(&[b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1"]),
    },
    FileKind {
        mime: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ext: ".docx",
        magic: Magic::Prefix(&[b"PK\x03\x04"]),
    },
];

/// The type of thumbnails (`image/jpeg`, stored as `.jpg`).
pub const THUMBNAIL_KIND: &FileKind = &ALLOWED[0];

/// Largest image upload (10 MiB).
pub const MAX_IMAGE_SIZE: usize = 10 * 1024 * 1024;
/// Largest upload of any other type (50 MiB).
pub const MAX_OTHER_SIZE: usize = 50 * 1024 * 1024;

impl FileKind {
    /// The allowed type with exactly this canonical MIME name.
    pub fn by_mime(mime: &str) -> Option<&'static FileKind> {
        ALLOWED.iter().find(|k| k.mime == mime)
    }

    /// The allowed type a part's `Content-Type` value declares: its `type/subtype`, compared
    /// case-insensitively, parameters ignored, aliases mapped to their canonical type
    /// (`audio/x-wav`, `audio/wave` → `audio/wav`; `audio/mp3` → `audio/mpeg`; `audio/x-m4a` →
    /// `audio/mp4`).
    pub fn declared(content_type: &str) -> Option<&'static FileKind> {
        let essence = content_type
            .split_once(';')
            .map_or(content_type, |(essence, _)| essence)
            .trim()
            .to_ascii_lowercase();
        let canonical = match essence.as_str() {
            "audio/x-wav" | "audio/wave" => "audio/wav",
            "audio/mp3" => "audio/mpeg",
            "audio/x-m4a" => "audio/mp4",
            other => other,
        };
        Self::by_mime(canonical)
    }

    /// The allowed type stored under this extension (with its dot, lowercase as produced).
    pub fn by_ext(ext: &str) -> Option<&'static FileKind> {
        ALLOWED.iter().find(|k| k.ext == ext)
    }

    /// Whether the type is an image (its size limit is [`MAX_IMAGE_SIZE`]).
    pub fn is_image(&self) -> bool {
        self.mime.starts_with("image/")
    }

    /// The size limit of this type, in bytes.
    pub fn max_size(&self) -> usize {
        if self.is_image() {
            MAX_IMAGE_SIZE
        } else {
            MAX_OTHER_SIZE
        }
    }

    /// Whether `data` has this type's content. `data` is the whole file, or a prefix of it
    /// longer than [`TEXT_WINDOW`] bytes (every rule is decided within that many bytes).
    pub fn matches(&self, data: &[u8]) -> bool {
        match self.magic {
            Magic::Prefix(prefixes) => prefixes.iter().any(|p| data.starts_with(p)),
            Magic::Riff(form) => {
                data.len() >= 12 && data.starts_with(b"RIFF") && &data[8..12] == form
            }
            Magic::Atom(types) => data.len() >= 8 && types.iter().any(|t| &data[4..8] == *t),
            Magic::Mpeg => data.starts_with(b"ID3") || matches!(data, [0xFF, b, ..] if *b >= 0xE0),
            Magic::Text => is_plain_text(data),
        }
    }
}

/// The `text/plain` rule: the first 512 bytes are UTF-8 (a final character cut by that window is
/// allowed), contain no NUL or other control byte than tab, LF, CR and FF (DEL counts as a control
/// byte), and — after an optional BOM and whitespace — do not begin like markup (`<!`, `<?`, or
/// `<` followed by a letter). An empty file is plain text.
///
/// `data` is the whole file or a prefix longer than the window: a character cut at the end of
/// `data` is only excused when the window, not the file, cut it.
pub fn is_plain_text(data: &[u8]) -> bool {
    let window = &data[..data.len().min(TEXT_WINDOW)];
    let text = match std::str::from_utf8(window) {
        Ok(text) => text,
        // An incomplete final sequence (no invalid byte) where the window ends inside the file.
        Err(e) if e.error_len().is_none() && data.len() > TEXT_WINDOW => {
            match std::str::from_utf8(&window[..e.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    let control = |b: u8| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C)) || b == 0x7F;
    if text.bytes().any(control) {
        return false;
    }
    let rest = text
        .strip_prefix('\u{FEFF}')
        .unwrap_or(text)
        .trim_start_matches([' ', '\t', '\n', '\r', '\u{0C}']);
    let mut chars = rest.chars();
    let markup = chars.next() == Some('<')
        && chars
            .next()
            .is_some_and(|c| c == '!' || c == '?' || c.is_ascii_alphabetic());
    !markup
}

/// The type a part declares when it has no (or an empty) `Content-Type`: from the filename's
/// extension, case-insensitively; anything not in the table is `application/octet-stream`.
pub fn type_from_filename(file_name: &str) -> &'static str {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// The client filename without its directory part (after the last `/` or `\`), cut to at most
/// 255 bytes on a character boundary.
pub fn base_name(file_name: &str) -> &str {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    if base.len() <= 255 {
        return base;
    }
    let mut end = 255;
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    &base[..end]
}

/// Width and height from an image's header (PNG IHDR, GIF logical screen descriptor, JPEG SOF
/// segment, WebP `VP8 `/`VP8L`/`VP8X` chunk); `None` when the header does not give them (or gives
/// a zero or out-of-range size).
pub fn dimensions(mime: &str, data: &[u8]) -> Option<(i32, i32)> {
    let (w, h) = match mime {
        "image/png" => png(data)?,
        "image/gif" => gif(data)?,
        "image/jpeg" => jpeg(data)?,
        "image/webp" => webp(data)?,
        _ => return None,
    };
    if w == 0 || h == 0 {
        return None;
    }
    Some((i32::try_from(w).ok()?, i32::try_from(h).ok()?))
}

fn be16(d: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?).into())
}

fn le16(d: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?).into())
}

fn le24(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// Signature, then the first chunk: length (4), `IHDR`, width (4, BE), height (4, BE).
fn png(d: &[u8]) -> Option<(u32, u32)> {
    (d.get(12..16)? == b"IHDR").then_some(())?;
    Some((be32(d, 16)?, be32(d, 20)?))
}

/// `GIF8?a`, then the logical screen width and height (2 bytes each, LE).
fn gif(d: &[u8]) -> Option<(u32, u32)> {
    Some((le16(d, 6)?, le16(d, 8)?))
}

/// Walks the marker segments after SOI up to the first start-of-frame (SOF0–SOF15 except DHT
/// `C4`, JPG `C8` and DAC `CC`): length (2), precision (1), height (2), width (2), all BE.
fn jpeg(d: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of FF fill bytes.
        if *d.get(i)? != 0xFF {
            return None;
        }
        while *d.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *d.get(i)?;
        i += 1;
        match marker {
            // Standalone markers: TEM, RSTn (no length).
            0x01 | 0xD0..=0xD7 => continue,
            // End of image or start of scan before any frame header: no dimensions.
            0xD9 | 0xDA => return None,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Some((be16(d, i + 5)?, be16(d, i + 3)?));
            }
            _ => {
                let len = be16(d, i)? as usize;
                if len < 2 {
                    return None;
                }
                i += len;
            }
        }
    }
}

/// `RIFF`, size, `WEBP`, then the first chunk at 12 (fourcc) with its payload at 20:
/// - `VP8 ` (lossy): frame tag (3), start code `9D 01 2A`, width and height (14 bits each, LE);
/// - `VP8L` (lossless): signature `2F`, then width−1 and height−1 in 14 bits each, LE bit order;
/// - `VP8X` (extended): flags (4), canvas width−1 and height−1 (24 bits each, LE).
fn webp(d: &[u8]) -> Option<(u32, u32)> {
    match d.get(12..16)? {
        b"VP8 " => {
            (d.get(23..26)? == b"\x9D\x01\x2A").then_some(())?;
            Some((le16(d, 26)? & 0x3FFF, le16(d, 28)? & 0x3FFF))
        }
        b"VP8L" => {
            (*d.get(20)? == 0x2F).then_some(())?;
            let bits = u32::from_le_bytes(d.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => Some((le24(d, 24)? + 1, le24(d, 27)? + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(mime: &str) -> &'static FileKind {
        FileKind::by_mime(mime).unwrap()
    }

    #[test]
    fn every_allowed_type_accepts_its_magic_bytes_and_rejects_others() {
        /// (type, contents it accepts, contents it rejects)
        type Case = (
            &'static str,
            &'static [&'static [u8]],
            &'static [&'static [u8]],
        );
        let cases: &[Case] = &[
            (
                "image/jpeg",
                &[b"\xFF\xD8\xFF\xE0rest"],
                &[b"\xFF\xD8\xFE", b"\xFF\xD8"],
            ),
            (
                "image/png",
                &[b"\x89PNG\r\n\x1A\n...."],
                &[b"\x89PNG\r\n\x1A", b"PNG\r\n\x1A\n"],
            ),
            (
                "image/gif",
                &[b"GIF87a..", b"GIF89a.."],
                &[b"GIF88a..", b"gif89a"],
            ),
            (
                "image/webp",
                &[b"RIFF\x10\0\0\0WEBPVP8 "],
                &[b"RIFF\x10\0\0\0WAVEfmt ", b"RIFF\0\0\0\0WEB"],
            ),
            (
                "video/mp4",
                &[b"\0\0\0\x18ftypmp42", b"\0\0\0\x20ftypisom"],
                &[b"ftyp\0\0\0\0", b"\0\0\0\x18fty"],
            ),
            (
                "video/quicktime",
                &[
                    b"\0\0\0\x14ftypqt  ",
                    b"\0\0\0\x08moov",
                    b"\0\0\0\x08mdat",
                    b"\0\0\0\x08wide",
                    b"\0\0\0\x08free",
                ],
                &[b"\0\0\0\x08skip", b"moov\0\0\0\x08", b"\0\0\0\x08moo"],
            ),
            (
                "video/webm",
                &[b"\x1A\x45\xDF\xA3\x9F"],
                &[b"\x1A\x45\xDF", b"\xA3\xDF\x45\x1A"],
            ),
            (
                "audio/webm",
                &[b"\x1A\x45\xDF\xA3\x9F"],
                &[b"\x1A\x45\xDF", b"OggS\0\x02"],
            ),
            (
                "audio/mp4",
                &[b"\0\0\0\x20ftypM4A "],
                &[b"\0\0\0\x08moov", b"\0\0\0\x18fty"],
            ),
            (
                "audio/mpeg",
                &[b"ID3\x04\0", b"\xFF\xFB\x90\x00", b"\xFF\xE0"],
                &[b"\xFF\xDF\x00", b"ID", b"\xFF"],
            ),
            ("audio/ogg", &[b"OggS\0\x02"], &[b"oggs", b"Ogg"]),
            (
                "audio/wav",
                &[b"RIFF$\0\0\0WAVEfmt "],
                &[b"RIFF$\0\0\0WEBPVP8 ", b"RIFX$\0\0\0WAVE"],
            ),
            (
                "application/pdf",
                &[b"%PDF-1.7\n"],
                &[b"%PDF1.7", b" %PDF-1.7"],
            ),
            (
                "application/zip",
                &[b"PK\x03\x04..", b"PK\x05\x06..", b"PK\x07\x08.."],
                &[b"PK\x01\x02", b"PK"],
            ),
            (
                "application/msword",
                &[b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0"],
                &[b"\xD0\xCF\x11\xE0\xA1\xB1\x1A", b"PK\x03\x04"],
            ),
            (
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                &[b"PK\x03\x04\x14\0"],
                &[b"PK\x05\x06", b"PK\x07\x08"],
            ),
            (
                "text/plain",
                &[b"hello\tworld\r\n\x0Cpage", b""],
                &[b"hello\0world", b"<html>"],
            ),
        ];
        assert_eq!(cases.len(), ALLOWED.len(), "one row per allowed type");
        for (mime, good, bad) in cases {
            for g in *good {
                assert!(kind(mime).matches(g), "{mime} should accept {g:?}");
            }
            for b in *bad {
                assert!(!kind(mime).matches(b), "{mime} should reject {b:?}");
            }
        }
    }

    #[test]
    fn an_empty_file_matches_only_text_plain() {
        for k in ALLOWED {
            assert_eq!(k.matches(b""), k.mime == "text/plain", "{}", k.mime);
        }
    }

    #[test]
    fn plain_text_rejects_control_bytes_but_allows_tab_lf_cr_ff() {
        assert!(is_plain_text(b"a\tb\nc\rd\x0Ce"));
        for b in (0u8..0x20)
            .filter(|b| !matches!(b, 9 | 10 | 12 | 13))
            .chain([0x7F])
        {
            assert!(!is_plain_text(&[b'a', b, b'b']), "byte {b:#04x}");
        }
        // Only the first 512 bytes are looked at.
        let mut late = vec![b'a'; TEXT_WINDOW];
        late.push(0);
        assert!(is_plain_text(&late));
    }

    #[test]
    fn plain_text_must_be_utf8_except_a_character_cut_by_the_window() {
        assert!(is_plain_text("héllo wörld ✓".as_bytes()));
        assert!(!is_plain_text(b"caf\xE9"), "latin-1");
        assert!(!is_plain_text(b"\xC3\x28"), "invalid sequence");
        // A short file that ends inside a character is not text.
        assert!(!is_plain_text(b"abc\xE2\x9C"));
        // A three-byte character straddling byte 512 of a longer file is.
        let mut long = vec![b'a'; TEXT_WINDOW - 1];
        long.extend_from_slice("✓ and more".as_bytes());
        assert!(is_plain_text(&long));
        // But an invalid byte inside the window is not excused.
        let mut bad = vec![b'a'; TEXT_WINDOW - 1];
        bad.extend_from_slice(b"\xFF and more");
        assert!(!is_plain_text(&bad));
    }

    #[test]
    fn plain_text_must_not_start_like_markup() {
        for markup in [
            &b"<html>"[..],
            b"<!DOCTYPE html>",
            b"<?xml version=\"1.0\"?>",
            b"<svg/>",
            b"  \r\n\t<script>",
            b"\xEF\xBB\xBF<p>",
            b"\xEF\xBB\xBF \n<!-- -->",
            b"\x0C<a>",
        ] {
            assert!(!is_plain_text(markup), "{markup:?}");
        }
        for text in [
            &b"a <b> tag later"[..],
            b"< not a tag",
            b"<1>",
            b"<",
            b"\xEF\xBB\xBF",
            b"   ",
            b"<\xC3\xA9>",
            b"> <html>",
        ] {
            assert!(is_plain_text(text), "{text:?}");
        }
    }

    #[test]
    fn a_missing_content_type_is_derived_from_the_extension() {
        for (name, mime) in [
            ("a.jpg", "image/jpeg"),
            ("a.JPEG", "image/jpeg"),
            ("a.png", "image/png"),
            ("x.y.Gif", "image/gif"),
            ("a.webp", "image/webp"),
            ("a.mp4", "video/mp4"),
            ("a.MOV", "video/quicktime"),
            ("a.webm", "video/webm"),
            ("a.mp3", "audio/mpeg"),
            ("a.m4a", "audio/mp4"),
            ("a.ogg", "audio/ogg"),
            ("a.oga", "audio/ogg"),
            ("voice.Opus", "audio/ogg"),
            ("a.wav", "audio/wav"),
            ("a.pdf", "application/pdf"),
            ("a.txt", "text/plain"),
            ("a.zip", "application/octet-stream"),
            ("a.weba", "application/octet-stream"),
            ("a.doc", "application/octet-stream"),
            ("png", "application/octet-stream"),
            ("a.png.exe", "application/octet-stream"),
            ("", "application/octet-stream"),
        ] {
            assert_eq!(type_from_filename(name), mime, "{name}");
        }
    }

    #[test]
    fn base_names_drop_directories_and_are_cut_on_a_character_boundary() {
        assert_eq!(base_name("../../etc/passwd.png"), "passwd.png");
        assert_eq!(base_name(r"C:\x\a.png"), "a.png");
        assert_eq!(base_name("a/b\\c/d.txt"), "d.txt");
        assert_eq!(base_name("dir/"), "");
        assert_eq!(base_name("plain.txt"), "plain.txt");
        let long = "é".repeat(200); // 400 bytes
        let cut = base_name(&long);
        assert_eq!(cut.len(), 254);
        assert_eq!(cut, "é".repeat(127));
        assert_eq!(base_name(&"a".repeat(300)).len(), 255);
    }

    #[test]
    fn every_type_has_its_own_extension() {
        for k in ALLOWED {
            assert_eq!(FileKind::by_ext(k.ext), Some(k));
        }
    }

    #[test]
    fn a_declared_type_ignores_case_and_parameters_and_maps_aliases() {
        for (declared, mime) in [
            ("image/png", Some("image/png")),
            ("IMAGE/PNG", Some("image/png")),
            ("image/png; charset=x", Some("image/png")),
            ("image/png ;", Some("image/png")),
            ("audio/webm;codecs=opus", Some("audio/webm")),
            ("audio/ogg; codecs=opus", Some("audio/ogg")),
            ("Audio/X-WAV", Some("audio/wav")),
            ("audio/wave", Some("audio/wav")),
            ("audio/mp3", Some("audio/mpeg")),
            ("audio/x-m4a", Some("audio/mp4")),
            ("video/QuickTime", Some("video/quicktime")),
            ("image/svg+xml", None),
            ("application/octet-stream", None),
            ("image", None),
            ("", None),
        ] {
            assert_eq!(
                FileKind::declared(declared).map(|k| k.mime),
                mime,
                "{declared}"
            );
        }
    }

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut d = b"\x89PNG\r\n\x1A\n\0\0\0\x0DIHDR".to_vec();
        d.extend_from_slice(&w.to_be_bytes());
        d.extend_from_slice(&h.to_be_bytes());
        d.extend_from_slice(b"\x08\x06\0\0\0");
        d
    }

    #[test]
    fn png_dimensions_come_from_ihdr() {
        assert_eq!(
            dimensions("image/png", &png_header(640, 480)),
            Some((640, 480))
        );
        assert_eq!(dimensions("image/png", &png_header(0, 480)), None);
        assert_eq!(dimensions("image/png", &png_header(u32::MAX, 1)), None);
        assert_eq!(dimensions("image/png", b"\x89PNG\r\n\x1A\n"), None);
        let mut not_ihdr = png_header(1, 1);
        not_ihdr[12..16].copy_from_slice(b"IDAT");
        assert_eq!(dimensions("image/png", &not_ihdr), None);
    }

    #[test]
    fn gif_dimensions_come_from_the_screen_descriptor() {
        assert_eq!(
            dimensions("image/gif", b"GIF89a\x40\x01\xF0\x00\0\0\0"),
            Some((320, 240))
        );
        assert_eq!(dimensions("image/gif", b"GIF87a\x01\0"), None);
    }

    #[test]
    fn jpeg_dimensions_come_from_the_first_frame_header() {
        // SOI, APP0 (length 16), a fill byte, SOF2 (progressive): 8-bit, 600 high, 800 wide.
        let mut d = b"\xFF\xD8\xFF\xE0\x00\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0".to_vec();
        d.extend_from_slice(b"\xFF\xFF\xC2\x00\x11\x08\x02\x58\x03\x20\x03\x01\x22\x00");
        assert_eq!(dimensions("image/jpeg", &d), Some((800, 600)));
        // DHT (C4) is not a frame header and is skipped.
        let mut dht = b"\xFF\xD8\xFF\xC4\x00\x04\0\0".to_vec();
        dht.extend_from_slice(b"\xFF\xC0\x00\x11\x08\x00\x10\x00\x20\x03");
        assert_eq!(dimensions("image/jpeg", &dht), Some((32, 16)));
        // Start of scan before any frame header, truncated data, or garbage: none.
        assert_eq!(dimensions("image/jpeg", b"\xFF\xD8\xFF\xDA\x00\x02"), None);
        assert_eq!(
            dimensions("image/jpeg", b"\xFF\xD8\xFF\xE0\x00\x10JF"),
            None
        );
        assert_eq!(dimensions("image/jpeg", b"\xFF\xD8\xFF\xE0\x00\x00"), None);
        assert_eq!(dimensions("image/jpeg", b"\xFF\xD8\x00"), None);
    }

    #[test]
    fn webp_dimensions_come_from_vp8_vp8l_or_vp8x() {
        let riff = |chunk: &[u8]| {
            let mut d = b"RIFF\0\0\0\0WEBP".to_vec();
            d.extend_from_slice(chunk);
            d
        };
        // Lossy: frame tag, start code, 14-bit width/height (upper 2 bits are scaling).
        let vp8 = riff(b"VP8 \0\0\0\0\x30\x01\x00\x9D\x01\x2A\x80\x42\xE0\x01");
        assert_eq!(dimensions("image/webp", &vp8), Some((640, 480)));
        // Lossless: width-1 = 99, height-1 = 49 packed in 14-bit fields.
        let bits: u32 = 99 | (49 << 14);
        let mut vp8l_chunk = b"VP8L\0\0\0\0\x2F".to_vec();
        vp8l_chunk.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(
            dimensions("image/webp", &riff(&vp8l_chunk)),
            Some((100, 50))
        );
        // Extended: 24-bit canvas width-1 / height-1.
        let vp8x = riff(b"VP8X\x0A\0\0\0\x10\0\0\0\xFF\x0F\0\x37\x04\0");
        assert_eq!(dimensions("image/webp", &vp8x), Some((4096, 1080)));
        assert_eq!(dimensions("image/webp", &riff(b"ALPH\0\0\0\0")), None);
        assert_eq!(
            dimensions("image/webp", &riff(b"VP8 \0\0\0\0\0\0\0\0\0\0")),
            None
        );
    }

    #[test]
    fn only_images_have_dimensions() {
        assert_eq!(dimensions("application/pdf", &png_header(1, 1)), None);
    }
}
