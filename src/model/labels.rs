//! The 8 emotion classes in AffectNet order, with the names other datasets use for them.

/// Class names in AffectNet index order.
pub const EMOTIONS: [&str; 8] = [
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
];
pub const NUM_EMOTIONS: usize = EMOTIONS.len();

/// AffectNet index of a class name or a common alias (FER+, folder names), case-insensitive.
pub fn emotion_index(name: &str) -> Option<usize> {
    let name = name.trim().to_ascii_lowercase();
    let canonical = match name.as_str() {
        "happiness" | "happy" | "joy" => "happy",
        "sadness" | "sad" => "sad",
        "surprise" | "surprised" => "surprise",
        "fear" | "fearful" | "afraid" => "fear",
        "disgust" | "disgusted" => "disgust",
        "anger" | "angry" => "anger",
        "contempt" | "contemptuous" => "contempt",
        "neutral" | "calm" => "neutral",
        _ => return None,
    };
    EMOTIONS.iter().position(|&e| e == canonical)
}

/// Probabilities as a JSON object keyed by class name, in AffectNet order.
pub fn probs_json(probs: &[f32]) -> serde_json::Map<String, serde_json::Value> {
    EMOTIONS
        .iter()
        .zip(probs)
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect()
}

/// Index of the largest probability (the first on ties, as numpy's argmax).
pub fn most_probable(probs: &[f32]) -> usize {
    probs
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 {
                (i, p)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_affectnet_order() {
        assert_eq!(emotion_index("Happiness"), Some(1));
        assert_eq!(emotion_index("angry"), Some(6));
        assert_eq!(emotion_index("contempt"), Some(7));
        assert_eq!(emotion_index("unknown"), None);
    }

    #[test]
    fn most_probable_takes_the_first_of_ties() {
        assert_eq!(most_probable(&[0.1, 0.4, 0.4, 0.1]), 1);
        assert_eq!(most_probable(&[1.0]), 0);
    }
}
