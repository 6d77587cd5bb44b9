//! Comparing the custom ops with candle's reference ops: the kernels' unit tests on the CPU,
//! and `affectcam selftest` on whatever device the binary finds (a GPU machine has no
//! toolchain, so the checks live in the library, not only in tests).

use super::{
    dense, dense_reference, depthwise, depthwise3x3, depthwise3x3_reference,
    depthwise_same_reference, Act, Conv3x3, SamePadding,
};
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Largest relative error the op checks accept (f32 kernels against f32 reference ops).
pub const TOLERANCE: f32 = 1e-4;

pub fn randn(shape: impl Into<Shape>, std: f32, device: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, std, shape, device)
}

/// Largest absolute difference, relative to the reference's largest magnitude (compared on
/// the CPU, whatever device `a` is on).
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    let (a, b) = (a.to_device(&Device::Cpu)?, b.to_device(&Device::Cpu)?);
    let diff = (a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(diff / scale.max(1e-6))
}

/// 1 where the outputs of ours and the reference are both clear of the activations' kinks (0,
/// and ReLU6's 6) or both exactly on one (clamped), 0 where either is within rounding of a kink
/// without both sitting on it. There the derivative is undefined and rounding can put the two
/// on different sides, so those outputs get no weight in the gradient check.
fn unambiguous(y_ours: &Tensor, y_ref: &Tensor) -> Result<Tensor> {
    let y_ours = y_ours.to_device(&Device::Cpu)?;
    let scale = y_ref.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
    let near = 1e-4 * f64::from(scale);
    let mut keep = y_ref.ones_like()?;
    for kink in [0.0, 6.0] {
        let distance = ((&y_ours - kink)?.abs()? + (y_ref - kink)?.abs()?)?;
        let ambiguous =
            (distance.gt(0.0)?.to_dtype(DType::F32)? * distance.lt(near)?.to_dtype(DType::F32)?)?;
        keep = (keep * ambiguous.affine(-1.0, 1.0)?)?;
    }
    Ok(keep)
}

/// The errors of one op on one set of shapes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpCheck {
    pub op: String,
    /// The shapes of its inputs, e.g. "[2, 8, 8, 5] [3, 3, 5] [5]".
    pub shapes: String,
    /// Relative error of the output.
    pub forward: f32,
    /// Relative error of each input's gradient, in input order.
    pub gradients: Vec<f32>,
}

impl OpCheck {
    pub fn max_error(&self) -> f32 {
        self.gradients.iter().copied().fold(self.forward, f32::max)
    }

    pub fn passed(&self) -> bool {
        self.max_error() <= TOLERANCE
    }
}

/// Forward and every gradient of `ours` on `device` against `reference` on the CPU, on
/// random inputs of `shapes`, through a random projection of the output so that each
/// gradient element matters.
pub fn compare(
    op: &str,
    shapes: &[&[usize]],
    device: &Device,
    ours: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<OpCheck> {
    let cpu = Device::Cpu;
    let inputs: Vec<Tensor> = shapes
        .iter()
        .map(|s| randn(*s, 2.0, &cpu))
        .collect::<Result<_>>()?;
    let run = |on: &Device, f: &dyn Fn(&[Tensor]) -> Result<Tensor>| -> Result<_> {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(&t.to_device(on)?))
            .collect::<Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts)?;
        Ok((vars, y))
    };
    let (vars_ours, y_ours) = run(device, &ours)?;
    let (vars_ref, y_ref) = run(&cpu, &reference)?;
    if y_ours.dims() != y_ref.dims() {
        candle_core::bail!(
            "{op}: output {:?}, reference {:?}",
            y_ours.dims(),
            y_ref.dims()
        );
    }
    let proj = (randn(y_ref.shape(), 1.0, &cpu)? * unambiguous(&y_ours, &y_ref)?)?;
    let g_ours = (&y_ours * proj.to_device(device)?)?.sum_all()?.backward()?;
    let g_ref = (&y_ref * &proj)?.sum_all()?.backward()?;
    let mut gradients = Vec::new();
    for (i, (a, b)) in vars_ours.iter().zip(&vars_ref).enumerate() {
        let (Some(a), Some(b)) = (g_ours.get(a), g_ref.get(b)) else {
            candle_core::bail!("{op}: input {i} got no gradient");
        };
        gradients.push(rel_err(a, b)?);
    }
    let shapes = shapes
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(OpCheck {
        op: op.to_string(),
        shapes,
        forward: rel_err(&y_ours, &y_ref)?,
        gradients,
    })
}

/// The depthwise checks' cases, (stride, n, h, w, c, activation): both strides, odd sizes, a
/// 1×1 input, every activation, and MobileNetV2's own layer shapes.
pub const DEPTHWISE_CASES: [(usize, usize, usize, usize, usize, Act); 7] = [
    (1, 2, 7, 6, 5, Act::Relu6),
    (2, 2, 8, 8, 5, Act::Relu6),
    (2, 2, 7, 9, 37, Act::Identity),
    (1, 1, 1, 1, 3, Act::Identity),
    (1, 4, 16, 16, 96, Act::Relu6),
    (2, 4, 16, 16, 144, Act::Relu6),
    (1, 2, 4, 4, 960, Act::Relu),
];

/// Every trainable custom op (and, through their backward passes, the activation masks and
/// column sums) on `device` against the reference on the CPU, on small shapes with every
/// edge case the kernels branch on (strides, odd sizes, 1×1 inputs, row and column tiles,
/// every activation) and on MobileNetV2's own layer shapes. (The stem's patches have no
/// gradient and no CUDA kernel; their test is beside them.)
pub fn custom_ops(device: &Device) -> Result<Vec<OpCheck>> {
    let mut checks = Vec::new();
    for (stride, n, h, w, c, act) in DEPTHWISE_CASES {
        let conv = Conv3x3 { stride };
        checks.push(compare(
            &format!("depthwise3x3 stride {stride} {act:?}"),
            &[&[n, h, w, c], &[3, 3, c], &[c]],
            device,
            |t| depthwise3x3(&t[0], &t[1], &t[2], conv, act),
            |t| depthwise3x3_reference(&t[0], &t[1], &t[2], conv, act),
        )?);
    }
    // 5×5 windows (EfficientNet-Lite), against the strided-tap reference: both strides, odd
    // sizes (their padding differs), the shapes of Lite0's 5×5 layers at 128×128.
    for (stride, n, h, w, c, act) in [
        (1, 2, 7, 6, 5, Act::Relu6),
        (2, 2, 9, 9, 3, Act::Identity),
        (2, 2, 32, 32, 144, Act::Relu6),
        (1, 2, 4, 4, 1152, Act::Relu6),
    ] {
        let window = SamePadding { kernel: 5, stride };
        checks.push(compare(
            &format!("depthwise5x5 stride {stride} {act:?}"),
            &[&[n, h, w, c], &[5, 5, c], &[c]],
            device,
            |t| depthwise(&t[0], &t[1], &t[2], window, act),
            |t| depthwise_same_reference(&t[0], &t[1], &t[2], window, act),
        )?);
    }
    for (x, out, act) in [
        (&[3, 19][..], 37, Act::Relu6),
        (&[700, 19][..], 37, Act::Relu),
        (&[70, 19][..], 37, Act::Identity),
        (&[2, 5, 3, 8][..], 4, Act::Relu6),
        (&[4, 8, 8, 96][..], 24, Act::Identity),
        (&[4, 4, 4, 320][..], 1280, Act::Relu6),
    ] {
        let k = *x.last().expect("shapes above have a feature dimension");
        checks.push(compare(
            &format!("dense {act:?}"),
            &[x, &[out, k], &[out]],
            device,
            |t| dense(&t[0], &t[1], &t[2], act),
            |t| dense_reference(&t[0], &t[1], &t[2], act),
        )?);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_custom_op_matches_its_reference_on_the_cpu() {
        let checks = custom_ops(&Device::Cpu).unwrap();
        assert_eq!(checks.len(), 17);
        for check in &checks {
            assert!(check.passed(), "{check:?}");
            assert!(!check.gradients.is_empty());
        }
    }

    #[test]
    fn a_gradient_through_clamped_outputs_fails_the_check() {
        // ReLU6's forward with the identity's backward (straight through the clamp).
        let check = compare(
            "straight-through relu6",
            &[&[64, 32]],
            &Device::Cpu,
            |t| &t[0] - (&t[0] - t[0].clamp(0f32, 6f32)?)?.detach(),
            |t| t[0].clamp(0f32, 6f32),
        )
        .unwrap();
        assert!(check.forward < TOLERANCE && !check.passed(), "{check:?}");
    }

    #[test]
    fn a_wrong_op_fails_the_check() {
        let check = compare(
            "off by 1e-3",
            &[&[4, 6]],
            &Device::Cpu,
            |t| &t[0] * 1.001,
            |t| Ok(t[0].clone()),
        )
        .unwrap();
        assert!(!check.passed(), "{check:?}");
    }
}
