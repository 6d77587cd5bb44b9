//! The container of recordings: a fragmented MP4, its atoms encoded by `mp4-atom`. The
//! header (`ftyp` + `moov`) goes first; then each fragment (`moof` + `mdat`) is written in one
//! call and synced to disk, so a killed process loses at most the fragment in progress and
//! what is on disk always plays. At the end the total duration is written into the header
//! (`mvhd`, `mehd`) in place: those atoms have fixed sizes, so nothing after them moves. The
//! file stays fragmented: rewriting it as a plain MP4 would copy every byte again, and
//! players, ffprobe and our own reader (`capture::demux`) all read fragments.

use mp4_atom::{
    Avc1, Avcc, Codec, Dinf, Dref, Encode, Ftyp, Hdlr, Matrix, Mdat, Mdhd, Mdia, Mehd, Mfhd, Minf,
    Moof, Moov, Mvex, Mvhd, Stbl, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url,
    Visual, Vmhd,
};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// Track timescale: 90 kHz, the usual video clock, so capture times keep sub-ms precision.
pub const TIMESCALE: u32 = 90_000;
/// Movie timescale (header durations): milliseconds.
const MOVIE_TIMESCALE: u32 = 1000;
/// `trun` sample flags (ISO/IEC 14496-12, 8.8.3.1): a key frame depends on no other; other
/// frames depend on earlier ones and are not sync samples.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
const OTHER_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// A failure encoding atoms or writing the file, as text for [`super::RecordError`].
pub type Fmp4Result<T> = Result<T, String>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A one-track H.264 fragmented MP4 being written.
pub struct FragmentedMp4 {
    file: File,
    /// The header as written, rewritten with the duration at the end.
    moov: Moov,
    moov_offset: u64,
    /// Frames of the fragment being gathered.
    entries: Vec<TrunEntry>,
    data: Vec<u8>,
    /// Decode time of the gathered fragment's first frame, and after its last.
    fragment_start: u64,
    end: u64,
    fragments_written: u32,
}

impl FragmentedMp4 {
    /// Writes the header for `width`×`height` H.264 with these parameter sets.
    pub fn start(
        mut file: File,
        width: u16,
        height: u16,
        sps: &[u8],
        pps: &[u8],
    ) -> Fmp4Result<Self> {
        let avcc = Avcc::new(sps, pps).map_err(text)?;
        let moov = header(width, height, avcc);
        let brands = [b"isom", b"iso5", b"iso6", b"avc1", b"mp41"];
        let ftyp = Ftyp {
            major_brand: b"isom".into(),
            minor_version: 512,
            compatible_brands: brands.iter().map(|&b| b.into()).collect(),
        };
        let mut bytes = Vec::new();
        ftyp.encode(&mut bytes).map_err(text)?;
        let moov_offset = bytes.len() as u64;
        moov.encode(&mut bytes).map_err(text)?;
        file.write_all(&bytes).map_err(text)?;
        Ok(Self {
            file,
            moov,
            moov_offset,
            entries: Vec::new(),
            data: Vec::new(),
            fragment_start: 0,
            end: 0,
            fragments_written: 0,
        })
    }

    /// Decode time after the last frame added, in [`TIMESCALE`] ticks.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Video gathered in the fragment so far, in ticks.
    pub fn fragment_span(&self) -> u64 {
        self.end - self.fragment_start
    }

    /// Adds one frame (length-prefixed NAL units) lasting `duration` ticks.
    pub fn add(&mut self, sample: &[u8], duration: u32, is_sync: bool) {
        if self.entries.is_empty() {
            self.fragment_start = self.end;
        }
        self.entries.push(TrunEntry {
            duration: Some(duration),
            size: Some(sample.len() as u32),
            flags: Some(if is_sync {
                SYNC_SAMPLE_FLAGS
            } else {
                OTHER_SAMPLE_FLAGS
            }),
            cts: None,
        });
        self.data.extend_from_slice(sample);
        self.end += u64::from(duration);
    }

    /// Writes the gathered frames as one `moof` + `mdat` and syncs them to disk.
    pub fn write_fragment(&mut self) -> Fmp4Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.fragments_written += 1;
        let mut moof = Moof {
            mfhd: Mfhd {
                sequence_number: self.fragments_written,
            },
            traf: vec![Traf {
                tfhd: Tfhd {
                    track_id: 1,
                    default_base_is_moof: true,
                    ..Tfhd::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: self.fragment_start,
                }),
                trun: vec![Trun {
                    data_offset: Some(0),
                    entries: std::mem::take(&mut self.entries),
                }],
                ..Traf::default()
            }],
        };
        // The data starts after the moof and the mdat header; the offset's value does not
        // change the moof's size.
        let mut sized = Vec::new();
        moof.encode(&mut sized).map_err(text)?;
        moof.traf[0].trun[0].data_offset = Some(sized.len() as i32 + 8);
        let data = std::mem::take(&mut self.data);
        let mut bytes = Vec::with_capacity(sized.len() + 8 + data.len());
        moof.encode(&mut bytes).map_err(text)?;
        Mdat { data }.encode(&mut bytes).map_err(text)?;
        self.fragment_start = self.end;
        self.file.write_all(&bytes).map_err(text)?;
        // On disk, not just in the page cache: what a power cut must not take.
        self.file.sync_data().map_err(text)
    }

    /// Writes the last fragment and the duration into the header.
    pub fn finish(mut self) -> Fmp4Result<()> {
        self.write_fragment()?;
        let mut before = Vec::new();
        self.moov.encode(&mut before).map_err(text)?;
        let movie = self.end * u64::from(MOVIE_TIMESCALE) / u64::from(TIMESCALE);
        self.moov.mvhd.duration = movie;
        if let Some(mehd) = self.moov.mvex.as_mut().and_then(|m| m.mehd.as_mut()) {
            mehd.fragment_duration = movie;
        }
        let mut after = Vec::new();
        self.moov.encode(&mut after).map_err(text)?;
        if after.len() != before.len() {
            return Err("the header changed size when its duration was set".into());
        }
        self.file
            .seek(SeekFrom::Start(self.moov_offset))
            .and_then(|_| self.file.write_all(&after))
            .and_then(|_| self.file.sync_data())
            .map_err(text)
    }
}

/// The header of a one-track H.264 recording with fragments to follow.
fn header(width: u16, height: u16, avcc: Avcc) -> Moov {
    let visual = Visual {
        data_reference_index: 1,
        width,
        height,
        ..Visual::default()
    };
    let avc1 = Avc1 {
        visual,
        avcc,
        btrt: None,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
    };
    Moov {
        mvhd: Mvhd {
            timescale: MOVIE_TIMESCALE,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: 2,
            ..Mvhd::default()
        },
        mvex: Some(Mvex {
            mehd: Some(Mehd::default()),
            trex: vec![Trex {
                track_id: 1,
                default_sample_description_index: 1,
                ..Trex::default()
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: 1,
                enabled: true,
                in_movie: true,
                width: width.into(),
                height: height.into(),
                matrix: Matrix::default(),
                ..Tkhd::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: TIMESCALE,
                    language: "und".into(),
                    ..Mdhd::default()
                },
                hdlr: Hdlr {
                    handler: b"vide".into(),
                    name: "VideoHandler".into(),
                },
                minf: Minf {
                    vmhd: Some(Vmhd::default()),
                    dinf: Dinf {
                        dref: Dref {
                            urls: vec![Url::default()],
                        },
                    },
                    stbl: Stbl {
                        stsd: Stsd {
                            codecs: vec![Codec::Avc1(avc1)],
                        },
                        ..Stbl::default()
                    },
                    ..Minf::default()
                },
            },
            ..Trak::default()
        }],
        ..Moov::default()
    }
}
