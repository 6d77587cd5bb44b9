//! The same layers with candle's own ops: the path on other devices (CUDA) and the tests'
//! reference for the CPU kernels.

use super::{Act, Conv3x3};
use candle_core::{Result, Tensor};

/// `act(x + bias)`.
fn bias_act_reference(x: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    let y = x.broadcast_add(bias)?;
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
