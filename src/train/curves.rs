//! The training report's picture: the loss curve and the evaluations, drawn as a small SVG
//! (no plotting library: two panels of polylines with labelled axes).

use std::fmt::Write;

/// One evaluation to plot: step, accuracy, macro-F1 and loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalMark {
    pub step: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub loss: f64,
}

const WIDTH: f64 = 760.0;
const PANEL_HEIGHT: f64 = 240.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const GAP: f64 = 70.0;
/// Points drawn per curve at most (longer curves are averaged into buckets).
const MAX_POINTS: usize = 600;

struct Panel {
    top: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, step: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (step / self.x_max.max(1.0))
    }
    fn y(&self, value: f64) -> f64 {
        let span = (self.y_max - self.y_min).max(1e-9);
        self.top + PANEL_HEIGHT * (1.0 - (value - self.y_min) / span)
    }

    fn frame(&self, svg: &mut String, title: &str, y_label: &str) {
        let (x0, x1) = (LEFT, WIDTH - RIGHT);
        let (y0, y1) = (self.top, self.top + PANEL_HEIGHT);
        let _ = write!(
            svg,
            r##"<text x="{x0}" y="{}" font-size="14" font-weight="bold">{title}</text><rect x="{x0}" y="{y0}" width="{}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##,
            y0 - 10.0,
            x1 - x0
        );
        for i in 0..=4 {
            let value = self.y_min + (self.y_max - self.y_min) * i as f64 / 4.0;
            let y = self.y(value);
            let _ = write!(
                svg,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{value:.3}</text>"##,
                x0 - 6.0,
                y + 4.0
            );
            let step = self.x_max * i as f64 / 4.0;
            let x = self.x(step);
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{step:.0}</text>"##,
                y1 + 16.0
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="middle">step</text><text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{y_label}</text>"##,
            (x0 + x1) / 2.0,
            y1 + 32.0,
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0
        );
    }

    fn line(&self, svg: &mut String, points: &[(f64, f64)], colour: &str, dots: bool) {
        let path: Vec<String> = points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(s, v)| format!("{:.1},{:.1}", self.x(s), self.y(v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        if dots {
            for &(s, v) in points.iter().filter(|(_, v)| v.is_finite()) {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                    self.x(s),
                    self.y(v)
                );
            }
        }
    }
}

fn legend(svg: &mut String, top: f64, entries: &[(&str, &str)]) {
    for (i, (name, colour)) in entries.iter().enumerate() {
        let x = WIDTH - RIGHT - 150.0;
        let y = top + 16.0 + 16.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{y}" font-size="11">{name}</text>"#,
            y - 4.0,
            x + 18.0
        );
    }
}

/// Mean of each bucket, so a long curve keeps its shape in `MAX_POINTS` points.
fn downsample(losses: &[f32]) -> Vec<(f64, f64)> {
    let per = losses.len().div_ceil(MAX_POINTS).max(1);
    losses
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let mean = chunk.iter().map(|&l| l as f64).sum::<f64>() / chunk.len() as f64;
            ((i * per + chunk.len()) as f64, mean)
        })
        .collect()
}

/// The SVG document: training loss per step (top), evaluation accuracy and macro-F1 and
/// evaluation loss at each evaluation (bottom).
pub fn render(title: &str, losses: &[f32], evals: &[EvalMark]) -> String {
    let height = TOP + 2.0 * PANEL_HEIGHT + GAP + 50.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="18" font-size="15">{}</text>"#,
        escape(title)
    );
    let x_max = losses.len().max(1) as f64;
    let loss_points = downsample(losses);
    let eval_losses: Vec<(f64, f64)> = evals.iter().map(|e| (e.step as f64, e.loss)).collect();
    let all_losses = loss_points
        .iter()
        .chain(&eval_losses)
        .map(|p| p.1)
        .filter(|v| v.is_finite());
    let loss_max = all_losses.fold(0.0f64, f64::max).max(1e-3) * 1.05;
    let top = Panel {
        top: TOP + 10.0,
        x_max,
        y_min: 0.0,
        y_max: loss_max,
    };
    top.frame(&mut svg, "loss", "cross-entropy");
    top.line(&mut svg, &loss_points, "#1f77b4", false);
    top.line(&mut svg, &eval_losses, "#d62728", true);
    legend(
        &mut svg,
        top.top,
        &[
            ("training (batch mean)", "#1f77b4"),
            ("evaluation", "#d62728"),
        ],
    );
    let scores = evals.iter().flat_map(|e| [e.accuracy, e.macro_f1]);
    let low = scores.fold(1.0f64, f64::min);
    let bottom = Panel {
        top: top.top + PANEL_HEIGHT + GAP,
        x_max,
        y_min: ((low - 0.05) * 20.0).floor().max(0.0) / 20.0,
        y_max: 1.0,
    };
    bottom.frame(&mut svg, "evaluation", "score");
    let accuracy: Vec<(f64, f64)> = evals.iter().map(|e| (e.step as f64, e.accuracy)).collect();
    let f1: Vec<(f64, f64)> = evals.iter().map(|e| (e.step as f64, e.macro_f1)).collect();
    bottom.line(&mut svg, &accuracy, "#2ca02c", true);
    bottom.line(&mut svg, &f1, "#9467bd", true);
    legend(
        &mut svg,
        bottom.top,
        &[("accuracy", "#2ca02c"), ("macro-F1", "#9467bd")],
    );
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_panels_with_every_evaluation() {
        let losses: Vec<f32> = (0..1500).map(|i| 1.0 / (1.0 + i as f32 / 100.0)).collect();
        let evals: Vec<EvalMark> = (1..=5)
            .map(|e| EvalMark {
                step: e * 300,
                accuracy: 0.7 + e as f64 / 100.0,
                macro_f1: 0.68 + e as f64 / 100.0,
                loss: 0.5,
            })
            .collect();
        let svg = render("job <x>", &losses, &evals);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        // Eval loss dots plus accuracy and F1 dots.
        assert_eq!(svg.matches("<circle").count(), 15);
        assert!(svg.contains("job &lt;x&gt;"));
        // Long curves are averaged down.
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(points.split(' ').count() <= MAX_POINTS);
    }
}
