//! The same layers with candle's own ops: the path on other devices (CUDA) and the tests'
//! reference for the CPU kernels.

use super::{Act, Conv3x3, SamePadding};
use candle_core::{bail, Result, Tensor};

/// `act(x + bias)`.
fn bias_act_reference(x: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    act_reference(x.broadcast_add(bias)?, act)
}

fn act_reference(y: Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::Identity => Ok(y),
        Act::Relu => y.relu(),
        Act::Relu6 => y.clamp(0f32, 6f32),
    }
}

/// [`super::dense`] with candle's matmul.
pub fn dense_reference(x: &Tensor, weight: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let mut dims = x.dims().to_vec();
    let y = x.reshape(((), k))?.matmul(&weight.t()?)?;
    *dims
        .last_mut()
        .expect("dense input has a feature dimension") = n;
    bias_act_reference(&y, bias, act)?.reshape(dims)
}

/// NHWC → NCHW with the Keras padding of `conv`, for candle's conv2d.
fn keras_padded_nchw(x: &Tensor, conv: Conv3x3) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    x.permute((0, 3, 1, 2))?
        .pad_with_zeros(2, conv.pad_before(), conv.pad_after(h))?
        .pad_with_zeros(3, conv.pad_before(), conv.pad_after(w))
}

/// [`super::depthwise3x3`] with candle's grouped conv2d (NCHW).
pub fn depthwise3x3_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv3x3,
    act: Act,
) -> Result<Tensor> {
    let c = x.dim(3)?;
    let kernel = weight.permute((2, 0, 1))?.reshape((c, 1, 3, 3))?;
    let y = keras_padded_nchw(x, conv)?.conv2d(&kernel, 0, conv.stride, 1, c)?;
    bias_act_reference(&y.permute((0, 2, 3, 1))?, bias, act)
}

/// A depthwise k×k conv with TensorFlow "SAME" padding: x `[N,H,W,C]`, weight `[k,k,C]`, bias
/// `[C]`. A sum of k² taps, each a strided slice of the padded input times that tap's weights,
/// in NHWC with candle's ops (so it has a backward): candle's grouped conv2d runs one conv per
/// channel, which is far slower for hundreds of channels.
pub fn depthwise_same_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    window: SamePadding,
    act: Act,
) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let (k, s) = (window.kernel, window.stride);
    if weight.dims() != [k, k, c] || k < s {
        bail!(
            "depthwise {k}×{k} stride {s}: weight {:?} for {c} channels",
            weight.dims()
        );
    }
    let (ho, wo) = (window.out_len(h), window.out_len(w));
    // Padded so that every tap's rows are in range, and to a multiple of the stride so the
    // stride can be split off as its own axis: tap (i, j) reads phase (i % s, j % s).
    let padded = |len: usize, out: usize| ((out - 1) * s + k).div_ceil(s) * s - len;
    let (ph, pw) = (padded(h, ho), padded(w, wo));
    let (bh, bw) = (window.pad_before(h), window.pad_before(w));
    let xp = x
        .pad_with_zeros(1, bh, ph - bh)?
        .pad_with_zeros(2, bw, pw - bw)?
        .reshape((n, (h + ph) / s, s, (w + pw) / s, s, c))?;
    // The bias first, then the taps in order, as the CPU kernel sums them (so that rounding
    // rarely puts the two on different sides of an activation's kink).
    let mut sum = bias
        .reshape((1, 1, 1, c))?
        .broadcast_as((n, ho, wo, c))?
        .contiguous()?;
    for i in 0..k {
        for j in 0..k {
            let tap = xp
                .narrow(2, i % s, 1)?
                .narrow(4, j % s, 1)?
                .narrow(1, i / s, ho)?
                .narrow(3, j / s, wo)?
                .reshape((n, ho, wo, c))?;
            sum = (sum + tap.broadcast_mul(&weight.get(i)?.get(j)?)?)?;
        }
    }
    act_reference(sum, act)
}

/// [`super::conv3x3_input`] with candle's conv2d (NCHW).
pub fn conv3x3_input_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv3x3,
    act: Act,
) -> Result<Tensor> {
    let (cout, cin) = (weight.dim(0)?, x.dim(3)?);
    let kernel = weight.reshape((cout, 3, 3, cin))?.permute((0, 3, 1, 2))?;
    let y = keras_padded_nchw(x, conv)?.conv2d(&kernel.contiguous()?, 0, conv.stride, 1, 1)?;
    bias_act_reference(&y.permute((0, 2, 3, 1))?, bias, act)
}

/// [`super::max_pool2x2`] with candle's max_pool2d (NCHW).
pub fn max_pool2x2_reference(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 1, 2))?
        .max_pool2d(2)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// [`super::upsample2_add`] with candle's upsample_nearest2d (NCHW).
pub fn upsample2_add_reference(coarse: &Tensor, fine: &Tensor) -> Result<Tensor> {
    let (_, h, w, _) = coarse.dims4()?;
    coarse
        .permute((0, 3, 1, 2))?
        .upsample_nearest2d(2 * h, 2 * w)?
        .permute((0, 2, 3, 1))?
        + fine
}
