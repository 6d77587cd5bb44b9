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
mod tests {
    use super::*;

    /// Tolerance for every comparison against hand or scikit-learn values.
    const TOL: f64 = 1e-6;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= TOL
    }

    #[track_caller]
    fn assert_close(a: f64, b: f64) {
        assert!(close(a, b), "{a} != {b} (tol {TOL})");
    }

    #[track_caller]
    fn assert_some_close(a: Option<f64>, b: f64) {
        assert_close(a.expect("metric is None"), b);
    }

    /// Hand-computed 3-class example.
    ///
    /// y_true = [0, 0, 0, 1, 1, 2]; argmax of the rows below gives y_pred = [0, 0, 1, 1, 2, 2]
    /// (row 4 is [.3, .3, .4] -> 2).
    /// Confusion (rows true): [[2,1,0],[0,1,1],[0,0,1]]; support [3,2,1]; predicted [2,2,2].
    /// accuracy = 4/6.
    /// precision = [2/2, 1/2, 1/2]; recall = [2/3, 1/2, 1/1].
    /// F1 = 2TP/(2TP+FP+FN) = [4/5, 2/4, 2/3]; macro = (4/5+1/2+2/3)/3 = 59/90;
    /// weighted = (3·4/5 + 2·1/2 + 1·2/3)/6 = 61/90; balanced accuracy = (2/3+1/2+1)/3 = 13/18.
    /// kappa: p_o = 4/6, p_e = (3·2+2·2+1·2)/36 = 1/3, κ = (2/3−1/3)/(2/3) = 1/2.
    /// AUC class 0: pos {.8,.6,.3} vs neg {.2,.3,.1}: 3+3+2.5 = 8.5 of 9 (the .3/.3 tie counts ½);
    ///   class 1: pos {.7,.3} vs neg {.1,.2,.6,.2}: 4+3 = 7 of 8; class 2: pos {.7} beats all 5.
    ///   macro = (17/18 + 7/8 + 1)/3 = 203/216.
    #[test]
    fn hand_computed_three_class() {
        let y = [0, 0, 0, 1, 1, 2];
        let probs = [
            [0.8, 0.1, 0.1],
            [0.6, 0.2, 0.2],
            [0.3, 0.6, 0.1],
            [0.2, 0.7, 0.1],
            [0.3, 0.3, 0.4],
            [0.1, 0.2, 0.7],
        ];
        let r = classification_report(&y, &probs, &["a", "b", "c"]);
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert_close(r.accuracy, 4.0 / 6.0);
        let expect = [
            (1.0, 2.0 / 3.0, 0.8, 3),
            (0.5, 0.5, 0.5, 2),
            (0.5, 1.0, 2.0 / 3.0, 1),
        ];
        for (m, (p, rc, f, s)) in r.per_class.iter().zip(expect) {
            assert_close(m.precision, p);
            assert_close(m.recall, rc);
            assert_close(m.f1, f);
            assert_eq!(m.support, s);
        }
        assert_eq!(r.per_class[2].class, "c");
        assert_close(r.f1_macro, 59.0 / 90.0);
        assert_close(r.f1_weighted, 61.0 / 90.0);
        assert_close(r.balanced_accuracy, 13.0 / 18.0);
        assert_some_close(r.cohen_kappa, 0.5);
        assert_some_close(r.auc_ovr, 203.0 / 216.0);
        assert!(r.auc_skipped.is_empty());
    }

    #[test]
    fn argmax_ties_go_to_lowest_index() {
        assert_eq!(argmax(&[0.4, 0.4, 0.2]), 0);
        assert_eq!(argmax(&[0.1, 0.45, 0.45]), 1);
    }

    #[test]
    fn all_tied_scores_give_auc_half() {
        assert_eq!(
            binary_auc(&[true, false, true, false], &[0.5; 4]),
            Some(0.5)
        );
    }

    #[test]
    fn perfect_predictions() {
        let y = [0, 1, 2, 2, 1, 0];
        let probs: Vec<Vec<f32>> = y
            .iter()
            .map(|&c| (0..3).map(|j| if j == c { 0.9 } else { 0.05 }).collect())
            .collect();
        let r = classification_report(&y, &probs, &["a", "b", "c"]);
        assert_close(r.accuracy, 1.0);
        assert_close(r.balanced_accuracy, 1.0);
        assert_close(r.f1_macro, 1.0);
        assert_close(r.f1_weighted, 1.0);
        assert_some_close(r.cohen_kappa, 1.0);
        assert_some_close(r.auc_ovr, 1.0);

        let t = [0.1, -0.5, 0.3, 0.9];
        let g = regression_report(&t, &t);
        assert_close(g.rmse, 0.0);
        assert_some_close(g.pearson, 1.0);
        assert_some_close(g.ccc, 1.0);
        assert_close(g.sagr, 1.0);
    }

    /// pred = truth + 1 on [1,2,3,4]: Pearson 1, but CCC = 2·1.25 / (1.25 + 1.25 + 1²) = 5/7.
    #[test]
    fn ccc_penalises_shift_pearson_does_not() {
        let r = regression_report(&[1.0, 2.0, 3.0, 4.0], &[2.0, 3.0, 4.0, 5.0]);
        assert_some_close(r.pearson, 1.0);
        assert_some_close(r.ccc, 5.0 / 7.0);
        assert!(r.ccc.unwrap() < r.pearson.unwrap());
        assert_close(r.rmse, 1.0);
    }

    /// Pairs (truth, pred): (.5,.1) agree; (−.2,−.4) agree; (0,−.1) disagree since sign(0) is
    /// positive; (−.7, 0) disagree; (0, 0) agree → 3/5.
    #[test]
    fn sagr_explicit() {
        let r = regression_report(&[0.5, -0.2, 0.0, -0.7, 0.0], &[0.1, -0.4, -0.1, 0.0, 0.0]);
        assert_close(r.sagr, 0.6);
    }

    // Reference data and values from /tmp/metrics_ref/ref.py (numpy default_rng(0),
    // scikit-learn 1.9.1, scipy 1.17.1). Probabilities are given per mille (rows sum to 1000);
    // the script computed on exactly these values as f32. Class 7 never occurs in y_true, so its
    // AUC is skipped; even rows are multiples of 0.05 so columns contain many tied scores, and
    // row 5 has a tied maximum (argmax → 0).
    const SK_Y: [usize; 60] = [
        5, 4, 3, 1, 2, 0, 0, 0, 1, 5, 4, 6, 3, 4, 6, 5, 4, 3, 3, 6, 1, 5, 4, 0, 2, 6, 3, 0, 5, 5,
        5, 1, 0, 6, 0, 3, 0, 2, 3, 2, 2, 0, 0, 0, 0, 4, 3, 4, 1, 4, 5, 2, 3, 6, 5, 6, 2, 4, 6, 4,
    ];
    #[rustfmt::skip]
    const SK_PROBS_PER_MILLE: [[u16; 8]; 60] = [
        [150, 100, 100, 50, 400, 0, 100, 100], [146, 90, 64, 54, 287, 83, 123, 153],
        [0, 450, 100, 50, 150, 150, 50, 50], [124, 319, 87, 57, 133, 68, 56, 156],
        [50, 50, 200, 150, 0, 0, 100, 450], [300, 300, 100, 100, 100, 50, 50, 0],
        [100, 50, 100, 0, 150, 50, 400, 150], [377, 45, 149, 9, 111, 78, 194, 37],
        [350, 0, 100, 100, 150, 50, 150, 100], [174, 37, 147, 184, 7, 309, 123, 19],
        [100, 100, 100, 150, 50, 50, 50, 400], [36, 93, 7, 80, 179, 118, 298, 189],
        [100, 350, 0, 100, 150, 150, 50, 100], [90, 112, 49, 168, 276, 88, 60, 157],
        [150, 150, 200, 350, 0, 0, 0, 150], [184, 171, 123, 179, 162, 1, 20, 160],
        [0, 350, 150, 150, 50, 0, 100, 200], [73, 180, 77, 417, 45, 96, 65, 47],
        [100, 100, 0, 550, 150, 0, 50, 50], [115, 78, 24, 165, 122, 7, 360, 129],
        [50, 150, 150, 0, 400, 200, 50, 0], [18, 155, 29, 105, 184, 444, 53, 12],
        [100, 150, 100, 0, 550, 50, 0, 50], [399, 182, 26, 106, 144, 47, 51, 45],
        [50, 200, 500, 50, 0, 0, 150, 50], [129, 94, 137, 89, 123, 129, 209, 90],
        [100, 50, 100, 50, 100, 150, 350, 100], [173, 235, 153, 87, 19, 134, 56, 143],
        [0, 200, 400, 0, 150, 50, 0, 200], [145, 6, 91, 127, 120, 253, 131, 127],
        [50, 0, 50, 200, 50, 0, 150, 500], [85, 244, 155, 114, 103, 153, 127, 19],
        [450, 200, 50, 0, 100, 50, 100, 50], [77, 119, 122, 244, 172, 192, 0, 74],
        [350, 50, 100, 150, 100, 150, 0, 100], [125, 67, 113, 443, 145, 61, 11, 35],
        [450, 150, 0, 100, 0, 100, 50, 150], [78, 129, 309, 104, 87, 121, 139, 33],
        [100, 0, 0, 600, 0, 150, 150, 0], [128, 73, 168, 177, 107, 106, 134, 107],
        [150, 0, 450, 100, 150, 100, 50, 0], [135, 256, 7, 148, 114, 0, 140, 200],
        [500, 150, 50, 50, 150, 0, 100, 0], [79, 147, 125, 41, 143, 125, 208, 132],
        [200, 350, 0, 0, 100, 100, 100, 150], [78, 43, 172, 96, 237, 15, 177, 182],
        [50, 0, 50, 100, 450, 200, 50, 100], [127, 197, 28, 164, 203, 197, 58, 26],
        [100, 500, 0, 0, 0, 150, 150, 100], [304, 150, 9, 49, 80, 206, 107, 95],
        [0, 150, 0, 100, 150, 100, 150, 350], [53, 21, 308, 138, 63, 46, 177, 194],
        [150, 50, 50, 550, 50, 0, 0, 150], [8, 172, 138, 103, 184, 174, 92, 129],
        [100, 100, 50, 350, 150, 0, 100, 150], [15, 71, 94, 60, 130, 186, 297, 147],
        [0, 150, 0, 100, 0, 250, 500, 0], [123, 106, 45, 119, 334, 120, 105, 48],
        [100, 400, 150, 50, 50, 50, 150, 50], [94, 125, 131, 25, 494, 92, 39, 0],
    ];
    const NAMES: [&str; 8] = [
        "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
    ];

    #[test]
    fn matches_sklearn_classification() {
        let probs: Vec<Vec<f32>> = SK_PROBS_PER_MILLE
            .iter()
            .map(|r| r.iter().map(|&v| (v as f64 / 1000.0) as f32).collect())
            .collect();
        let r = classification_report(&SK_Y, &probs, &NAMES);
        assert_close(r.accuracy, 0.55);
        assert_close(r.balanced_accuracy, 0.5490929705215419);
        assert_close(r.f1_macro, 0.4906565656565656);
        assert_close(r.f1_weighted, 0.5744949494949495);
        assert_some_close(r.cohen_kappa, 0.4796016704143913);
        // Mean of the per-class roc_auc_score over classes 0..=6.
        assert_some_close(r.auc_ovr, 0.7133571508597869);
        assert_eq!(r.auc_skipped, vec!["contempt".to_string()]);
        let confusion: Vec<Vec<u64>> = vec![
            vec![7, 3, 0, 0, 0, 0, 2, 0],
            vec![1, 3, 0, 0, 1, 0, 0, 0],
            vec![0, 0, 4, 1, 0, 0, 1, 1],
            vec![0, 2, 0, 5, 1, 0, 1, 0],
            vec![1, 1, 0, 0, 7, 0, 0, 1],
            vec![1, 0, 1, 1, 1, 3, 0, 2],
            vec![0, 1, 0, 2, 1, 0, 4, 0],
            vec![0; 8],
        ];
        assert_eq!(r.confusion, confusion);
        let precision = [
            0.7,
            0.3,
            0.8,
            0.5555555555555556,
            0.6363636363636364,
            1.0,
            0.5,
            0.0,
        ];
        let recall = [
            0.5833333333333334,
            0.6,
            0.5714285714285714,
            0.5555555555555556,
            0.7,
            0.3333333333333333,
            0.5,
            0.0,
        ];
        let f1 = [
            0.6363636363636364,
            0.4,
            0.6666666666666666,
            0.5555555555555556,
            0.6666666666666666,
            0.5,
            0.5,
            0.0,
        ];
        let support = [12, 5, 7, 9, 10, 9, 8, 0];
        for (c, m) in r.per_class.iter().enumerate() {
            assert_eq!(m.class, NAMES[c]);
            assert_close(m.precision, precision[c]);
            assert_close(m.recall, recall[c]);
            assert_close(m.f1, f1[c]);
            assert_eq!(m.support, support[c]);
        }
    }

    /// Per-class OvR AUCs from `roc_auc_score(y == k, probs[:, k])`, ties included.
    #[test]
    fn matches_sklearn_binary_auc_per_class() {
        let expect = [
            0.8802083333333334,
            0.6890909090909092,
            0.8490566037735849,
            0.7211328976034859,
            0.744,
            0.4705882352941176,
            0.6394230769230771,
        ];
        for (c, e) in expect.into_iter().enumerate() {
            let pos: Vec<bool> = SK_Y.iter().map(|&y| y == c).collect();
            let scores: Vec<f32> = SK_PROBS_PER_MILLE
                .iter()
                .map(|r| (r[c] as f64 / 1000.0) as f32)
                .collect();
            assert_some_close(binary_auc(&pos, &scores), e);
        }
    }

    /// Values in thousandths; references: RMSE by formula, `scipy.stats.pearsonr`, CCC by
    /// formula (population variances), SAGR with sign(0) positive. Includes exact zeros.
    #[test]
    fn matches_sklearn_regression() {
        let truth_milli: [i16; 40] = [
            794, 167, -920, 0, 138, 652, 64, 626, 994, -299, -658, 0, 506, -122, 177, -745, 452,
            -440, -619, 726, 129, -31, 798, -828, 392, -344, -649, 350, -274, -340, 887, -601, 24,
            -952, -673, 767, 578, 114, -555, 115,
        ];
        let pred_milli: [i16; 40] = [
            587, 324, -646, 492, -125, 913, -366, 0, 866, 330, -277, -200, 27, -43, 218, 86, 603,
            -667, 275, 490, -74, 521, 644, -590, 440, 113, -56, -68, 508, 146, 607, -566, -174,
            -529, -566, 407, 748, 289, -407, 401,
        ];
        let f = |x: &[i16]| -> Vec<f32> { x.iter().map(|&v| (v as f64 / 1000.0) as f32).collect() };
        let r = regression_report(&f(&truth_milli), &f(&pred_milli));
        assert_eq!(r.n, 40);
        assert_close(r.rmse, 0.3926393741926811);
        assert_some_close(r.pearson, 0.7304929269914172);
        assert_some_close(r.ccc, 0.6958484645468107);
        assert_close(r.sagr, 0.675);
    }

    #[test]
    fn empty_input() {
        let r = classification_report::<Vec<f32>>(&[], &[], &["a", "b"]);
        assert_eq!(r.accuracy, 0.0);
        assert_eq!(r.balanced_accuracy, 0.0);
        assert_eq!(r.f1_macro, 0.0);
        assert_eq!(r.f1_weighted, 0.0);
        assert_eq!(r.cohen_kappa, None);
        assert_eq!(r.auc_ovr, None);
        assert_eq!(r.auc_skipped, vec!["a", "b"]);
        assert_eq!(r.confusion, vec![vec![0, 0], vec![0, 0]]);

        let g = regression_report(&[], &[]);
        assert_eq!(
            (g.n, g.rmse, g.sagr, g.pearson, g.ccc),
            (0, 0.0, 0.0, None, None)
        );
        let one = regression_report(&[0.3], &[0.5]);
        assert_eq!((one.pearson, one.ccc), (None, None));
        assert_close(one.rmse, 0.2);
    }

    /// Only class 0 in truth and prediction: chance agreement is 1 so kappa is undefined, and no
    /// class has both positives and negatives so AUC is undefined. Macro F1 counts the two
    /// never-seen classes as 0.
    #[test]
    fn single_class() {
        let r = classification_report(&[0, 0, 0], &[[0.8, 0.1, 0.1]; 3], &["a", "b", "c"]);
        assert_close(r.accuracy, 1.0);
        assert_close(r.balanced_accuracy, 1.0);
        assert_close(r.f1_macro, 1.0 / 3.0);
        assert_close(r.f1_weighted, 1.0);
        assert_eq!(r.cohen_kappa, None);
        assert_eq!(r.auc_ovr, None);
        assert_eq!(r.auc_skipped.len(), 3);
    }

    /// Always predicting class 0: observed agreement equals chance agreement, so kappa = 0; every
    /// score column is constant, so each AUC is 1/2.
    #[test]
    fn constant_predictions() {
        let r = classification_report(&[0, 1, 2, 0], &[[0.6, 0.3, 0.1]; 4], &["a", "b", "c"]);
        assert_close(r.accuracy, 0.5);
        assert_some_close(r.cohen_kappa, 0.0);
        assert_some_close(r.auc_ovr, 0.5);

        // Constant prediction: no correlation, and Lin's formula gives CCC = 0.
        let g = regression_report(&[0.1, 0.4, -0.3], &[0.1; 3]);
        assert_eq!(g.pearson, None);
        assert_some_close(g.ccc, 0.0);
        let ramp: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        assert_eq!(regression_report(&ramp, &[0.123; 1000]).pearson, None);
        let both = regression_report(&[0.1; 3], &[0.1; 3]);
        assert_eq!((both.pearson, both.ccc), (None, None));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn label_out_of_range_panics() {
        classification_report(&[2], &[[0.5, 0.5]], &["a", "b"]);
    }

    /// The JSON keys are a public contract; missing sections and undefined metrics are `null`.
    #[test]
    fn json_contract() {
        let report = EvalReport {
            n: 3,
            classification: Some(classification_report(
                &[0, 1, 1],
                &[[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]],
                &["a", "b"],
            )),
            valence: Some(regression_report(&[0.1, 0.2, 0.3], &[0.2; 3])),
            arousal: None,
            valence_sign: valence_sign(&[1, 2], &[0.3, 0.1]),
        };
        let v = serde_json::to_value(&report).unwrap();
        for key in [
            "accuracy",
            "balanced_accuracy",
            "f1_weighted",
            "f1_macro",
            "cohen_kappa",
            "auc_ovr",
            "confusion",
        ] {
            assert!(v["classification"].get(key).is_some(), "missing {key}");
        }
        let pc = &v["classification"]["per_class"][1];
        for key in ["class", "precision", "recall", "f1", "support"] {
            assert!(pc.get(key).is_some(), "missing per_class.{key}");
        }
        assert_eq!(pc["class"], "b");
        for key in ["rmse", "pearson", "ccc", "sagr", "n"] {
            assert!(v["valence"].get(key).is_some(), "missing valence.{key}");
        }
        assert!(v["valence"]["pearson"].is_null());
        assert!(v["arousal"].is_null());
        assert_eq!(v["n"], 3);
        assert_eq!(v["valence_sign"]["agreement"], 0.5);
        let back: EvalReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn text_table() {
        let r = classification_report(
            &[0, 1, 1],
            &[[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]],
            &["calm", "joy"],
        );
        let t = r.to_text();
        for needle in [
            "precision",
            "calm",
            "joy",
            "accuracy",
            "macro avg",
            "weighted avg",
            "kappa",
        ] {
            assert!(t.contains(needle), "missing {needle} in\n{t}");
        }
        assert!(t.contains("0.6667"), "accuracy 2/3 not shown in\n{t}");
    }
}
