//! Evaluation metrics for affectcam: discrete-emotion classification and valence/arousal
//! regression, collected into a serializable [`EvalReport`] whose JSON keys are a public contract.
//!
//! Classification (K classes, generic; K = 8 in practice) follows scikit-learn conventions:
//! - the predicted label is the argmax of each probability row, ties going to the lowest index
//!   (as `numpy.argmax`);
//! - precision/recall/F1 use `zero_division = 0`, and `f1_macro` averages over **all** K classes
//!   (`f1_score(y, p, labels=range(K), average='macro', zero_division=0)`), so a class never
//!   present and never predicted contributes F1 = 0; `f1_weighted` weights by support;
//! - `balanced_accuracy` is the mean recall over classes present in `y_true`
//!   (`balanced_accuracy_score`);
//! - `cohen_kappa` is unweighted (`cohen_kappa_score`), `None` where undefined (chance agreement 1);
//! - `auc_ovr` is the one-vs-rest macro ROC AUC (`roc_auc_score(multi_class='ovr',
//!   average='macro')`), computed as the Mann–Whitney statistic with tied scores counting 1/2,
//!   which equals sklearn's trapezoidal ROC area; classes without both positives and negatives in
//!   `y_true` are skipped and listed in `auc_skipped`.
//!
//! On empty input the rate metrics (accuracy, balanced accuracy, F1) are 0 (the `zero_division = 0`
//! convention); correlation-type metrics are `None` wherever they would be NaN, and serialize as
//! `null`. All arithmetic is done in `f64`.

use crate::model::labels::EMOTIONS;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name, from `class_names`.
    pub class: String,
    /// TP / (TP + FP), 0 when the class is never predicted.
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class is absent from `y_true`.
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN), 0 when that denominator is 0.
    pub f1: f64,
    /// Number of samples whose true label is this class.
    pub support: u64,
}

/// Classification metrics over K classes; see the module docs for the conventions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Fraction of argmax predictions equal to the true label.
    pub accuracy: f64,
    /// Mean recall over the classes present in `y_true`.
    pub balanced_accuracy: f64,
    /// Support-weighted mean of per-class F1.
    pub f1_weighted: f64,
    /// Unweighted mean of per-class F1 over all K classes.
    pub f1_macro: f64,
    /// Unweighted Cohen's kappa; `None` when chance agreement is 1 (e.g. empty or one class).
    pub cohen_kappa: Option<f64>,
    /// One-vs-rest macro ROC AUC over the classes in `y_true` that have positives and negatives;
    /// `None` when no class qualifies.
    pub auc_ovr: Option<f64>,
    /// Names of the classes left out of `auc_ovr`.
    pub auc_skipped: Vec<String>,
    /// K×K counts, rows = true class, columns = predicted class.
    pub confusion: Vec<Vec<u64>>,
    /// One entry per class, in `class_names` order.
    pub per_class: Vec<ClassMetrics>,
}

/// Regression metrics for one continuous target (valence or arousal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// Root mean squared error; 0 on empty input.
    pub rmse: f64,
    /// Pearson correlation; `None` with fewer than 2 samples or a constant input.
    pub pearson: Option<f64>,
    /// Lin's concordance correlation coefficient with population variances; `None` with fewer than
    /// 2 samples or a zero denominator (both inputs constant and equal). A constant prediction
    /// against varying truth gives 0, as the formula does.
    pub ccc: Option<f64>,
    /// Sign agreement rate, sign(0) counted as positive; 0 on empty input.
    pub sagr: f64,
    /// Number of samples.
    pub n: usize,
}

/// Everything an evaluation run reports; a section is `None` (JSON `null`) when the data has no
/// such labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Number of evaluated samples.
    pub n: usize,
    /// Discrete-emotion metrics.
    pub classification: Option<ClassificationReport>,
    /// Valence regression metrics.
    pub valence: Option<RegressionReport>,
    /// Arousal regression metrics.
    pub arousal: Option<RegressionReport>,
    /// Whether predicted valence has the sign the emotion label implies.
    #[serde(default)]
    pub valence_sign: Option<ValenceSign>,
}

/// Valence-sign agreement on emotion labels whose valence sign is clear: happy faces should
/// get valence > 0; sad, fear, disgust and anger faces < 0 (neutral, surprise and contempt
/// are left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValenceSign {
    /// Fraction of those faces whose predicted valence has the implied sign.
    pub agreement: f64,
    pub n: usize,
}

/// The valence sign label `label` implies: +1, -1, or 0 (no clear sign).
pub fn implied_valence_sign(label: usize) -> i8 {
    match EMOTIONS.get(label).copied() {
        Some("happy") => 1,
        Some("sad" | "fear" | "disgust" | "anger") => -1,
        _ => 0,
    }
}

/// Valence-sign agreement of predicted valences `pred` for emotion labels `labels`; `None`
/// when no label implies a sign.
pub fn valence_sign(labels: &[usize], pred: &[f32]) -> Option<ValenceSign> {
    let (mut agree, mut n) = (0usize, 0usize);
    for (&l, &v) in labels.iter().zip(pred) {
        let sign = implied_valence_sign(l);
        if sign != 0 {
            n += 1;
            agree += usize::from((v > 0.0) == (sign > 0) && v != 0.0);
        }
    }
    (n > 0).then(|| ValenceSign {
        agreement: agree as f64 / n as f64,
        n,
    })
}

/// Computes all classification metrics from true labels and per-sample class probabilities
/// (`Vec<f32>` or `[f32; K]` rows, one column per entry of `class_names`).
///
/// # Panics
/// If `y_true` and `probs` differ in length, a row's length differs from `class_names.len()`, or a
/// label is not below `class_names.len()`.
pub fn classification_report<P: AsRef<[f32]>>(
    y_true: &[usize],
    probs: &[P],
    class_names: &[&str],
) -> ClassificationReport {
    let k = class_names.len();
    assert_eq!(y_true.len(), probs.len(), "y_true and probs lengths differ");
    let y_pred: Vec<usize> = probs
        .iter()
        .map(|row| {
            let row = row.as_ref();
            assert_eq!(row.len(), k, "probability row length != number of classes");
            argmax(row)
        })
        .collect();

    let confusion = confusion_matrix(y_true, &y_pred, k);
    let n = y_true.len() as u64;
    let support: Vec<u64> = confusion.iter().map(|r| r.iter().sum()).collect();
    let predicted: Vec<u64> = (0..k)
        .map(|j| confusion.iter().map(|r| r[j]).sum())
        .collect();
    let tp: Vec<u64> = (0..k).map(|i| confusion[i][i]).collect();

    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let fp = predicted[c] - tp[c];
            let fn_ = support[c] - tp[c];
            ClassMetrics {
                class: class_names[c].to_string(),
                precision: ratio(tp[c] as f64, predicted[c] as f64),
                recall: ratio(tp[c] as f64, support[c] as f64),
                // sklearn's form; equals 2PR/(P+R) whenever that is defined.
                f1: ratio(2.0 * tp[c] as f64, (2 * tp[c] + fp + fn_) as f64),
                support: support[c],
            }
        })
        .collect();

    let present_recalls: Vec<f64> = per_class
        .iter()
        .filter(|m| m.support > 0)
        .map(|m| m.recall)
        .collect();
    let weighted_f1_sum: f64 = per_class.iter().map(|m| m.f1 * m.support as f64).sum();

    let (auc_ovr, skipped) = auc_ovr(y_true, probs, k);
    ClassificationReport {
        accuracy: ratio(tp.iter().sum::<u64>() as f64, n as f64),
        balanced_accuracy: mean(&present_recalls),
        f1_weighted: ratio(weighted_f1_sum, n as f64),
        f1_macro: mean(&per_class.iter().map(|m| m.f1).collect::<Vec<_>>()),
        cohen_kappa: cohen_kappa(&confusion, &support, &predicted, n),
        auc_ovr,
        auc_skipped: skipped
            .into_iter()
            .map(|c| class_names[c].to_string())
            .collect(),
        confusion,
        per_class,
    }
}

/// Computes RMSE, Pearson, CCC and SAGR of `pred` against `truth`.
///
/// # Panics
/// If `truth` and `pred` differ in length.
pub fn regression_report(truth: &[f32], pred: &[f32]) -> RegressionReport {
    assert_eq!(truth.len(), pred.len(), "truth and pred lengths differ");
    let n = truth.len();
    let t: Vec<f64> = truth.iter().map(|&v| v as f64).collect();
    let p: Vec<f64> = pred.iter().map(|&v| v as f64).collect();

    let sq_err: Vec<f64> = t.iter().zip(&p).map(|(a, b)| (a - b).powi(2)).collect();
    let agree = t
        .iter()
        .zip(&p)
        .filter(|(a, b)| (**a >= 0.0) == (**b >= 0.0));
    let sagr = ratio(agree.count() as f64, n as f64);

    let (mut pearson, mut ccc) = (None, None);
    if n >= 2 {
        let (mt, mp) = (mean(&t), mean(&p));
        // Widened f32 values sum exactly in f64 (for n < 2^29), so the mean of a constant input
        // is exact and its variance exactly 0, so the `> 0.0` tests below are reliable.
        let centred = |x: &[f64], m: f64| -> Vec<f64> { x.iter().map(|v| v - m).collect() };
        let (dt, dp) = (centred(&t, mt), centred(&p, mp));
        let dot =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / n as f64;
        let (vt, vp, cov) = (dot(&dt, &dt), dot(&dp, &dp), dot(&dt, &dp));
        if vt > 0.0 && vp > 0.0 {
            pearson = Some((cov / (vt * vp).sqrt()).clamp(-1.0, 1.0));
        }
        let denom = vt + vp + (mt - mp).powi(2);
        if denom > 0.0 {
            ccc = Some(2.0 * cov / denom);
        }
    }
    RegressionReport {
        rmse: mean(&sq_err).sqrt(),
        pearson,
        ccc,
        sagr,
        n,
    }
}

impl ClassificationReport {
    /// Renders a per-class table in the layout of sklearn's `classification_report`, followed by
    /// the headline numbers.
    pub fn to_text(&self) -> String {
        let w = self
            .per_class
            .iter()
            .map(|m| m.class.len())
            .chain(std::iter::once("weighted avg".len()))
            .max()
            .unwrap_or(0);
        let n: u64 = self.per_class.iter().map(|m| m.support).sum();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>w$} {:>10} {:>10} {:>10} {:>10}\n",
            "", "precision", "recall", "f1-score", "support"
        );
        let mut row = |name: &str, p: f64, r: f64, f: f64, sup: u64| {
            let _ = writeln!(s, "{name:>w$} {p:>10.4} {r:>10.4} {f:>10.4} {sup:>10}");
        };
        for m in &self.per_class {
            row(&m.class, m.precision, m.recall, m.f1, m.support);
        }
        let col =
            |f: fn(&ClassMetrics) -> f64| -> Vec<f64> { self.per_class.iter().map(f).collect() };
        let weighted = |f: fn(&ClassMetrics) -> f64| {
            let total: f64 = self.per_class.iter().map(|m| f(m) * m.support as f64).sum();
            ratio(total, n as f64)
        };
        let (pc, rc) = (col(|m| m.precision), col(|m| m.recall));
        s.push('\n');
        let _ = writeln!(
            s,
            "{:>w$} {:>10} {:>10} {:>10.4} {n:>10}",
            "accuracy", "", "", self.accuracy
        );
        let mut row = |name: &str, p: f64, r: f64, f: f64| {
            let _ = writeln!(s, "{name:>w$} {p:>10.4} {r:>10.4} {f:>10.4} {n:>10}");
        };
        row("macro avg", mean(&pc), mean(&rc), self.f1_macro);
        row(
            "weighted avg",
            weighted(|m| m.precision),
            weighted(|m| m.recall),
            self.f1_weighted,
        );

        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
        let _ = write!(
            s,
            "\nbalanced accuracy {:.4}  |  Cohen's kappa {}  |  AUC (OvR macro) {}",
            self.balanced_accuracy,
            opt(self.cohen_kappa),
            opt(self.auc_ovr)
        );
        if !self.auc_skipped.is_empty() {
            let _ = write!(s, " (skipped: {})", self.auc_skipped.join(", "));
        }
        s.push('\n');
        s
    }
}

/// Index of the largest value; ties go to the lowest index, as `numpy.argmax`.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

fn confusion_matrix(y_true: &[usize], y_pred: &[usize], k: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; k]; k];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        assert!(t < k, "label {t} out of range for {k} classes");
        m[t][p] += 1;
    }
    m
}

/// Unweighted kappa from integer counts: (n·Σdiag − Σ rowₖ·colₖ) / (n² − Σ rowₖ·colₖ), exact up
/// to the final division.
fn cohen_kappa(confusion: &[Vec<u64>], support: &[u64], predicted: &[u64], n: u64) -> Option<f64> {
    let n = n as i128;
    let diag: i128 = (0..confusion.len()).map(|i| confusion[i][i] as i128).sum();
    let chance: i128 = support
        .iter()
        .zip(predicted)
        .map(|(&a, &b)| a as i128 * b as i128)
        .sum();
    let denom = n * n - chance;
    (denom > 0).then(|| (n * diag - chance) as f64 / denom as f64)
}

/// Macro one-vs-rest AUC and the classes that were skipped for lacking positives or negatives.
fn auc_ovr<P: AsRef<[f32]>>(y_true: &[usize], probs: &[P], k: usize) -> (Option<f64>, Vec<usize>) {
    let mut aucs = Vec::new();
    let mut skipped = Vec::new();
    for c in 0..k {
        let scores: Vec<f32> = probs.iter().map(|r| r.as_ref()[c]).collect();
        let positive: Vec<bool> = y_true.iter().map(|&y| y == c).collect();
        match binary_auc(&positive, &scores) {
            Some(a) => aucs.push(a),
            None => skipped.push(c),
        }
    }
    ((!aucs.is_empty()).then(|| mean(&aucs)), skipped)
}

/// ROC AUC as the Mann–Whitney U statistic with mid-ranks for ties (a tied positive/negative pair
/// counts 1/2), identical to the trapezoidal area under sklearn's ROC curve. `None` unless both
/// positives and negatives are present.
fn binary_auc(positive: &[bool], scores: &[f32]) -> Option<f64> {
    let n = scores.len();
    let n_pos = positive.iter().filter(|&&p| p).count() as u128;
    let n_neg = n as u128 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Twice the positives' rank sum, kept integral: a tie group over 1-based ranks i+1..=j has
    // mid-rank (i+1+j)/2.
    let mut twice_rank_sum: u128 = 0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let pos_in_group = order[i..j].iter().filter(|&&o| positive[o]).count() as u128;
        twice_rank_sum += (i + 1 + j) as u128 * pos_in_group;
        i = j;
    }
    let twice_u = twice_rank_sum - n_pos * (n_pos + 1);
    Some(twice_u as f64 / (2 * n_pos * n_neg) as f64)
}

/// `num / den`, or 0 when `den` is 0 (sklearn's `zero_division = 0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Arithmetic mean, 0 for an empty slice.
fn mean(x: &[f64]) -> f64 {
    ratio(x.iter().sum(), x.len() as f64)
}

#[cfg(test)]
mod tests;
