//! Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR
//! 2021): subtracting τ·log π (π the training class prior) from the logits trades a little
//! accuracy on frequent classes for recall on rare ones. τ is chosen on validation and folded
//! into the emotion bias, so inference costs nothing and every consumer of the weights sees it.

use crate::data::Sample;
use crate::eval::{self, Predictions};
use crate::model::labels::NUM_EMOTIONS;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The τ values tried.
pub const TAUS: [f64; 7] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5];

/// Training class prior from hard labels, add-one smoothed (so log π is finite). It is the
/// label prior, not the one the loss saw: with `sqrt` class weights τ = 0.5 only undoes the
/// weighting, so the sweep reaches past 1.
pub fn class_prior(samples: &[Sample]) -> [f64; NUM_EMOTIONS] {
    let mut counts = [1f64; NUM_EMOTIONS];
    for l in samples.iter().filter_map(Sample::label) {
        counts[l] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    counts.map(|c| c / total)
}

/// `preds` with τ·log π subtracted from every face's logits (renormalised probabilities).
pub fn adjusted(preds: &Predictions, prior: &[f64; NUM_EMOTIONS], tau: f64) -> Predictions {
    let probs = preds
        .probs
        .iter()
        .map(|p| {
            let logits: [f64; NUM_EMOTIONS] =
                std::array::from_fn(|c| (p[c].max(1e-12) as f64).ln() - tau * prior[c].ln());
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exp = logits.map(|l| (l - max).exp());
            let sum: f64 = exp.iter().sum();
            exp.map(|e| (e / sum) as f32)
        })
        .collect();
    Predictions {
        probs,
        valence_arousal: preds.valence_arousal.clone(),
    }
}

/// One τ's validation score: the mean over data sources of their macro-F1, so a large
/// source does not decide alone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TauScore {
    pub tau: f64,
    pub mean_f1_macro: f64,
    pub f1_macro_by_source: BTreeMap<PathBuf, f64>,
}

/// Scores every τ in [`TAUS`] on validation samples from `sources` (each sample's index into
/// it in `source_of`); returns the best τ and the whole sweep.
pub fn choose_tau(
    samples: &[Sample],
    source_of: &[usize],
    sources: &[PathBuf],
    preds: &Predictions,
    prior: &[f64; NUM_EMOTIONS],
) -> (f64, Vec<TauScore>) {
    let mut by_source: BTreeMap<&PathBuf, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        if s.label().is_some() {
            by_source.entry(&sources[source_of[i]]).or_default().push(i);
        }
    }
    // Each source's samples, gathered once for every τ.
    let source_samples: Vec<Vec<Sample>> = by_source
        .values()
        .map(|idx| idx.iter().map(|&i| samples[i].clone()).collect())
        .collect();
    let sweep: Vec<TauScore> = TAUS
        .iter()
        .map(|&tau| {
            let preds = adjusted(preds, prior, tau);
            let f1_macro_by_source: BTreeMap<PathBuf, f64> = by_source
                .iter()
                .zip(&source_samples)
                .filter_map(|((source, idx), s)| {
                    let p = Predictions {
                        probs: idx.iter().map(|&i| preds.probs[i]).collect(),
                        valence_arousal: idx.iter().map(|&i| preds.valence_arousal[i]).collect(),
                    };
                    let f1 = eval::score(s, &p).classification?.f1_macro;
                    Some(((*source).clone(), f1))
                })
                .collect();
            let mean_f1_macro =
                f1_macro_by_source.values().sum::<f64>() / f1_macro_by_source.len().max(1) as f64;
            TauScore {
                tau,
                mean_f1_macro,
                f1_macro_by_source,
            }
        })
        .collect();
    // Ties keep the smaller τ: no adjustment unless it helps.
    let best = sweep.iter().fold(&sweep[0], |b, s| {
        if s.mean_f1_macro > b.mean_f1_macro + 1e-9 {
            s
        } else {
            b
        }
    });
    (best.tau, sweep)
}

/// The emotion-bias offsets that apply τ: `-τ·log π` per class.
pub fn bias_offsets(prior: &[f64; NUM_EMOTIONS], tau: f64) -> [f32; NUM_EMOTIONS] {
    prior.map(|p| (-tau * p.ln()) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::one_hot;

    fn sample(label: usize) -> Sample {
        Sample {
            image: "x.png".into(),
            face: None,
            landmarks: None,
            emotion: Some((label, one_hot(label))),
            valence_arousal: None,
            origin: ("labels.csv".into(), 1),
        }
    }

    #[test]
    fn adjustment_lifts_a_rare_class_the_model_underrates() {
        // Class 1 is rare (prior 0.1); the model gives its faces only 0.4, so unadjusted they
        // are all read as class 0. τ = 1 divides by the prior and recovers them.
        let prior = {
            let mut p = [1e-6; NUM_EMOTIONS];
            p[0] = 0.9;
            p[1] = 0.1;
            p
        };
        let mut probs = Vec::new();
        let mut samples = Vec::new();
        for i in 0..20 {
            let label = usize::from(i % 5 == 0);
            let mut p = [0.0; NUM_EMOTIONS];
            (p[0], p[1]) = if label == 1 { (0.6, 0.4) } else { (0.97, 0.03) };
            probs.push(p);
            samples.push(sample(label));
        }
        let preds = Predictions {
            valence_arousal: vec![[0.0; 2]; probs.len()],
            probs,
        };
        let source_of = vec![0; samples.len()];
        let (tau, sweep) = choose_tau(&samples, &source_of, &["data".into()], &preds, &prior);
        assert!(tau > 0.0, "sweep {sweep:?}");
        assert!(sweep[0].mean_f1_macro < sweep.iter().map(|s| s.mean_f1_macro).fold(0.0, f64::max));
        let adjusted = adjusted(&preds, &prior, tau);
        assert_eq!(adjusted.label(0), 1);
        assert_eq!(adjusted.label(1), 0);
        // Folding the offsets into logits is the same as adjusting the probabilities.
        let offsets = bias_offsets(&prior, 1.0);
        assert!((offsets[0] - 0.9f64.ln().abs() as f32).abs() < 1e-6);
    }
}
