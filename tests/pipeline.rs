//! End-to-end `annotate` and `live` on synthetic clips made from real faces (../shared),
//! encoded by affectcam itself; bad inputs; the window under Xvfb.

mod common;

use affectcam::capture::demux::read_video_track;
use affectcam::capture::video::Mp4Source;
use affectcam::capture::FrameSource;
use affectcam::geometry::FaceBox;
use affectcam::model::labels::{emotion_index, EMOTIONS};
use affectcam::model::AffectModel;
use common::clip;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;

fn decode_all(path: &Path) -> Vec<image::RgbImage> {
    let mut source = Mp4Source::open(path).unwrap();
    std::iter::from_fn(|| source.next_frame().unwrap().map(|(_, img)| img)).collect()
}

/// Writes the clip's frames as `000.png`, `001.png`… into a new folder `dir`; returns it.
fn save_pngs(clip: &clip::Clip, dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir(dir).unwrap();
    for (i, frame) in clip.frames.iter().enumerate() {
        frame.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
    dir.to_path_buf()
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn face_box(record: &serde_json::Value) -> FaceBox {
    let b: Vec<f32> = record["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    FaceBox {
        x: b[0],
        y: b[1],
        width: b[2],
        height: b[3],
    }
}

#[test]
fn annotate_finds_tracks_and_labels_the_faces_of_a_synthetic_clip() {
    let Some(shared) = common::shared() else {
        return;
    };
    let frames = 60;
    let clip = clip::three_faces(&shared, frames);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.mp4"), dir.path().join("out.mp4"));
    let (jsonl, stats) = (
        dir.path().join("faces.jsonl"),
        dir.path().join("stats.json"),
    );
    clip::write_mp4(&clip, &input);
    let (ok, _, stderr) = common::run_affectcam(&[
        &"annotate",
        &"--input",
        &input,
        &"--output",
        &output,
        &"--jsonl",
        &jsonl,
        &"--stats-json",
        &stats,
    ]);
    assert!(ok, "{stderr}");

    // A valid MP4 with every frame, at the input's size.
    let annotated = decode_all(&output);
    assert_eq!(annotated.len(), frames);
    assert!(annotated
        .iter()
        .all(|f| f.dimensions() == (clip::WIDTH, clip::HEIGHT)));
    let stats = common::read_json(&stats);
    assert_eq!(stats["frames_in"], frames);
    assert_eq!(stats["frames_recorded"], frames);
    assert_eq!(stats["frames_dropped"], 0);

    // Recall at the known boxes, and one stable id per face.
    let records = read_jsonl(&jsonl);
    let mut by_frame: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &records {
        by_frame
            .entry(r["frame"].as_u64().unwrap())
            .or_default()
            .push(r);
    }
    let mut found = 0;
    let mut ids_of_face: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 3];
    for (i, truths) in clip.boxes.iter().enumerate() {
        for (face, truth) in truths.iter().enumerate() {
            let best = by_frame
                .get(&(i as u64))
                .into_iter()
                .flatten()
                .max_by(|a, b| truth.iou(&face_box(a)).total_cmp(&truth.iou(&face_box(b))));
            if let Some(r) = best.filter(|r| truth.iou(&face_box(r)) >= 0.4) {
                found += 1;
                ids_of_face[face].insert(r["id"].as_u64().unwrap());
            }
        }
    }
    let recall = found as f64 / (3 * frames) as f64;
    assert!(recall >= 0.9, "recall {recall:.3}");
    assert!(
        ids_of_face.iter().all(|ids| ids.len() == 1),
        "one id per face: {ids_of_face:?}"
    );
    let all_ids: BTreeSet<u64> = ids_of_face.iter().flatten().copied().collect();
    assert_eq!(all_ids.len(), 3, "three different faces: {ids_of_face:?}");

    // YuNet's score and landmarks come with every face; the landmarks lie inside its box.
    for r in &records {
        let score = r["detector_score"].as_f64().unwrap();
        assert!((0.2..=1.0).contains(&score), "{r}");
        let b = face_box(r);
        for name in ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"] {
            let p = &r["landmarks"][name];
            let (x, y) = (p[0].as_f64().unwrap() as f32, p[1].as_f64().unwrap() as f32);
            let inside = x > b.x && x < b.x + b.width && y > b.y && y < b.y + b.height;
            assert!(inside, "{name} outside the box: {r}");
        }
    }

    // Labels agree with crop-level predictions: the same model on the same boxes of the
    // original (uncompressed) frames, one face at a time.
    let model = AffectModel::shipped(&candle_core::Device::Cpu).unwrap();
    let pre = model.meta.preprocess;
    let mut crop_labels: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let (mut agree, mut fresh) = (0, 0);
    for r in records.iter().filter(|r| r["raw"]["this_frame"] == true) {
        let frame = &clip.frames[r["frame"].as_u64().unwrap() as usize];
        let face = pre.face_pixels(&pre.crop(frame, face_box(r), None));
        let batch = pre
            .batch_of([(&face[..], false)], &candle_core::Device::Cpu)
            .unwrap();
        let label = model.predict(&batch).unwrap()[0].label();
        crop_labels
            .entry(r["id"].as_u64().unwrap())
            .or_default()
            .push(label);
        fresh += 1;
        if emotion_index(r["raw"]["label"].as_str().unwrap()) == Some(label) {
            agree += 1;
        }
    }
    assert!(fresh >= frames, "every frame classifies a face: {fresh}");
    let agreement = agree as f64 / fresh as f64;
    assert!(agreement >= 0.9, "per-frame agreement {agreement:.3}");
    // The label shown at the end (smoothed, with hysteresis) is the face's usual crop label.
    for r in &by_frame[&(frames as u64 - 1)] {
        let labels = &crop_labels[&r["id"].as_u64().unwrap()];
        let usual = (0..EMOTIONS.len())
            .max_by_key(|&k| labels.iter().filter(|&&l| l == k).count())
            .unwrap();
        assert_eq!(r["label"], EMOTIONS[usual], "{r}");
    }
}

#[test]
fn two_faces_crossing_keep_their_ids() {
    let Some(shared) = common::shared() else {
        return;
    };
    let frames = 90;
    let clip = clip::crossing(&shared, frames);
    let dir = tempfile::tempdir().unwrap();
    let (input, output, jsonl) = (
        dir.path().join("in.mp4"),
        dir.path().join("out.mp4"),
        dir.path().join("faces.jsonl"),
    );
    clip::write_mp4(&clip, &input);
    let (ok, _, stderr) = common::run_affectcam(&[
        &"annotate",
        &"--input",
        &input,
        &"--output",
        &output,
        &"--jsonl",
        &jsonl,
    ]);
    assert!(ok, "{stderr}");
    let records = read_jsonl(&jsonl);
    // Face 1 (the astronaut) is drawn over face 0: face 0 is judged only while no part of
    // face 1's pasted square covers it.
    let mut ids_of_face: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 2];
    let mut judged = 0;
    for (i, truths) in clip.boxes.iter().enumerate() {
        let square = |b: &FaceBox| {
            let inset = b.width / 4.0; // the face is 2/3 of its square
            (b.x - inset, b.x + b.width + inset)
        };
        let (front_left, front_right) = square(&truths[1]);
        for (face, truth) in truths.iter().enumerate() {
            let covered = truth.x + truth.width > front_left && truth.x < front_right;
            if face == 0 && covered {
                continue;
            }
            judged += 1;
            let best = records
                .iter()
                .filter(|r| r["frame"] == i as u64)
                .max_by(|a, b| truth.iou(&face_box(a)).total_cmp(&truth.iou(&face_box(b))));
            if let Some(r) = best.filter(|r| truth.iou(&face_box(r)) >= 0.4) {
                ids_of_face[face].insert(r["id"].as_u64().unwrap());
            }
        }
    }
    assert!(judged > frames, "{judged}");
    assert!(
        ids_of_face.iter().all(|ids| ids.len() == 1) && ids_of_face[0] != ids_of_face[1],
        "one id per face through the crossing: {ids_of_face:?}"
    );
}

#[test]
fn live_headless_plays_an_image_folder_records_it_and_logs_csv() {
    let Some(shared) = common::shared() else {
        return;
    };
    let clip = clip::three_faces(&shared, 12);
    let dir = tempfile::tempdir().unwrap();
    let frames = save_pngs(&clip, &dir.path().join("frames"));
    let (record, csv, stats) = (
        dir.path().join("live.mp4"),
        dir.path().join("faces.csv"),
        dir.path().join("stats.json"),
    );
    let started = std::time::Instant::now();
    let (ok, _, stderr) = common::run_affectcam(&[
        &"live",
        &"--headless",
        &"--source",
        &frames,
        &"--fps",
        &"20",
        &"--record",
        &record,
        &"--jsonl",
        &csv,
        &"--stats-json",
        &stats,
    ]);
    assert!(ok, "{stderr}");
    // Played in real time: 12 frames at 20 fps take at least 0.55 s.
    assert!(started.elapsed().as_secs_f64() >= 0.55);
    let stats = common::read_json(&stats);
    assert_eq!(stats["frames_in"], 12);
    let shown = stats["frames_shown"].as_u64().unwrap();
    // Real time on 2 cores shared with the other tests of this suite: most frames are shown.
    assert!(shown >= 8, "{stats}");
    assert_eq!(decode_all(&record).len() as u64, shown);
    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("frame,time_s,id,x,y,width,height,neutral"));
    assert!(header.ends_with(",detector_score,left_eye_x,left_eye_y,right_eye_x,right_eye_y,nose_x,nose_y,left_mouth_x,left_mouth_y,right_mouth_x,right_mouth_y"));
    let rows: Vec<&str> = lines.collect();
    // Live detection runs beside the frames, so the first frames may pass before its first
    // result (longer on a loaded machine); from then on every frame logs its faces.
    let mut per_frame: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *per_frame.entry(r.split(',').next().unwrap()).or_default() += 1;
    }
    assert!(
        per_frame.len() + 6 >= shown as usize,
        "frames with faces: {per_frame:?}"
    );
    assert!(
        per_frame.values().all(|&n| n >= 2),
        "faces per frame: {per_frame:?}"
    );
    let columns = header.split(',').count();
    assert!(
        rows.iter()
            .all(|r| r.split(',').count() == columns && !r.ends_with(',')),
        "every row has a score and landmarks"
    );
    assert!(stderr.contains("latency p50"), "{stderr}");
}

/// Runs affectcam expecting failure; returns its one stderr line.
fn fails_with_one_line(args: &[&dyn AsRef<OsStr>]) -> String {
    let (ok, _, stderr) = common::run_affectcam(args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(!ok, "should fail: {shown:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

fn annotate(input: &Path, output: &Path) -> String {
    fails_with_one_line(&[&"annotate", &"--input", &input, &"--output", &output])
}

#[test]
fn bad_inputs_end_in_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let missing = dir.path().join("missing.mp4");
    assert!(annotate(&missing, &out).contains("missing.mp4: no such file or folder"));

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(annotate(&empty, &out).contains("empty.mp4 is empty (0 bytes)"));

    let avi = dir.path().join("clip.avi");
    std::fs::write(&avi, b"RIFF\x10\0\0\0AVI LIST\0\0\0\0").unwrap();
    assert!(annotate(&avi, &out).contains("unsupported format (RIFF"));

    let broken = dir.path().join("broken.mp4");
    std::fs::write(&broken, b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2garbage").unwrap();
    assert!(annotate(&broken, &out).contains("not a readable MP4 file"));

    let texts = dir.path().join("notes");
    std::fs::create_dir(&texts).unwrap();
    std::fs::write(texts.join("a.txt"), "hello").unwrap();
    assert!(annotate(&texts, &out).contains("contains no PNG or JPEG images (1 other files)"));

    let fake_png = dir.path().join("fakes");
    std::fs::create_dir(&fake_png).unwrap();
    std::fs::write(fake_png.join("a.png"), "not a png").unwrap();
    assert!(annotate(&fake_png, &out).contains("cannot decode image"));

    let line = fails_with_one_line(&[&"live", &"--headless", &"--source", &"camera:57"]);
    assert!(
        line.contains("camera 57") && line.contains("--source FILE"),
        "{line}"
    );

    let (ok, _, stderr) = common::run_affectcam(&[&"live", &"--source", &dir.path().join("fakes")]);
    // Without a display the error suggests --headless (skipped when a display is present).
    if std::env::var_os("DISPLAY").is_none() {
        assert!(!ok && stderr.contains("--headless"), "{stderr}");
    }
}

/// Overwrites the NAL length prefix of sample `index` (1-based) so it runs past the sample.
fn damage_sample(path: &Path, index: u32) {
    let bytes = std::fs::read(path).unwrap();
    let mut cursor = std::io::Cursor::new(&bytes);
    let track = read_video_track(&mut cursor, bytes.len() as u64).unwrap();
    let at = track.samples[index as usize - 1].offset as usize;
    let mut damaged = bytes.clone();
    damaged[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    std::fs::write(path, damaged).unwrap();
}

#[test]
fn a_clip_damaged_midway_still_leaves_a_playable_recording() {
    let Some(shared) = common::shared() else {
        return;
    };
    let clip = clip::three_faces(&shared, 40);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.mp4"), dir.path().join("out.mp4"));
    clip::write_mp4(&clip, &input);
    damage_sample(&input, 31);
    let line = annotate(&input, &output);
    assert!(line.contains("frame 31 is damaged"), "{line}");
    assert_eq!(decode_all(&output).len(), 30, "the 30 good frames are kept");
}

#[test]
fn the_window_shows_the_overlay_under_xvfb() {
    let Some(shared) = common::shared() else {
        return;
    };
    let have_tools = std::process::Command::new("sh")
        .args([
            "-c",
            "command -v xvfb-run && command -v xwd && command -v xdotool",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_tools {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI needs xvfb, x11-apps (xwd) and xdotool"
        );
        eprintln!("skipping: xvfb-run, xwd or xdotool not installed");
        return;
    }
    let frames = 90; // 3 s at 30 fps; the keys below end it early
    let clip = clip::three_faces(&shared, frames);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    clip::write_mp4(&clip, &input);
    let shot = dir.path().join("shot.xwd");
    // minifb reports a key held across a frame, so each key is held for 150 ms; with no window
    // manager the keyboard goes to the window under the pointer.
    let script = format!(
        "key() {{ xdotool keydown $1; sleep 0.15; xdotool keyup $1; }}
         {exe} live --source {input} --snapshot-dir {dir} & sleep 1.2
         xwd -root -silent > {shot}
         xdotool mousemove 400 300; key s; sleep 0.3; key q
         wait $!",
        exe = env!("CARGO_BIN_EXE_affectcam"),
        input = input.display(),
        dir = dir.path().display(),
        shot = shot.display()
    );
    let out = std::process::Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 800x600x24", "sh", "-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let screen = read_xwd(&std::fs::read(&shot).unwrap());
    // The overlay's box colours (happy yellow is in every frame's tags and boxes) and the
    // readout's white-on-black text are on screen; the raw clip has neither.
    let count =
        |pred: &dyn Fn(&image::Rgb<u8>) -> bool| screen.pixels().filter(|p| pred(p)).count();
    let happy = count(&|p| p.0 == [255, 200, 0]);
    let in_clip = clip.frames[20]
        .pixels()
        .filter(|p| p.0 == [255, 200, 0])
        .count();
    assert!(
        happy > 500 && in_clip < 50,
        "overlay pixels {happy}, in the clip {in_clip}"
    );
    // The window is wherever X put it (centred on Xvfb): its top-left corner is the corner of
    // the non-black area, since the clip has no black and the root window is black.
    let lit: Vec<(u32, u32)> = screen
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0 != [0, 0, 0])
        .map(|(x, y, _)| (x, y))
        .collect();
    let x0 = lit.iter().map(|p| p.0).min().expect("a window on screen");
    let y0 = lit.iter().map(|p| p.1).min().expect("a window on screen");
    let readout_white = (y0..y0 + 20)
        .flat_map(|y| (x0..x0 + 150).map(move |x| (x, y)))
        .filter(|&(x, y)| screen.get_pixel(x, y).0.iter().all(|&c| c > 200))
        .count();
    assert!(
        readout_white > 40,
        "fps readout text at the window's corner ({x0}, {y0}): {readout_white}"
    );

    // s saved a snapshot of the annotated view; q quit before the clip ended.
    let snapshots: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("affectcam-snapshot-"))
        .collect();
    assert_eq!(snapshots.len(), 1, "{stderr}");
    let snapshot = image::open(&snapshots[0]).unwrap().to_rgb8();
    assert_eq!(snapshot.dimensions(), (clip::WIDTH, clip::HEIGHT));
    assert!(snapshot.pixels().filter(|p| p.0 == [255, 200, 0]).count() > 500);
    let shown: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("frames: ")?.split(' ').next()?.parse().ok())
        .expect("exit statistics");
    assert!(shown < frames as u64, "q ended the run early: {stderr}");
}

/// Decodes an X window dump (xwd, 24/32-bit TrueColor, as Xvfb writes it) into RGB.
fn read_xwd(bytes: &[u8]) -> image::RgbImage {
    let field = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
    let (header_size, width, height) = (field(0) as usize, field(4), field(5));
    let bits_per_pixel = field(11);
    let bytes_per_line = field(12) as usize;
    let byte_order = field(7); // 0 = LSBFirst
    let colormap_entries = field(19) as usize;
    assert_eq!(bits_per_pixel, 32, "expected a 24-bit screen");
    let data = &bytes[header_size + colormap_entries * 12..];
    image::RgbImage::from_fn(width, height, |x, y| {
        let p = &data[y as usize * bytes_per_line + x as usize * 4..][..4];
        let v = if byte_order == 0 {
            u32::from_le_bytes(p.try_into().unwrap())
        } else {
            u32::from_be_bytes(p.try_into().unwrap())
        };
        image::Rgb([(v >> 16) as u8, (v >> 8) as u8, v as u8])
    })
}

#[test]
fn ctrl_c_finalises_a_playable_recording() {
    let Some(shared) = common::shared() else {
        return;
    };
    let clip = clip::one_face(&shared, 150); // 5 s at 30 fps
    let dir = tempfile::tempdir().unwrap();
    let (input, record) = (dir.path().join("in.mp4"), dir.path().join("rec.mp4"));
    clip::write_mp4(&clip, &input);
    let child = common::affectcam()
        .args(["live", "--headless", "--source"])
        .arg(&input)
        .arg("--record")
        .arg(&record)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let recorded = decode_all(&record).len();
    assert!(
        (10..150).contains(&recorded),
        "stopped early with the frames so far: {recorded}; {stderr}"
    );
    assert!(stderr.contains(&format!("recording saved: {}", record.display())));
}

#[test]
fn live_drops_frames_instead_of_building_a_backlog() {
    let Some(shared) = common::shared() else {
        return;
    };
    // 120 frames at 300 fps: far more than 2 cores can analyse, so live must drop.
    let clip = clip::three_faces(&shared, 120);
    let dir = tempfile::tempdir().unwrap();
    let frames = save_pngs(&clip, &dir.path().join("frames"));
    let stats = dir.path().join("stats.json");
    let (ok, _, stderr) = common::run_affectcam(&[
        &"live",
        &"--headless",
        &"--source",
        &frames,
        &"--fps",
        &"300",
        &"--stats-json",
        &stats,
    ]);
    assert!(ok, "{stderr}");
    let s = common::read_json(&stats);
    let (shown, dropped) = (
        s["frames_shown"].as_u64().unwrap(),
        s["frames_dropped"].as_u64().unwrap(),
    );
    assert_eq!(s["frames_in"], 120);
    assert!(dropped > 0 && shown + dropped <= 120, "{s}");
    // A queue of 120 frames at ~12 ms each would reach ~1.4 s; keep-latest stays near one
    // frame's analysis plus one image decode.
    let p95 = s["latency_ms"]["p95"].as_f64().unwrap();
    assert!(p95 < 200.0, "latency p95 {p95} ms: a backlog built up; {s}");
}
