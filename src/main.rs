use affectcam::bench::{self, BenchReport};
use affectcam::capture::Source;
use affectcam::cli::{
    AnnotateArgs, BenchArgs, Cli, Command, DataArgs, EvalArgs, LiveArgs, ModelArgs, PipelineArgs,
    PredictArgs, TrainArgs,
};
use affectcam::data::LoadOptions;
use affectcam::detect::{DetectorConfig, FaceDetector};
use affectcam::eval::run::EvalOptions;
use affectcam::model::preprocess::FaceBox;
use affectcam::model::{labels::EMOTIONS, select_device, AffectModel, ModelMeta};
use affectcam::pipeline::{self, Mode, PipelineConfig};
use affectcam::train::fit::{fit, ClassWeights, TrainConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (the version the mimalloc crate builds).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Keep freed memory mapped: re-faulting fresh zeroed pages cost ~14% of a training step
    // (perf: clear_page) because each step frees and reallocates the same large buffers.
    // SAFETY: plain option setter of the allocator, called before any threads start.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // candle appends a backtrace to some errors; a user gets the message line only.
        let message = format!("{e:#}");
        eprintln!("error: {}", message.lines().next().unwrap_or_default());
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(args) => bench_cmd(args),
        Command::Predict(args) => predict_cmd(args),
        Command::Live(args) => live_cmd(args),
        Command::Annotate(args) => annotate_cmd(args),
        Command::Train(args) => train_cmd(args),
        Command::Eval(args) => eval_cmd(args),
    }
}

fn pipeline_config(args: &PipelineArgs, source: Source, mode: Mode) -> PipelineConfig {
    let mut config = PipelineConfig::new(source, mode);
    config.detect_every = args.detect_every;
    config.classify_per_frame = args.classify_per_frame as usize;
    config.detector.max_width = args.detect_width;
    config.face_log = args.jsonl.clone();
    config.max_frames = args.max_frames;
    config.capture.fps = args.fps;
    config.recorder.qp = args.qp;
    config.recorder.fps = args.fps as f32;
    config
}

fn live_cmd(args: LiveArgs) -> Result<()> {
    let mode = Mode::Live {
        window: !args.headless,
    };
    let mut config = pipeline_config(&args.pipeline, args.source, mode);
    (config.capture.width, config.capture.height) = args.size;
    config.record = args.record;
    config.snapshot_dir = args.snapshot_dir;
    run_pipeline(&args.pipeline, &config)
}

fn annotate_cmd(args: AnnotateArgs) -> Result<()> {
    let same_file = args.output.exists()
        && std::fs::canonicalize(&args.output).ok() == std::fs::canonicalize(&args.input).ok();
    if same_file {
        bail!(
            "--output would overwrite the input {}",
            args.input.display()
        );
    }
    let mut config = pipeline_config(&args.pipeline, Source::Path(args.input), Mode::Offline);
    config.record = Some(args.output);
    config.progress = true;
    run_pipeline(&args.pipeline, &config)
}

/// Runs the pipeline, stopping cleanly on Ctrl-C, then reports what happened.
fn run_pipeline(args: &PipelineArgs, config: &PipelineConfig) -> Result<()> {
    let (model, device) = load_model(&args.model)?;
    let stop = Arc::new(AtomicBool::new(false));
    let on_interrupt = stop.clone();
    // First Ctrl-C: finish the recording and exit; the stages notice within a frame.
    ctrlc::set_handler(move || on_interrupt.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    let outcome = pipeline::run(config, model, device, stop)?;
    eprintln!("{}", outcome.stats.report());
    if let Some(path) = &args.stats_json {
        std::fs::write(path, serde_json::to_string_pretty(&outcome.stats)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match outcome.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn load_model(args: &ModelArgs) -> Result<(AffectModel, Device)> {
    let device = select_device(args.device)?;
    let model = match &args.weights {
        Some(path) => AffectModel::load(path, &device)?,
        None => AffectModel::shipped(&device)?,
    };
    Ok((model, device))
}

fn load_options(data: &DataArgs) -> LoadOptions {
    LoadOptions {
        format: data.format,
        label_mode: data.label_mode,
        skip_bad: data.skip_bad,
        seed: data.seed,
    }
}

fn eval_cmd(args: EvalArgs) -> Result<()> {
    let (model, device) = load_model(&args.model)?;
    let opts = EvalOptions {
        load: load_options(&args.data),
        data: args.data.data,
        split: args.split,
        train_data: args.train_data,
        json: args.json,
        predictions: args.predictions,
        out: args.out,
    };
    let output = affectcam::eval::run::run(&model, &device, &opts)?;
    println!("{}", affectcam::eval::summary(&output.report));
    if output.skipped > 0 {
        println!(
            "rows without a usable label or skipped, across the datasets' splits: {}",
            output.skipped
        );
    }
    if let Some(leak) = &output.leakage {
        println!(
            "{} evaluation images are pixel-identical to training images of {}; without them:",
            leak.duplicates,
            leak.train_data.display()
        );
        println!("{}", affectcam::eval::summary(&leak.without_duplicates));
    }
    Ok(())
}

fn train_cmd(args: TrainArgs) -> Result<()> {
    let device = select_device(args.device)?;
    let init = match args.init.as_str() {
        "none" => None,
        path => {
            let path = std::path::PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "ImageNet weights not found at {}; pass --init FILE or --init none",
                    path.display()
                );
            }
            Some(path)
        }
    };
    let cfg = TrainConfig {
        data: args.data.data,
        format: args.data.format,
        label_mode: args.data.label_mode,
        task: args.task,
        epochs: args.epochs,
        batch_size: args.batch_size.max(1),
        patience: args.patience,
        lr_trunk: args.lr_trunk,
        lr_head: args.lr_head,
        class_weights: if args.no_class_weights {
            ClassWeights::None
        } else {
            args.class_weights
        },
        finetune_blocks: args.finetune_blocks.0,
        init,
        color: args.color,
        crop_margin: args.crop_margin,
        input_size: args.input_size,
        mirror: !args.no_mirror,
        va_repeat: args.va_repeat.max(1),
        seed: args.data.seed,
        limit: args.limit,
        skip_bad: args.data.skip_bad,
        out: args.out,
        cache_dir: args.cache_dir,
    };
    let outcome = fit(&cfg, &device)?;
    for (path, report) in &outcome.test_reports {
        println!(
            "test split of {}:\n{}",
            path.display(),
            affectcam::eval::summary(report)
        );
    }
    Ok(())
}

fn predict_cmd(args: PredictArgs) -> Result<()> {
    let (model, device) = load_model(&args.model)?;
    let pre = model.meta.preprocess;
    let mut detector = FaceDetector::new(DetectorConfig::default());
    let mut without_faces = 0;
    for path in &args.images {
        let img = image::open(path)
            .with_context(|| format!("cannot read image {}", path.display()))?
            .to_rgb8();
        let faces: Vec<Option<FaceBox>> = if args.no_detect {
            vec![None]
        } else {
            detector
                .detect(&img)
                .into_iter()
                .map(|d| Some(d.face))
                .collect()
        };
        if faces.is_empty() {
            without_faces += 1;
            eprintln!(
                "{}: no face found (--no-detect treats the image as a face crop)",
                path.display()
            );
            continue;
        }
        let inputs: Vec<Vec<f32>> = faces
            .iter()
            .map(|f| match f {
                Some(b) => pre.to_input(&pre.crop_face(&img, *b)),
                None => pre.to_input(&img),
            })
            .collect();
        let predictions = model.predict(&pre.batch(&inputs, &device)?)?;
        for (face, p) in faces.iter().zip(predictions) {
            let label = EMOTIONS[p.label()];
            let bbox = face.map(|b| [b.x, b.y, b.width, b.height]);
            if args.json {
                let probs: serde_json::Map<_, _> = EMOTIONS
                    .iter()
                    .zip(p.probs)
                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect();
                let line = serde_json::json!({
                    "file": path, "box": bbox, "label": label, "confidence": p.probs[p.label()],
                    "valence": p.valence, "arousal": p.arousal, "probs": probs,
                });
                println!("{line}");
            } else {
                let at = bbox.map_or(String::new(), |[x, y, w, h]| {
                    format!(" face at ({x:.0}, {y:.0}) {w:.0}×{h:.0}")
                });
                println!(
                    "{}{at}: {label} ({:.0}%), valence {:+.2}, arousal {:+.2}",
                    path.display(),
                    100.0 * p.probs[p.label()],
                    p.valence,
                    p.arousal
                );
            }
        }
    }
    if without_faces > 0 {
        eprintln!(
            "{without_faces} of {} images had no detectable face",
            args.images.len()
        );
    }
    Ok(())
}

fn bench_cmd(args: BenchArgs) -> Result<()> {
    if args.child {
        let device = Device::Cpu;
        let model = match &args.weights {
            Some(path) => AffectModel::load(path, &device)?,
            None => {
                let varmap = candle_nn::VarMap::new();
                let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &device);
                AffectModel::new(vb, ModelMeta::default())?
            }
        };
        let report = bench::run(&model, &device, args.reps, !args.no_train)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if args.threads.is_empty() || args.threads.contains(&0) {
        bail!("--threads needs positive thread counts, e.g. --threads 1,2");
    }
    let exe = std::env::current_exe().context("cannot locate the affectcam executable")?;
    let mut reports = Vec::new();
    for &threads in &args.threads {
        eprintln!("benchmarking with {threads} thread(s)…");
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--child", "--reps", &args.reps.to_string()])
            .env("RAYON_NUM_THREADS", threads.to_string())
            .env("CANDLE_NUM_THREADS", threads.to_string());
        if let Some(w) = &args.weights {
            cmd.arg("--weights").arg(w);
        }
        if args.no_train {
            cmd.arg("--no-train");
        }
        let out = cmd.output().context("cannot run the benchmark process")?;
        if !out.status.success() {
            bail!(
                "benchmark with {threads} thread(s) failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report: BenchReport =
            serde_json::from_slice(&out.stdout).context("benchmark process printed no report")?;
        print_report(&report);
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn print_report(r: &BenchReport) {
    let t =
        |t: &bench::Timing| format!("{:8.2} ms  [{:.2}–{:.2}]", t.median_ms, t.min_ms, t.max_ms);
    println!(
        "threads {}  input {}×{}",
        r.threads, r.input_size, r.input_size
    );
    println!("  batch 1                 {}", t(&r.batch1));
    println!(
        "  batch 32                {}  = {:.2} ms/image",
        t(&r.batch32),
        r.batch32_per_image_ms
    );
    println!("  peak RSS                {:8.0} MB", r.peak_rss_mb);
    if let Some(full) = &r.train_step_full {
        println!("  train step, all         {}", t(full));
    }
    if let Some(last4) = &r.train_step_last4 {
        println!("  train step, last 4      {}", t(last4));
    }
}
