//! Writes the synthetic test clips that the pipeline tests and benchmark use (640×480,
//! 300 frames, 30 fps, H.264 MP4) with 1 or 3 faces, or two faces crossing, built from the
//! photos in ../shared.
//!
//! cargo run --release --example synthetic_clip -- clip.mp4 [1|3|crossing]

#[path = "../tests/common/clip.rs"]
mod clip;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, faces) = match args.as_slice() {
        [out] => (out, "3"),
        [out, faces] if ["1", "3", "crossing"].contains(&faces.as_str()) => (out, faces.as_str()),
        _ => {
            eprintln!("usage: synthetic_clip OUT.mp4 [1|3|crossing]");
            std::process::exit(2);
        }
    };
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let clip = match faces {
        "1" => clip::one_face(&shared, 300),
        "crossing" => clip::crossing(&shared, 300),
        _ => clip::three_faces(&shared, 300),
    };
    clip::write_mp4(&clip, std::path::Path::new(out));
}
