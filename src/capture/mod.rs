//! Frame sources, the first pipeline stage: a camera (nokhwa), an H.264 MP4 file, or a folder
//! of images (or one image). Every source yields RGB frames with a timestamp from the start of
//! the stream, so recordings play at the speed they were captured.

pub mod camera;
pub mod demux;
pub mod images;
pub mod mjpeg;
pub mod video;

use image::RgbImage;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Errors opening or reading a source.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The path given as a source does not exist.
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    /// The source file has no bytes at all.
    #[error("{0} is empty (0 bytes)")]
    Empty(PathBuf),
    /// The file is not a format affectcam reads.
    #[error("{path}: unsupported format ({found}); affectcam reads H.264 MP4 video, PNG/JPEG images or a folder of them")]
    Unsupported { path: PathBuf, found: String },
    /// The MP4 file is damaged or its video cannot be decoded.
    #[error("{path}: {reason}")]
    Video { path: PathBuf, reason: String },
    /// An image of an image source cannot be decoded.
    #[error("cannot decode image {path}: {source}")]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    /// A folder source holds no PNG or JPEG images.
    #[error("{path} contains no PNG or JPEG images ({other} other files)")]
    NoImages { path: PathBuf, other: usize },
    /// The requested camera does not exist.
    #[error("camera {index} not found; cameras found: {}; use --source FILE (an MP4 video, an image or a folder of images)", list_or_none(.found))]
    NoCamera { index: u32, found: Vec<String> },
    /// The camera exists but could not be opened or configured.
    #[error("camera {index}: {reason}")]
    Camera { index: u32, reason: String },
    /// The camera stopped delivering frames (unplugged, or taken by another program).
    #[error("camera {index} stopped delivering frames: {reason}")]
    CameraLost { index: u32, reason: String },
    /// Reading the source failed at the operating-system level.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn list_or_none(found: &[String]) -> String {
    if found.is_empty() {
        "none".into()
    } else {
        found.join(", ")
    }
}

/// Where frames come from, as given to `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A camera by index (`camera` or `camera:N`).
    Camera(u32),
    /// A file or folder; its kind is decided from its contents when opened.
    Path(PathBuf),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("camera") {
            Some("") => Ok(Self::Camera(0)),
            Some(rest) => match rest.strip_prefix(':').map(str::parse) {
                Some(Ok(index)) => Ok(Self::Camera(index)),
                _ => Err(format!(
                    "bad camera source {s:?}: expected camera:N, e.g. camera:0"
                )),
            },
            None => Ok(Self::Path(PathBuf::from(s))),
        }
    }
}

/// Frame rate requested from cameras and used to play image sources, unless told otherwise.
pub const DEFAULT_FPS: f64 = 30.0;
/// Camera frame size requested unless told otherwise.
pub const DEFAULT_FRAME_SIZE: FrameSize = FrameSize {
    width: 640,
    height: 480,
};

/// A frame size in pixels, written `WIDTHxHEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
        match parsed {
            Some((width, height)) if width >= 16 && height >= 16 => Ok(Self { width, height }),
            _ => Err(format!("expected WIDTHxHEIGHT, e.g. 640x480, got {s:?}")),
        }
    }
}

/// What to ask a camera for; files keep their own size and rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureConfig {
    pub width: u32,
    pub height: u32,
    /// Camera frame rate to request, and the rate image sources are played at.
    pub fps: f64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            width: DEFAULT_FRAME_SIZE.width,
            height: DEFAULT_FRAME_SIZE.height,
            fps: DEFAULT_FPS,
        }
    }
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the source, from 0.
    pub index: u64,
    /// Presentation time from the start of the stream.
    pub timestamp: Duration,
    /// When the frame entered the pipeline (for capture-to-display latency).
    pub captured: Instant,
    pub image: RgbImage,
}

/// A stream of frames.
pub trait FrameSource {
    /// What was opened, for the user (e.g. "clip.mp4: 640×480 H.264, 300 frames at 30.0 fps").
    fn describe(&self) -> String;
    /// Number of frames, when the source knows it.
    fn frame_count(&self) -> Option<u64>;
    /// The next frame and its presentation time; `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<(Duration, RgbImage)>, CaptureError>;
    /// True when frames arrive in real time by themselves (a camera); files are read as fast
    /// as asked and must be paced by the caller to play live.
    fn is_live(&self) -> bool {
        false
    }
    /// Problems the source worked around and counted (e.g. skipped files), for the exit summary.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Opens `source`. Cameras must be opened in the thread that reads them.
pub fn open(source: &Source, config: &CaptureConfig) -> Result<Box<dyn FrameSource>, CaptureError> {
    let path = match source {
        Source::Camera(index) => return Ok(Box::new(camera::open(*index, config)?)),
        Source::Path(path) => path,
    };
    if path.is_dir() {
        return Ok(Box::new(images::ImageSource::folder(path, config.fps)?));
    }
    match sniff(path)? {
        FileKind::Mp4 => Ok(Box::new(video::Mp4Source::open(path)?)),
        FileKind::Image => Ok(Box::new(images::ImageSource::single(path, config.fps)?)),
        FileKind::Other(found) => Err(CaptureError::Unsupported {
            path: path.to_path_buf(),
            found,
        }),
    }
}

enum FileKind {
    Mp4,
    Image,
    Other(String),
}

/// Decides a file's kind from its first bytes, not its name.
fn sniff(path: &Path) -> Result<FileKind, CaptureError> {
    let io = |source| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Err(CaptureError::NotFound(path.to_path_buf()));
    }
    let mut head = Vec::with_capacity(16);
    File::open(path)
        .map_err(io)?
        .take(16)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.is_empty() {
        return Err(CaptureError::Empty(path.to_path_buf()));
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return Ok(FileKind::Mp4);
    }
    let found = match image::guess_format(&head) {
        Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg) => return Ok(FileKind::Image),
        Ok(format) => format!("{format:?} image"),
        Err(_) if head.starts_with(b"RIFF") => "RIFF (AVI/WAV) file".into(),
        Err(_) if head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) => "Matroska/WebM video".into(),
        Err(_) => "not an MP4 or image file".into(),
    };
    Ok(FileKind::Other(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_camera_and_path_sources() {
        assert_eq!("camera".parse::<Source>(), Ok(Source::Camera(0)));
        assert_eq!("camera:2".parse::<Source>(), Ok(Source::Camera(2)));
        assert!("camera:x".parse::<Source>().is_err());
        assert_eq!(
            "clip.mp4".parse::<Source>(),
            Ok(Source::Path("clip.mp4".into()))
        );
    }

    #[test]
    fn sniffs_files_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let config = CaptureConfig::default();
        let empty = write("empty.mp4", b"");
        assert!(matches!(
            open(&Source::Path(empty), &config),
            Err(CaptureError::Empty(_))
        ));
        let avi = write("clip.mp4", b"RIFF\0\0\0\0AVI LIST");
        let err = open(&Source::Path(avi), &config).err().unwrap().to_string();
        assert!(err.contains("unsupported format (RIFF"), "{err}");
        let missing = dir.path().join("missing.mp4");
        assert!(matches!(
            open(&Source::Path(missing), &config),
            Err(CaptureError::NotFound(_))
        ));
    }
}
