//! Writes the synthetic 3-face test clip (640×480, 300 frames, 30 fps, H.264 MP4) that the
//! pipeline tests and benchmark use, built from the photos in ../shared.
//!
//! cargo run --release --example synthetic_clip -- clip.mp4

#[path = "../tests/common/clip.rs"]
mod clip;

fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: synthetic_clip OUT.mp4");
        std::process::exit(2);
    };
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    clip::write_mp4(&clip::three_faces(&shared, 300), std::path::Path::new(&out));
}
