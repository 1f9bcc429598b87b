//! What an upload's content says beyond its magic bytes (docs/api.md, "Uploads and downloads"): a
//! thumbnail of an image, the displayed size of a JPEG whose EXIF orientation turns it, and the
//! duration (and for video the size) that an audio or video container announces.
//!
//! Everything here works on untrusted bytes already held in memory and never fails: a file that
//! cannot be read simply yields nothing. Decoding is bounded: an image whose header announces
//! more than [`MAX_PIXELS`] is not decoded at all, and every decode may allocate at most
//! [`MAX_DECODE_ALLOC`]. Audio and video are never decoded, only their container headers read.
//!
//! [`Inspector::inspect`] runs the work on the blocking pool, at most [`permits`] uploads at a
//! time, so large photos neither stall the async runtime nor multiply the process's memory; a
//! panic in a parser is contained there and also yields nothing.

use std::{io::Cursor, sync::Arc};

use bytes::Bytes;
use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, Rgb, RgbImage,
    codecs::jpeg::JpegEncoder, metadata::Orientation,
};
use tokio::sync::Semaphore;

use crate::sniff;

/// Thumbnails fit within this many pixels on each side.
pub const THUMBNAIL_SIZE: u32 = 320;
/// Images announcing more pixels than this are not decoded (decompression bombs).
pub const MAX_PIXELS: u64 = 50_000_000;
/// The most one image decode may allocate: a 50-megapixel RGB image at 8 bits (150 MB) plus room
/// for the decoder's own buffers. 16-bit or RGBA images that large exceed it and get no thumbnail.
pub const MAX_DECODE_ALLOC: u64 = 192 * 1024 * 1024;
/// JPEG quality of thumbnails.
const THUMBNAIL_QUALITY: u8 = 80;

/// What was learnt from a file's content.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MediaInfo {
    /// Width and height as displayed (images: EXIF orientation applied; videos: the track size).
    pub size: Option<(i32, i32)>,
    /// A JPEG thumbnail of an image.
    pub thumbnail: Option<Bytes>,
    /// Seconds, rounded to the millisecond.
    pub duration: Option<f64>,
}

/// How many uploads may be inspected at once: half the CPUs (at least one), so that decoding
/// leaves the other half to the async runtime and its memory stays a small multiple of
/// [`MAX_DECODE_ALLOC`].
pub fn permits() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2))
}

/// Runs inspections off the async runtime, a bounded number at a time. Cheap to clone.
#[derive(Clone)]
pub struct Inspector {
    permits: Arc<Semaphore>,
}

impl Default for Inspector {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits())),
        }
    }
}

impl Inspector {
    /// [`inspect_now`] on the blocking pool, waiting for a permit first.
    pub async fn inspect(&self, mime: &'static str, data: Bytes) -> MediaInfo {
        if !wants_inspection(mime) {
            return MediaInfo::default();
        }
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return MediaInfo::default();
        };
        tokio::task::spawn_blocking(move || inspect_now(mime, &data))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(file.r#type = mime, error = %shared_ops::Chain(&e), "media inspection failed");
                MediaInfo::default()
            })
    }
}

fn wants_inspection(mime: &str) -> bool {
    mime.starts_with("image/") || mime.starts_with("audio/") || mime.starts_with("video/")
}

/// Reads what the content of a file of type `mime` tells, synchronously. The header size of
/// images comes from [`sniff::dimensions`]; everything else from the codec and container crates.
pub fn inspect_now(mime: &str, data: &Bytes) -> MediaInfo {
    match mime {
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" => image(mime, data),
        "video/mp4" | "video/quicktime" | "audio/mp4" => {
            let (duration, size) = mp4(data).unwrap_or_default();
            MediaInfo {
                size,
                duration: duration.and_then(seconds),
                thumbnail: None,
            }
        }
        "video/webm" | "audio/webm" => {
            let (duration, size) = webm(data).unwrap_or_default();
            MediaInfo {
                size,
                duration: duration.and_then(seconds),
                thumbnail: None,
            }
        }
        "audio/mpeg" | "audio/ogg" | "audio/wav" => MediaInfo {
            duration: audio(mime, data).and_then(seconds),
            ..MediaInfo::default()
        },
        _ => MediaInfo::default(),
    }
}

/// A duration in seconds as the API gives it: finite, not negative, to the millisecond.
fn seconds(s: f64) -> Option<f64> {
    (0.0..1e9)
        .contains(&s)
        .then(|| (s * 1000.0).round() / 1000.0)
}

// ----- images -------------------------------------------------------------------------------------

fn image(mime: &str, data: &[u8]) -> MediaInfo {
    let header = sniff::dimensions(mime, data);
    let mut info = MediaInfo {
        size: header,
        ..MediaInfo::default()
    };
    let format = match mime {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        _ => ImageFormat::WebP,
    };
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let Ok(mut decoder) = reader.into_decoder() else {
        return info;
    };
    let (w, h) = decoder.dimensions();
    // Only JPEG orientation is applied (the other formats' EXIF is rarely set and not asked for).
    let orientation = if format == ImageFormat::Jpeg {
        decoder.orientation().unwrap_or(Orientation::NoTransforms)
    } else {
        Orientation::NoTransforms
    };
    if turns(orientation) {
        info.size = info.size.map(|(w, h)| (h, w));
    }
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return info;
    }
    // GIF: the decoder yields the first frame.
    let Ok(mut img) = DynamicImage::from_decoder(decoder) else {
        return info;
    };
    img.apply_orientation(orientation);
    info.thumbnail = thumbnail(&img).map(Bytes::from);
    info
}

/// Whether an EXIF orientation swaps width and height.
fn turns(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The image scaled to fit within [`THUMBNAIL_SIZE`] (never enlarged), transparency flattened
/// onto white, as a JPEG.
fn thumbnail(img: &DynamicImage) -> Option<Vec<u8>> {
    let small = if img.width() <= THUMBNAIL_SIZE && img.height() <= THUMBNAIL_SIZE {
        img.clone()
    } else {
        img.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    };
    let rgb: RgbImage = if small.color().has_alpha() {
        let rgba = small.to_rgba8();
        RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            let over =
                |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
            Rgb([over(r), over(g), over(b)])
        })
    } else {
        small.to_rgb8()
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, THUMBNAIL_QUALITY)
        .encode_image(&rgb)
        .ok()?;
    Some(out)
}

/// The granule position of the last page of the logical stream `serial` that has one (an Ogg page
/// header: `OggS`, version 0, header type, granule position (8, LE), serial number (4, LE), …).
fn last_granule(data: &[u8], serial: u32) -> Option<u64> {
    let mut end = data.len();
    while let Some(at) = data[..end].windows(4).rposition(|w| w == b"OggS") {
        let header = data.get(at..at + 27);
        if let Some(h) = header.filter(|h| h[4] == 0) {
            let granule = u64::from_le_bytes(h[6..14].try_into().ok()?);
            let page_serial = u32::from_le_bytes(h[14..18].try_into().ok()?);
            // -1: no packet ends on this page.
            if page_serial == serial && granule != u64::MAX {
                return Some(granule);
            }
        }
        end = at;
    }
    None
}

// ----- audio and video containers ----------------------------------------------------------------

type Size = Option<(i32, i32)>;

fn size(w: u64, h: u64) -> Size {
    (w > 0 && h > 0).then_some(())?;
    Some((i32::try_from(w).ok()?, i32::try_from(h).ok()?))
}

/// ISO base media (MP4, M4A, QuickTime): the movie's duration (its longest track, as the track
/// headers give it in the movie time scale, else the media headers in each track's scale) and
/// the first video track's size.
fn mp4(data: &[u8]) -> Option<(Option<f64>, Size)> {
    use mp4parse::TrackType;
    let ctx = mp4parse::read_mp4(&mut Cursor::new(data)).ok()?;
    let movie_scale = ctx.timescale.map(|t| t.0).filter(|&t| t > 0);
    let mut duration: Option<f64> = None;
    let mut dims = None;
    for track in ctx.tracks.iter() {
        let from_tkhd = match (&track.tkhd, movie_scale) {
            (Some(tkhd), Some(scale)) if tkhd.duration > 0 && tkhd.duration != u64::MAX => {
                Some(tkhd.duration as f64 / scale as f64)
            }
            _ => None,
        };
        let from_mdhd = match (&track.duration, &track.timescale) {
            (Some(d), Some(t)) if t.0 > 0 => Some(d.0 as f64 / t.0 as f64),
            _ => None,
        };
        if let Some(d) = from_tkhd.or(from_mdhd) {
            duration = Some(duration.map_or(d, |max| max.max(d)));
        }
        if dims.is_none() && track.track_type == TrackType::Video {
            // Track header sizes are 16.16 fixed point.
            dims = track
                .tkhd
                .as_ref()
                .and_then(|t| size(u64::from(t.width >> 16), u64::from(t.height >> 16)));
        }
    }
    Some((duration, dims))
}

/// Matroska / WebM: the segment duration and the first video track's pixel size.
fn webm(data: &[u8]) -> Option<(Option<f64>, Size)> {
    let file = matroska_demuxer::MatroskaFile::open(Cursor::new(data)).ok()?;
    let info = file.info();
    let duration = info
        .duration()
        .map(|d| d * info.timestamp_scale().get() as f64 / 1e9);
    let dims = file
        .tracks()
        .iter()
        .find_map(|t| t.video())
        .and_then(|v| size(v.pixel_width().get(), v.pixel_height().get()));
    Some((duration, dims))
}

/// MP3 (Xing/VBRI/Info header, else estimated from the frames' bit rate and the size), OGG (last
/// granule position over the sample rate) and WAV (data size over the byte rate), through
/// symphonia's format readers; nothing is decoded.
fn audio(mime: &str, data: &Bytes) -> Option<f64> {
    use symphonia::core::{
        formats::FormatOptions, io::MediaSourceStream, meta::MetadataOptions, probe::Hint,
    };
    let source = Cursor::new(data.clone());
    let stream = MediaSourceStream::new(Box::new(source), Default::default());
    let mut hint = Hint::new();
    hint.mime_type(mime);
    hint.with_extension(match mime {
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        _ => "wav",
    });
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .ok()?;
    let track = probed.format.default_track()?;
    let params = &track.codec_params;
    if mime == "audio/ogg" {
        let rate = params.sample_rate.filter(|&r| r > 0)?;
        return Some(last_granule(data, track.id)? as f64 / f64::from(rate));
    }
    let frames = params.n_frames?;
    match (params.time_base, params.sample_rate) {
        (Some(tb), _) => {
            let t = tb.calc_time(frames);
            Some(t.seconds as f64 + t.frac)
        }
        (None, Some(rate)) if rate > 0 => Some(frames as f64 / f64::from(rate)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Bytes {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap().into()
    }

    #[test]
    fn containers_give_their_duration_and_video_size() {
        for (mime, name, duration, size) in [
            ("audio/mpeg", "tone-cbr.mp3", 2.56, None),
            ("audio/mpeg", "tone-vbr.mp3", 3.265, None),
            ("audio/ogg", "tone.ogg", 1.75, None),
            ("video/mp4", "clip.mp4", 2.0, Some((64, 48))),
            ("video/webm", "clip.webm", 2.008, Some((64, 48))),
            // QuickTime and M4A share the MP4 movie header; audio WebM the WebM segment.
            ("video/quicktime", "clip.mp4", 2.0, Some((64, 48))),
            ("audio/mp4", "clip.mp4", 2.0, Some((64, 48))),
            ("audio/webm", "clip.webm", 2.008, Some((64, 48))),
        ] {
            let info = inspect_now(mime, &fixture(name));
            assert_eq!(info.duration, Some(duration), "{name}");
            assert_eq!(info.size, size, "{name}");
            assert_eq!(info.thumbnail, None, "{name}");
        }
    }

    #[test]
    fn cut_or_garbled_containers_give_nothing_and_never_panic() {
        for (mime, name) in [
            ("audio/mpeg", "tone-cbr.mp3"),
            ("audio/mpeg", "tone-vbr.mp3"),
            ("audio/ogg", "tone.ogg"),
            ("video/mp4", "clip.mp4"),
            ("video/webm", "clip.webm"),
        ] {
            let whole = fixture(name);
            for cut in [0, 4, 16, 64, 200, whole.len() / 2] {
                inspect_now(mime, &whole.slice(..cut));
            }
            let mut garbled = whole.to_vec();
            for (i, b) in garbled.iter_mut().enumerate().skip(8) {
                if i % 7 == 0 {
                    *b ^= 0x5A;
                }
            }
            inspect_now(mime, &Bytes::from(garbled));
        }
        assert_eq!(
            inspect_now("video/mp4", &fixture("clip.mp4").slice(..64)).duration,
            None
        );
    }

    #[test]
    fn durations_are_rounded_to_the_millisecond() {
        assert_eq!(seconds(1.234_56), Some(1.235));
        assert_eq!(seconds(f64::NAN), None);
        assert_eq!(seconds(-1.0), None);
        assert_eq!(seconds(f64::INFINITY), None);
    }
}
