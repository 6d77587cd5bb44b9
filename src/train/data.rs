//! Training data: every source read and decoded into faces, the class weights, each epoch's
//! sample order, and a batch's images and targets.

use super::augment::Augment;
use super::config::{ClassWeights, Sampling, Task, TrainConfig};
use super::Targets;
use crate::data::{self, FacePixels, Sample};
use crate::model::labels::NUM_EMOTIONS;
use crate::model::preprocess::Preprocess;
use crate::run_error::RunError;
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// A decoded split: samples with their face pixels.
#[derive(Default)]
pub struct FaceSet {
    pub samples: Vec<Sample>,
    pub faces: Vec<FacePixels>,
    /// Per sample, the index of the `--data` source it came from.
    pub source: Vec<usize>,
}

impl FaceSet {
    fn append(&mut self, other: FaceSet) {
        self.samples.extend(other.samples);
        self.faces.extend(other.faces);
        self.source.extend(other.source);
    }

    /// A batch's images, each mirrored left–right where `mirrored` says so, and with
    /// `augment` each changed as its seed draws.
    pub fn images(
        &self,
        indices: &[usize],
        mirrored: &[bool],
        augment: Option<(&Augment, &[u64])>,
        pre: &Preprocess,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some((augment, seeds)) = augment else {
            let faces = indices
                .iter()
                .zip(mirrored)
                .map(|(&i, &m)| (&self.faces[i][..], m));
            return pre.batch_of(faces, device);
        };
        let changed: Vec<FacePixels> = indices
            .par_iter()
            .zip(seeds)
            .map(|(&i, &seed)| augment.apply(&self.faces[i], pre.input_size, pre.channels(), seed))
            .collect();
        pre.batch_of(
            changed.iter().map(|f| &f[..]).zip(mirrored.iter().copied()),
            device,
        )
    }

    /// A batch's targets; tasks a sample has no label for (or that do not train) weigh 0.
    pub fn targets(
        &self,
        indices: &[usize],
        rules: &TargetRules,
        device: &Device,
    ) -> candle_core::Result<Targets> {
        let task = rules.task;
        let n = indices.len();
        let (mut dist, mut w, mut va, mut mask) = (
            Vec::with_capacity(n * NUM_EMOTIONS),
            Vec::with_capacity(n),
            Vec::with_capacity(n * 2),
            Vec::with_capacity(n),
        );
        for &i in indices {
            let sample = &self.samples[i];
            let emotion = sample.emotion.filter(|_| task != Task::Va);
            match emotion {
                Some((label, target)) => {
                    let eps = rules.label_smoothing;
                    dist.extend(
                        target
                            .iter()
                            .map(|t| t * (1.0 - eps) + eps / NUM_EMOTIONS as f32),
                    );
                    w.push(rules.class_weights[label]);
                }
                None => {
                    dist.extend_from_slice(&[0.0; NUM_EMOTIONS]);
                    w.push(0.0);
                }
            }
            let weak = || {
                let weak = rules.weak_va.as_ref()?;
                Some((weak.target(&sample.emotion?.1)?, weak.weight))
            };
            let known = sample.valence_arousal.map(|t| (t, 1f32));
            match known.or_else(weak).filter(|_| task != Task::Emotion) {
                Some((t, weight)) => {
                    va.extend_from_slice(&t);
                    mask.push(weight);
                }
                None => {
                    va.extend_from_slice(&[0.0, 0.0]);
                    mask.push(0.0);
                }
            }
        }
        Ok(Targets {
            emotion: Tensor::from_vec(dist, (n, NUM_EMOTIONS), device)?,
            emotion_weight: Tensor::from_vec(w, n, device)?,
            valence_arousal: Tensor::from_vec(va, (n, 2), device)?,
            va_mask: Tensor::from_vec(mask, n, device)?,
        })
    }

    /// The training order of one epoch, shuffled: every sample (or, balanced, as many
    /// class-balanced draws), and valence/arousal-labelled ones `va_repeat - 1` more times.
    pub fn epoch_order(
        &self,
        sampling: Sampling,
        va_repeat: usize,
        rng: &mut StdRng,
    ) -> Vec<usize> {
        let mut order: Vec<usize> = match sampling {
            Sampling::Uniform => (0..self.samples.len()).collect(),
            Sampling::Balanced => self.balanced_draws(rng),
        };
        for (i, s) in self.samples.iter().enumerate() {
            if s.valence_arousal.is_some() {
                order.extend(std::iter::repeat_n(i, va_repeat.saturating_sub(1)));
            }
        }
        order.shuffle(rng);
        order
    }
}

/// How samples' labels become a batch's targets.
pub struct TargetRules {
    pub class_weights: [f32; NUM_EMOTIONS],
    pub task: Task,
    pub label_smoothing: f32,
    pub weak_va: Option<WeakVa>,
}

/// Weak valence/arousal targets for faces that have only an emotion label: the mean
/// valence/arousal of each class among the training faces that have both, weighted by the
/// face's class distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct WeakVa {
    /// Per class; `None` where no training face has both labels.
    pub means: [Option<[f32; 2]>; NUM_EMOTIONS],
    pub weight: f32,
}

impl WeakVa {
    /// Class means from `samples`; `None` when no sample has both labels.
    pub fn from_samples(samples: &[Sample], weight: f32) -> Option<Self> {
        let mut sums = [[0f64; 3]; NUM_EMOTIONS];
        for s in samples {
            if let (Some(label), Some([v, a])) = (s.label(), s.valence_arousal) {
                sums[label][0] += v as f64;
                sums[label][1] += a as f64;
                sums[label][2] += 1.0;
            }
        }
        let means = sums.map(|[v, a, n]| (n > 0.0).then(|| [(v / n) as f32, (a / n) as f32]));
        means
            .iter()
            .any(Option::is_some)
            .then_some(Self { means, weight })
    }

    /// The expected class mean under `dist`, over the classes that have a mean; `None` when
    /// `dist` puts (nearly) no mass on them.
    pub fn target(&self, dist: &[f32; NUM_EMOTIONS]) -> Option<[f32; 2]> {
        let (mut v, mut a, mut mass) = (0.0, 0.0, 0.0);
        for (p, mean) in dist.iter().zip(&self.means) {
            if let Some([mv, ma]) = mean {
                v += p * mv;
                a += p * ma;
                mass += p;
            }
        }
        (mass > 0.5).then(|| [v / mass, a / mass])
    }
}

impl FaceSet {
    /// One draw per sample: a class uniformly among those present, then one of its samples;
    /// samples without an emotion label are kept once each.
    fn balanced_draws(&self, rng: &mut StdRng) -> Vec<usize> {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); NUM_EMOTIONS];
        let mut order = Vec::with_capacity(self.samples.len());
        for (i, s) in self.samples.iter().enumerate() {
            match s.label() {
                Some(l) => by_class[l].push(i),
                None => order.push(i),
            }
        }
        by_class.retain(|c| !c.is_empty());
        let labelled: usize = by_class.iter().map(Vec::len).sum();
        for _ in 0..labelled {
            let class = &by_class[rng.random_range(0..by_class.len())];
            order.push(class[rng.random_range(0..class.len())]);
        }
        order
    }
}

/// A data source's short name for messages and file names (its folder or file name).
pub fn source_name(path: &Path) -> String {
    path.file_name()
        .map_or("data".into(), |n| n.to_string_lossy().to_string())
}

/// Every source decoded: training and validation pooled, test kept per source.
pub struct Sources {
    pub train: FaceSet,
    pub valid: FaceSet,
    pub tests: Vec<(PathBuf, FaceSet)>,
    /// Why rows were skipped, one line each.
    pub skipped: Vec<String>,
    /// With `--detect`: images where no face was found.
    pub no_face: Vec<PathBuf>,
}

/// Reads, limits and decodes every source, and logs how many faces each split has.
pub fn load_sources(cfg: &TrainConfig) -> Result<Sources, RunError> {
    let (mut train, mut valid) = (FaceSet::default(), FaceSet::default());
    let mut tests = Vec::new();
    let (mut skipped, mut no_face) = (Vec::new(), Vec::new());
    for (index, path) in cfg.data.iter().enumerate() {
        let splits = data::load(path, &cfg.load)?;
        skipped.extend(splits.skipped);
        let name = source_name(path);
        let mut decode = |mut samples: Vec<Sample>, split: &str| -> Result<FaceSet, RunError> {
            if let Some(n) = cfg.limit {
                samples.truncate(n);
            }
            let what = format!("{name} {split}");
            let decoded = data::decode(samples, &cfg.preprocess, &cfg.load, &cfg.cache_dir, &what)?;
            skipped.extend(decoded.skipped);
            no_face.extend(decoded.no_face);
            Ok(FaceSet {
                source: vec![index; decoded.samples.len()],
                samples: decoded.samples,
                faces: decoded.faces,
            })
        };
        train.append(decode(splits.train, "train")?);
        valid.append(decode(splits.valid, "valid")?);
        tests.push((path.clone(), decode(splits.test, "test")?));
    }
    if train.samples.is_empty() || valid.samples.is_empty() {
        return Err(RunError::Config(
            "the data has no training or no validation samples".into(),
        ));
    }
    log::info!(
        "data: {} train, {} valid, {} test faces; {} rows skipped",
        train.samples.len(),
        valid.samples.len(),
        tests.iter().map(|(_, t)| t.samples.len()).sum::<usize>(),
        skipped.len()
    );
    Ok(Sources {
        train,
        valid,
        tests,
        skipped,
        no_face,
    })
}

/// Class weights from the emotion labels of the training samples.
pub fn class_weights(samples: &[Sample], mode: ClassWeights) -> [f32; NUM_EMOTIONS] {
    let mut counts = [0usize; NUM_EMOTIONS];
    for l in samples.iter().filter_map(Sample::label) {
        counts[l] += 1;
    }
    let total: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    std::array::from_fn(|c| {
        let balanced = if counts[c] == 0 {
            0.0
        } else {
            total as f32 / (present as f32 * counts[c] as f32)
        };
        match mode {
            ClassWeights::Balanced => balanced,
            ClassWeights::Sqrt => balanced.sqrt(),
            ClassWeights::None => 1.0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::one_hot;
    use rand::SeedableRng;

    fn set(labels: &[usize]) -> FaceSet {
        FaceSet {
            samples: labels
                .iter()
                .map(|&l| Sample {
                    image: "x.png".into(),
                    face: None,
                    landmarks: None,
                    emotion: Some((l, one_hot(l))),
                    valence_arousal: None,
                    origin: ("labels.csv".into(), 1),
                })
                .collect(),
            faces: vec![Vec::new(); labels.len()],
            source: vec![0; labels.len()],
        }
    }

    #[test]
    fn balanced_order_draws_classes_equally_often() {
        // 900 of class 0, 100 of class 5.
        let labels: Vec<usize> = (0..1000).map(|i| if i < 900 { 0 } else { 5 }).collect();
        let faces = set(&labels);
        let mut rng = StdRng::seed_from_u64(1);
        let order = faces.epoch_order(Sampling::Balanced, 1, &mut rng);
        assert_eq!(order.len(), 1000);
        let rare = order.iter().filter(|&&i| labels[i] == 5).count();
        assert!(
            (430..570).contains(&rare),
            "{rare} of 1000 draws are the rare class"
        );
        let uniform = faces.epoch_order(Sampling::Uniform, 1, &mut rng);
        assert_eq!(uniform.iter().filter(|&&i| labels[i] == 5).count(), 100);
    }

    #[test]
    fn weak_targets_are_class_means_under_the_distribution() {
        let mut faces = set(&[1, 1, 2]);
        faces.samples[0].valence_arousal = Some([0.6, 0.2]);
        faces.samples[1].valence_arousal = Some([0.4, 0.4]);
        faces.samples[2].valence_arousal = Some([-0.5, -0.1]);
        let weak = WeakVa::from_samples(&faces.samples, 0.1).unwrap();
        assert_eq!(weak.means[0], None);
        let [v, a] = weak.target(&one_hot(1)).unwrap();
        assert!((v - 0.5).abs() < 1e-6 && (a - 0.3).abs() < 1e-6);
        let mut half = [0.0; NUM_EMOTIONS];
        (half[1], half[2]) = (0.5, 0.5);
        assert!(weak.target(&half).unwrap()[0].abs() < 1e-6);
        // A face that is mostly a class without a mean gets no weak target.
        assert_eq!(weak.target(&one_hot(0)), None);
    }
}
