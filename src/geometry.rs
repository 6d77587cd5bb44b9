//! The ground floor: face boxes and landmarks in frame pixels and the arithmetic on them that
//! detection, tracking, the model's crops, data and rendering share.

/// A face box in pixels of the full frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl FaceBox {
    /// Intersection over union with `other` (0 when they do not overlap).
    pub fn iou(&self, other: &FaceBox) -> f32 {
        let w = (self.x + self.width).min(other.x + other.width) - self.x.max(other.x);
        let h = (self.y + self.height).min(other.y + other.height) - self.y.max(other.y);
        if w <= 0.0 || h <= 0.0 {
            return 0.0;
        }
        let inter = w * h;
        inter / (self.width * self.height + other.width * other.height - inter)
    }

    /// The box a fraction `t` of the way from `self` to `other` (0: self, 1: other).
    pub fn lerp(&self, other: &FaceBox, t: f32) -> FaceBox {
        let mix = |a: f32, b: f32| a + (b - a) * t;
        FaceBox {
            x: mix(self.x, other.x),
            y: mix(self.y, other.y),
            width: mix(self.width, other.width),
            height: mix(self.height, other.height),
        }
    }

    /// The same box moved by `(dx, dy)` pixels.
    pub fn shifted(&self, dx: f32, dy: f32) -> FaceBox {
        FaceBox {
            x: self.x + dx,
            y: self.y + dy,
            ..*self
        }
    }

    /// The box's centre.
    pub fn center(&self) -> (f32, f32) {
        (self.x + self.width / 2.0, self.y + self.height / 2.0)
    }

    /// The same box with every coordinate multiplied by `factor` (from a resized copy's pixels
    /// to the original's).
    pub fn scaled(&self, factor: f32) -> FaceBox {
        FaceBox {
            x: self.x * factor,
            y: self.y * factor,
            width: self.width * factor,
            height: self.height * factor,
        }
    }
}

/// A point in pixels of the full frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// The five facial landmarks a detector gives, in frame pixels. Left and right are as seen in
/// the image, not the person's own: `left_eye` is the person's right eye on a frontal face.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Landmarks {
    pub left_eye: Point,
    pub right_eye: Point,
    pub nose: Point,
    pub left_mouth: Point,
    pub right_mouth: Point,
}

impl Landmarks {
    /// Names of the points in [`Landmarks::points`] order, as written to logs.
    pub const NAMES: [&'static str; 5] =
        ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"];

    /// From the points in [`Landmarks::NAMES`] order.
    pub fn from_points([left_eye, right_eye, nose, left_mouth, right_mouth]: [Point; 5]) -> Self {
        Self {
            left_eye,
            right_eye,
            nose,
            left_mouth,
            right_mouth,
        }
    }

    /// The points in [`Landmarks::NAMES`] order.
    pub fn points(&self) -> [Point; 5] {
        [
            self.left_eye,
            self.right_eye,
            self.nose,
            self.left_mouth,
            self.right_mouth,
        ]
    }

    /// `[x0, y0, x1, y1, …]` in [`Landmarks::NAMES`] order.
    pub fn flat(&self) -> [f32; 10] {
        let mut out = [0.0; 10];
        for (xy, p) in out.chunks_exact_mut(2).zip(self.points()) {
            xy.copy_from_slice(&[p.x, p.y]);
        }
        out
    }

    /// The landmarks a fraction `t` of the way from `self` to `other` (0: self, 1: other).
    pub fn lerp(&self, other: &Landmarks, t: f32) -> Landmarks {
        let (a, b) = (self.points(), other.points());
        Self::from_points(std::array::from_fn(|i| Point {
            x: a[i].x + (b[i].x - a[i].x) * t,
            y: a[i].y + (b[i].y - a[i].y) * t,
        }))
    }

    /// Every point moved by `(dx, dy)` pixels.
    pub fn shifted(&self, dx: f32, dy: f32) -> Landmarks {
        Self::from_points(self.points().map(|p| Point {
            x: p.x + dx,
            y: p.y + dy,
        }))
    }

    /// `{"left_eye": [x, y], …}`, as the face log and `predict --json` write them.
    pub fn to_json(&self) -> serde_json::Value {
        Self::NAMES
            .iter()
            .zip(self.points())
            .map(|(name, p)| (name.to_string(), serde_json::json!([p.x, p.y])))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Every coordinate multiplied by `factor`.
    pub fn scaled(&self, factor: f32) -> Landmarks {
        Self::from_points(self.points().map(|p| Point {
            x: p.x * factor,
            y: p.y * factor,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: f32, y: f32, side: f32) -> FaceBox {
        FaceBox {
            x,
            y,
            width: side,
            height: side,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = square(0.0, 0.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&square(20.0, 0.0, 10.0)), 0.0);
        // Half overlap: 50 / (100 + 100 - 50).
        assert!((a.iou(&square(5.0, 0.0, 10.0)) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn lerp_and_shift() {
        let (a, b) = (square(0.0, 0.0, 10.0), square(10.0, 20.0, 30.0));
        assert_eq!(a.lerp(&b, 0.0), a);
        assert_eq!(a.lerp(&b, 1.0), b);
        assert_eq!(a.lerp(&b, 0.5), square(5.0, 10.0, 20.0));
        assert_eq!(a.shifted(1.0, 2.0), square(1.0, 2.0, 10.0));
        assert_eq!(b.center(), (25.0, 35.0));
        assert_eq!(b.scaled(0.5), square(5.0, 10.0, 15.0));
    }

    #[test]
    fn landmarks_keep_their_order_through_moves() {
        let points = [0.0f32, 1.0, 2.0, 3.0, 4.0].map(|v| Point { x: v, y: 10.0 * v });
        let marks = Landmarks::from_points(points);
        assert_eq!(marks.points(), points);
        assert_eq!(marks.nose, Point { x: 2.0, y: 20.0 });
        assert_eq!(marks.flat()[..4], [0.0, 0.0, 1.0, 10.0]);
        let moved = marks.shifted(1.0, -1.0).scaled(2.0);
        assert_eq!(moved.right_mouth, Point { x: 10.0, y: 78.0 });
        assert_eq!(marks.lerp(&moved, 0.0), marks);
        assert_eq!(marks.lerp(&moved, 0.5).nose, Point { x: 4.0, y: 29.0 });
        assert_eq!(
            marks.to_json()["left_mouth"],
            serde_json::json!([3.0, 30.0])
        );
    }
}
