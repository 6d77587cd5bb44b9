//! Nothing lost on a crash: a `live` run killed with SIGKILL mid-recording leaves a recording
//! that plays up to its last complete fragment (about a second), with the capture timestamps,
//! and a face log at most about a second behind it.

mod common;

use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use std::time::{Duration, Instant};

/// Frame rate of `crying_to_laughing.mp4`: 24000/1001.
const CLIP_FPS: f64 = 24000.0 / 1001.0;

#[test]
fn a_killed_live_recording_plays_up_to_its_last_fragment() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (record, log) = (dir.path().join("live.mp4"), dir.path().join("faces.jsonl"));
    let mut child = common::affectcam()
        .arg("live")
        .arg("--headless")
        .arg("--source")
        .arg(shared.join("clips/crying_to_laughing.mp4"))
        .arg("--record")
        .arg(&record)
        .arg("--jsonl")
        .arg(&log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Live plays the file in real time: let it record a few fragments, then kill it the way
    // a crash or an out-of-memory kill would (Child::kill sends SIGKILL).
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(4500));
    child.kill().unwrap();
    child.wait().unwrap();
    let ran_s = started.elapsed().as_secs_f64();

    let mut source = Mp4Source::open(&record).expect("the killed recording opens");
    let mut times = Vec::new();
    while let Some((t, _)) = source.next_frame().expect("every kept frame decodes") {
        times.push(t.as_secs_f64());
    }
    // How far the run got, from the face log (flushed at least once a second; times are
    // the source's, like the recording's).
    let logged_s = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["time_s"].as_f64())
        .fold(0.0, f64::max);
    // One fragment (~1 s) may be lost from the video, and the log may lag by a second.
    let recorded_s = times.last().copied().unwrap_or(0.0);
    assert!(
        recorded_s >= logged_s - 2.1,
        "video to {recorded_s:.2} s, log to {logged_s:.2} s, killed after {ran_s:.1} s"
    );
    assert!(
        times.len() as f64 >= 1.5 * CLIP_FPS,
        "{} frames",
        times.len()
    );
    // The capture timestamps survive: increasing, on the clip's frame grid.
    for pair in times.windows(2) {
        assert!(pair[1] > pair[0], "timestamps go back: {pair:?}");
    }
    for &t in &times {
        let frames = t * CLIP_FPS;
        assert!(
            (frames - frames.round()).abs() < 0.01,
            "{t} s is off the frame grid"
        );
    }
    let ffprobe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&record)
        .output();
    match ffprobe {
        Ok(out) if out.status.success() => {
            let counted: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            assert_eq!(counted, times.len(), "ffprobe and our reader disagree");
        }
        _ => eprintln!("ffprobe not found: checked with the project's reader only"),
    }
}
