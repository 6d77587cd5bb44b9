//! Metric tests against hand-computed and scikit-learn values.

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
    5, 4, 3, 1, 2, 0, 0, 0, 1, 5, 4, 6, 3, 4, 6, 5, 4, 3, 3, 6, 1, 5, 4, 0, 2, 6, 3, 0, 5, 5, 5, 1,
    0, 6, 0, 3, 0, 2, 3, 2, 2, 0, 0, 0, 0, 4, 3, 4, 1, 4, 5, 2, 3, 6, 5, 6, 2, 4, 6, 4,
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
        794, 167, -920, 0, 138, 652, 64, 626, 994, -299, -658, 0, 506, -122, 177, -745, 452, -440,
        -619, 726, 129, -31, 798, -828, 392, -344, -649, 350, -274, -340, 887, -601, 24, -952,
        -673, 767, 578, 114, -555, 115,
    ];
    let pred_milli: [i16; 40] = [
        587, 324, -646, 492, -125, 913, -366, 0, 866, 330, -277, -200, 27, -43, 218, 86, 603, -667,
        275, 490, -74, 521, 644, -590, 440, 113, -56, -68, 508, 146, 607, -566, -174, -529, -566,
        407, 748, 289, -407, 401,
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
