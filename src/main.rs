use affectcam::bench::{self, BenchOptions, BenchReport, DetectorBenchReport};
use affectcam::cli::{
    AnnotateArgs, BenchArgs, CalibrateArgs, Cli, Command, EvalArgs, LiveArgs, ModelArgs,
    PipelineArgs, PredictArgs, SelftestArgs, TrainArgs,
};
use affectcam::detect::{DetectorConfig, FaceDetector};
use affectcam::model::{device_label, select_device, AffectModel, DeviceChoice, Precision};
use affectcam::pipeline::{self, PipelineConfig};
use affectcam::predict::predict_photo;
use affectcam::selftest::{self, SelftestOptions};
use affectcam::train::fit::fit;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (the version the mimalloc crate builds).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The library's notices on stderr: information as it is, warnings marked. Other crates'
/// logs stay quiet.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("affectcam")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match record.level() {
            log::Level::Error => eprintln!("error: {}", record.args()),
            log::Level::Warn => eprintln!("warning: {}", record.args()),
            _ => eprintln!("{}", record.args()),
        }
    }

    fn flush(&self) {}
}

fn main() {
    // Keep freed memory mapped: re-faulting fresh zeroed pages cost ~14% of a training step
    // (perf: clear_page) because each step frees and reallocates the same large buffers.
    // SAFETY: plain option setter of the allocator, called before any threads start.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // candle runs its own elementwise ops (residual adds, pooling, the backward's adds) on a
    // pool of spinning threads beside the rayon pool of the model's kernels; on 2 cores its
    // spinning took cores from the kernels (whole training step at batch 32: 0.80–0.82 s with
    // one candle thread against 0.97–1.05 s with two). One thread, unless the user says.
    // Set before any thread starts, so nothing reads the environment concurrently.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    static LOGGER: StderrLog = StderrLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
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
        Command::Bench(args) => bench_cmd(&args),
        Command::Selftest(args) => selftest_cmd(&args),
        Command::Predict(args) => on_kernel_pool(|| predict_cmd(&args)),
        Command::Live(args) => live_cmd(&args),
        Command::Annotate(args) => annotate_cmd(&args),
        Command::Train(args) => on_kernel_pool(|| train_cmd(&args)),
        Command::Eval(args) => on_kernel_pool(|| eval_cmd(&args)),
        Command::Calibrate(args) => on_kernel_pool(|| calibrate_cmd(&args)),
    }
}

/// Runs `work` on this thread as one of the kernels' rayon workers (RAYON_NUM_THREADS of
/// them, or one per core), as the pipeline runs its model: outside the pool this thread would
/// be one more, handing each op to the workers and waiting (2-core Zen 4: a batch-1 forward
/// 2.4–2.6 against 4.2–4.8 ms, a whole training step 294–319 against 323–358 ms).
fn on_kernel_pool<T: Send>(work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    rayon::ThreadPoolBuilder::new()
        .build()
        .context("cannot start the model's threads")?
        .install(work)
}

fn live_cmd(args: &LiveArgs) -> Result<()> {
    run_pipeline(&args.pipeline, args.into())
}

fn annotate_cmd(args: &AnnotateArgs) -> Result<()> {
    run_pipeline(&args.pipeline, args.into())
}

/// Runs the pipeline, stopping cleanly on Ctrl-C, then reports what happened.
fn run_pipeline(args: &PipelineArgs, mut config: PipelineConfig) -> Result<()> {
    let (model, device, precision) = load_model(&args.model)?;
    config.classify_per_frame = args.classify_per_frame.map_or_else(
        || pipeline::default_classify_per_frame(precision),
        |n| n as usize,
    );
    let stats_json = args.stats_json.as_deref();
    let stop = Arc::new(AtomicBool::new(false));
    let on_interrupt = stop.clone();
    // First Ctrl-C: finish the recording and exit; the stages notice within a frame.
    ctrlc::set_handler(move || on_interrupt.store(true, Ordering::Relaxed))
        .context("cannot install the Ctrl-C handler")?;
    let outcome = pipeline::run(&config, model, device, stop)?;
    eprintln!("{}", outcome.stats.report());
    if let Some(path) = stats_json {
        std::fs::write(path, serde_json::to_string_pretty(&outcome.stats)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match outcome.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The device `choice` names; a GPU is said, since `auto` picks it silently.
fn device(choice: DeviceChoice) -> Result<Device> {
    let device = select_device(choice)?;
    if device.is_cuda() {
        eprintln!("model on {}", device_label(&device));
    }
    Ok(device)
}

/// The model ready to run, its device, and the number format it runs in.
fn load_model(args: &ModelArgs) -> Result<(AffectModel, Device, Precision)> {
    let device = device(args.device)?;
    let mut model = match &args.weights {
        Some(path) => AffectModel::load(path, &device)?,
        None => AffectModel::shipped(&device)?,
    };
    let precision = model.set_precision(args.precision)?;
    model.mirror_average = args.mirror_average;
    let needs = match args.precision {
        Precision::Bf16 => "AVX512-BF16",
        Precision::Int8 => "AVX512-VNNI",
        Precision::Auto | Precision::F32 => "",
    };
    if !needs.is_empty() && precision != args.precision {
        eprintln!(
            "{} needs MobileNetV2 or EfficientNet-Lite0 on a CPU with {needs}; running in f32",
            args.precision
        );
    }
    Ok((model, device, precision))
}

fn eval_cmd(args: &EvalArgs) -> Result<()> {
    let (model, device, _) = load_model(&args.model)?;
    let output = affectcam::eval::run::run(&model, &device, &args.into())?;
    for scored in &output.scored {
        println!("{}", scored.describe());
    }
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

fn calibrate_cmd(args: &CalibrateArgs) -> Result<()> {
    use affectcam::model::{weights, SHIPPED_WEIGHTS, SHIPPED_WEIGHTS_NAME};
    let device = Device::Cpu;
    let (mut model, file) = match &args.weights {
        Some(path) => (
            AffectModel::load(path, &device)?,
            weights::read_safetensors(path, &device)?,
        ),
        None => {
            let name = std::path::Path::new(SHIPPED_WEIGHTS_NAME);
            (
                AffectModel::shipped(&device)?,
                weights::parse_safetensors(name, SHIPPED_WEIGHTS, &device)?,
            )
        }
    };
    let Some(calibration) =
        affectcam::eval::calibrate::calibrate(&mut model, &device, &args.into())?
    else {
        bail!(
            "{} has no projections to calibrate (VGG16)",
            model.meta.arch
        );
    };
    let mut tensors = file.tensors;
    let projections = calibration.ranges.len();
    tensors.extend(calibration.ranges);
    weights::write_safetensors(&args.out, &tensors, file.metadata)?;
    println!(
        "calibrated {projections} projections on {} training faces ({} skipped) → {}",
        calibration.images,
        calibration.skipped,
        args.out.display()
    );
    Ok(())
}

fn train_cmd(args: &TrainArgs) -> Result<()> {
    let device = device(args.device)?;
    let outcome = fit(&args.into(), &device)?;
    for (path, report) in &outcome.test_reports {
        println!(
            "test split of {}:\n{}",
            path.display(),
            affectcam::eval::summary(report)
        );
    }
    Ok(())
}

fn predict_cmd(args: &PredictArgs) -> Result<()> {
    let (model, device, _) = load_model(&args.model)?;
    let mut detector = (!args.no_detect)
        .then(|| FaceDetector::new(DetectorConfig::for_photos(args.detector)))
        .transpose()?;
    let mut without_faces = 0;
    for path in &args.images {
        let faces = predict_photo(path, &model, &device, detector.as_mut())?;
        if faces.is_empty() {
            without_faces += 1;
            eprintln!(
                "{}: no face found (--no-detect treats the image as a face crop)",
                path.display()
            );
        }
        for face in &faces {
            if args.json {
                println!("{}", face.to_json(path));
            } else {
                println!("{}", face.describe(path));
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

fn selftest_cmd(args: &SelftestArgs) -> Result<()> {
    let device = device(args.device)?;
    let report = selftest::run(&device, &SelftestOptions::from(args), |step| {
        eprintln!("{step}…")
    })?;
    println!("{}", report.summary());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !report.passed {
        bail!("some ops differ from the reference by more than the tolerance");
    }
    Ok(())
}

fn bench_cmd(args: &BenchArgs) -> Result<()> {
    let options = BenchOptions::from(args);
    if args.child {
        let report = match &options.detector_image {
            Some(photo) => serde_json::to_string(&bench::run_detectors_here(photo, options.reps)?)?,
            None => serde_json::to_string(&on_kernel_pool(|| Ok(bench::run_here(&options)?))?)?,
        };
        println!("{report}");
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot locate the affectcam executable")?;
    let reports = if options.detector_image.is_some() {
        let reports = bench::run_per_thread_count(&exe, &args.threads, &options, |r| {
            println!("{}", DetectorBenchReport::summary(r))
        })?;
        serde_json::to_string_pretty(&reports)?
    } else {
        let reports = bench::run_per_thread_count(&exe, &args.threads, &options, |r| {
            println!("{}", BenchReport::summary(r))
        })?;
        serde_json::to_string_pretty(&reports)?
    };
    if let Some(path) = &args.json {
        std::fs::write(path, reports)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
