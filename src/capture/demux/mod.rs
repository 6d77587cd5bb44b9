//! MP4 demuxing for H.264 video: the sample table of the first video track, from a plain MP4
//! (`stbl` tables) or a fragmented one (`moof`/`traf`/`trun`, as affectcam records). We walk
//! the atom tree ourselves and hand only the atoms we use to `mp4-atom` to parse: the others
//! (sample groups, metadata, encryption) are never decoded, so their parsers cannot be made to
//! hang (a fuzzed `sgpd` claiming 4 billion empty entries did). Every count, offset and size is
//! checked against the file, so a hostile file can neither make us read outside it nor allocate
//! more than it could describe. A file that ends inside an atom (a recording cut off by a
//! crash) keeps every complete fragment before that point.

use mp4_atom::{
    Avcc, Co64, Ctts, Decode, FourCC, Hdlr, Mdhd, Stco, Stsc, Stss, Stsz, Stts, Tkhd, Trex,
};
use std::io::{Read, Seek, SeekFrom};
use tables::{fragment_samples, progressive_samples, FragmentDefaults};

mod tables;

/// Largest `moov` or `moof` read into memory. Real headers are kilobytes to a few megabytes.
const MAX_HEADER_ATOM: u64 = 64 << 20;
/// Most samples a track may have: 46 hours at 30 fps, a 160 MB table. Bounds what a hostile
/// file can make us allocate (counts are also bounded by the file's length).
const MAX_SAMPLES: usize = 5_000_000;
/// `trun` sample flag: not a sync sample (ISO/IEC 14496-12, 8.8.3.1).
const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

/// Errors reading an MP4 file's structure.
#[derive(Debug, thiserror::Error)]
pub enum DemuxError {
    /// Reading the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not an MP4 file, or its header atoms are damaged.
    #[error("not a readable MP4 file ({0})")]
    NotMp4(String),
    /// No video track.
    #[error("the MP4 file has no video track")]
    NoVideo,
    /// A video codec other than H.264.
    #[error("{0} video; only H.264 is decoded")]
    Codec(String),
    /// The sample tables contradict each other or point outside the file.
    #[error("damaged sample tables ({0})")]
    Tables(String),
}

fn damaged(reason: impl Into<String>) -> DemuxError {
    DemuxError::Tables(reason.into())
}

/// One coded frame: where it is and when it is decoded and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub offset: u64,
    pub size: u32,
    /// Decode time in track ticks.
    pub decode_time: u64,
    /// Presentation time minus decode time, in track ticks (B-frames).
    pub composition_offset: i64,
    pub sync: bool,
}

/// The first video track of a file.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    pub width: u16,
    pub height: u16,
    /// Ticks per second.
    pub timescale: u32,
    /// The H.264 decoder configuration (length size, SPS, PPS).
    pub avcc: mp4_atom::Avcc,
    pub samples: Vec<Sample>,
    /// The file ends inside an atom: everything before it was kept.
    pub truncated: bool,
}

impl VideoTrack {
    /// Frames per second over the whole track (0 when unknown).
    pub fn frame_rate(&self) -> f64 {
        let span = match (self.samples.first(), self.samples.last()) {
            (Some(first), Some(last)) if self.samples.len() > 1 => {
                last.decode_time.saturating_sub(first.decode_time)
            }
            _ => return 0.0,
        };
        if span == 0 {
            return 0.0;
        }
        (self.samples.len() - 1) as f64 * f64::from(self.timescale) / span as f64
    }
}

/// A top-level atom of interest, read whole, with its position in the file.
enum TopLevel {
    Moov(Vec<u8>),
    Moof { bytes: Vec<u8>, offset: u64 },
}

/// The atoms of one track that the sample table is built from.
struct TrackAtoms {
    tkhd: Tkhd,
    mdhd: Mdhd,
    /// The first sample entry (`avc1` for H.264), with its header.
    sample_entry: Vec<u8>,
    stts: Stts,
    ctts: Option<Ctts>,
    stss: Option<Stss>,
    stsc: Stsc,
    stsz: Stsz,
    stco: Option<Stco>,
    co64: Option<Co64>,
}

/// The direct children of an atom body: (kind, the child atom with its header). A child whose
/// size runs past the body is an error.
fn children(body: &[u8]) -> Result<Vec<(FourCC, &[u8])>, DemuxError> {
    let mut found = Vec::new();
    let mut rest = body;
    while rest.len() >= 8 {
        let size32 = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        let kind = FourCC::new(rest[4..8].try_into().expect("4 bytes"));
        let (header, size) = match size32 {
            0 => (8, rest.len() as u64),
            1 if rest.len() >= 16 => (16, u64::from_be_bytes(rest[8..16].try_into().expect("8"))),
            1 => return Err(DemuxError::NotMp4(format!("{kind} atom is cut off"))),
            n => (8, u64::from(n)),
        };
        if size < header || size > rest.len() as u64 {
            return Err(DemuxError::NotMp4(format!(
                "{kind} atom of {size} bytes in a {}-byte parent",
                rest.len()
            )));
        }
        let (atom, after) = rest.split_at(size as usize);
        found.push((kind, atom));
        rest = after;
    }
    Ok(found)
}

/// The body of an atom (after its 8- or 16-byte header).
fn body(atom: &[u8]) -> &[u8] {
    let large = atom.len() >= 16 && atom[..4] == [0, 0, 0, 1];
    &atom[if large { 16 } else { 8 }..]
}

/// The first child of `parent`'s body of this kind.
fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, DemuxError> {
    Ok(children(body(parent))?
        .into_iter()
        .find(|(k, _)| *k == FourCC::new(kind))
        .map(|(_, atom)| atom))
}

/// A child that must be there.
fn required<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Result<&'a [u8], DemuxError> {
    child(parent, kind)?
        .ok_or_else(|| DemuxError::NotMp4(format!("no {} atom", String::from_utf8_lossy(kind))))
}

/// Parses one atom with `mp4-atom`.
fn parse<T: Decode>(atom: &[u8], what: &str) -> Result<T, DemuxError> {
    T::decode(&mut &atom[..]).map_err(|e| DemuxError::NotMp4(format!("{what} atom: {e}")))
}

fn parse_optional<T: Decode>(atom: Option<&[u8]>, what: &str) -> Result<Option<T>, DemuxError> {
    atom.map(|a| parse(a, what)).transpose()
}

/// The first sample entry of an `stsd` atom (after version, flags and the entry count).
fn first_sample_entry(stsd: &[u8]) -> Result<&[u8], DemuxError> {
    let entries = body(stsd)
        .get(8..)
        .ok_or_else(|| DemuxError::NotMp4("stsd atom is cut off".into()))?;
    children(entries)?
        .into_iter()
        .next()
        .map(|(_, atom)| atom)
        .ok_or_else(|| DemuxError::Codec("no sample entry".into()))
}

/// Width, height and decoder configuration of an `avc1` sample entry: a visual sample entry
/// (78 bytes, the size at 24..28) followed by child atoms, of which we read only `avcC`.
fn avc1_config(entry: &[u8]) -> Result<(u16, u16, Avcc), DemuxError> {
    let fields = body(entry);
    if fields.len() < 78 {
        return Err(DemuxError::NotMp4("avc1 sample entry is cut off".into()));
    }
    let width = u16::from_be_bytes([fields[24], fields[25]]);
    let height = u16::from_be_bytes([fields[26], fields[27]]);
    let avcc = children(&fields[78..])?
        .into_iter()
        .find(|(kind, _)| *kind == FourCC::new(b"avcC"))
        .map(|(_, atom)| atom)
        .ok_or_else(|| DemuxError::NotMp4("avc1 sample entry has no avcC".into()))?;
    Ok((width, height, parse(avcc, "avcC")?))
}

/// The first video track's atoms, and the `trex` defaults for its fragments.
fn video_track_atoms(moov: &[u8]) -> Result<(TrackAtoms, Option<Trex>), DemuxError> {
    for (kind, trak) in children(body(moov))? {
        if kind != FourCC::new(b"trak") {
            continue;
        }
        let mdia = required(trak, b"mdia")?;
        let hdlr: Hdlr = parse(required(mdia, b"hdlr")?, "hdlr")?;
        if hdlr.handler != FourCC::new(b"vide") {
            continue;
        }
        let minf = required(mdia, b"minf")?;
        let stbl = required(minf, b"stbl")?;
        let atoms = TrackAtoms {
            tkhd: parse(required(trak, b"tkhd")?, "tkhd")?,
            mdhd: parse(required(mdia, b"mdhd")?, "mdhd")?,
            sample_entry: first_sample_entry(required(stbl, b"stsd")?)?.to_vec(),
            stts: parse(required(stbl, b"stts")?, "stts")?,
            ctts: parse_optional(child(stbl, b"ctts")?, "ctts")?,
            stss: parse_optional(child(stbl, b"stss")?, "stss")?,
            stsc: parse(required(stbl, b"stsc")?, "stsc")?,
            stsz: parse(required(stbl, b"stsz")?, "stsz")?,
            stco: parse_optional(child(stbl, b"stco")?, "stco")?,
            co64: parse_optional(child(stbl, b"co64")?, "co64")?,
        };
        let track_id = atoms.tkhd.track_id;
        let mut trex = None;
        if let Some(mvex) = child(moov, b"mvex")? {
            for (kind, atom) in children(body(mvex))? {
                if kind == FourCC::new(b"trex") {
                    let t: Trex = parse(atom, "trex")?;
                    if t.track_id == track_id {
                        trex = Some(t);
                    }
                }
            }
        }
        return Ok((atoms, trex));
    }
    Err(DemuxError::NoVideo)
}

/// Reads the structure of an MP4 file of `len` bytes.
pub fn read_video_track<R: Read + Seek>(file: &mut R, len: u64) -> Result<VideoTrack, DemuxError> {
    let (atoms, truncated) = top_level_atoms(file, len)?;
    let mut moov = None;
    let mut moofs = Vec::new();
    for atom in atoms {
        match atom {
            TopLevel::Moov(m) => moov = Some(m),
            TopLevel::Moof { bytes, offset } => moofs.push((bytes, offset)),
        }
    }
    let moov = moov.ok_or_else(|| DemuxError::NotMp4("no moov atom".into()))?;
    let (track, trex) = video_track_atoms(&moov)?;
    let codec = FourCC::new(
        track.sample_entry[4..8]
            .try_into()
            .expect("atoms have a kind"),
    );
    if codec != FourCC::new(b"avc1") {
        return Err(DemuxError::Codec(codec.to_string()));
    }
    let (width, height, avcc) = avc1_config(&track.sample_entry)?;
    let timescale = track.mdhd.timescale;
    if timescale == 0 {
        return Err(damaged("the video track has a zero timescale"));
    }
    let (mut samples, mut next_decode_time) = progressive_samples(&track, len)?;
    let track_id = track.tkhd.track_id;
    let defaults = FragmentDefaults {
        duration: trex.as_ref().map_or(0, |t| t.default_sample_duration),
        size: trex.as_ref().map_or(0, |t| t.default_sample_size),
        flags: trex.as_ref().map_or(0, |t| t.default_sample_flags),
    };
    for (moof, offset) in &moofs {
        fragment_samples(
            moof,
            *offset,
            track_id,
            &defaults,
            len,
            &mut next_decode_time,
            &mut samples,
        )?;
    }
    Ok(VideoTrack {
        width,
        height,
        timescale,
        avcc,
        samples,
        truncated,
    })
}

/// The `moov` and every `moof`, skipping media data; stops (truncated) at an atom that runs
/// past the end of the file.
fn top_level_atoms<R: Read + Seek>(
    file: &mut R,
    len: u64,
) -> Result<(Vec<TopLevel>, bool), DemuxError> {
    let mut atoms = Vec::new();
    let mut offset = 0u64;
    let mut saw_ftyp_or_moov = false;
    while len.saturating_sub(offset) >= 8 {
        file.seek(SeekFrom::Start(offset))?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head[..8])?;
        let size32 = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
        let kind = FourCC::new(head[4..8].try_into().expect("4 bytes"));
        let (header_len, size) = match size32 {
            0 => (8, len - offset), // to the end of the file
            1 => {
                if len - offset < 16 {
                    return Ok((atoms, true));
                }
                file.read_exact(&mut head[8..16])?;
                (
                    16,
                    u64::from_be_bytes(head[8..16].try_into().expect("8 bytes")),
                )
            }
            n => (8, u64::from(n)),
        };
        if size < header_len {
            return Err(DemuxError::NotMp4(format!(
                "atom {kind} at byte {offset} has size {size}"
            )));
        }
        if offset == 0 && kind != FourCC::new(b"ftyp") && kind != FourCC::new(b"moov") {
            return Err(DemuxError::NotMp4(format!("starts with {kind}, not ftyp")));
        }
        if size > len - offset {
            // Cut off: keep what came before (a crashed recording's last fragment).
            return Ok((atoms, true));
        }
        let is_moov = kind == FourCC::new(b"moov");
        if is_moov || kind == FourCC::new(b"moof") {
            if size > MAX_HEADER_ATOM {
                return Err(DemuxError::NotMp4(format!(
                    "{kind} atom of {size} bytes is implausibly large"
                )));
            }
            file.seek(SeekFrom::Start(offset))?;
            let mut bytes = vec![0u8; size as usize];
            file.read_exact(&mut bytes)?;
            atoms.push(if is_moov {
                TopLevel::Moov(bytes)
            } else {
                TopLevel::Moof { bytes, offset }
            });
        }
        saw_ftyp_or_moov |= is_moov || kind == FourCC::new(b"ftyp");
        offset += size;
    }
    if !saw_ftyp_or_moov {
        return Err(DemuxError::NotMp4("no ftyp or moov atom".into()));
    }
    Ok((atoms, false))
}
