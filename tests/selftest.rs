//! `affectcam selftest` on the CPU with every kernel path this CPU has (AVX-512, AVX2+FMA,
//! scalar), each forced by `AFFECTCAM_SIMD`: every custom op against candle's reference.

mod common;

#[test]
fn every_cpu_kernel_path_matches_the_reference() {
    for (cap, expected) in [("scalar", "Scalar"), ("avx2", "Avx2"), ("avx512", "Avx512")] {
        let out = common::affectcam()
            .args(["selftest", "--device", "cpu", "--reps", "1"])
            .args(["--batches", "1", "--train-batches", "0"])
            .env("AFFECTCAM_SIMD", cap)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{cap}: {stdout}\n{stderr}");
        assert!(!stdout.contains("FAIL"), "{cap}: {stdout}");
        assert_eq!(stdout.matches("ok  ").count(), 18, "{cap}: {stdout}");
        // A path the CPU lacks falls back to the best one it has.
        let ran = stdout
            .lines()
            .next()
            .and_then(|l| l.split("CPU kernels: ").nth(1))
            .map(|l| l.trim_end_matches(')'))
            .unwrap_or_default();
        let best = best_level();
        let order = ["Scalar", "Avx2", "Avx512"];
        let position = |l: &str| order.iter().position(|o| *o == l).unwrap();
        let want = order[position(expected).min(position(best))];
        assert_eq!(ran, want, "{cap} on a CPU whose best is {best}: {stdout}");
    }
}

/// The best kernel path this CPU has.
fn best_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") {
            return if has!("avx512f") { "Avx512" } else { "Avx2" };
        }
    }
    "Scalar"
}
