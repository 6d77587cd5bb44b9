//! Test helpers shared by the kernels' tests: comparing an op with its candle reference.

use candle_core::{Device, Result, Shape, Tensor, Var};

pub fn randn(shape: impl Into<Shape>, std: f32, device: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, std, shape, device)
}

/// Largest absolute difference, relative to the reference's largest magnitude.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    let (d, s) = (
        diff.to_scalar::<f32>().unwrap(),
        scale.to_scalar::<f32>().unwrap(),
    );
    d / s.max(1e-6)
}

/// Forward and every gradient of `ours` against `reference`, through a random projection
/// of the output so each gradient element matters.
pub fn check_grads(
    shapes: &[&[usize]],
    ours: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    const TOL: f32 = 1e-4;
    let dev = Device::Cpu;
    let vars: Vec<Var> = shapes
        .iter()
        .map(|s| Var::from_tensor(&randn(*s, 2.0, &dev).unwrap()).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y_ours = ours(&ts).unwrap();
    let y_ref = reference(&ts).unwrap();
    assert_eq!(y_ours.dims(), y_ref.dims());
    assert!(rel_err(&y_ours, &y_ref) < TOL, "forward differs");
    let proj = randn(y_ref.shape(), 1.0, &dev).unwrap();
    let g_ours = (y_ours * &proj)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g_ref = (y_ref * &proj)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let (a, b) = (g_ours.get(v), g_ref.get(v));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("argument {i}: missing gradient")
        };
        let e = rel_err(a, b);
        assert!(e < TOL, "argument {i}: gradient relative error {e}");
    }
}
