//! Launches of the custom ops' CUDA kernels (`kernels.cu`, compiled to PTX by build.rs and
//! loaded once per device by candle). Each function checks the sizes its kernel indexes
//! before launching, so a launch never reads or writes outside the buffers it is given.

use super::{Act, Geometry};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/affectcam_kernels.ptx"));
const MODULE: &str = "affectcam_kernels";

/// Threads per block of the elementwise kernels.
const BLOCK: u32 = 256;
/// Block shape of the reductions: `REDUCE_X` channels × `REDUCE_Y` rows (kernels.cu).
const REDUCE_X: u32 = 32;
const REDUCE_Y: u32 = 8;

/// `struct Geometry` of kernels.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct KernelGeometry {
    n: i32,
    h: i32,
    w: i32,
    c: i32,
    ho: i32,
    wo: i32,
    stride: i32,
    pad: i32,
}

// SAFETY: a `#[repr(C)]` struct of eight `i32`, laid out as kernels.cu's `struct Geometry`
// (eight `int`), with no pointers or padding: copying its bytes to the kernel is sound.
unsafe impl DeviceRepr for KernelGeometry {}

/// `v` as a kernel's `int`.
fn int(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("{v} is too large for the CUDA kernels")))
}

impl KernelGeometry {
    fn new(g: &Geometry) -> Result<Self> {
        if g.kernel != 3 {
            candle_core::bail!("the CUDA depthwise kernels are 3×3, not {0}×{0}", g.kernel);
        }
        Ok(Self {
            n: int(g.n)?,
            h: int(g.h)?,
            w: int(g.w)?,
            c: int(g.c)?,
            ho: int(g.ho)?,
            wo: int(g.wo)?,
            stride: int(g.stride)?,
            pad: int(g.pad)?,
        })
    }
}

/// The activation code kernels.cu uses.
fn act_code(act: Act) -> i32 {
    match act {
        Act::Identity => 0,
        Act::Relu => 1,
        Act::Relu6 => 2,
    }
}

/// The f32 values of a contiguous input, checked to hold `len` of them.
fn view<'a>(
    op: &str,
    what: &str,
    storage: &'a CudaStorage,
    layout: &Layout,
    len: usize,
) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op} {what}: input must be contiguous");
    };
    if end - start != len {
        bail!("{op} {what}: {} values, expected {len}", end - start);
    }
    Ok(storage.as_cuda_slice::<f32>()?.slice(start..end))
}

/// A grid-stride launch over `total` elements (the grid is capped; each thread loops).
fn elementwise(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(BLOCK as usize).min(65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A reduction over `rows` rows of `cols` channels: one block column per 32 channels, and
/// enough block rows that each thread sums about 64 rows.
fn reduction(rows: usize, cols: usize) -> LaunchConfig {
    let row_blocks = rows.div_ceil(REDUCE_Y as usize * 64).clamp(1, 1024) as u32;
    LaunchConfig {
        grid_dim: (cols.div_ceil(REDUCE_X as usize) as u32, row_blocks, 1),
        block_dim: (REDUCE_X, REDUCE_Y, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches kernel `$name` of kernels.cu with `$cfg` and the arguments in order; an empty
/// grid (no elements: nothing to do) is not launched, as CUDA rejects zero blocks.
macro_rules! launch {
    ($dev:expr, $name:literal, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let cfg: LaunchConfig = $cfg;
        if cfg.grid_dim.0 > 0 {
            let func = $dev.get_or_load_custom_func($name, MODULE, PTX)?;
            let mut builder = func.builder();
            $(builder.arg($arg);)+
            // SAFETY: the arguments match the kernel's parameter list in kernels.cu in number,
            // order and type, and the caller checked that every buffer holds the elements the
            // kernel indexes for the sizes passed.
            unsafe { builder.launch(cfg) }.w()?;
        }
    }};
}

fn wrap(slice: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// [`super::depthwise3x3`]'s forward: x `[N,H,W,C]`, weight `[3,3,C]`, bias `[C]`.
pub(super) fn depthwise_forward(
    x: (&CudaStorage, &Layout),
    weight: (&CudaStorage, &Layout),
    bias: (&CudaStorage, &Layout),
    g: &Geometry,
    act: Act,
) -> Result<CudaStorage> {
    const OP: &str = "depthwise3x3";
    let dev = x.0.device();
    let x = view(OP, "x", x.0, x.1, g.n * g.h * g.w * g.c)?;
    let weight = view(OP, "weight", weight.0, weight.1, 9 * g.c)?;
    let bias = view(OP, "bias", bias.0, bias.1, g.c)?;
    let total = g.n * g.ho * g.wo * g.c;
    // SAFETY: every element is written by the kernel below before anything reads it.
    let mut out = unsafe { dev.alloc::<f32>(total)? };
    let (geometry, act) = (KernelGeometry::new(g)?, act_code(act));
    launch!(
        dev,
        "depthwise3x3_forward",
        elementwise(total),
        &x,
        &weight,
        &bias,
        &mut out,
        &geometry,
        &act
    );
    Ok(wrap(out, dev))
}

/// The depthwise conv's input gradient: grad `[N,Ho,Wo,C]`, weight `[3,3,C]` → `[N,H,W,C]`.
pub(super) fn depthwise_grad_input(
    grad: (&CudaStorage, &Layout),
    weight: (&CudaStorage, &Layout),
    g: &Geometry,
) -> Result<CudaStorage> {
    const OP: &str = "depthwise3x3-grad-input";
    let dev = grad.0.device();
    let grad = view(OP, "grad", grad.0, grad.1, g.n * g.ho * g.wo * g.c)?;
    let weight = view(OP, "weight", weight.0, weight.1, 9 * g.c)?;
    let total = g.n * g.h * g.w * g.c;
    // SAFETY: every element is written by the kernel below before anything reads it.
    let mut out = unsafe { dev.alloc::<f32>(total)? };
    let geometry = KernelGeometry::new(g)?;
    launch!(
        dev,
        "depthwise3x3_grad_input",
        elementwise(total),
        &grad,
        &weight,
        &mut out,
        &geometry
    );
    Ok(wrap(out, dev))
}

/// The depthwise conv's weight and bias gradients as `[10, C]` (9 taps, then the bias).
pub(super) fn depthwise_grad_weight(
    x: (&CudaStorage, &Layout),
    grad: (&CudaStorage, &Layout),
    g: &Geometry,
) -> Result<CudaStorage> {
    const OP: &str = "depthwise3x3-grad-weight";
    let dev = x.0.device();
    let x = view(OP, "x", x.0, x.1, g.n * g.h * g.w * g.c)?;
    let grad = view(OP, "grad", grad.0, grad.1, g.n * g.ho * g.wo * g.c)?;
    let mut out = dev.alloc_zeros::<f32>(10 * g.c)?;
    let geometry = KernelGeometry::new(g)?;
    let cfg = reduction(g.n * g.ho * g.wo, g.c);
    launch!(
        dev,
        "depthwise3x3_grad_weight",
        cfg,
        &x,
        &grad,
        &mut out,
        &geometry
    );
    Ok(wrap(out, dev))
}

/// Sum over rows: `[rows, cols]` → `[cols]`.
pub(super) fn column_sum(
    x: (&CudaStorage, &Layout),
    rows: usize,
    cols: usize,
) -> Result<CudaStorage> {
    let dev = x.0.device();
    let x = view("column-sum", "x", x.0, x.1, rows * cols)?;
    let mut out = dev.alloc_zeros::<f32>(cols)?;
    let (rows_arg, cols_arg) = (rows as i64, int(cols)?);
    launch!(
        dev,
        "column_sum",
        reduction(rows, cols),
        &x,
        &mut out,
        &rows_arg,
        &cols_arg
    );
    Ok(wrap(out, dev))
}

/// `act(v + bias)` in place on every row of `x` (`[rows, cols]`, all of `x`'s storage).
pub(super) fn bias_act(
    x: &mut CudaStorage,
    bias: (&CudaStorage, &Layout),
    cols: usize,
    act: Act,
) -> Result<()> {
    let dev = x.device().clone();
    let bias = view("dense-act", "bias", bias.0, bias.1, cols)?;
    let out = x.as_cuda_slice_mut::<f32>()?;
    let total = out.len();
    if cols == 0 || total % cols != 0 {
        bail!("dense-act: {total} values are not rows of {cols}");
    }
    let (total_arg, cols_arg, act) = (total as i64, int(cols)?, act_code(act));
    launch!(
        dev,
        "bias_act",
        elementwise(total),
        out,
        &bias,
        &total_arg,
        &cols_arg,
        &act
    );
    Ok(())
}

/// `grad` where the activation passes at its output `y`, else 0.
pub(super) fn act_mask(
    grad: (&CudaStorage, &Layout),
    y: (&CudaStorage, &Layout),
    act: Act,
) -> Result<CudaStorage> {
    let dev = grad.0.device();
    let total = grad.1.shape().elem_count();
    let grad = view("act-mask", "grad", grad.0, grad.1, total)?;
    let y = view("act-mask", "output", y.0, y.1, total)?;
    // SAFETY: every element is written by the kernel below before anything reads it.
    let mut out = unsafe { dev.alloc::<f32>(total)? };
    let (total_arg, act) = (total as i64, act_code(act));
    launch!(
        dev,
        "act_mask",
        elementwise(total),
        &grad,
        &y,
        &mut out,
        &total_arg,
        &act
    );
    Ok(wrap(out, dev))
}

/// One fused Adam step in place on `theta` with its moments `m` and `v`; `scalars` are the
/// kernel's last six parameters: β₁, β₂, 1 - β₁, 1 - β₂, step size and ε (bias-corrected).
pub(crate) fn adam_update(
    theta: (&mut CudaStorage, &Layout),
    grad: (&CudaStorage, &Layout),
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    scalars: [f32; 6],
) -> Result<()> {
    let len = m.len();
    if v.len() != len {
        bail!("adam: moments of {} and {} values", len, v.len());
    }
    let grad = view("adam-update", "gradient", grad.0, grad.1, len)?;
    let Some((start, end)) = theta.1.contiguous_offsets() else {
        bail!("adam: parameters must be contiguous");
    };
    if end - start != len {
        bail!("adam: parameter has {} values, moments {len}", end - start);
    }
    let dev = theta.0.device().clone();
    let mut theta = theta.0.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
    let total = len as i64;
    launch!(
        dev,
        "adam_update",
        elementwise(len),
        &mut theta,
        &grad,
        m,
        v,
        &total,
        &scalars[0],
        &scalars[1],
        &scalars[2],
        &scalars[3],
        &scalars[4],
        &scalars[5],
    );
    Ok(())
}
