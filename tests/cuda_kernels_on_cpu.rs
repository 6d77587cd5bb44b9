//! The CUDA kernels (src/model/ops/cuda/kernels.cu) executed on the CPU by a C++ emulation of
//! CUDA's thread model (tests/cuda_emulator/emulate.cpp), against the CPU ops: machines
//! without a GPU still run the kernels' index arithmetic, Keras padding, grid-stride loops and
//! shared-memory reductions, with the launch shapes cuda/mod.rs uses and with a single small
//! block. (The GPU itself, cudarc's argument passing and cuBLAS are left to `affectcam
//! selftest --device cuda`.)

use affectcam::model::ops::check::{randn, rel_err, DEPTHWISE_CASES, TOLERANCE};
use affectcam::model::ops::{depthwise3x3_reference, Act, Conv3x3};
use candle_core::{Device, Tensor, Var};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The emulator, compiled once per test binary; `None` (with a notice) without a C++
/// compiler, which under CI is a failure.
fn emulator() -> Option<&'static Path> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda_emulate");
            let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
            let built = Command::new(&cxx)
                .args(["-std=c++20", "-O2", "-pthread", "-Wall", "-Werror", "-o"])
                .arg(&exe)
                .arg(root.join("tests/cuda_emulator/emulate.cpp"))
                .status();
            match built {
                Ok(status) if status.success() => Some(exe),
                Ok(status) => panic!("{cxx} failed to compile the emulator: {status}"),
                Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                    panic!("CI=true but no C++ compiler ({cxx}): {e}")
                }
                Err(e) => {
                    eprintln!("skipping: no C++ compiler ({cxx}: {e})");
                    None
                }
            }
        })
        .as_deref()
}

const CONFIGS: [&str; 2] = ["launch", "tiny"];

fn write(dir: &Path, name: &str, t: &Tensor) {
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn read(dir: &Path, name: &str, shape: &[usize]) -> Tensor {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Runs `kernel` under launch shape `config` on the buffers in `dir`.
fn emulate(exe: &Path, kernel: &str, config: &str, dir: &Path, args: &[String]) {
    let out = Command::new(exe)
        .arg(kernel)
        .arg(config)
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kernel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let err = rel_err(ours, reference).unwrap();
    assert!(err <= TOLERANCE, "{what}: relative error {err}");
}

fn act_code(act: Act) -> i32 {
    match act {
        Act::Identity => 0,
        Act::Relu => 1,
        Act::Relu6 => 2,
    }
}

fn apply(act: Act, t: &Tensor) -> Tensor {
    match act {
        Act::Identity => t.clone(),
        Act::Relu => t.relu().unwrap(),
        Act::Relu6 => t.clamp(0f32, 6f32).unwrap(),
    }
}

#[test]
fn depthwise_kernels_match_the_reference_forward_and_every_gradient() {
    let Some(exe) = emulator() else { return };
    let cpu = Device::Cpu;
    for (stride, n, h, w, c, act) in DEPTHWISE_CASES {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let conv = Conv3x3 { stride };
        let x = Var::from_tensor(&randn((n, h, w, c), 2.0, &cpu).unwrap()).unwrap();
        let weight = Var::from_tensor(&randn((3, 3, c), 2.0, &cpu).unwrap()).unwrap();
        let bias = Var::from_tensor(&randn(c, 2.0, &cpu).unwrap()).unwrap();
        let y = depthwise3x3_reference(&x, &weight, &bias, conv, act).unwrap();
        let (_, ho, wo, _) = y.dims4().unwrap();
        let pad = conv.pad_before();
        let geometry: Vec<String> = [n, h, w, c, ho, wo, stride, pad]
            .iter()
            .map(|v| v.to_string())
            .collect();
        // Gradients of <y_linear, grad>: the kernels take the gradient after the activation.
        let grad = randn((n, ho, wo, c), 1.0, &cpu).unwrap();
        let linear = depthwise3x3_reference(&x, &weight, &bias, conv, Act::Identity).unwrap();
        let grads = (&linear * &grad)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let expected_weight = Tensor::cat(
            &[
                grads.get(&weight).unwrap().reshape((9, c)).unwrap(),
                grads.get(&bias).unwrap().reshape((1, c)).unwrap(),
            ],
            0,
        )
        .unwrap();
        for (name, t) in [
            ("x", x.as_tensor()),
            ("weight", weight.as_tensor()),
            ("bias", bias.as_tensor()),
            ("grad", &grad),
        ] {
            write(dir, name, t);
        }
        for config in CONFIGS {
            let case = format!("stride {stride} {n}x{h}x{w}x{c} {act:?} ({config})");
            let mut args = geometry.clone();
            args.push(act_code(act).to_string());
            emulate(exe, "depthwise3x3_forward", config, dir, &args);
            assert_close(
                &format!("forward {case}"),
                &read(dir, "out", &[n, ho, wo, c]),
                &y,
            );
            emulate(exe, "depthwise3x3_grad_input", config, dir, &geometry);
            assert_close(
                &format!("input gradient {case}"),
                &read(dir, "out", &[n, h, w, c]),
                grads.get(&x).unwrap(),
            );
            emulate(exe, "depthwise3x3_grad_weight", config, dir, &geometry);
            assert_close(
                &format!("weight and bias gradients {case}"),
                &read(dir, "out", &[10, c]),
                &expected_weight,
            );
        }
    }
}

#[test]
fn dense_epilogue_masks_and_column_sums_match() {
    let Some(exe) = emulator() else { return };
    let cpu = Device::Cpu;
    for (rows, cols) in [(3, 37), (700, 19), (5000, 37), (1, 1280), (64, 32)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let x = randn((rows, cols), 2.0, &cpu).unwrap();
        let bias = randn(cols, 2.0, &cpu).unwrap();
        let grad = randn((rows, cols), 1.0, &cpu).unwrap();
        let shape = [rows, cols];
        for config in CONFIGS {
            let case = format!("{rows}x{cols} ({config})");
            write(dir, "x", &x);
            emulate(
                exe,
                "column_sum",
                config,
                dir,
                &[rows.to_string(), cols.to_string()],
            );
            assert_close(
                &format!("column sum {case}"),
                &read(dir, "out", &[cols]),
                &x.sum(0).unwrap(),
            );
            for act in [Act::Identity, Act::Relu, Act::Relu6] {
                let y = apply(act, &x.broadcast_add(&bias).unwrap());
                write(dir, "x", &x);
                write(dir, "bias", &bias);
                let args = [cols.to_string(), act_code(act).to_string()];
                emulate(exe, "bias_act", config, dir, &args);
                assert_close(
                    &format!("bias + {act:?} {case}"),
                    &read(dir, "x", &shape),
                    &y,
                );
                // The mask is where the activation's derivative is 1, read off its output.
                let passes = match act {
                    Act::Identity => y.ones_like().unwrap(),
                    Act::Relu => y
                        .gt(0f32)
                        .unwrap()
                        .to_dtype(candle_core::DType::F32)
                        .unwrap(),
                    Act::Relu6 => (y
                        .gt(0f32)
                        .unwrap()
                        .to_dtype(candle_core::DType::F32)
                        .unwrap()
                        * y.lt(6f32)
                            .unwrap()
                            .to_dtype(candle_core::DType::F32)
                            .unwrap())
                    .unwrap(),
                };
                write(dir, "grad", &grad);
                write(dir, "y", &y);
                emulate(exe, "act_mask", config, dir, &[act_code(act).to_string()]);
                assert_close(
                    &format!("{act:?} mask {case}"),
                    &read(dir, "out", &shape),
                    &(&grad * passes).unwrap(),
                );
            }
        }
    }
}

#[test]
fn relu6_epilogue_keeps_nan_as_the_cpu_does() {
    let Some(exe) = emulator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let x = Tensor::new(&[f32::NAN, -1.0, 3.0, 9.0], &Device::Cpu).unwrap();
    write(dir, "x", &x);
    write(
        dir,
        "bias",
        &Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    emulate(exe, "bias_act", "launch", dir, &["4".into(), "2".into()]);
    let out = read(dir, "x", &[4]).to_vec1::<f32>().unwrap();
    assert!(out[0].is_nan(), "{out:?}");
    assert_eq!(&out[1..], &[0.0, 3.0, 6.0]);
}

#[test]
fn adam_kernel_takes_the_adam_step() {
    let Some(exe) = emulator() else { return };
    let cpu = Device::Cpu;
    let (b1, b2, step, eps) = (0.9f32, 0.999f32, 1e-3f32, 1e-8f32);
    for len in [1, 255, 257, 10_000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // θ of the step's size, so that a wrong step is not lost in θ's rounding.
        let theta = randn(len, 1e-3, &cpu).unwrap();
        let grad = randn(len, 1.0, &cpu).unwrap();
        let m = randn(len, 0.1, &cpu).unwrap();
        let v = randn(len, 0.1, &cpu).unwrap().abs().unwrap();
        let m_next = ((&m * b1 as f64).unwrap() + (&grad * (1.0 - b1) as f64).unwrap()).unwrap();
        let v_next = ((&v * b2 as f64).unwrap()
            + (grad.sqr().unwrap() * (1.0 - b2) as f64).unwrap())
        .unwrap();
        let denominator = (v_next.sqrt().unwrap() + eps as f64).unwrap();
        let theta_next =
            (&theta - ((&m_next / denominator).unwrap() * step as f64).unwrap()).unwrap();
        for config in CONFIGS {
            for (name, t) in [("theta", &theta), ("grad", &grad), ("m", &m), ("v", &v)] {
                write(dir, name, t);
            }
            let args = [b1, b2, step, eps].map(|a| format!("{a:e}"));
            emulate(exe, "adam_update", config, dir, &args);
            for (name, expected) in [("theta", &theta_next), ("m", &m_next), ("v", &v_next)] {
                assert_close(
                    &format!("adam {name} {len} ({config})"),
                    &read(dir, name, &[len]),
                    expected,
                );
            }
        }
    }
}
