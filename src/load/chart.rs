//! The comparison chart: for each workload, request rate and p99 latency
//! per policy, one bar per transport. Drawn with plotters into an SVG file.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use super::compare::{Cell, Results};

const PANEL_W: u32 = 640;
const PANEL_H: u32 = 300;
/// The title and caption strip above the panels.
const HEADER_H: u32 = 60;
const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// What one panel shows.
#[derive(Clone, Copy)]
enum Metric {
    Rate,
    P99,
}

impl Metric {
    fn value(self, c: &Cell) -> f64 {
        match self {
            Metric::Rate => c.load.requests_per_s,
            Metric::P99 => c.load.latency.p99_us as f64 / 1000.0,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Metric::Rate => "requests/s (higher is better)",
            Metric::P99 => "p99 latency, ms (lower is better)",
        }
    }
}

/// Draws the chart for `r` into `path` (SVG).
pub fn draw(r: &Results, path: &Path) -> anyhow::Result<()> {
    // The connection-count sweep has its own table, not a panel here.
    let workloads = super::compare::distinct(
        r.cells
            .iter()
            .filter(|c| c.workload != "sweep")
            .map(|c| c.workload.as_str()),
    );
    anyhow::ensure!(!workloads.is_empty(), "no load cells to chart");
    let height = HEADER_H + PANEL_H * workloads.len() as u32;
    let root = SVGBackend::new(path, (PANEL_W * 2, height)).into_drawing_area();
    root.fill(&WHITE).context("draw background")?;
    let (header, body) = root.split_vertically(HEADER_H);
    let title = "sockserv: requests/s and p99 latency per policy, one bar per transport";
    header
        .draw_text(title, &("sans-serif", 20).into_text_style(&header), (12, 8))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    header
        .draw_text(
            &r.caption(),
            &("sans-serif", 13).into_text_style(&header),
            (12, 36),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows = body.split_evenly((workloads.len(), 2));
    for (i, workload) in workloads.iter().enumerate() {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| &c.workload == workload).collect();
        for (j, metric) in [Metric::Rate, Metric::P99].into_iter().enumerate() {
            panel(&rows[i * 2 + j], workload, &cells, metric)
                .with_context(|| format!("draw {workload} panel into {}", path.display()))?;
        }
    }
    root.present()
        .with_context(|| format!("write chart {}", path.display()))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    workload: &str,
    cells: &[&Cell],
    metric: Metric,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let policies = super::compare::distinct(cells.iter().map(|c| c.policy.as_str()));
    let transports = super::compare::distinct(cells.iter().map(|c| c.transport.as_str()));
    let slots = transports.len() + 1; // one empty slot between policy groups
    let top = cells
        .iter()
        .map(|c| metric.value(c))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{workload}: {}", metric.title()),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..policies.len() * slots, 0.0..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names = policies.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_label_formatter(&|v| match metric {
            Metric::Rate => format!("{v:.0}"),
            Metric::P99 => format!("{v:.1}"),
        })
        .x_labels(policies.len() * slots)
        .x_label_formatter(&|x| {
            if x % slots == transports.len() / 2 {
                names.get(x / slots).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (t, transport) in transports.iter().enumerate() {
        let colour = COLOURS[t % COLOURS.len()];
        let bars = cells
            .iter()
            .filter(|c| &c.transport == transport)
            .filter_map(|c| {
                let p = policies.iter().position(|p| p == &c.policy)?;
                let x = p * slots + t;
                Some(Rectangle::new(
                    [(x, 0.0), (x + 1, metric.value(c))],
                    colour.filled(),
                ))
            });
        // Each bar's value above it, so a tiny bar still reads.
        let labels = cells
            .iter()
            .filter(|c| &c.transport == transport)
            .filter_map(|c| {
                let p = policies.iter().position(|p| p == &c.policy)?;
                let v = metric.value(c);
                let text = match metric {
                    Metric::Rate if v >= 10_000.0 => format!("{:.0}k", v / 1000.0),
                    Metric::Rate => format!("{v:.0}"),
                    Metric::P99 => format!("{v:.1}"),
                };
                Some(Text::new(
                    text,
                    (p * slots + t, v + top * 0.01),
                    ("sans-serif", 9).into_font(),
                ))
            });
        chart
            .draw_series(labels)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(bars)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(transport.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::compare::{Latency, Load, Peak};

    fn cell(policy: &str, transport: &str, workload: &str, rate: f64) -> Cell {
        Cell {
            server: "sockserv".into(),
            policy: policy.into(),
            transport: transport.into(),
            workload: workload.into(),
            connections: 16,
            load: Load {
                requests_per_s: rate,
                errors_total: 0,
                requests_ok: 0,
                warmup_ok: None,
                latency: Latency {
                    p50_us: 10,
                    p99_us: 100,
                    p999_us: 300,
                },
            },
            peak: Peak::default(),
            server_counted: None,
        }
    }

    #[test]
    fn draws_an_svg_with_every_policy_and_transport() {
        let r = Results {
            cells: vec![
                cell("fork", "tcp", "connect", 5000.0),
                cell("thread", "tcp", "connect", 9000.0),
                cell("fork", "unix", "connect", 7000.0),
                cell("thread", "unix", "persistent", 90000.0),
            ],
            idle: Vec::new(),
            meta: serde_json::json!({"kind": "meta", "cpu": "Test CPU", "cpus": "2",
                "kernel": "6.1", "rev": "abc1234", "stamp": "20261201T000000Z",
                "duration_s": "2", "warmup_s": "0.5", "connections": "16"})
            .as_object()
            .cloned(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        draw(&r, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for label in [
            "fork",
            "thread",
            "tcp",
            "unix",
            "connect",
            "persistent",
            "Test CPU (2 CPUs), Linux 6.1, sockserv abc1234",
            "9000",
        ] {
            assert!(svg.contains(label), "chart lacks {label}");
        }
    }

    #[test]
    fn no_cells_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(draw(&Results::default(), &dir.path().join("c.svg")).is_err());
    }
}
