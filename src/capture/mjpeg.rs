//! MJPEG frames: JPEG pictures, from cameras that often leave out the Huffman tables (they
//! use the standard ones of JPEG Annex K.3 without sending them); those tables are inserted
//! before decoding.

use image::RgbImage;

/// Decodes one MJPEG frame, supplying the standard Huffman tables when the camera left them out.
pub fn decode_mjpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    let with_tables;
    let jpeg = if has_huffman_tables(bytes) {
        bytes
    } else {
        with_tables = insert_standard_huffman_tables(bytes)?;
        &with_tables
    };
    crate::picture::decode_camera_frame(jpeg).map_err(|e| format!("bad MJPEG frame ({e})"))
}

/// Walks the JPEG marker segments up to the scan; true if any is a DHT (0xFFC4).
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    segments(jpeg).any(|(marker, _)| marker == 0xc4)
}

/// `(marker, offset of the 0xFF)` of each segment before the start of scan (0xFFDA).
fn segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, usize)> + '_ {
    let mut pos = 2; // after SOI
    std::iter::from_fn(move || {
        if pos + 4 > jpeg.len() || jpeg[pos] != 0xff {
            return None;
        }
        let (marker, at) = (jpeg[pos + 1], pos);
        if marker == 0xda {
            pos = jpeg.len();
        } else {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            pos += 2 + len;
        }
        Some((marker, at))
    })
}

/// Inserts a DHT segment with the tables of JPEG Annex K.3 right before the start of scan.
fn insert_standard_huffman_tables(jpeg: &[u8]) -> Result<Vec<u8>, String> {
    if !jpeg.starts_with(&[0xff, 0xd8]) {
        return Err("MJPEG frame does not start with a JPEG marker".into());
    }
    let Some((_, sos)) = segments(jpeg).find(|&(marker, _)| marker == 0xda) else {
        return Err("MJPEG frame has no image data (no start of scan)".into());
    };
    let mut out = Vec::with_capacity(jpeg.len() + 432);
    out.extend_from_slice(&jpeg[..sos]);
    out.extend_from_slice(&standard_dht_segment());
    out.extend_from_slice(&jpeg[sos..]);
    Ok(out)
}

fn standard_dht_segment() -> Vec<u8> {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &DC_VALUES),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES),
        (0x01, &DC_CHROMA_BITS, &DC_VALUES),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES),
    ];
    let body: Vec<u8> = tables
        .iter()
        .flat_map(|(class_id, bits, values)| {
            std::iter::once(*class_id)
                .chain(bits.iter().copied())
                .chain(values.iter().copied())
        })
        .collect();
    let len = (body.len() + 2) as u16;
    let mut segment = vec![0xff, 0xc4];
    segment.extend_from_slice(&len.to_be_bytes());
    segment.extend(body);
    segment
}

const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const AC_LUMA_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const AC_CHROMA_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

#[cfg(test)]
pub(crate) mod testing {
    //! JPEG helpers for the camera tests.
    use super::segments;
    use image::{Rgb, RgbImage};

    pub fn jpeg_of(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(img)
            .unwrap();
        bytes
    }

    pub fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 128]))
    }

    pub fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let dht: Vec<(usize, usize)> = segments(jpeg)
            .filter(|&(m, _)| m == 0xc4)
            .map(|(_, at)| {
                let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
                (at, at + 2 + len)
            })
            .collect();
        assert!(!dht.is_empty(), "the encoder wrote Huffman tables");
        let mut out = Vec::new();
        let mut from = 0;
        for (start, end) in dht {
            out.extend_from_slice(&jpeg[from..start]);
            from = end;
        }
        out.extend_from_slice(&jpeg[from..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{gradient, jpeg_of, strip_huffman_tables};
    use super::*;

    #[test]
    fn standard_tables_have_the_counts_their_bit_lengths_promise() {
        let count = |bits: &[u8; 16]| bits.iter().map(|&b| usize::from(b)).sum::<usize>();
        assert_eq!(count(&DC_LUMA_BITS), DC_VALUES.len());
        assert_eq!(count(&DC_CHROMA_BITS), DC_VALUES.len());
        assert_eq!(count(&AC_LUMA_BITS), AC_LUMA_VALUES.len());
        assert_eq!(count(&AC_CHROMA_BITS), AC_CHROMA_VALUES.len());
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_like_the_original() {
        let img = gradient(32, 16);
        let jpeg = jpeg_of(&img);
        let stripped = strip_huffman_tables(&jpeg);
        assert!(!has_huffman_tables(&stripped));
        let original = decode_mjpeg(&jpeg).unwrap();
        let fixed = decode_mjpeg(&stripped).unwrap();
        assert_eq!(original, fixed);
        assert!(decode_mjpeg(b"not a jpeg").is_err());
    }
}
