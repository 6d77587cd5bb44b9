//! The sample tables: a plain MP4's `stbl` and the `trun`s of each fragment, turned into
//! samples with every offset, size and count checked against the file.

use super::{
    body, child, children, damaged, parse, parse_optional, required, DemuxError, Sample,
    TrackAtoms, MAX_SAMPLES, SAMPLE_IS_NON_SYNC,
};
use mp4_atom::{FourCC, StszSamples, Tfdt, Tfhd, Trun};

/// Checks that `size` bytes at `offset` lie inside a file of `len` bytes.
fn check_inside(offset: u64, size: u32, len: u64) -> Result<(), DemuxError> {
    match offset.checked_add(u64::from(size)) {
        Some(end) if end <= len && size > 0 => Ok(()),
        _ => Err(damaged(format!(
            "a frame of {size} bytes at byte {offset} is outside the {len}-byte file"
        ))),
    }
}

/// At most [`MAX_SAMPLES`], and no more than a file of `len` bytes can hold (a byte each).
fn check_count(count: u64, len: u64) -> Result<(), DemuxError> {
    if count > (MAX_SAMPLES as u64).min(len) {
        return Err(damaged(format!("{count} frames in a {len}-byte file")));
    }
    Ok(())
}

/// Samples described by the track's `stbl` (none in a fragmented file's header), and the
/// decode time after the last one.
pub(super) fn progressive_samples(
    stbl: &TrackAtoms,
    len: u64,
) -> Result<(Vec<Sample>, u64), DemuxError> {
    let sizes: Vec<u32> = match &stbl.stsz.samples {
        StszSamples::Different { sizes } => sizes.clone(),
        // Every sample lies inside the file and is at least a byte, so `len` bounds the count.
        StszSamples::Identical { count, size } => {
            check_count(u64::from(*count), len)?;
            vec![*size; *count as usize]
        }
    };
    let count = sizes.len();
    check_count(count as u64, len)?;
    if count == 0 {
        return Ok((Vec::new(), 0));
    }
    let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => return Err(damaged("no chunk offsets")),
    };
    // Decode times from stts; the table may not claim more samples than stsz has.
    let mut decode_times = Vec::with_capacity(count);
    let mut t = 0u64;
    'stts: for entry in &stbl.stts.entries {
        for _ in 0..entry.sample_count {
            if decode_times.len() == count {
                break 'stts;
            }
            decode_times.push(t);
            t = t.saturating_add(u64::from(entry.sample_delta));
        }
    }
    if decode_times.len() != count {
        return Err(damaged(format!(
            "stts times {} samples, stsz sizes {count}",
            decode_times.len()
        )));
    }
    let mut composition = vec![0i64; count];
    if let Some(ctts) = &stbl.ctts {
        let mut i = 0;
        'ctts: for entry in &ctts.entries {
            for _ in 0..entry.sample_count {
                if i == count {
                    break 'ctts;
                }
                composition[i] = entry.sample_offset;
                i += 1;
            }
        }
    }
    let sync: Option<Vec<u32>> = stbl.stss.as_ref().map(|s| s.entries.clone());
    // Offsets: samples are laid out chunk by chunk; stsc says how many per chunk.
    let mut samples = Vec::with_capacity(count);
    let entries = &stbl.stsc.entries;
    let mut sample = 0usize;
    for (e, entry) in entries.iter().enumerate() {
        let first = entry.first_chunk.max(1) as usize;
        let last = entries.get(e + 1).map_or(chunk_offsets.len(), |next| {
            (next.first_chunk as usize).saturating_sub(1)
        });
        for chunk in first..=last.min(chunk_offsets.len()) {
            let mut offset = chunk_offsets[chunk - 1];
            for _ in 0..entry.samples_per_chunk {
                if sample == count {
                    break;
                }
                let size = sizes[sample];
                check_inside(offset, size, len)?;
                let number = sample as u32 + 1;
                samples.push(Sample {
                    offset,
                    size,
                    decode_time: decode_times[sample],
                    composition_offset: composition[sample],
                    sync: sync
                        .as_ref()
                        .is_none_or(|s| s.binary_search(&number).is_ok()),
                });
                offset += u64::from(size);
                sample += 1;
            }
        }
    }
    if samples.len() != count {
        return Err(damaged(format!(
            "chunks hold {} samples, stsz sizes {count}",
            samples.len()
        )));
    }
    Ok((samples, t))
}

/// `trex` defaults for fragments.
pub(super) struct FragmentDefaults {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
}

/// Appends the samples one `moof` (at file offset `moof_offset`) describes for `track_id`.
pub(super) fn fragment_samples(
    moof: &[u8],
    moof_offset: u64,
    track_id: u32,
    defaults: &FragmentDefaults,
    len: u64,
    next_decode_time: &mut u64,
    samples: &mut Vec<Sample>,
) -> Result<(), DemuxError> {
    for (kind, traf) in children(body(moof))? {
        if kind != FourCC::new(b"traf") {
            continue;
        }
        let tfhd: Tfhd = parse(required(traf, b"tfhd")?, "tfhd")?;
        if tfhd.track_id != track_id {
            continue;
        }
        let tfdt: Option<Tfdt> = parse_optional(child(traf, b"tfdt")?, "tfdt")?;
        let base = tfhd.base_data_offset.unwrap_or(moof_offset);
        let mut decode_time = tfdt.map_or(*next_decode_time, |t| t.base_media_decode_time);
        let duration = tfhd.default_sample_duration.unwrap_or(defaults.duration);
        let size = tfhd.default_sample_size.unwrap_or(defaults.size);
        let flags = tfhd.default_sample_flags.unwrap_or(defaults.flags);
        let mut offset = base;
        for (kind, atom) in children(body(traf))? {
            if kind != FourCC::new(b"trun") {
                continue;
            }
            let trun: Trun = parse(atom, "trun")?;
            if let Some(data_offset) = trun.data_offset {
                offset = base
                    .checked_add_signed(i64::from(data_offset))
                    .ok_or_else(|| damaged("a fragment's data offset is before the file"))?;
            }
            check_count((samples.len() + trun.entries.len()) as u64, len)?;
            for entry in &trun.entries {
                let sample_size = entry.size.unwrap_or(size);
                check_inside(offset, sample_size, len)?;
                samples.push(Sample {
                    offset,
                    size: sample_size,
                    decode_time,
                    composition_offset: entry.cts.map_or(0, i64::from),
                    sync: entry.flags.unwrap_or(flags) & SAMPLE_IS_NON_SYNC == 0,
                });
                offset += u64::from(sample_size);
                decode_time =
                    decode_time.saturating_add(u64::from(entry.duration.unwrap_or(duration)));
            }
        }
        *next_decode_time = decode_time;
    }
    Ok(())
}
