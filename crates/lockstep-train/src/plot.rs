//! A small deterministic plot renderer: one display list, drawn as a PNG or written as an SVG.
//!
//! Layout, in pixels from the top-left of a [`WIDTH`] x [`height`] image:
//! - the title, centred at the top (font at 2x, 1x if it would not fit);
//! - a legend box under it: per entry a line sample in its palette colour and the name
//!   (entries wrap into rows);
//! - the panels, stacked: each has its y-axis label above the frame's top-left, a frame with
//!   light grid lines at the ticks, tick marks with values on the left and at the bottom, and
//!   its x-axis label centred underneath. Panels with the same x label share one x range, so
//!   the same step lines up across panels. Colour i of the palette is legend entry i and the
//!   series with index i in each panel.
//!
//! Ticks are "nice": 1, 2 or 5 x 10^k apart, at most 8 of them. An automatic range is the data
//! range (y: plus 1% headroom that never crosses zero) widened to whole ticks; a fixed
//! `y_range` is kept as given and ticked inside. A series with more points than the frame has
//! pixel columns is drawn as the average of each column (the y range still covers every raw
//! point). Points with a NaN or infinite coordinate are skipped; lines leaving a fixed range
//! are clipped at the frame.
//!
//! Determinism rule: the same [`Figure`] gives the same bytes on every machine. Geometry uses
//! only IEEE basic arithmetic, comparisons and floor/ceil/round (no log, pow or trig from the
//! platform's libm); a tick is an integer times a power of ten and its label is built from that
//! integer, never by formatting a float; the SVG prints coordinates with `{:.1}` (exact and
//! platform independent); text is drawn from the 8x8 bitmap font embedded below (never an
//! installed font), with characters outside printable ASCII shown as '?'; there are no hash
//! maps, clocks or environment reads. The PNG is 8-bit RGB, filter 0, compressed by flate2 at
//! a fixed level (its backend is pinned by Cargo.lock).

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::fmt::Write as _;
use std::io::Write as _;

/// One line on a panel: `(x, y)` points sorted by x, drawn in the palette colour of the
/// series' index in its panel; `markers` adds a dot at every point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub markers: bool,
}

/// One chart. `y_range: None` takes the y range from the data; `Some((lo, hi))` fixes it
/// (e.g. `(0.0, 1.0)` for accuracy) and clips lines at the frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Panel {
    pub y_label: String,
    pub x_label: String,
    pub series: Vec<Series>,
    pub y_range: Option<(f64, f64)>,
}

/// The whole picture: a title, a legend (entry i in palette colour i) and the panels, top down.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figure {
    pub title: String,
    pub legend: Vec<String>,
    pub panels: Vec<Panel>,
}

/// Image width in pixels; the height depends on the legend and panel count, see [`height`].
pub const WIDTH: usize = 880;

/// The first six colours of matplotlib's tab10.
pub const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [23, 190, 207],
];

/// Image height in pixels for `fig`.
pub fn height(fig: &Figure) -> usize {
    scene(fig).h as usize
}

/// The figure as a PNG file (8-bit RGB, [`WIDTH`] x [`height`]).
pub fn render_png(fig: &Figure) -> Vec<u8> {
    let s = scene(fig);
    let mut c = Canvas {
        w: s.w,
        h: s.h,
        px: vec![255; (s.w * s.h * 3) as usize],
    };
    for p in &s.prims {
        match p {
            Prim::Fill(r, col) => c.fill(*r, *col),
            Prim::Stroke(r, col) => {
                let (x, y, w, h) = (r.x, r.y, r.w, r.h);
                for edge in [rect(x, y, w, 1), rect(x, y + h - 1, w, 1)] {
                    c.fill(edge, *col);
                }
                for edge in [rect(x, y, 1, h), rect(x + w - 1, y, 1, h)] {
                    c.fill(edge, *col);
                }
            }
            Prim::Line {
                pts, width, color, ..
            } => {
                for seg in pts.windows(2) {
                    c.line(round(seg[0]), round(seg[1]), *color, *width);
                }
            }
            Prim::Marker { at, color } => {
                let (x, y) = round(*at);
                for dy in -3..=3i64 {
                    for dx in -3..=3i64 {
                        if dx * dx + dy * dy <= 10 {
                            c.set(x + dx, y + dy, *color);
                        }
                    }
                }
            }
            Prim::Text {
                x,
                y,
                scale,
                text,
                color,
            } => c.text(*x, *y, *scale, text, *color),
        }
    }
    c.png()
}

/// The same figure as an SVG document (same layout and pixel coordinates as the PNG).
pub fn render_svg(fig: &Figure) -> String {
    let s = scene(fig);
    let mut o = String::new();
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#,
        w = s.w,
        h = s.h
    );
    let _ = writeln!(
        o,
        r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
        s.w, s.h
    );
    for p in &s.prims {
        let _ = match p {
            Prim::Fill(r, c) => writeln!(
                o,
                r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>"#,
                r.x,
                r.y,
                r.w,
                r.h,
                hex(*c)
            ),
            Prim::Stroke(r, c) => writeln!(
                o,
                r#"<rect x="{}.5" y="{}.5" width="{}" height="{}" fill="none" stroke="{}"/>"#,
                r.x,
                r.y,
                r.w - 1,
                r.h - 1,
                hex(*c)
            ),
            Prim::Line {
                pts,
                width,
                color,
                label,
            } => {
                let pts: Vec<String> = pts
                    .iter()
                    .map(|&(x, y)| format!("{:.1},{:.1}", x + 0.5, y + 0.5))
                    .collect();
                let title = if label.is_empty() {
                    String::new()
                } else {
                    format!("<title>{}</title>", escape(label))
                };
                writeln!(
                    o,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round">{title}</polyline>"#,
                    pts.join(" "),
                    hex(*color),
                    if *width > 1 { "2" } else { "1.2" }
                )
            }
            Prim::Marker { at, color } => writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.3" fill="{}"/>"#,
                at.0 + 0.5,
                at.1 + 0.5,
                hex(*color)
            ),
            Prim::Text {
                x,
                y,
                scale,
                text,
                color,
            } => writeln!(
                o,
                r#"<text x="{x}" y="{}" font-family="monospace" font-size="{}" textLength="{}" lengthAdjust="spacingAndGlyphs" fill="{}">{}</text>"#,
                y + 8 * scale,
                13 * scale,
                text.len() as i64 * CW * scale,
                hex(*color),
                escape(text)
            ),
        };
    }
    o.push_str("</svg>\n");
    o
}

/// Pixel rectangles `(x, y, w, h)` of the PNG that hold text: title, legend names, and each
/// panel's axis labels and tick labels (blank strings have none).
pub fn text_areas(fig: &Figure) -> Vec<(usize, usize, usize, usize)> {
    scene(fig)
        .prims
        .iter()
        .filter_map(|p| match p {
            Prim::Text {
                x, y, scale, text, ..
            } if !text.trim().is_empty() => Some((
                *x as usize,
                *y as usize,
                (text.len() as i64 * CW * scale) as usize,
                (CW * scale) as usize,
            )),
            _ => None,
        })
        .collect()
}

// ---- layout -------------------------------------------------------------------------------

type Rgb = [u8; 3];
const INK: Rgb = [34, 34, 34];
const FRAME: Rgb = [68, 68, 68];
const GRID: Rgb = [226, 226, 226];
const LEGEND_EDGE: Rgb = [170, 170, 170];

/// Outer margin, glyph cell, frame height, legend row height.
const M: i64 = 16;
const CW: i64 = 8;
const PLOT_H: i64 = 210;
const ROW: i64 = 14;
const W: i64 = WIDTH as i64;

#[derive(Clone, Copy, Debug)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

fn rect(x: i64, y: i64, w: i64, h: i64) -> Rect {
    Rect { x, y, w, h }
}

enum Prim {
    Fill(Rect, Rgb),
    Stroke(Rect, Rgb),
    Line {
        pts: Vec<(f64, f64)>,
        width: u8,
        color: Rgb,
        label: String,
    },
    Marker {
        at: (f64, f64),
        color: Rgb,
    },
    /// Top-left corner, scale of the 8x8 font; `text` is printable ASCII only. The SVG asks for
    /// a 13px monospace font (about 8px per character) and pins the width with `textLength`.
    Text {
        x: i64,
        y: i64,
        scale: i64,
        text: String,
        color: Rgb,
    },
}

struct Scene {
    w: i64,
    h: i64,
    prims: Vec<Prim>,
}

/// Printable ASCII (anything else becomes '?'), cut to `max` characters with "..." at the end.
fn clean(s: &str, max: usize) -> String {
    let t: Vec<char> = s
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if t.len() <= max {
        t.into_iter().collect()
    } else {
        let keep = max.saturating_sub(3);
        t[..keep].iter().collect::<String>() + &"..."[..max.min(3)]
    }
}

fn text(x: i64, y: i64, scale: i64, s: String) -> Prim {
    Prim::Text {
        x: x.max(0),
        y,
        scale,
        text: s,
        color: INK,
    }
}

/// Finite points not so large that ranges overflow.
fn usable(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let ok = |v: f64| v.is_finite() && v.abs() <= 1e250;
    pts.iter()
        .copied()
        .filter(|&(x, y)| ok(x) && ok(y))
        .collect()
}

fn min_max(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    vals.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((a, b)) => Some((if v < a { v } else { a }, if v > b { v } else { b })),
    })
}

fn scene(fig: &Figure) -> Scene {
    let mut prims = Vec::new();

    // Title.
    let title = clean(&fig.title, ((W - 2 * M) / CW) as usize);
    let scale = if title.len() as i64 * CW * 2 <= W - 2 * M {
        2
    } else {
        1
    };
    let tw = title.len() as i64 * CW * scale;
    prims.push(text((W - tw) / 2, 12, scale, title));

    // Legend: greedy rows of [sample 20px, gap 6, name], entries 18px apart, inside a box.
    let mut top = 40;
    if !fig.legend.is_empty() {
        let pad = 7;
        let names: Vec<String> = fig.legend.iter().map(|n| clean(n, 48)).collect();
        let mut rows: Vec<Vec<usize>> = vec![Vec::new()];
        let mut row_w = Vec::new();
        let mut cur = 0;
        for (i, n) in names.iter().enumerate() {
            let ew = 26 + n.len() as i64 * CW;
            let add = if cur == 0 { ew } else { cur + 18 + ew };
            let last = rows.len() - 1;
            if add > W - 2 * M - 2 * pad && cur > 0 {
                row_w.push(cur);
                rows.push(vec![i]);
                cur = ew;
            } else {
                rows[last].push(i);
                cur = add;
            }
        }
        row_w.push(cur);
        let bw = row_w.iter().copied().max().unwrap_or(0) + 2 * pad;
        let bh = rows.len() as i64 * ROW - (ROW - CW) + 2 * pad;
        let bx = (W - bw) / 2;
        prims.push(Prim::Stroke(rect(bx, top, bw, bh), LEGEND_EDGE));
        for (r, row) in rows.iter().enumerate() {
            let y = top + pad + r as i64 * ROW;
            let mut x = bx + pad;
            for &i in row {
                let mid = (y + 3) as f64;
                prims.push(Prim::Line {
                    pts: vec![(x as f64, mid), ((x + 19) as f64, mid)],
                    width: 2,
                    color: PALETTE[i % PALETTE.len()],
                    label: String::new(),
                });
                prims.push(text(x + 26, y, 1, names[i].clone()));
                x += 26 + names[i].len() as i64 * CW + 18;
            }
        }
        top += bh + 16;
    }

    // Axes first: the frame's left edge depends on the widest y tick label of all panels.
    let data: Vec<Vec<Vec<(f64, f64)>>> = fig
        .panels
        .iter()
        .map(|p| p.series.iter().map(|s| usable(&s.points)).collect())
        .collect();
    let right = W - M - 24;
    let y_axes: Vec<Axis> = fig
        .panels
        .iter()
        .zip(&data)
        .map(|(p, d)| match p.y_range {
            Some((a, b)) if a.is_finite() && b.is_finite() => Axis::new(a.min(b), a.max(b), false),
            _ => {
                let ys = d.iter().flatten().map(|p| p.1);
                match min_max(ys) {
                    // 1% headroom so data does not run along the frame, but never across zero.
                    Some((a, b)) => {
                        let pad = (b - a) / 100.0;
                        let lo = if a >= 0.0 {
                            (a - pad).max(0.0)
                        } else {
                            a - pad
                        };
                        let hi = if b <= 0.0 {
                            (b + pad).min(0.0)
                        } else {
                            b + pad
                        };
                        Axis::new(lo, hi, true)
                    }
                    None => Axis::new(0.0, 1.0, true),
                }
            }
        })
        .collect();
    let widest = y_axes
        .iter()
        .flat_map(|a| a.ticks.iter().map(|t| t.1.len() as i64))
        .max()
        .unwrap_or(1);
    let left = M + widest * CW + 8;
    let pw = right - left;

    for (pi, p) in fig.panels.iter().enumerate() {
        // Panels with the same x label share the x range of all their data.
        let xs = fig
            .panels
            .iter()
            .zip(&data)
            .filter(|(q, _)| q.x_label == p.x_label)
            .flat_map(|(_, d)| d.iter().flatten().map(|p| p.0));
        let (a, b) = min_max(xs).unwrap_or((0.0, 1.0));
        let xa = Axis::new(a, b, true);
        let ya = &y_axes[pi];
        let (ptop, bottom) = (top + 14, top + 14 + PLOT_H);
        let fx = |x: f64| left as f64 + (x - xa.lo) * pw as f64 / (xa.hi - xa.lo);
        let fy = |y: f64| bottom as f64 - (y - ya.lo) * PLOT_H as f64 / (ya.hi - ya.lo);

        prims.push(text(
            M,
            top,
            1,
            clean(&p.y_label, ((W - 2 * M) / CW) as usize),
        ));
        for (v, label) in &xa.ticks {
            let x = fx(*v).round() as i64;
            if x > left && x < right {
                prims.push(Prim::Fill(rect(x, ptop + 1, 1, PLOT_H - 1), GRID));
            }
            prims.push(Prim::Fill(rect(x, bottom + 1, 1, 4), FRAME));
            let lw = label.len() as i64 * CW;
            prims.push(text(x - lw / 2, bottom + 8, 1, label.clone()));
        }
        for (v, label) in &ya.ticks {
            let y = fy(*v).round() as i64;
            if y > ptop && y < bottom {
                prims.push(Prim::Fill(rect(left + 1, y, pw - 1, 1), GRID));
            }
            prims.push(Prim::Fill(rect(left - 4, y, 4, 1), FRAME));
            let lw = label.len() as i64 * CW;
            prims.push(text(left - 7 - lw, y - 3, 1, label.clone()));
        }
        let xl = clean(&p.x_label, (pw / CW) as usize);
        let xw = xl.len() as i64 * CW;
        prims.push(text(left + (pw - xw) / 2, bottom + 24, 1, xl));

        let clip_box = [left as f64, ptop as f64, right as f64, bottom as f64];
        for (si, (s, pts)) in p.series.iter().zip(&data[pi]).enumerate() {
            let color = PALETTE[si % PALETTE.len()];
            let pts: Vec<(f64, f64)> = downsample(pts, xa.lo, xa.hi, pw)
                .into_iter()
                .map(|(x, y)| (fx(x), fy(y)))
                .collect();
            for run in clip_polyline(&pts, clip_box) {
                let width = if s.markers { 2 } else { 1 };
                prims.push(Prim::Line {
                    pts: run,
                    width,
                    color,
                    label: clean(&s.label, 80),
                });
            }
            if s.markers || pts.len() == 1 {
                let inside = |&(x, y): &(f64, f64)| {
                    x >= clip_box[0] && x <= clip_box[2] && y >= clip_box[1] && y <= clip_box[3]
                };
                for &at in pts.iter().filter(|p| inside(p)) {
                    prims.push(Prim::Marker { at, color });
                }
            }
        }
        prims.push(Prim::Stroke(rect(left, ptop, pw + 1, PLOT_H + 1), FRAME));
        top = bottom + 24 + CW + 20;
    }
    Scene {
        w: W,
        h: top - 20 + M,
        prims,
    }
}

/// More points than pixel columns: average x and y over each run of points in one column.
fn downsample(pts: &[(f64, f64)], lo: f64, hi: f64, cols: i64) -> Vec<(f64, f64)> {
    if pts.len() as i64 <= cols {
        return pts.to_vec();
    }
    let col = |x: f64| {
        ((x - lo) * cols as f64 / (hi - lo))
            .floor()
            .min(cols as f64 - 1.0)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < pts.len() {
        let c = col(pts[i].0);
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        while i < pts.len() && col(pts[i].0) == c {
            sx += pts[i].0;
            sy += pts[i].1;
            n += 1.0;
            i += 1;
        }
        out.push((sx / n, sy / n));
    }
    out
}

/// Clip a polyline to `[x0, y0, x1, y1]` (Liang-Barsky per segment); returns the visible runs.
fn clip_polyline(pts: &[(f64, f64)], r: [f64; 4]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for seg in pts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut visible = true;
        for (p, q) in [
            (-dx, a.0 - r[0]),
            (dx, r[2] - a.0),
            (-dy, a.1 - r[1]),
            (dy, r[3] - a.1),
        ] {
            if p == 0.0 {
                visible &= q >= 0.0;
            } else if p < 0.0 {
                t0 = t0.max(q / p);
            } else {
                t1 = t1.min(q / p);
            }
        }
        if !visible || t0 > t1 {
            if cur.len() > 1 {
                runs.push(std::mem::take(&mut cur));
            }
            cur.clear();
            continue;
        }
        let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
        let p = if t0 == 0.0 { a } else { at(t0) };
        let q = if t1 == 1.0 { b } else { at(t1) };
        if cur.last() != Some(&p) {
            if cur.len() > 1 {
                runs.push(std::mem::take(&mut cur));
            }
            cur = vec![p];
        }
        cur.push(q);
    }
    if cur.len() > 1 {
        runs.push(cur);
    }
    runs
}

// ---- ticks --------------------------------------------------------------------------------

/// A numeric axis: its range and its ticks `(value, label)`.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

/// 10^e by repeated multiplication (exact up to 10^22), not by the platform's `powi`.
fn pow10(e: i32) -> f64 {
    let mut p = 1.0;
    for _ in 0..e.unsigned_abs() {
        p *= 10.0;
    }
    if e < 0 { 1.0 / p } else { p }
}

/// n x 10^e as the nearest f64 (one correctly rounded multiply or divide).
fn value(n: i64, e: i32) -> f64 {
    if e >= 0 {
        n as f64 * pow10(e)
    } else {
        n as f64 / pow10(-e)
    }
}

impl Axis {
    /// Ticks 1, 2 or 5 x 10^k apart, at most 8. `widen`: grow `[lo, hi]` to whole ticks.
    fn new(lo: f64, hi: f64, widen: bool) -> Axis {
        let (mut lo, mut hi) = (lo, hi);
        if hi - lo <= lo.abs().max(hi.abs()) * 1e-12 {
            let c = lo / 2.0 + hi / 2.0;
            let d = if c == 0.0 { 1.0 } else { c.abs() / 2.0 };
            (lo, hi) = (c - d, c + d);
        }
        let target = (hi - lo) / 8.0;
        let mut e = 0i32;
        while e > -320 && pow10(e) > target {
            e -= 1;
        }
        while e < 300 && pow10(e + 1) <= target {
            e += 1;
        }
        for k in 0..12 {
            let (m, e) = ([1i64, 2, 5][k % 3], e + (k / 3) as i32);
            let step = value(m, e);
            let (a, b) = if widen {
                ((lo / step + 1e-9).floor(), (hi / step - 1e-9).ceil())
            } else {
                ((lo / step - 1e-9).ceil(), (hi / step + 1e-9).floor())
            };
            if b - a + 1.0 > 8.0 {
                continue;
            }
            let ns: Vec<i64> = (a as i64..=b as i64).map(|i| i.saturating_mul(m)).collect();
            let vals: Vec<f64> = ns.iter().map(|&n| value(n, e)).collect();
            let big = vals.iter().any(|v| v.abs() >= 1e6);
            let sci = e <= -4 || big;
            let ticks = ns
                .iter()
                .zip(&vals)
                .map(|(&n, &v)| (v, tick_label(n, e, sci)))
                .collect();
            if widen {
                (lo, hi) = (
                    value((a as i64).saturating_mul(m), e),
                    value((b as i64).saturating_mul(m), e),
                );
            }
            return Axis { lo, hi, ticks };
        }
        Axis {
            lo,
            hi,
            ticks: Vec::new(),
        }
    }
}

/// The decimal string of n x 10^e, built from integers: "0", "0.5", "1000", "2.5e-4", "1e7".
fn tick_label(n: i64, e: i32, sci: bool) -> String {
    if n == 0 {
        return "0".to_string();
    }
    let (mut d, mut e) = (n.unsigned_abs(), e);
    while d % 10 == 0 {
        d /= 10;
        e += 1;
    }
    let ds = d.to_string();
    let k = ds.len() as i32;
    let body = if sci {
        let mant = if k == 1 {
            ds.clone()
        } else {
            format!("{}.{}", &ds[..1], &ds[1..])
        };
        let exp = e + k - 1;
        if exp == 0 {
            mant
        } else {
            format!("{mant}e{exp}")
        }
    } else if e >= 0 {
        ds + &"0".repeat(e as usize)
    } else if k > -e {
        let cut = (k + e) as usize;
        format!("{}.{}", &ds[..cut], &ds[cut..])
    } else {
        format!("0.{}{ds}", "0".repeat((-e - k) as usize))
    };
    if n < 0 { format!("-{body}") } else { body }
}

// ---- raster and PNG -----------------------------------------------------------------------

fn round((x, y): (f64, f64)) -> (i64, i64) {
    (x.round() as i64, y.round() as i64)
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Canvas {
    w: i64,
    h: i64,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if (0..self.w).contains(&x) && (0..self.h).contains(&y) {
            let i = ((y * self.w + x) * 3) as usize;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, r: Rect, c: Rgb) {
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                self.set(x, y, c);
            }
        }
    }

    /// Bresenham; `width` 2 stamps a 2x2 block per step.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, width: u8) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if width > 1 {
                self.set(x + 1, y, c);
                self.set(x, y + 1, c);
                self.set(x + 1, y + 1, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, scale: i64, s: &str, c: Rgb) {
        for (i, ch) in s.bytes().enumerate() {
            let glyph = FONT[(ch.clamp(32, 126) - 32) as usize];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        let (gx, gy) = (x + (i as i64 * 8 + col) * scale, y + row as i64 * scale);
                        self.fill(rect(gx, gy, scale, scale), c);
                    }
                }
            }
        }
    }

    fn png(&self) -> Vec<u8> {
        fn crc(data: &[u8]) -> u32 {
            let mut c = 0xffff_ffffu32;
            for &b in data {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc(&body).to_be_bytes());
        }
        let mut raw = Vec::with_capacity(self.px.len() + self.h as usize);
        for row in self.px.chunks(self.w as usize * 3) {
            raw.push(0);
            raw.extend_from_slice(row);
        }
        let mut z = ZlibEncoder::new(Vec::new(), Compression::new(6));
        z.write_all(&raw).expect("in-memory write");
        let idat = z.finish().expect("in-memory write");
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = (self.w as u32).to_be_bytes().to_vec();
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &idat);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

/// 8x8 glyphs for ASCII 32..=126; byte r is pixel row r, bit c (LSB first) is column c.
/// Source: `font8x8_basic.h` of font8x8 by Daniel Hepper (github.com/dhepper/font8x8), derived
/// from Marcel Sondaar's font8_8.asm and IBM's public domain VGA fonts. Licence: public domain.
#[rustfmt::skip]
const FONT: [[u8; 8]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x18, 0x3C, 0x3C, 0x18, 0x18, 0x00, 0x18, 0x00], // !
    [0x36, 0x36, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // "
    [0x36, 0x36, 0x7F, 0x36, 0x7F, 0x36, 0x36, 0x00], // #
    [0x0C, 0x3E, 0x03, 0x1E, 0x30, 0x1F, 0x0C, 0x00], // $
    [0x00, 0x63, 0x33, 0x18, 0x0C, 0x66, 0x63, 0x00], // %
    [0x1C, 0x36, 0x1C, 0x6E, 0x3B, 0x33, 0x6E, 0x00], // &
    [0x06, 0x06, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00], // '
    [0x18, 0x0C, 0x06, 0x06, 0x06, 0x0C, 0x18, 0x00], // (
    [0x06, 0x0C, 0x18, 0x18, 0x18, 0x0C, 0x06, 0x00], // )
    [0x00, 0x66, 0x3C, 0xFF, 0x3C, 0x66, 0x00, 0x00], // *
    [0x00, 0x0C, 0x0C, 0x3F, 0x0C, 0x0C, 0x00, 0x00], // +
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0x06], // ,
    [0x00, 0x00, 0x00, 0x3F, 0x00, 0x00, 0x00, 0x00], // -
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0x00], // .
    [0x60, 0x30, 0x18, 0x0C, 0x06, 0x03, 0x01, 0x00], // /
    [0x3E, 0x63, 0x73, 0x7B, 0x6F, 0x67, 0x3E, 0x00], // 0
    [0x0C, 0x0E, 0x0C, 0x0C, 0x0C, 0x0C, 0x3F, 0x00], // 1
    [0x1E, 0x33, 0x30, 0x1C, 0x06, 0x33, 0x3F, 0x00], // 2
    [0x1E, 0x33, 0x30, 0x1C, 0x30, 0x33, 0x1E, 0x00], // 3
    [0x38, 0x3C, 0x36, 0x33, 0x7F, 0x30, 0x78, 0x00], // 4
    [0x3F, 0x03, 0x1F, 0x30, 0x30, 0x33, 0x1E, 0x00], // 5
    [0x1C, 0x06, 0x03, 0x1F, 0x33, 0x33, 0x1E, 0x00], // 6
    [0x3F, 0x33, 0x30, 0x18, 0x0C, 0x0C, 0x0C, 0x00], // 7
    [0x1E, 0x33, 0x33, 0x1E, 0x33, 0x33, 0x1E, 0x00], // 8
    [0x1E, 0x33, 0x33, 0x3E, 0x30, 0x18, 0x0E, 0x00], // 9
    [0x00, 0x0C, 0x0C, 0x00, 0x00, 0x0C, 0x0C, 0x00], // :
    [0x00, 0x0C, 0x0C, 0x00, 0x00, 0x0C, 0x0C, 0x06], // ;
    [0x18, 0x0C, 0x06, 0x03, 0x06, 0x0C, 0x18, 0x00], // <
    [0x00, 0x00, 0x3F, 0x00, 0x00, 0x3F, 0x00, 0x00], // =
    [0x06, 0x0C, 0x18, 0x30, 0x18, 0x0C, 0x06, 0x00], // >
    [0x1E, 0x33, 0x30, 0x18, 0x0C, 0x00, 0x0C, 0x00], // ?
    [0x3E, 0x63, 0x7B, 0x7B, 0x7B, 0x03, 0x1E, 0x00], // @
    [0x0C, 0x1E, 0x33, 0x33, 0x3F, 0x33, 0x33, 0x00], // A
    [0x3F, 0x66, 0x66, 0x3E, 0x66, 0x66, 0x3F, 0x00], // B
    [0x3C, 0x66, 0x03, 0x03, 0x03, 0x66, 0x3C, 0x00], // C
    [0x1F, 0x36, 0x66, 0x66, 0x66, 0x36, 0x1F, 0x00], // D
    [0x7F, 0x46, 0x16, 0x1E, 0x16, 0x46, 0x7F, 0x00], // E
    [0x7F, 0x46, 0x16, 0x1E, 0x16, 0x06, 0x0F, 0x00], // F
    [0x3C, 0x66, 0x03, 0x03, 0x73, 0x66, 0x7C, 0x00], // G
    [0x33, 0x33, 0x33, 0x3F, 0x33, 0x33, 0x33, 0x00], // H
    [0x1E, 0x0C, 0x0C, 0x0C, 0x0C, 0x0C, 0x1E, 0x00], // I
    [0x78, 0x30, 0x30, 0x30, 0x33, 0x33, 0x1E, 0x00], // J
    [0x67, 0x66, 0x36, 0x1E, 0x36, 0x66, 0x67, 0x00], // K
    [0x0F, 0x06, 0x06, 0x06, 0x46, 0x66, 0x7F, 0x00], // L
    [0x63, 0x77, 0x7F, 0x7F, 0x6B, 0x63, 0x63, 0x00], // M
    [0x63, 0x67, 0x6F, 0x7B, 0x73, 0x63, 0x63, 0x00], // N
    [0x1C, 0x36, 0x63, 0x63, 0x63, 0x36, 0x1C, 0x00], // O
    [0x3F, 0x66, 0x66, 0x3E, 0x06, 0x06, 0x0F, 0x00], // P
    [0x1E, 0x33, 0x33, 0x33, 0x3B, 0x1E, 0x38, 0x00], // Q
    [0x3F, 0x66, 0x66, 0x3E, 0x36, 0x66, 0x67, 0x00], // R
    [0x1E, 0x33, 0x07, 0x0E, 0x38, 0x33, 0x1E, 0x00], // S
    [0x3F, 0x2D, 0x0C, 0x0C, 0x0C, 0x0C, 0x1E, 0x00], // T
    [0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x3F, 0x00], // U
    [0x33, 0x33, 0x33, 0x33, 0x33, 0x1E, 0x0C, 0x00], // V
    [0x63, 0x63, 0x63, 0x6B, 0x7F, 0x77, 0x63, 0x00], // W
    [0x63, 0x63, 0x36, 0x1C, 0x1C, 0x36, 0x63, 0x00], // X
    [0x33, 0x33, 0x33, 0x1E, 0x0C, 0x0C, 0x1E, 0x00], // Y
    [0x7F, 0x63, 0x31, 0x18, 0x4C, 0x66, 0x7F, 0x00], // Z
    [0x1E, 0x06, 0x06, 0x06, 0x06, 0x06, 0x1E, 0x00], // [
    [0x03, 0x06, 0x0C, 0x18, 0x30, 0x60, 0x40, 0x00], // \
    [0x1E, 0x18, 0x18, 0x18, 0x18, 0x18, 0x1E, 0x00], // ]
    [0x08, 0x1C, 0x36, 0x63, 0x00, 0x00, 0x00, 0x00], // ^
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF], // _
    [0x0C, 0x0C, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00], // `
    [0x00, 0x00, 0x1E, 0x30, 0x3E, 0x33, 0x6E, 0x00], // a
    [0x07, 0x06, 0x06, 0x3E, 0x66, 0x66, 0x3B, 0x00], // b
    [0x00, 0x00, 0x1E, 0x33, 0x03, 0x33, 0x1E, 0x00], // c
    [0x38, 0x30, 0x30, 0x3E, 0x33, 0x33, 0x6E, 0x00], // d
    [0x00, 0x00, 0x1E, 0x33, 0x3F, 0x03, 0x1E, 0x00], // e
    [0x1C, 0x36, 0x06, 0x0F, 0x06, 0x06, 0x0F, 0x00], // f
    [0x00, 0x00, 0x6E, 0x33, 0x33, 0x3E, 0x30, 0x1F], // g
    [0x07, 0x06, 0x36, 0x6E, 0x66, 0x66, 0x67, 0x00], // h
    [0x0C, 0x00, 0x0E, 0x0C, 0x0C, 0x0C, 0x1E, 0x00], // i
    [0x30, 0x00, 0x30, 0x30, 0x30, 0x33, 0x33, 0x1E], // j
    [0x07, 0x06, 0x66, 0x36, 0x1E, 0x36, 0x67, 0x00], // k
    [0x0E, 0x0C, 0x0C, 0x0C, 0x0C, 0x0C, 0x1E, 0x00], // l
    [0x00, 0x00, 0x33, 0x7F, 0x7F, 0x6B, 0x63, 0x00], // m
    [0x00, 0x00, 0x1F, 0x33, 0x33, 0x33, 0x33, 0x00], // n
    [0x00, 0x00, 0x1E, 0x33, 0x33, 0x33, 0x1E, 0x00], // o
    [0x00, 0x00, 0x3B, 0x66, 0x66, 0x3E, 0x06, 0x0F], // p
    [0x00, 0x00, 0x6E, 0x33, 0x33, 0x3E, 0x30, 0x78], // q
    [0x00, 0x00, 0x3B, 0x6E, 0x66, 0x06, 0x0F, 0x00], // r
    [0x00, 0x00, 0x3E, 0x03, 0x1E, 0x30, 0x1F, 0x00], // s
    [0x08, 0x0C, 0x3E, 0x0C, 0x0C, 0x2C, 0x18, 0x00], // t
    [0x00, 0x00, 0x33, 0x33, 0x33, 0x33, 0x6E, 0x00], // u
    [0x00, 0x00, 0x33, 0x33, 0x33, 0x1E, 0x0C, 0x00], // v
    [0x00, 0x00, 0x63, 0x6B, 0x7F, 0x7F, 0x36, 0x00], // w
    [0x00, 0x00, 0x63, 0x36, 0x1C, 0x36, 0x63, 0x00], // x
    [0x00, 0x00, 0x33, 0x33, 0x33, 0x3E, 0x30, 0x1F], // y
    [0x00, 0x00, 0x3F, 0x19, 0x0C, 0x26, 0x3F, 0x00], // z
    [0x38, 0x0C, 0x0C, 0x07, 0x0C, 0x0C, 0x38, 0x00], // {
    [0x18, 0x18, 0x18, 0x00, 0x18, 0x18, 0x18, 0x00], // |
    [0x07, 0x0C, 0x0C, 0x38, 0x0C, 0x0C, 0x07, 0x00], // }
    [0x6E, 0x3B, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // ~
];

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    /// Two runs of 500 noisy loss steps and 5 evaluations each.
    fn sample() -> Figure {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let names = ["mnist-mlp-seed1".to_string(), "mnist-mlp-seed2".to_string()];
        let mut loss = Panel {
            y_label: "training loss".into(),
            x_label: "step".into(),
            ..Panel::default()
        };
        let mut acc = Panel {
            y_label: "test accuracy".into(),
            x_label: "step".into(),
            ..Panel::default()
        };
        for (r, name) in names.iter().enumerate() {
            let pts = (1..=500)
                .map(|s| {
                    let f = s as f64 / 500.0;
                    let y = 0.3 + 2.0 * (1.0 - f) * (1.0 - f) * (1.0 - f) + 0.2 * noise();
                    (s as f64, y + 0.05 * r as f64)
                })
                .collect();
            loss.series.push(Series {
                label: name.clone(),
                points: pts,
                markers: false,
            });
            let ev = (1..=5)
                .map(|k| ((k * 100) as f64, 0.6 + 0.07 * k as f64 - 0.01 * r as f64))
                .map(|(x, y): (f64, f64)| (x, y.min(0.88)))
                .collect();
            acc.series.push(Series {
                label: name.clone(),
                points: ev,
                markers: true,
            });
        }
        Figure {
            title: format!("lockstep: {}", names.join(", ")),
            legend: names.to_vec(),
            panels: vec![loss, acc],
        }
    }

    /// (width, height, RGB pixels) of a PNG written by `render_png`.
    fn decode(png: &[u8]) -> (usize, usize, Vec<u8>) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (mut i, mut w, mut h, mut z) = (8, 0, 0, Vec::new());
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().expect("4 bytes")) as usize;
            let (kind, data) = (&png[i + 4..i + 8], &png[i + 8..i + 8 + len]);
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes")) as usize;
                    assert_eq!(&data[8..], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => z.extend_from_slice(data),
                _ => {}
            }
            i += 12 + len;
        }
        let mut raw = Vec::new();
        ZlibDecoder::new(&z[..])
            .read_to_end(&mut raw)
            .expect("valid zlib");
        assert_eq!(raw.len(), h * (1 + 3 * w));
        let mut px = Vec::with_capacity(w * h * 3);
        for row in raw.chunks(1 + 3 * w) {
            assert_eq!(row[0], 0, "filter 0");
            px.extend_from_slice(&row[1..]);
        }
        (w, h, px)
    }

    #[test]
    fn deterministic() {
        let f = sample();
        assert_eq!(render_png(&f), render_png(&f));
        assert_eq!(render_svg(&f), render_svg(&f));
    }

    /// Every text area of `f` holds ink and the far corners are white; returns the area count.
    fn check_text_areas(f: &Figure) -> usize {
        let (w, h, px) = decode(&render_png(f));
        assert_eq!((w, h), (WIDTH, height(f)));
        let white = |x: usize, y: usize| px[(y * w + x) * 3..][..3] == [255, 255, 255];
        let areas = text_areas(f);
        for &(x, y, aw, ah) in &areas {
            assert!(x + aw <= w && y + ah <= h, "{:?} outside", (x, y, aw, ah));
            let inked = (y..y + ah).any(|yy| (x..x + aw).any(|xx| !white(xx, yy)));
            assert!(inked, "no text in {:?}", (x, y, aw, ah));
        }
        assert!((0..8).all(|d| white(w - 1 - d, 1 + d) && white(1 + d, h - 2 - d)));
        areas.len()
    }

    #[test]
    fn text_areas_hold_ink_and_corner_is_white() {
        // title + 2 legend names + per panel: y label, x label, >= 4 ticks on each axis.
        assert!(check_text_areas(&sample()) >= 3 + 2 * 10);
    }

    #[test]
    fn downsample_and_clip() {
        let pts: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, (i % 2) as f64)).collect();
        let d = downsample(&pts, 0.0, 10_000.0, 100);
        assert_eq!(d.len(), 100);
        assert!(d.iter().all(|p| p.1 == 0.5));
        let runs = clip_polyline(
            &[
                (0.0, 5.0),
                (5.0, 5.0),
                (5.0, 50.0),
                (6.0, 50.0),
                (6.0, 5.0),
                (9.0, 5.0),
            ],
            [0.0, 0.0, 10.0, 10.0],
        );
        assert_eq!(
            runs,
            [
                vec![(0.0, 5.0), (5.0, 5.0), (5.0, 10.0)],
                vec![(6.0, 10.0), (6.0, 5.0), (9.0, 5.0)]
            ]
        );
    }

    /// Same figure, same pixels and SVG on every machine. If the layout changes on purpose,
    /// print the new values and update them here.
    #[test]
    fn golden() {
        let fnv = |b: &[u8]| {
            b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
                (h ^ x as u64).wrapping_mul(0x0100_0000_01b3)
            })
        };
        let f = sample();
        let (_, _, px) = decode(&render_png(&f));
        let got = (fnv(&px), fnv(render_svg(&f).as_bytes()));
        assert_eq!(
            got,
            (0x395d_9c04_8b4a_b70b, 0x23b3_8284_bdb3_3d6c),
            "pixels, svg: {got:#018x?}"
        );
    }

    #[test]
    fn tick_labels() {
        let labels = |lo, hi, widen| -> Vec<String> {
            Axis::new(lo, hi, widen)
                .ticks
                .into_iter()
                .map(|t| t.1)
                .collect()
        };
        assert_eq!(labels(0.3, 2.3, true), ["0", "0.5", "1", "1.5", "2", "2.5"]);
        assert_eq!(
            labels(0.0, 1.0, false),
            ["0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        assert_eq!(
            labels(1.0, 500.0, true),
            ["0", "100", "200", "300", "400", "500"]
        );
        assert_eq!(
            labels(0.0, 1e7, true),
            ["0", "2e6", "4e6", "6e6", "8e6", "1e7"]
        );
        assert_eq!(
            labels(1e-4, 1e-4, true),
            ["4e-5", "6e-5", "8e-5", "1e-4", "1.2e-4", "1.4e-4", "1.6e-4"]
        );
        assert_eq!(
            labels(0.0, 2.5e-4, true),
            ["0", "5e-5", "1e-4", "1.5e-4", "2e-4", "2.5e-4"]
        );
        assert_eq!(
            labels(-3.0, 3.0, true),
            ["-3", "-2", "-1", "0", "1", "2", "3"]
        );
        assert_eq!(tick_label(15, -3, false), "0.015");
        for (lo, hi) in [
            (0.3, 2.3),
            (2.3, 2.3),
            (0.6, 0.88),
            (1.0, 1e7),
            (-1e-9, 1e-9),
        ] {
            let n = Axis::new(lo, hi, true).ticks.len();
            assert!((3..=8).contains(&n), "{lo}..{hi}: {n} ticks");
        }
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let panel = |pts: Vec<(f64, f64)>, y_range| Panel {
            y_label: "y".into(),
            x_label: "step".into(),
            series: vec![Series {
                label: "s".into(),
                points: pts,
                markers: false,
            }],
            y_range,
        };
        let cases = vec![
            panel(vec![], None),
            panel(vec![(3.0, 2.3)], None),
            panel(vec![(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)], None),
            panel(
                vec![
                    (0.0, f64::NAN),
                    (1.0, f64::INFINITY),
                    (f64::NEG_INFINITY, 1.0),
                ],
                None,
            ),
            panel(
                (0..20_000)
                    .map(|i| (i as f64 * 500.0, 1e-4 * (i % 7) as f64))
                    .collect(),
                None,
            ),
            panel(vec![(0.0, -5.0), (1.0, 0.5), (2.0, 5.0)], Some((0.0, 1.0))),
            panel(vec![(0.0, 1.0), (1.0, 2.0)], Some((f64::NAN, 1.0))),
            panel(vec![(0.0, 1.0), (1.0, 2.0)], Some((1.0, 1.0))),
            panel(vec![(0.0, -1e250), (1.0, 1e250), (2.0, 1e300)], None),
            panel(
                vec![(-1.5e-10, 1.0), (3e-10, -2.5e-10)],
                Some((-1e308, 1e308)),
            ),
        ];
        let mut f = Figure {
            title: "\u{e9}t\u{e9} <&> \"quoted\" \n".repeat(10),
            legend: vec!["r\u{fc}n-1".into(), String::new(), "x".repeat(200)],
            panels: cases,
        };
        f.panels.push(Panel::default());
        check_text_areas(&f);
        let svg = render_svg(&f);
        assert!(svg.contains("&lt;&amp;&gt; &quot;quoted&quot;") && !svg.contains('\u{e9}'));
        let empty = Figure::default();
        assert_eq!(decode(&render_png(&empty)).0, WIDTH);
        assert!(render_svg(&empty).ends_with("</svg>\n"));
    }

    #[test]
    fn svg_has_text() {
        let f = sample();
        let svg = render_svg(&f);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        for s in [
            "lockstep: mnist-mlp-seed1, mnist-mlp-seed2",
            ">mnist-mlp-seed2</text>",
            ">training loss</text>",
            ">test accuracy</text>",
            ">step</text>",
            ">2.5</text>",
            ">500</text>",
            ">0.9</text>",
        ] {
            assert!(svg.contains(s), "missing {s}");
        }
    }
}
