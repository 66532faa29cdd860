//! Throughput-vs-threads plots, one line per map: the mixes' (1..=cores threads, linear axis) and
//! the scaling run's (1, 2, 4, … threads past the cores, log2 axis) share this one drawing.

use std::path::Path;

use plotters::prelude::*;

/// Distinct, readable line colours (Tableau 10), cycled.
pub fn color(i: usize) -> RGBAColor {
    const C: [(u8, u8, u8); 10] = [
        (214, 39, 40),
        (44, 160, 44),
        (31, 119, 180),
        (255, 127, 14),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b).to_rgba()
}

/// One map's line: its legend name and its (threads, M ops/s) points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How the threads axis is drawn.
#[derive(Clone, Copy)]
pub enum ThreadAxis {
    /// Linear, labelled at the thread counts (the mixes: 1..=cores).
    Linear,
    /// log2, labelled at the powers of two, with a dashed vertical line at the machine's `cores`
    /// (the scaling run: past that line the machine is oversubscribed).
    Log2 { cores: usize },
}

/// M ops/s vs threads, one line per map (epochmap's lines drawn bold), legend in the upper left.
pub fn throughput_vs_threads(
    title: &str,
    lines: &[Line],
    axis: ThreadAxis,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let threads: Vec<f64> = {
        let mut t: Vec<f64> = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    };
    let max_t = threads.iter().cloned().fold(1.0, f64::max);
    let ymax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    // Where a thread count goes on the x axis, the axis' range and how many labels it gets.
    let (height, x, x_range, x_labels): (u32, fn(f64) -> f64, _, usize) = match axis {
        ThreadAxis::Linear => (440, |t| t, 0.8..max_t + 0.2, threads.len()),
        ThreadAxis::Log2 { .. } => (
            520,
            f64::log2,
            -0.3..max_t.log2() + 0.3,
            max_t.log2().round() as usize + 1,
        ),
    };
    // Headroom above the data for the legend: half as much again on the mixes' plots; on the
    // scaling plots enough for one legend row per line.
    let headroom = match axis {
        ThreadAxis::Linear => 1.5,
        ThreadAxis::Log2 { .. } => 1.0 / (1.0 - ((lines.len() + 1) as f64 * 19.0 / 420.0).min(0.7)),
    };
    let root = SVGBackend::new(path, (760, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range, 0f64..(ymax * headroom).max(1.0))?;
    let linear_label = |v: &f64| format!("{v:.0}");
    // Only at whole powers of two: 2^v.
    let log2_label = |v: &f64| {
        if (v - v.round()).abs() < 0.01 && *v > -0.01 {
            format!("{:.0}", 2f64.powf(v.round()))
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(match axis {
            ThreadAxis::Linear => "threads",
            ThreadAxis::Log2 { .. } => "threads (log2)",
        })
        .y_desc("Mops/s")
        .x_labels(x_labels.max(2))
        .x_label_formatter(match axis {
            ThreadAxis::Linear => &linear_label,
            ThreadAxis::Log2 { .. } => &log2_label,
        })
        .draw()?;
    if let ThreadAxis::Log2 { cores } = axis {
        let at = (cores as f64).log2();
        let marker = BLACK.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(at, 0.0), (at, ymax * headroom)],
                6,
                4,
                marker,
            ))?
            .label(format!("{cores} cores: more threads are oversubscribed"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], marker));
    }
    // Thread counts to where the axis puts them.
    let placed: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            name: l.name.clone(),
            points: l.points.iter().map(|&(t, y)| (x(t), y)).collect(),
        })
        .collect();
    draw_lines(&mut chart, &placed, crate::is_ours)?;
    root.present()?;
    Ok(())
}

/// Draws `lines` (points in the chart's coordinates) with round markers, the ones `bold` picks
/// 3 px wide, and the legend in the upper left.
pub fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: &[Line],
    bold: impl Fn(&str) -> bool,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, line) in lines.iter().enumerate() {
        let color = color(i);
        let style = if bold(&line.name) {
            color.stroke_width(3)
        } else {
            color.stroke_width(1)
        };
        chart
            .draw_series(LineSeries::new(line.points.clone(), style))?
            .label(line.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        chart.draw_series(PointSeries::of_element(
            line.points.clone(),
            3,
            color.filled(),
            &|c, s, st| Circle::new(c, s, st),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
