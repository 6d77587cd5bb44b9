//! Evaluation: run the model over decoded faces and score the predictions.

pub mod calibrate;
pub mod metrics;
pub mod run;

use crate::data::{FacePixels, Sample};
use crate::model::labels::{EMOTIONS, NUM_EMOTIONS};
use crate::model::AffectModel;
use candle_core::{Device, Result};
use metrics::{classification_report, regression_report, valence_sign, EvalReport};

/// Model outputs for a list of faces.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub probs: Vec<[f32; NUM_EMOTIONS]>,
    pub valence_arousal: Vec<[f32; 2]>,
}

impl Predictions {
    /// Appends one batch's predictions.
    pub fn extend(&mut self, batch: Vec<crate::model::Prediction>) {
        for p in batch {
            self.probs.push(p.probs);
            self.valence_arousal.push([p.valence, p.arousal]);
        }
    }

    /// Predicted class of face `i`.
    pub fn label(&self, i: usize) -> usize {
        crate::model::labels::most_probable(&self.probs[i])
    }
}

/// Runs `model` over faces in batches, with a progress bar labelled `what`.
pub fn predict(
    model: &AffectModel,
    faces: &[FacePixels],
    batch_size: usize,
    device: &Device,
    what: &str,
) -> Result<Predictions> {
    let pre = model.meta.preprocess;
    let bar = crate::progress::counting_bar(faces.len(), what, "faces");
    let mut out = Predictions::default();
    for chunk in faces.chunks(batch_size.max(1)) {
        let x = pre.batch_of(chunk.iter().map(|f| (&f[..], false)), device)?;
        out.extend(model.predict(&x)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Scores predictions against the samples' labels (each task over the samples that have it).
pub fn score(samples: &[Sample], preds: &Predictions) -> EvalReport {
    let (mut y, mut probs) = (Vec::new(), Vec::new());
    let (mut v_true, mut v_pred, mut a_true, mut a_pred) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, s) in samples.iter().enumerate() {
        if let Some(label) = s.label() {
            y.push(label);
            probs.push(preds.probs[i].to_vec());
        }
        if let Some([v, a]) = s.valence_arousal {
            v_true.push(v);
            a_true.push(a);
            v_pred.push(preds.valence_arousal[i][0]);
            a_pred.push(preds.valence_arousal[i][1]);
        }
    }
    let signed: Vec<(usize, f32)> = samples
        .iter()
        .zip(&preds.valence_arousal)
        .filter_map(|(s, va)| Some((s.label()?, va[0])))
        .collect();
    let (labels, valences): (Vec<usize>, Vec<f32>) = signed.into_iter().unzip();
    EvalReport {
        n: samples.len(),
        valence_sign: valence_sign(&labels, &valences),
        classification: (!y.is_empty()).then(|| classification_report(&y, &probs, &EMOTIONS)),
        valence: (!v_true.is_empty()).then(|| regression_report(&v_true, &v_pred)),
        arousal: (!a_true.is_empty()).then(|| regression_report(&a_true, &a_pred)),
    }
}

/// Validation loss: mean cross-entropy over emotion-labelled samples plus mean squared
/// valence/arousal error over V/A-labelled ones (unweighted, as Keras reports `val_loss`).
pub fn loss(samples: &[Sample], preds: &Predictions) -> f64 {
    let (mut ce, mut n_ce, mut se, mut n_se) = (0.0, 0usize, 0.0, 0usize);
    for (i, s) in samples.iter().enumerate() {
        if let Some((_, target)) = s.emotion {
            ce -= target
                .iter()
                .zip(preds.probs[i])
                .map(|(&t, p)| t as f64 * (p.max(1e-7) as f64).ln())
                .sum::<f64>();
            n_ce += 1;
        }
        if let Some(va) = s.valence_arousal {
            se += va
                .iter()
                .zip(preds.valence_arousal[i])
                .map(|(&t, p)| ((t - p) as f64).powi(2))
                .sum::<f64>()
                / 2.0;
            n_se += 1;
        }
    }
    ce / n_ce.max(1) as f64 + se / n_se.max(1) as f64
}

/// A readable summary: the per-class table and the valence/arousal figures.
pub fn summary(r: &EvalReport) -> String {
    let mut text = format!("n {}\n", r.n);
    if let Some(c) = &r.classification {
        text.push_str(&c.to_text());
    }
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    for (name, reg) in [("valence", &r.valence), ("arousal", &r.arousal)] {
        if let Some(m) = reg {
            text.push_str(&format!(
                "{name:<8} n {:<5} RMSE {:.3}  Pearson {}  CCC {}  SAGR {:.3}\n",
                m.n,
                m.rmse,
                fmt(m.pearson),
                fmt(m.ccc),
                m.sagr
            ));
        }
    }
    if let Some(s) = &r.valence_sign {
        text.push_str(&format!(
            "valence sign agrees with the emotion (happy > 0; sad, fear, disgust, anger < 0): {:.3} of {}\n",
            s.agreement, s.n
        ));
    }
    text
}
