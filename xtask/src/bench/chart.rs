//! `outages.png`: every trial's outage per system, one panel per scenario, on a shared
//! logarithmic time axis so hb's milliseconds and Heartbeat's seconds fit one picture. Each
//! dot is one trial (hollow: the service had not recovered when the wait ended, so the value
//! is a lower bound); the bar is the median. Outages of 0 ms (no request failed) sit on the
//! left edge.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::report::Results;
use super::scenario::Scenario;
use super::stats::Summary;
use super::testbed::System;

const WIDTH: u32 = 1400;
/// Height of the title block, and of a panel's caption and axis plus each row of dots.
const HEADER_HEIGHT: u32 = 95;
const PANEL_FRAME_HEIGHT: u32 = 80;
const ROW_HEIGHT: u32 = 55;
/// Where 0 ms outages are drawn (the log axis cannot show 0).
const AXIS_MIN_MS: f64 = 0.5;
const FONT: &str = "sans-serif";

fn color(system: System) -> RGBColor {
    match system {
        System::Hb => RGBColor(31, 119, 180),
        System::Keepalived => RGBColor(255, 127, 14),
        System::Heartbeat => RGBColor(44, 160, 44),
    }
}

pub fn draw(results: &Results, path: &Path, font: &Path) -> Result<()> {
    let bytes = std::fs::read(font).with_context(|| format!("reading {}", font.display()))?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable font", font.display()))?;
    plot(results, path).map_err(|err| anyhow!("drawing {}: {err}", path.display()))
}

fn plot(results: &Results, path: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let largest = results
        .trials
        .iter()
        .filter_map(|t| t.outcome.as_ref().ok())
        .map(|m| m.outage_ms)
        .fold(100.0_f64, f64::max);
    // The next power of ten up, so the axis ends on a labelled decade.
    let axis_max = 10f64.powf(largest.log10().floor() + 1.0);

    let rows = results.choices.len().max(1);
    let height = HEADER_HEIGHT
        + Scenario::ALL.len() as u32 * (PANEL_FRAME_HEIGHT + ROW_HEIGHT * rows as u32);
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER_HEIGHT);
    let title = if results.quick {
        "Outage seen by the client, per trial (QUICK RUN, not the benchmark)"
    } else {
        "Outage seen by the client, per trial"
    };
    let grey = RGBColor(90, 90, 90);
    header.draw(&Text::new(title, (20, 10), (FONT, 28).into_font()))?;
    header.draw(&Text::new(
        format!(
            "{}  ·  hb {}",
            results.machine.line(),
            results.machine.hb_revision
        ),
        (20, 46),
        (FONT, 16).into_font().color(&grey),
    ))?;
    header.draw(&Text::new(
        "dot = one trial (hollow: not recovered, a lower bound), bar = median; log scale, 0 ms \
         at the left edge",
        (20, 68),
        (FONT, 16).into_font().color(&grey),
    ))?;

    let panels = body.split_evenly((Scenario::ALL.len(), 1));
    for (panel, scenario) in panels.iter().zip(Scenario::ALL) {
        let mut chart = ChartBuilder::on(panel)
            .caption(scenario.title(), (FONT, 20))
            .margin_left(10)
            .margin_right(30)
            .margin_bottom(5)
            .x_label_area_size(35)
            .y_label_area_size(250)
            .build_cartesian_2d(
                (AXIS_MIN_MS..axis_max).log_scale(),
                -0.5f64..rows as f64 - 0.5,
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(2 * rows + 1)
            .y_label_formatter(&|y| row_label(results, *y))
            .y_label_style((FONT, 16))
            .x_label_style((FONT, 14))
            .x_label_formatter(&|x| format_ms(*x))
            .x_desc("outage (ms)")
            .draw()?;
        for (row, choice) in results.choices.iter().enumerate() {
            let y = row_y(rows, row);
            let measures = results.measures(choice.setting, scenario);
            let outages: Vec<f64> = measures.iter().map(|m| m.outage_ms).collect();
            let style = color(choice.setting.system());
            // Hollow: not recovered when the wait ended (the outage is a lower bound).
            chart.draw_series(measures.iter().enumerate().map(|(index, m)| {
                let shape = if m.censored {
                    style.stroke_width(2)
                } else {
                    style.mix(0.75).filled()
                };
                Circle::new((m.outage_ms.max(AXIS_MIN_MS), y + jitter(index)), 4, shape)
            }))?;
            if let Some(summary) = Summary::of(&outages) {
                let median = summary.median.max(AXIS_MIN_MS);
                chart.draw_series(LineSeries::new(
                    [(median, y - 0.35), (median, y + 0.35)],
                    style.stroke_width(3),
                ))?;
                chart.draw_series(std::iter::once(Text::new(
                    format!("median {}", format_ms(summary.median)),
                    (median, y + 0.45),
                    (FONT, 14).into_font().color(&style),
                )))?;
            }
        }
    }
    root.present()?;
    Ok(())
}

/// The first chosen setting on top (hb's), the last at the bottom.
fn row_y(rows: usize, row: usize) -> f64 {
    (rows - 1 - row) as f64
}

/// The system name (with its setting) at each row's height, nothing elsewhere.
fn row_label(results: &Results, y: f64) -> String {
    if (y - y.round()).abs() > 0.01 {
        return String::new();
    }
    let rows = results.choices.len();
    results
        .choices
        .iter()
        .enumerate()
        .find(|(row, _)| (row_y(rows, *row) - y).abs() < 0.01)
        .map(|(_, choice)| {
            let setting = choice
                .setting
                .label()
                .replace("keepalive ", "")
                .replace("deadtime ", "");
            format!("{} ({setting})", choice.setting.system())
        })
        .unwrap_or_default()
}

/// A small deterministic vertical spread so equal outages do not hide each other.
fn jitter(index: usize) -> f64 {
    const STEPS: [f64; 7] = [0.0, 0.12, -0.12, 0.24, -0.24, 0.06, -0.06];
    STEPS[index % STEPS.len()]
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 || ms == 0.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_labels() {
        assert_eq!(format_ms(0.0), "0 ms");
        assert_eq!(format_ms(0.5), "0.5 ms");
        assert_eq!(format_ms(18.44), "18 ms");
        assert_eq!(format_ms(2500.0), "2.5 s");
    }
}
