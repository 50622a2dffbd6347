//! Object removal around a mask, independent of the model: where to crop,
//! what the model sees, and how its answer is blended back so that every
//! pixel outside the feathered mask stays exactly as it was.
//!
//! ```text
//! mask (white = remove) ─▶ bounding box ─▶ grown by grow + ramp ─▶ square crop with context
//! crop (edge-padded to a square) ─▶ model size ─▶ model(image, mask grown by `grow`)
//! answer ─▶ crop size ─▶ blended: alpha 1 within `grow` of the mask, falling to 0 over `ramp`
//! ```
//!
//! Distances are chessboard distances (a pixel's 8 neighbours are 1 away)
//! in the init image's pixels.

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, RgbImage};

/// How far the removal reaches beyond the mask, in init-image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feather {
    /// The model repaints the mask grown by this much (hides the object's
    /// fringe), blended at full strength.
    pub grow: u32,
    /// Beyond that, the blend falls linearly to nothing over this many
    /// pixels; pixels further out are the input's own.
    pub ramp: u32,
}

impl Feather {
    /// For an image whose short side is `short`: `ramp` = max(4, short /
    /// 128), `grow` = max(2, ramp / 2) (a 1024-pixel image: 4 and 8).
    pub fn for_image(short: u32) -> Self {
        let ramp = (short / 128).max(4);
        Self {
            grow: (ramp / 2).max(2),
            ramp,
        }
    }

    /// The furthest a changed pixel can be from the mask.
    pub fn reach(self) -> u32 {
        self.grow + self.ramp
    }

    /// The blend weight at distance `d` from the mask.
    pub fn alpha(self, d: u32) -> f32 {
        if d <= self.grow {
            1.0
        } else if d <= self.reach() {
            1.0 - (d - self.grow) as f32 / (self.ramp + 1) as f32
        } else {
            0.0
        }
    }
}

/// A rectangle in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// The mask as on/off: white (luma above 127, times alpha when it has one)
/// is to be removed.
pub fn binary_mask(mask: &image::DynamicImage) -> GrayImage {
    let rgba = mask.to_luma_alpha8();
    GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let v = p[0] as u32 * p[1] as u32 / 255;
        Luma([if v > 127 { 255 } else { 0 }])
    })
}

/// The smallest rectangle holding every masked pixel; `None` when none is.
pub fn bounding_box(mask: &GrayImage) -> Option<Rect> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] > 0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    (x0 != u32::MAX).then(|| Rect {
        x: x0,
        y: y0,
        w: x1 - x0 + 1,
        h: y1 - y0 + 1,
    })
}

/// The crop the model sees: a square around `bbox` grown by `reach`, twice
/// the grown box's longer side (context for the model) and at least
/// `model_side` when the image allows (so a small object is not
/// upscaled), shifted to lie inside the image and clipped by it.
pub fn crop_for(bbox: Rect, reach: u32, width: u32, height: u32, model_side: u32) -> Rect {
    let gx0 = bbox.x.saturating_sub(reach);
    let gy0 = bbox.y.saturating_sub(reach);
    let gx1 = (bbox.x + bbox.w + reach).min(width);
    let gy1 = (bbox.y + bbox.h + reach).min(height);
    let long = (gx1 - gx0).max(gy1 - gy0);
    let side = (2 * long).max(model_side);
    let place = |lo: u32, hi: u32, limit: u32| {
        let len = side.min(limit);
        let centre = (lo + hi) / 2;
        let start = centre.saturating_sub(len / 2).min(limit - len);
        (start, len)
    };
    let (x, w) = place(gx0, gx1, width);
    let (y, h) = place(gy0, gy1, height);
    Rect { x, y, w, h }
}

/// Chessboard distance from each pixel of `rect` to the nearest masked
/// pixel, capped at `cap` (row-major, `rect.w` per row). Every masked
/// pixel must lie inside `rect`.
pub fn distances(mask: &GrayImage, rect: Rect, cap: u32) -> Vec<u32> {
    let (w, h) = (rect.w as usize, rect.h as usize);
    let mut d: Vec<u32> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as u32 + rect.x, (i / w) as u32 + rect.y);
            if mask.get_pixel(x, y).0[0] > 0 {
                0
            } else {
                cap
            }
        })
        .collect();
    // Two passes: from the top-left, then from the bottom-right.
    for y in 0..h {
        for x in 0..w {
            let mut best = d[y * w + x];
            if x > 0 {
                best = best.min(d[y * w + x - 1] + 1);
            }
            if y > 0 {
                let up = (y - 1) * w;
                best = best.min(d[up + x] + 1);
                if x > 0 {
                    best = best.min(d[up + x - 1] + 1);
                }
                if x + 1 < w {
                    best = best.min(d[up + x + 1] + 1);
                }
            }
            d[y * w + x] = best.min(cap);
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let mut best = d[y * w + x];
            if x + 1 < w {
                best = best.min(d[y * w + x + 1] + 1);
            }
            if y + 1 < h {
                let down = (y + 1) * w;
                best = best.min(d[down + x] + 1);
                if x > 0 {
                    best = best.min(d[down + x - 1] + 1);
                }
                if x + 1 < w {
                    best = best.min(d[down + x + 1] + 1);
                }
            }
            d[y * w + x] = best.min(cap);
        }
    }
    d
}

/// The crop as a `side`×`side` square (`side` = its longer side), the
/// missing part filled by repeating its last column and row.
pub fn square_canvas(img: &RgbImage, crop: Rect) -> RgbImage {
    let side = crop.w.max(crop.h);
    RgbImage::from_fn(side, side, |x, y| {
        *img.get_pixel(crop.x + x.min(crop.w - 1), crop.y + y.min(crop.h - 1))
    })
}

/// What the model is given: the canvas at its input size as planar RGB in
/// 0..1, and the mask grown by `grow` (1 = repaint) at the same size.
pub struct ModelInput {
    /// `3 × h × w`, planar.
    pub image: Vec<f32>,
    /// `h × w`.
    pub mask: Vec<f32>,
}

/// Builds the model's input from the canvas and the crop's distances.
pub fn model_input(
    canvas: &RgbImage,
    crop: Rect,
    dist: &[u32],
    feather: Feather,
    (mw, mh): (u32, u32),
) -> ModelInput {
    let side = canvas.width();
    let mask_canvas = GrayImage::from_fn(side, side, |x, y| {
        let inside = x < crop.w && y < crop.h && dist[(y * crop.w + x) as usize] <= feather.grow;
        Luma([if inside { 255 } else { 0 }])
    });
    let image = imageops::resize(canvas, mw, mh, FilterType::CatmullRom);
    // Any coverage after scaling counts as masked: the model repaints a
    // little more, never less.
    let mask = imageops::resize(&mask_canvas, mw, mh, FilterType::Triangle);
    let plane = (mw * mh) as usize;
    let mut planar = vec![0f32; 3 * plane];
    for (i, p) in image.pixels().enumerate() {
        for c in 0..3 {
            planar[c * plane + i] = p.0[c] as f32 / 255.0;
        }
    }
    ModelInput {
        image: planar,
        mask: mask
            .pixels()
            .map(|p| if p.0[0] > 0 { 1.0 } else { 0.0 })
            .collect(),
    }
}

/// Whether the model answers in 0..255 (LaMa exports such as
/// Carve/LaMa-ONNX) rather than 0..1: whichever scale makes the answer
/// closer to the input where nothing was masked (the model copies those
/// pixels); with everything masked, whether any value exceeds 1.5.
pub fn answers_in_bytes(input: &ModelInput, output: &[f32]) -> bool {
    let plane = input.mask.len();
    let (mut unit, mut bytes, mut seen) = (0f64, 0f64, false);
    for c in 0..3 {
        for i in 0..plane {
            if input.mask[i] == 0.0 {
                let (o, x) = (
                    output[c * plane + i] as f64,
                    input.image[c * plane + i] as f64,
                );
                unit += (o - x).abs();
                bytes += (o / 255.0 - x).abs();
                seen = true;
            }
        }
    }
    if seen {
        bytes < unit
    } else {
        output.iter().any(|v| *v > 1.5)
    }
}

/// The model's planar answer as an image of `(w, h)`.
pub fn answer_image(output: &[f32], (w, h): (u32, u32), in_bytes: bool) -> RgbImage {
    let plane = (w * h) as usize;
    let scale = if in_bytes { 1.0 } else { 255.0 };
    RgbImage::from_fn(w, h, |x, y| {
        let i = (y * w + x) as usize;
        image::Rgb(std::array::from_fn(|c| {
            (output[c * plane + i] * scale).round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// Blends the answer (at model size) back into `img` over `crop`; only
/// pixels within `feather.reach()` of the mask change. Returns how many
/// did.
pub fn composite(
    img: &mut RgbImage,
    answer: &RgbImage,
    crop: Rect,
    dist: &[u32],
    feather: Feather,
) -> u64 {
    let side = crop.w.max(crop.h);
    let back = imageops::resize(answer, side, side, FilterType::CatmullRom);
    let mut changed = 0;
    for y in 0..crop.h {
        for x in 0..crop.w {
            let a = feather.alpha(dist[(y * crop.w + x) as usize]);
            if a == 0.0 {
                continue;
            }
            let px = img.get_pixel_mut(crop.x + x, crop.y + y);
            let gen = back.get_pixel(x, y);
            let before = *px;
            for c in 0..3 {
                let v = px.0[c] as f32 * (1.0 - a) + gen.0[c] as f32 * a;
                px.0[c] = v.round().clamp(0.0, 255.0) as u8;
            }
            if *px != before {
                changed += 1;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_with(w: u32, h: u32, on: Rect) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let inside = x >= on.x && x < on.x + on.w && y >= on.y && y < on.y + on.h;
            Luma([if inside { 255 } else { 0 }])
        })
    }

    #[test]
    fn feather_grows_with_the_image_and_falls_to_zero() {
        assert_eq!(Feather::for_image(300), Feather { grow: 2, ramp: 4 });
        assert_eq!(Feather::for_image(1024), Feather { grow: 4, ramp: 8 });
        let f = Feather::for_image(1024);
        assert_eq!(f.alpha(0), 1.0);
        assert_eq!(f.alpha(4), 1.0);
        assert!(f.alpha(5) < 1.0 && f.alpha(5) > f.alpha(12));
        assert!(f.alpha(12) > 0.0);
        assert_eq!(f.alpha(13), 0.0);
    }

    #[test]
    fn the_mask_is_white_times_alpha() {
        let mut m = image::RgbaImage::new(3, 1);
        m.put_pixel(0, 0, image::Rgba([255, 255, 255, 255]));
        m.put_pixel(1, 0, image::Rgba([255, 255, 255, 0]));
        m.put_pixel(2, 0, image::Rgba([40, 40, 40, 255]));
        let b = binary_mask(&image::DynamicImage::ImageRgba8(m));
        assert_eq!(b.as_raw(), &vec![255, 0, 0]);
        assert_eq!(
            bounding_box(&b),
            Some(Rect {
                x: 0,
                y: 0,
                w: 1,
                h: 1
            })
        );
        assert_eq!(bounding_box(&GrayImage::new(4, 4)), None);
    }

    #[test]
    fn distances_are_chessboard_and_capped() {
        let m = mask_with(
            9,
            9,
            Rect {
                x: 4,
                y: 4,
                w: 1,
                h: 1,
            },
        );
        let d = distances(
            &m,
            Rect {
                x: 0,
                y: 0,
                w: 9,
                h: 9,
            },
            3,
        );
        assert_eq!(d[4 * 9 + 4], 0);
        assert_eq!(d[3 * 9 + 3], 1);
        assert_eq!(d[2 * 9 + 4], 2);
        assert_eq!(d[4 * 9 + 1], 3);
        assert_eq!(d[0], 3, "4 away, capped at 3");
        // A rectangle that starts inside the image.
        let d = distances(
            &m,
            Rect {
                x: 2,
                y: 2,
                w: 5,
                h: 5,
            },
            9,
        );
        assert_eq!(d[0], 2);
        assert_eq!(d[2 * 5 + 2], 0);
    }

    #[test]
    fn the_crop_is_a_square_with_context_inside_the_image() {
        // A small object in a big image: the model's own size, no upscaling.
        let c = crop_for(
            Rect {
                x: 1000,
                y: 800,
                w: 40,
                h: 20,
            },
            12,
            3000,
            2000,
            512,
        );
        assert_eq!((c.w, c.h), (512, 512));
        assert!(c.x <= 1000 - 12 && c.x + c.w >= 1040 + 12);
        assert!(c.y <= 800 - 12 && c.y + c.h >= 820 + 12);
        // A big object: twice its grown size.
        let c = crop_for(
            Rect {
                x: 1000,
                y: 800,
                w: 400,
                h: 300,
            },
            12,
            3000,
            2000,
            512,
        );
        assert_eq!((c.w, c.h), (848, 848));
        // Near a corner: shifted inside.
        let c = crop_for(
            Rect {
                x: 0,
                y: 0,
                w: 30,
                h: 30,
            },
            12,
            3000,
            2000,
            512,
        );
        assert_eq!((c.x, c.y, c.w, c.h), (0, 0, 512, 512));
        let c = crop_for(
            Rect {
                x: 2980,
                y: 1990,
                w: 20,
                h: 10,
            },
            12,
            3000,
            2000,
            512,
        );
        assert_eq!((c.x + c.w, c.y + c.h), (3000, 2000));
        // An image smaller than the model: all of it, clipped per side.
        let c = crop_for(
            Rect {
                x: 100,
                y: 50,
                w: 20,
                h: 20,
            },
            6,
            320,
            200,
            512,
        );
        assert_eq!((c.x, c.y, c.w, c.h), (0, 0, 320, 200));
    }

    #[test]
    fn the_canvas_repeats_the_last_column_and_row() {
        let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let c = square_canvas(
            &img,
            Rect {
                x: 1,
                y: 0,
                w: 3,
                h: 2,
            },
        );
        assert_eq!(c.dimensions(), (3, 3));
        assert_eq!(c.get_pixel(2, 2).0, [3, 1, 7]);
        assert_eq!(c.get_pixel(0, 2).0, [1, 1, 7]);
    }

    #[test]
    fn the_answer_scale_is_the_one_that_matches_the_unmasked_input() {
        let input = ModelInput {
            image: vec![0.2, 0.4, 0.6, 0.8, 0.5, 0.5],
            mask: vec![0.0, 1.0],
        };
        let bytes: Vec<f32> = vec![51.0, 200.0, 153.0, 9.0, 127.0, 0.0];
        let unit: Vec<f32> = bytes.iter().map(|v| v / 255.0).collect();
        assert!(answers_in_bytes(&input, &bytes));
        assert!(!answers_in_bytes(&input, &unit));
        let all = ModelInput {
            image: vec![0.5; 3],
            mask: vec![1.0],
        };
        assert!(answers_in_bytes(&all, &[30.0, 2.0, 0.0]));
        assert!(!answers_in_bytes(&all, &[0.3, 0.2, 0.0]));
    }

    #[test]
    fn only_pixels_within_reach_change() {
        let (w, h) = (64, 48);
        let mut img = RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
        let before = img.clone();
        let on = Rect {
            x: 30,
            y: 20,
            w: 4,
            h: 4,
        };
        let m = mask_with(w, h, on);
        let f = Feather { grow: 2, ramp: 4 };
        let crop = crop_for(on, f.reach(), w, h, 32);
        let d = distances(&m, crop, f.reach() + 1);
        let answer = RgbImage::from_pixel(16, 16, image::Rgb([250, 0, 250]));
        let changed = composite(&mut img, &answer, crop, &d, f);
        assert!(changed > 16, "the mask and its ring changed: {changed}");
        for (x, y, p) in img.enumerate_pixels() {
            let inside_x = x + f.reach() >= on.x && x < on.x + on.w + f.reach();
            let inside_y = y + f.reach() >= on.y && y < on.y + on.h + f.reach();
            if !(inside_x && inside_y) {
                assert_eq!(p, before.get_pixel(x, y), "({x},{y}) is out of reach");
            }
        }
        assert_eq!(img.get_pixel(31, 21).0, [250, 0, 250]);
    }
}
