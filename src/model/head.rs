//! The study's head on the pooled trunk: Dense 256 + ReLU → Dropout 0.5 → emotion logits (8)
//! and valence/arousal (2, tanh so predictions live in [-1, 1] like the labels).

use super::labels::NUM_EMOTIONS;
use super::ops::{dense, Act};
use super::Prediction;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

pub const HIDDEN: usize = 256;
pub const DROPOUT: f32 = 0.5;

#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<Self> {
        let bound = (6.0 / (inputs + outputs) as f64).sqrt(); // Glorot uniform, as Keras.
        Ok(Self {
            weight: vb.get_with_hints(
                (outputs, inputs),
                "weight",
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?,
            bias: vb.get_with_hints(outputs, "bias", Init::Const(0.))?,
        })
    }

    fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        dense(x, &self.weight, &self.bias, act)
    }
}

/// Raw outputs of one forward pass.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// `[N, 8]` emotion logits.
    pub logits: Tensor,
    /// `[N, 2]` valence, arousal in [-1, 1].
    pub valence_arousal: Tensor,
}

impl HeadOutput {
    /// Softmax probabilities and valence/arousal, one [`Prediction`] per row.
    pub fn predictions(&self) -> Result<Vec<Prediction>> {
        let probs = candle_nn::ops::softmax_last_dim(&self.logits)?.to_vec2::<f32>()?;
        let va = self.valence_arousal.to_vec2::<f32>()?;
        Ok(probs
            .into_iter()
            .zip(va)
            .map(|(p, va)| Prediction {
                probs: std::array::from_fn(|i| p[i]),
                valence: va[0],
                arousal: va[1],
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct Head {
    dense: Linear,
    emotion: Linear,
    valence_arousal: Linear,
}

impl Head {
    /// A head over pooled features of `features` channels.
    pub fn new(vb: VarBuilder, features: usize) -> Result<Self> {
        Ok(Self {
            dense: Linear::new(vb.pp("head_dense"), features, HIDDEN)?,
            emotion: Linear::new(vb.pp("emotion"), HIDDEN, NUM_EMOTIONS)?,
            valence_arousal: Linear::new(vb.pp("valence_arousal"), HIDDEN, 2)?,
        })
    }

    /// The device the head's weights (and so the model) live on.
    pub fn device(&self) -> &candle_core::Device {
        self.dense.weight.device()
    }

    /// Pooled features `[N, features]` → both outputs; dropout only when `train`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Result<HeadOutput> {
        let h = self.dense.forward(features, Act::Relu)?;
        let h = if train {
            candle_nn::ops::dropout(&h, DROPOUT)?
        } else {
            h
        };
        Ok(HeadOutput {
            logits: self.emotion.forward(&h, Act::Identity)?,
            valence_arousal: self.valence_arousal.forward(&h, Act::Identity)?.tanh()?,
        })
    }
}
