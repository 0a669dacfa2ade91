//! The comparison chart, one SVG meant for a slide: per workload, request
//! rate (linear) and p99 latency (log) per policy, one bar per transport;
//! then memory per idle connection and the slow-clients round trip (log);
//! then the connection-count sweep (rate and p99 against connections,
//! log-log), each when its files are present. Legends sit in strips above
//! the panels they explain, never over the bars, and every bar carries its
//! value. Drawn with plotters' primitives on an SVG backend; the axes,
//! ticks and labels are placed here, so log axes get decade ticks with
//! units ("100 µs", "1 ms").

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::compare::{self, Cell, Results, SlowOutcome};

/// The chart's width: two panels side by side.
const WIDTH: u32 = 1440;
const PANEL_H: u32 = 330;
/// The title and caption strip above everything.
const HEADER_H: u32 = 74;
/// A legend strip above a row of panels.
const LEGEND_H: u32 = 34;
/// The panel's plot inside its area: left (y labels), right, top (title,
/// legend), bottom (x labels, two lines).
const MARGIN: (i32, i32, i32, i32) = (76, 18, 40, 50);
const TRANSPORT_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];
/// Bars of one-bar-per-policy panels, and of the slow clients' N (in turn).
const SERIES_COLOURS: [RGBColor; 4] = [
    RGBColor(42, 110, 140),
    RGBColor(120, 80, 170),
    RGBColor(200, 110, 20),
    RGBColor(40, 150, 110),
];
const LOCKED: RGBColor = RGBColor(190, 30, 45);
const GRID: RGBColor = RGBColor(222, 222, 222);
const MINOR: RGBColor = RGBColor(240, 240, 240);
const INK: RGBColor = RGBColor(40, 40, 40);
const GREY: RGBColor = RGBColor(100, 100, 100);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A policy's colour in the sweep's lines: fixed, so a policy keeps its
/// colour whichever policies a run has.
fn policy_colour(policy: &str, i: usize) -> RGBColor {
    const FIXED: [(&str, RGBColor); 8] = [
        ("fork", RGBColor(214, 39, 40)),
        ("thread", RGBColor(31, 119, 180)),
        ("event", RGBColor(44, 160, 44)),
        ("py-fork", RGBColor(255, 127, 14)),
        ("py-thread", RGBColor(148, 103, 189)),
        ("sync", RGBColor(140, 86, 75)),
        ("pool", RGBColor(227, 119, 194)),
        ("prefork", RGBColor(23, 190, 207)),
    ];
    FIXED
        .iter()
        .find(|(p, _)| *p == policy)
        .map_or(FIXED[i % FIXED.len()].1, |(_, c)| *c)
}

/// A font of `px` pixels (the SVG backend writes size / 1.24).
fn font(px: f64) -> FontDesc<'static> {
    ("sans-serif", px * 1.24).into_font()
}

fn text_style(px: f64, colour: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    font(px).color(&colour).pos(Pos::new(h, v))
}

/// Estimated width of `text` at `px` pixels (no font metrics in SVG).
fn text_w(text: &str, px: f64) -> i32 {
    (text.chars().count() as f64 * px * 0.54) as i32
}

/// How values are written on an axis and above a bar.
#[derive(Clone, Copy)]
enum Unit {
    /// Requests per second: "850", "1.6k", "335k".
    Rate,
    /// Microseconds: "26 µs", "3.1 ms", "5.4 s".
    Micros,
    /// KiB: "0.5 KiB", "36 KiB".
    Kib,
    /// A connection count: "16", "1k", "10k".
    Count,
}

/// `v` with one decimal below 10 and none above: "3.1", "36".
fn short(v: f64) -> String {
    let s = if v < 9.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    };
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Rate | Unit::Count if v >= 1e6 => format!("{}M", short(v / 1e6)),
            Unit::Rate | Unit::Count if v >= 1e3 => format!("{}k", short(v / 1e3)),
            Unit::Rate | Unit::Count => format!("{v:.0}"),
            Unit::Micros if v >= 1e6 => format!("{} s", short(v / 1e6)),
            Unit::Micros if v >= 1e3 => format!("{} ms", short(v / 1e3)),
            Unit::Micros => format!("{v:.0} µs"),
            Unit::Kib if v > 0.0 && v < 0.95 => format!("{v:.1} KiB"),
            Unit::Kib => format!("{} KiB", short(v)),
        }
    }
}

/// A y (or x) axis: linear from 0, or log between two powers of ten.
#[derive(Clone, Copy)]
enum Scale {
    Linear { top: f64 },
    Log { lo: f64, hi: f64 },
}

impl Scale {
    /// A linear axis from 0 on which `max` sits at `at` of the height (room
    /// above it for the bars' labels).
    fn linear(max: f64, at: f64) -> Scale {
        Scale::Linear {
            top: (max / at).max(1e-9),
        }
    }

    /// A log axis from a power of ten below the smallest positive value to
    /// where the largest sits at `at` of the height.
    fn log(values: impl Iterator<Item = f64>, at: f64) -> Scale {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if max == 0.0 {
            return Scale::Log { lo: 1.0, hi: 10.0 };
        }
        // A decade below the smallest when it sits near its decade, so the
        // shortest bar is still a bar.
        let lo = 10f64.powf((min.log10() - 0.3).floor());
        Scale::Log {
            lo,
            hi: (lo * (max / lo).powf(1.0 / at)).max(lo * 10.0),
        }
    }

    /// Where `v` sits, 0 (bottom) to 1 (top), clamped.
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear { top } => v / top,
            Scale::Log { lo, hi } if v > 0.0 => (v / lo).log10() / (hi / lo).log10(),
            Scale::Log { .. } => 0.0,
        };
        f.clamp(0.0, 1.0)
    }

    /// (value, labelled) ticks: about five round steps, or every decade
    /// with the 2s and 5s between when there are few decades (labelled
    /// when there are only one or two).
    fn ticks(self) -> Vec<(f64, bool)> {
        match self {
            Scale::Linear { top } => {
                let raw = top / 5.0;
                let mag = 10f64.powf(raw.log10().floor());
                let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                    .iter()
                    .map(|m| m * mag)
                    .find(|s| *s >= raw)
                    .unwrap_or(10.0 * mag);
                (0..)
                    .map(|i| i as f64 * step)
                    .take_while(|v| *v <= top)
                    .map(|v| (v, true))
                    .collect()
            }
            Scale::Log { lo, hi } => {
                let decades = (hi / lo).log10().floor() as i32;
                let mut out = Vec::new();
                for d in 0..=decades {
                    let v = lo * 10f64.powi(d);
                    out.push((v, true));
                    if decades <= 4 {
                        // Labelled too when there are few decades to read.
                        out.extend([(2.0 * v, decades <= 2), (5.0 * v, decades <= 2)]);
                    }
                }
                out.retain(|(v, _)| *v <= hi * 1.0001);
                out
            }
        }
    }
}

/// The plot rectangle of a panel, in the panel area's pixels.
struct Frame {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl Frame {
    fn of(area: &Area, legend: bool) -> Frame {
        let (w, h) = area.dim_in_pixel();
        let top = MARGIN.2 + if legend { 22 } else { 0 };
        Frame {
            x0: MARGIN.0,
            y0: top,
            x1: w as i32 - MARGIN.1,
            y1: h as i32 - MARGIN.3,
        }
    }

    fn y(&self, scale: Scale, v: f64) -> i32 {
        self.y1 - (scale.frac(v) * (self.y1 - self.y0) as f64).round() as i32
    }

    /// x for a position `f` from 0 (left) to 1 (right).
    fn x(&self, f: f64) -> i32 {
        self.x0 + (f * (self.x1 - self.x0) as f64).round() as i32
    }
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn text(area: &Area, s: &str, style: &TextStyle, at: (i32, i32)) -> anyhow::Result<()> {
    area.draw_text(s, style, at).map_err(plot_err)
}

fn line(area: &Area, points: Vec<(i32, i32)>, colour: RGBColor, width: u32) -> anyhow::Result<()> {
    area.draw(&PathElement::new(points, colour.stroke_width(width)))
        .map_err(plot_err)
}

fn rect(area: &Area, a: (i32, i32), b: (i32, i32), style: ShapeStyle) -> anyhow::Result<()> {
    area.draw(&Rectangle::new([a, b], style)).map_err(plot_err)
}

/// A rectangle hatched with diagonal lines: a bar that stands for "no
/// answer within the bound" rather than a measured value.
fn hatched(area: &Area, (x0, y0): (i32, i32), (x1, y1): (i32, i32)) -> anyhow::Result<()> {
    rect(area, (x0, y0), (x1, y1), RGBColor(250, 226, 228).filled())?;
    let mut c = x0 - (y1 - y0);
    while c < x1 {
        // The line x - c = y1 - y, clipped to the rectangle.
        let (sx, sy) = if c < x0 { (x0, y1 - (x0 - c)) } else { (c, y1) };
        let (ex, ey) = if c + (y1 - y0) > x1 {
            (x1, y1 - (x1 - c))
        } else {
            (c + (y1 - y0), y0)
        };
        line(area, vec![(sx, sy), (ex, ey)], LOCKED, 1)?;
        c += 7;
    }
    rect(area, (x0, y0), (x1, y1), LOCKED.stroke_width(1))
}

/// The panel's title, y ticks (labels and grid) and axis lines.
fn axes(area: &Area, f: &Frame, title: &str, scale: Scale, unit: Unit) -> anyhow::Result<()> {
    let bold = font(15.0).style(FontStyle::Bold).color(&INK);
    text(
        area,
        title,
        &bold.pos(Pos::new(HPos::Left, VPos::Top)),
        (12, 10),
    )?;
    let label = text_style(12.0, GREY, HPos::Right, VPos::Center);
    for (v, major) in scale.ticks() {
        let y = f.y(scale, v);
        line(
            area,
            vec![(f.x0, y), (f.x1, y)],
            if major { GRID } else { MINOR },
            1,
        )?;
        if major {
            text(area, &unit.fmt(v), &label, (f.x0 - 6, y))?;
        }
    }
    line(
        area,
        vec![(f.x0, f.y0), (f.x0, f.y1), (f.x1, f.y1)],
        GREY,
        1,
    )
}

/// One legend entry.
struct Key {
    label: String,
    colour: RGBColor,
    kind: KeyKind,
}

#[derive(Clone, Copy)]
enum KeyKind {
    Box,
    Line,
    Hatched,
    Cross,
}

/// The legend entries side by side from `x`, centred on `y`.
fn keys(area: &Area, keys: &[Key], mut x: i32, y: i32) -> anyhow::Result<()> {
    let style = text_style(13.0, INK, HPos::Left, VPos::Center);
    for k in keys {
        match k.kind {
            KeyKind::Box => rect(area, (x, y - 6), (x + 14, y + 6), k.colour.filled())?,
            KeyKind::Hatched => hatched(area, (x, y - 6), (x + 14, y + 6))?,
            KeyKind::Line => {
                line(area, vec![(x - 2, y), (x + 16, y)], k.colour, 3)?;
                area.draw(&Circle::new((x + 7, y), 4, k.colour.filled()))
                    .map_err(plot_err)?;
            }
            KeyKind::Cross => cross(area, (x + 7, y), INK)?,
        }
        text(area, &k.label, &style, (x + 20, y))?;
        x += 20 + text_w(&k.label, 13.0) + 22;
    }
    Ok(())
}

fn keys_width(keys: &[Key]) -> i32 {
    keys.iter()
        .map(|k| 20 + text_w(&k.label, 13.0) + 22)
        .sum::<i32>()
        - 22
}

fn cross(area: &Area, (x, y): (i32, i32), colour: RGBColor) -> anyhow::Result<()> {
    line(area, vec![(x - 5, y - 5), (x + 5, y + 5)], colour, 2)?;
    line(area, vec![(x - 5, y + 5), (x + 5, y - 5)], colour, 2)
}

/// A legend strip across `area`, its entries centred.
fn legend_strip(area: &Area, title: &str, items: &[Key]) -> anyhow::Result<()> {
    let (w, h) = area.dim_in_pixel();
    let bold = font(13.0).style(FontStyle::Bold).color(&INK);
    let tw = text_w(title, 13.0) + 14;
    let x = ((w as i32 - keys_width(items) - tw) / 2).max(12);
    let y = h as i32 / 2;
    text(
        area,
        title,
        &bold.pos(Pos::new(HPos::Left, VPos::Center)),
        (x, y),
    )?;
    keys(area, items, x + tw, y)
}

/// How a bar is drawn.
#[derive(Clone, Copy)]
enum Fill {
    Solid(RGBColor),
    /// To the bound, hatched: no answer within it.
    Hatched,
    /// No bar, only the label at the axis (a refused connect, a failed cell).
    None,
}

struct Bar {
    /// The slot, counted from the left.
    slot: usize,
    value: f64,
    label: String,
    fill: Fill,
}

/// A category under the x axis, spanning `slots` slots from `first`.
struct Group {
    name: String,
    sub: String,
    first: usize,
    slots: usize,
}

struct BarPanel {
    title: String,
    unit: Unit,
    log: bool,
    /// Slots across the panel (bars and the gaps between groups).
    slots: usize,
    bars: Vec<Bar>,
    groups: Vec<Group>,
    legend: Vec<Key>,
}

fn draw_bars(area: &Area, p: &BarPanel) -> anyhow::Result<()> {
    let f = Frame::of(area, !p.legend.is_empty());
    // Half a slot of room at either end.
    let span = p.slots.max(1) as f64 + 1.0;
    let slot_w = (f.x1 - f.x0) as f64 / span;
    let sx = |s: f64| f.x((s + 0.5) / span);
    // Labels may have lines ("locked\nout"); turned upright when the widest
    // line is wider than a slot.
    let widest = (p.bars.iter())
        .flat_map(|b| b.label.lines())
        .map(|l| text_w(l, 11.0))
        .max()
        .unwrap_or(0);
    let rotate = widest as f64 > slot_w - 2.0;
    let upright = (p.bars.iter())
        .map(|b| text_w(&b.label.replace('\n', " "), 11.0))
        .max()
        .unwrap_or(0);
    let lines = p
        .bars
        .iter()
        .map(|b| b.label.lines().count())
        .max()
        .unwrap_or(1);
    // The tallest bar leaves its label room below the plot's top edge.
    let room = if rotate {
        upright + 8
    } else {
        13 * lines as i32 + 5
    };
    let at = (1.0 - room as f64 / (f.y1 - f.y0) as f64).clamp(0.5, 0.95);
    let values = p.bars.iter().map(|b| b.value);
    let scale = if p.log {
        Scale::log(values, at)
    } else {
        Scale::linear(values.fold(0.0, f64::max), at)
    };
    axes(area, &f, &p.title, scale, p.unit)?;
    if !p.legend.is_empty() {
        keys(area, &p.legend, 14, MARGIN.2 + 6)?;
    }
    // Bars at most 56 px wide, centred in their slot.
    let half = (slot_w * 0.38).min(28.0) / slot_w;
    for b in &p.bars {
        let mid = b.slot as f64 + 0.5;
        let (l, r) = (sx(mid - half), sx(mid + half));
        let top = match b.fill {
            Fill::None => f.y1,
            _ => f.y(scale, b.value).min(f.y1 - 1),
        };
        match b.fill {
            Fill::Solid(c) => rect(area, (l, top), (r, f.y1), c.filled())?,
            Fill::Hatched => hatched(area, (l, top), (r, f.y1))?,
            Fill::None => {}
        }
        bar_label(area, b, ((l + r) / 2, top), rotate)?;
    }
    let name = text_style(13.0, INK, HPos::Center, VPos::Top);
    let sub = text_style(11.0, GREY, HPos::Center, VPos::Top);
    for g in &p.groups {
        let cx = sx(g.first as f64 + g.slots as f64 / 2.0);
        text(area, &g.name, &name, (cx, f.y1 + 6))?;
        if !g.sub.is_empty() {
            text(area, &g.sub, &sub, (cx, f.y1 + 24))?;
        }
    }
    Ok(())
}

/// A bar's value above it: upright (its lines joined) when bars are narrow,
/// red when the bar stands for no answer.
fn bar_label(area: &Area, b: &Bar, (cx, top): (i32, i32), rotate: bool) -> anyhow::Result<()> {
    let colour = if matches!(b.fill, Fill::Solid(_)) {
        INK
    } else {
        LOCKED
    };
    if rotate {
        let style = font(11.0)
            .transform(FontTransform::Rotate270)
            .color(&colour)
            .pos(Pos::new(HPos::Left, VPos::Center));
        return text(area, &b.label.replace('\n', " "), &style, (cx, top - 4));
    }
    let style = text_style(11.0, colour, HPos::Center, VPos::Bottom);
    for (i, l) in b.label.lines().rev().enumerate() {
        text(area, l, &style, (cx, top - 3 - 13 * i as i32))?;
    }
    Ok(())
}

/// What one matrix panel shows.
#[derive(Clone, Copy)]
enum Metric {
    Rate,
    P99,
}

/// Rate (linear) or p99 (log) per policy of one workload, a bar per transport.
fn matrix_panel(r: &Results, workload: &str, metric: Metric) -> BarPanel {
    let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.workload == workload).collect();
    let policies: Vec<String> = (r.policies().into_iter())
        .filter(|p| cells.iter().any(|c| &c.policy == p))
        .collect();
    let transports = transports(r);
    let per = transports.len() + 1; // a gap after each group
    let mut bars = Vec::new();
    for c in &cells {
        let (Some(p), Some(t)) = (
            policies.iter().position(|p| p == &c.policy),
            transports.iter().position(|t| t == &c.transport),
        ) else {
            continue;
        };
        let (value, unit) = match metric {
            Metric::Rate => (c.load.requests_per_s, Unit::Rate),
            Metric::P99 => (c.load.latency.p99_us as f64, Unit::Micros),
        };
        let missing = matches!(metric, Metric::P99) && value <= 0.0;
        bars.push(Bar {
            slot: p * per + t,
            value,
            label: if missing {
                "n/a".into()
            } else {
                unit.fmt(value)
            },
            fill: if missing {
                Fill::None
            } else {
                Fill::Solid(TRANSPORT_COLOURS[t % 4])
            },
        });
    }
    let (title, unit, log) = match metric {
        Metric::Rate => (
            format!("{workload}: requests/s (higher is better)"),
            Unit::Rate,
            false,
        ),
        Metric::P99 => (
            format!("{workload}: p99 latency, log scale (lower is better)"),
            Unit::Micros,
            true,
        ),
    };
    BarPanel {
        title,
        unit,
        log,
        slots: policies.len() * per - 1,
        groups: (policies.iter().enumerate())
            .map(|(i, p)| Group {
                name: p.clone(),
                sub: String::new(),
                first: i * per,
                slots: transports.len(),
            })
            .collect(),
        bars,
        legend: Vec::new(),
    }
}

/// The transports of the matrix (sweep excepted), in first-seen order.
fn transports(r: &Results) -> Vec<String> {
    compare::distinct(
        (r.cells.iter())
            .filter(|c| c.workload != "sweep")
            .map(|c| c.transport.as_str()),
    )
}

/// PSS per idle connection, a bar per policy, log scale.
fn idle_panel(r: &Results) -> BarPanel {
    let most = r.idle.iter().map(|i| i.connections).max().unwrap_or(0);
    let n = r.idle.len();
    BarPanel {
        title: format!("memory per idle connection, {most} held: PSS, log scale (lower is better)"),
        unit: Unit::Kib,
        log: true,
        slots: n,
        bars: (r.idle.iter().enumerate())
            .map(|(i, m)| {
                let v = m.per_connection_kib();
                Bar {
                    slot: i,
                    value: v,
                    label: Unit::Kib.fmt(v),
                    fill: Fill::Solid(SERIES_COLOURS[0]),
                }
            })
            .collect(),
        groups: (r.idle.iter().enumerate())
            .map(|(i, m)| Group {
                name: m.policy.clone(),
                sub: if m.connections < most {
                    format!("holds {}", m.connections)
                } else {
                    String::new()
                },
                first: i,
                slots: 1,
            })
            .collect(),
        legend: Vec::new(),
    }
}

/// The slow clients' round trip per policy, a bar per N, log scale; a
/// locked-out client is a hatched bar to the bound.
fn slow_panel(r: &Results) -> BarPanel {
    let counts = compare::slow_counts(r);
    let rows = compare::slow_rows(r);
    let per = counts.len() + 1;
    let mut bars = Vec::new();
    for (i, (_, policy, transport)) in rows.iter().enumerate() {
        for (j, n) in counts.iter().enumerate() {
            let Some(s) = (r.slow.iter())
                .find(|s| &s.policy == policy && &s.transport == transport && s.silent == *n)
            else {
                continue;
            };
            let (value, label, fill) = match s.outcome() {
                SlowOutcome::Answered(us) => {
                    (us, Unit::Micros.fmt(us), Fill::Solid(SERIES_COLOURS[j % 4]))
                }
                SlowOutcome::LockedOut(b) => (b * 1e6, "locked\nout".into(), Fill::Hatched),
                SlowOutcome::Refused => (0.0, "refused".into(), Fill::None),
            };
            bars.push(Bar {
                slot: i * per + j,
                value,
                label,
                fill,
            });
        }
    }
    let mut legend: Vec<Key> = Vec::new();
    if counts.len() > 1 {
        legend.extend(counts.iter().enumerate().map(|(j, n)| Key {
            label: format!("N = {n}"),
            colour: SERIES_COLOURS[j % 4],
            kind: KeyKind::Box,
        }));
    }
    if let Some(b) = (r.slow.iter()).find(|s| s.locked_out).map(|s| s.bound_s) {
        legend.push(Key {
            label: format!("locked out: no answer within {} s", short(b)),
            colour: LOCKED,
            kind: KeyKind::Hatched,
        });
    }
    let title = match counts.as_slice() {
        [n] => {
            format!("slow clients: one request beside {n} silent + {n} stalled connections (log)")
        }
        _ => "slow clients: one request beside N silent + N stalled connections (log)".into(),
    };
    BarPanel {
        title,
        unit: Unit::Micros,
        log: true,
        slots: (rows.len() * per).saturating_sub(1),
        bars,
        groups: (rows.iter().enumerate())
            .map(|(i, (label, _, _))| Group {
                name: label.clone(),
                sub: String::new(),
                first: i * per,
                slots: counts.len(),
            })
            .collect(),
        legend,
    }
}

/// Rate or p99 against the connection count, a line per policy, log-log;
/// a cell with errors is marked with a cross.
fn sweep_panel(area: &Area, r: &Results, metric: Metric) -> anyhow::Result<()> {
    let cells = compare::sweep_cells(r);
    let value = |c: &Cell| match metric {
        Metric::Rate => c.load.requests_per_s,
        Metric::P99 => c.load.latency.p99_us as f64,
    };
    let (title, unit) = match metric {
        Metric::Rate => (
            "sweep: requests/s against connections, log-log (higher is better)",
            Unit::Rate,
        ),
        Metric::P99 => (
            "sweep: p99 latency against connections, log-log (lower is better)",
            Unit::Micros,
        ),
    };
    let f = Frame::of(area, false);
    let scale = Scale::log(cells.iter().map(|c| value(c)), 0.9);
    axes(area, &f, title, scale, unit)?;
    let counts: Vec<u64> = {
        let set: std::collections::BTreeSet<u64> =
            cells.iter().map(|c| c.connections.max(1)).collect();
        set.into_iter().collect()
    };
    let (lo, hi) = (
        counts[0] as f64 / 1.6,
        *counts.last().unwrap_or(&1) as f64 * 1.6,
    );
    let x = |n: u64| f.x((n.max(1) as f64 / lo).log10() / (hi / lo).log10());
    let label = text_style(13.0, INK, HPos::Center, VPos::Top);
    for &n in &counts {
        line(area, vec![(x(n), f.y0), (x(n), f.y1)], MINOR, 1)?;
        text(area, &Unit::Count.fmt(n as f64), &label, (x(n), f.y1 + 6))?;
    }
    let caption = text_style(12.0, GREY, HPos::Center, VPos::Top);
    text(
        area,
        "persistent connections (log)",
        &caption,
        ((f.x0 + f.x1) / 2, f.y1 + 26),
    )?;
    for (i, policy) in r.policies().iter().enumerate() {
        let points: Vec<(&Cell, (i32, i32))> = (cells.iter())
            .filter(|c| &c.policy == policy && value(c) > 0.0)
            .map(|c| (*c, (x(c.connections), f.y(scale, value(c)))))
            .collect();
        if points.is_empty() {
            continue;
        }
        let colour = policy_colour(policy, i);
        line(area, points.iter().map(|(_, p)| *p).collect(), colour, 3)?;
        for (c, p) in points {
            if c.load.errors_total > 0 {
                cross(area, p, colour)?;
            } else {
                area.draw(&Circle::new(p, 5, colour.filled()))
                    .map_err(plot_err)?;
            }
        }
    }
    Ok(())
}

/// What the chart has to show: the matrix's workloads, idle memory, slow
/// clients, the sweep.
struct Contents {
    workloads: Vec<String>,
    idle: bool,
    slow: bool,
    sweep: bool,
}

impl Contents {
    fn of(r: &Results) -> Contents {
        Contents {
            workloads: compare::distinct(
                (r.cells.iter())
                    .filter(|c| c.workload != "sweep")
                    .map(|c| c.workload.as_str()),
            ),
            idle: !r.idle.is_empty(),
            slow: !r.slow.is_empty(),
            sweep: r.cells.iter().any(|c| c.workload == "sweep"),
        }
    }

    fn height(&self) -> u32 {
        let mut h = HEADER_H;
        if !self.workloads.is_empty() {
            h += LEGEND_H + PANEL_H * self.workloads.len() as u32;
        }
        if self.idle || self.slow {
            h += PANEL_H;
        }
        if self.sweep {
            h += LEGEND_H + PANEL_H;
        }
        h
    }
}

/// Whether `r` has anything to chart: load cells, idle or slow-clients
/// measurements.
pub fn has_contents(r: &Results) -> bool {
    !r.cells.is_empty() || !r.idle.is_empty() || !r.slow.is_empty()
}

/// The chart for `r` as an SVG document.
pub fn render(r: &Results) -> anyhow::Result<String> {
    anyhow::ensure!(
        has_contents(r),
        "nothing to chart: no load cells, idle or slow-clients measurements"
    );
    let what = Contents::of(r);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, what.height())).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (header, mut rest) = root.split_vertically(HEADER_H);
        let title = "sockserv: fork vs thread vs the rest, per policy";
        let bold = font(22.0).style(FontStyle::Bold).color(&INK);
        text(
            &header,
            title,
            &bold.pos(Pos::new(HPos::Left, VPos::Top)),
            (14, 10),
        )?;
        let caption = text_style(13.0, GREY, HPos::Left, VPos::Top);
        text(&header, &r.caption(), &caption, (14, 44))?;
        if !what.workloads.is_empty() {
            let (strip, below) = rest.split_vertically(LEGEND_H);
            let items: Vec<Key> = (transports(r).into_iter().enumerate())
                .map(|(t, label)| Key {
                    label,
                    colour: TRANSPORT_COLOURS[t % 4],
                    kind: KeyKind::Box,
                })
                .collect();
            legend_strip(&strip, "bars, one per transport:", &items)?;
            rest = below;
            for workload in &what.workloads {
                let (row, below) = rest.split_vertically(PANEL_H);
                let (left, right) = row.split_horizontally(WIDTH / 2);
                draw_bars(&left, &matrix_panel(r, workload, Metric::Rate))?;
                draw_bars(&right, &matrix_panel(r, workload, Metric::P99))?;
                rest = below;
            }
        }
        if what.idle || what.slow {
            let (row, below) = rest.split_vertically(PANEL_H);
            let (left, right) = row.split_horizontally(WIDTH / 2);
            let mut panels = Vec::new();
            if what.idle {
                panels.push(idle_panel(r));
            }
            if what.slow {
                panels.push(slow_panel(r));
            }
            for (area, panel) in [left, right].iter().zip(&panels) {
                draw_bars(area, panel)?;
            }
            rest = below;
        }
        if what.sweep {
            let (strip, below) = rest.split_vertically(LEGEND_H);
            let sweep = compare::sweep_cells(r);
            let mut items: Vec<Key> = (r.policies().into_iter().enumerate())
                .filter(|(_, p)| sweep.iter().any(|c| &c.policy == p))
                .map(|(i, p)| Key {
                    colour: policy_colour(&p, i),
                    label: p,
                    kind: KeyKind::Line,
                })
                .collect();
            if sweep.iter().any(|c| c.load.errors_total > 0) {
                items.push(Key {
                    label: "the cell had errors".into(),
                    colour: INK,
                    kind: KeyKind::Cross,
                });
            }
            legend_strip(&strip, "connection-count sweep, a line per policy:", &items)?;
            let (left, right) = below.split_horizontally(WIDTH / 2);
            sweep_panel(&left, r, Metric::Rate)?;
            sweep_panel(&right, r, Metric::P99)?;
        }
        root.present().context("render the chart")?;
    }
    Ok(svg)
}

/// Draws the chart for `r` into `path` (SVG).
pub fn draw(r: &Results, path: &Path) -> anyhow::Result<()> {
    let svg = render(r)?;
    std::fs::write(path, svg).with_context(|| format!("write chart {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::compare::{Idle, Latency, Load, Peak, Slow};

    fn cell(policy: &str, transport: &str, workload: &str, conns: u64, rate: f64) -> Cell {
        Cell {
            server: "sockserv".into(),
            policy: policy.into(),
            transport: transport.into(),
            workload: workload.into(),
            connections: conns,
            load: Load {
                requests_per_s: rate,
                errors_total: if conns > 1000 { 5 } else { 0 },
                requests_ok: 0,
                warmup_ok: None,
                latency: Latency {
                    p50_us: 10,
                    p99_us: 100 + conns,
                    p999_us: 300,
                },
            },
            peak: Peak::default(),
            server_counted: None,
        }
    }

    fn idle(policy: &str, connections: u64, after: u64) -> Idle {
        Idle {
            server: "sockserv".into(),
            policy: policy.into(),
            transport: "tcp".into(),
            connections,
            pss_before_kib: 1000,
            pss_after_kib: after,
            processes: 1,
            threads: 1,
        }
    }

    fn slow(policy: &str, latency_us: Option<f64>, locked_out: bool, refused: bool) -> Slow {
        Slow {
            policy: policy.into(),
            transport: "tcp".into(),
            silent: 100,
            stalled: 100,
            bound_s: 5.0,
            latency_us,
            locked_out,
            refused,
            note: String::new(),
        }
    }

    fn everything() -> Results {
        let mut cells = vec![
            cell("fork", "tcp", "connect", 16, 5000.0),
            cell("thread", "tcp", "connect", 16, 9000.0),
            cell("fork", "unix", "connect", 16, 7000.0),
            cell("thread", "unix", "persistent", 16, 90000.0),
        ];
        for conns in [16, 1000, 10000] {
            cells.push(cell("fork", "tcp", "sweep", conns, 80000.0 / conns as f64));
            cells.push(cell(
                "thread",
                "tcp",
                "sweep",
                conns,
                90000.0 / conns as f64,
            ));
        }
        Results {
            cells,
            idle: vec![
                idle("fork", 200, 8200),
                idle("thread", 200, 3600),
                idle("pool", 8, 1000),
            ],
            slow: vec![
                slow("fork", Some(812.0), false, false),
                slow("thread", None, true, false),
                slow("pool", None, false, true),
            ],
            notes: Vec::new(),
            meta: serde_json::json!({"kind": "meta", "cpu": "Test CPU", "cpus": "2",
                "kernel": "6.1", "rev": "abc1234", "stamp": "20261201T000000Z",
                "duration_s": "2", "warmup_s": "0.5", "connections": "16"})
            .as_object()
            .cloned(),
        }
    }

    /// The (fill colour, top y, bottom y) of every filled rectangle.
    fn rects(svg: &str) -> Vec<(String, i32, i32)> {
        let attr = |tag: &str, name: &str| -> Option<String> {
            let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(tag[at..].split('"').next()?.to_string())
        };
        svg.split("<rect")
            .skip(1)
            .filter_map(|t| {
                let t = &t[..t.find("/>")?];
                let y: i32 = attr(t, "y")?.parse().ok()?;
                let h: i32 = attr(t, "height")?.parse().ok()?;
                Some((attr(t, "fill")?, y, y + h))
            })
            .collect()
    }

    #[test]
    fn draws_every_panel_with_its_labels() {
        let svg = render(&everything()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for label in [
            "Test CPU (2 CPUs), Linux 6.1, sockserv abc1234",
            "connect: requests/s (higher is better)",
            "connect: p99 latency, log scale (lower is better)",
            "persistent: requests/s",
            "memory per idle connection, 200 held",
            "36 KiB",
            "holds 8",
            "slow clients: one request beside 100 silent + 100 stalled",
            "812 µs",
            "locked out: no answer within 5 s",
            "refused",
            "sweep: requests/s against connections, log-log",
            "sweep: p99 latency against connections",
            "the cell had errors",
            "10k",
            "9k",
            "100 µs",
            "1 ms",
        ] {
            assert!(svg.contains(label), "chart lacks {label:?}");
        }
    }

    #[test]
    fn the_transport_legend_sits_above_the_bars_never_on_them() {
        let svg = render(&everything()).unwrap();
        let strip = (HEADER_H + LEGEND_H) as i32;
        let blue = "#1F77B4";
        let (swatches, bars): (Vec<_>, Vec<_>) = (rects(&svg).into_iter())
            .filter(|(fill, _, _)| fill == blue)
            .partition(|(_, _, bottom)| *bottom <= strip);
        assert_eq!(swatches.len(), 1, "one tcp swatch in the legend strip");
        assert!(bars.len() >= 4, "tcp bars: {bars:?}");
        assert!(bars.iter().all(|(_, top, _)| *top > strip), "{bars:?}");
    }

    #[test]
    fn slow_clients_alone_make_a_chart_with_the_lockout_hatched() {
        let r = Results {
            slow: vec![
                slow("fork", Some(812.0), false, false),
                slow("sync", None, true, false),
            ],
            ..Results::default()
        };
        let svg = render(&r).unwrap();
        assert!(
            svg.contains("locked\n") || svg.contains(">\nlocked"),
            "{svg}"
        );
        assert!(svg.contains("stroke=\"#BE1E2D\""), "no hatching: {svg}");
        assert!(
            !svg.contains("connect:") && !svg.contains("sweep:"),
            "{svg}"
        );
    }

    #[test]
    fn log_scales_tick_every_decade_and_leave_room_above() {
        let s = Scale::log([26.0, 16_000.0].into_iter(), 0.8);
        let Scale::Log { lo, hi } = s else {
            panic!("not a log scale");
        };
        assert_eq!(lo, 10.0);
        assert!((s.frac(16_000.0) - 0.8).abs() < 1e-9, "{hi}");
        let majors: Vec<f64> = (s.ticks().into_iter())
            .filter(|(_, major)| *major)
            .map(|(v, _)| v)
            .collect();
        assert_eq!(majors, [10.0, 100.0, 1000.0, 10_000.0, 100_000.0]);
        assert_eq!((s.frac(10.0), s.frac(hi), s.frac(0.0)), (0.0, 1.0, 0.0));
        let third = s.frac(100.0);
        assert!(
            (s.frac(1000.0) - 2.0 * third).abs() < 1e-9,
            "decades evenly spaced"
        );
        // Two decades: the 2s and 5s are labelled too.
        let s = Scale::Log {
            lo: 100.0,
            hi: 6000.0,
        };
        let labelled: Vec<f64> = (s.ticks().into_iter())
            .filter(|(_, major)| *major)
            .map(|(v, _)| v)
            .collect();
        assert_eq!(labelled, [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]);
        // 10 sits on its decade: the axis starts one lower, so its bar shows.
        let Scale::Log { lo, .. } = Scale::log([10.0, 50.0].into_iter(), 0.8) else {
            panic!("not a log scale");
        };
        assert_eq!(lo, 1.0);
    }

    #[test]
    fn values_read_with_units() {
        assert_eq!(Unit::Micros.fmt(812.0), "812 µs");
        assert_eq!(Unit::Micros.fmt(3100.0), "3.1 ms");
        assert_eq!(Unit::Micros.fmt(1000.0), "1 ms");
        assert_eq!(Unit::Micros.fmt(5_400_000.0), "5.4 s");
        assert_eq!(Unit::Rate.fmt(335_000.0), "335k");
        assert_eq!(Unit::Rate.fmt(1_600.0), "1.6k");
        assert_eq!(Unit::Rate.fmt(850.0), "850");
        assert_eq!(Unit::Kib.fmt(0.5), "0.5 KiB");
        assert_eq!(Unit::Kib.fmt(36.5), "36 KiB");
        assert_eq!(Unit::Count.fmt(10_000.0), "10k");
    }

    #[test]
    fn nothing_to_chart_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(draw(&Results::default(), &dir.path().join("c.svg")).is_err());
        assert!(!has_contents(&Results::default()));
    }
}
