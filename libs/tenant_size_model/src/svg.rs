//! A picture of a model and its result, for a person: SVG built with the `svg` crate.
//!
//! Branches are horizontal lanes on one LSN axis (parents above their children, in model
//! order); a child's first point hangs from its branch point by a thin connector. WAL the
//! result keeps is a thick line, WAL it does not keep a thin one; a snapshot is a red dot with
//! its size; a branch's retention cutoff is a dashed line across its lane. Every point is
//! labelled with its LSN and the choice made, and the total is in the title. The output is
//! deterministic (no timestamps, fixed number formatting), so it can be compared byte for byte.

use svg::Document;
use svg::node::element::{Circle, Group, Line, Path, Text, Title};

use crate::calculation::{Method, SizeResult};
use crate::model::StorageModel;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 140.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 70.0;
const LANE: f64 = 100.0;
const BOTTOM: f64 = 60.0;
const FONT: &str = "DejaVu Sans, Arial, sans-serif";

/// The picture's size in pixels (width, height) for a model with `branches` lanes; the SVG
/// carries it as its `width` and `height`.
pub fn picture_size(branches: usize) -> (u32, u32) {
    let height = TOP + LANE * branches.max(1) as f64 + BOTTOM;
    (WIDTH as u32, height as u32)
}

/// Renders `model` with the choices of `result` (which must come from `calculate(model)`;
/// segments without a result entry are drawn as skipped).
pub fn render_svg(model: &StorageModel, result: &SizeResult) -> String {
    let (width, height) = picture_size(model.branches.len());
    let (min_lsn, max_lsn) = lsn_range(model);
    let x = |lsn: u64| -> f64 {
        let plot = WIDTH - LEFT - RIGHT;
        if max_lsn == min_lsn {
            LEFT + plot / 2.0
        } else {
            LEFT + plot * (lsn - min_lsn) as f64 / (max_lsn - min_lsn) as f64
        }
    };
    let lane_y = |branch: usize| TOP + LANE * branch as f64 + LANE / 2.0;
    let method = |index: usize| {
        result
            .segments
            .get(index)
            .map_or(Method::Skipped, |s| s.method)
    };

    let title = format!(
        "Synthetic size: {} ({} bytes)",
        human_bytes(result.total_size),
        result.total_size
    );
    let mut document = Document::new()
        .set("xmlns", "http://www.w3.org/2000/svg")
        .set("width", width)
        .set("height", height)
        .set("viewBox", (0, 0, width, height))
        .set("font-family", FONT)
        .add(Title::new(title.clone()))
        .add(
            svg::node::element::Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "white"),
        )
        .add(text(WIDTH / 2.0, 30.0, &title, 20, "middle").set("font-weight", "bold"));

    // Lanes: the branch name and a faint baseline over the branch's extent.
    for (branch_index, branch) in model.branches.iter().enumerate() {
        let y = lane_y(branch_index);
        document = document.add(
            text(10.0, y + 5.0, &lane_label(&branch.name), 14, "start")
                .add(Title::new(branch.name.clone())),
        );
        let lsns = model
            .segments
            .iter()
            .filter(|s| s.branch == branch_index)
            .map(|s| s.lsn);
        if let (Some(first), Some(last)) = (lsns.clone().min(), lsns.max()) {
            document = document.add(line(x(first), y, x(last), y, "#dddddd", 1.0));
        }
        if let Some(cutoff) = branch
            .retention_cutoff
            .filter(|c| (min_lsn..=max_lsn).contains(c))
        {
            let cx = x(cutoff);
            // The label goes below the lane, clear of the points' labels above and below it.
            document = document
                .add(
                    line(cx, y - LANE * 0.42, cx, y + LANE * 0.42, "#c0392b", 1.5)
                        .set("stroke-dasharray", "6,4"),
                )
                .add(
                    text(
                        cx + 4.0,
                        y + LANE * 0.42 + 8.0,
                        "retention cutoff",
                        10,
                        "start",
                    )
                    .set("fill", "#c0392b"),
                );
        }
    }

    // Edges: the WAL from each point's parent.
    let mut edges = Group::new();
    for (index, segment) in model.segments.iter().enumerate() {
        let Some(parent_index) = segment.parent else {
            continue;
        };
        let parent = &model.segments[parent_index];
        let (x0, y0) = (x(parent.lsn), lane_y(parent.branch));
        let (x1, y1) = (x(segment.lsn), lane_y(segment.branch));
        if parent.branch != segment.branch {
            edges = edges.add(
                Path::new()
                    .set(
                        "d",
                        format!("M {x0:.1} {y0:.1} L {x0:.1} {y1:.1} L {x1:.1} {y1:.1}"),
                    )
                    .set("fill", "none")
                    .set("stroke", "#888888")
                    .set("stroke-width", 1.5),
            );
        }
        let kept = method(index) == Method::Wal;
        let (colour, stroke) = if kept {
            ("#2e86c1", 6.0)
        } else {
            ("#aaaaaa", 1.5)
        };
        if x1 > x0 || parent.branch == segment.branch {
            edges = edges.add(line(x0.min(x1), y1, x1, y1, colour, stroke));
        }
    }
    document = document.add(edges);

    // Points: a dot, a red circle for a snapshot, the LSN below and the choice above. Labels of
    // points close together on a lane are staggered so they stay readable.
    let mut last_label_x = vec![f64::NEG_INFINITY; model.branches.len()];
    let mut stagger = vec![false; model.branches.len()];
    for (index, segment) in model.segments.iter().enumerate() {
        let (px, py) = (x(segment.lsn), lane_y(segment.branch));
        let chosen = method(index);
        if chosen == Method::SnapshotHere {
            document = document.add(circle(px, py, 9, "#e74c3c"));
        }
        document = document.add(circle(px, py, 3, "#222222"));
        let lane = segment.branch;
        stagger[lane] = px - last_label_x[lane] < 80.0 && !stagger[lane];
        last_label_x[lane] = px;
        let shift = if stagger[lane] { 13.0 } else { 0.0 };
        let choice = match chosen {
            Method::Wal => "WAL".to_string(),
            Method::Skipped => "skipped".to_string(),
            Method::SnapshotHere => match segment.size {
                Some(size) => format!("snapshot {}", human_bytes(size)),
                None => "snapshot".to_string(),
            },
        };
        let needed = if segment.needed { ", needed" } else { "" };
        document = document
            .add(text(
                px,
                py - 16.0 - shift,
                &format!("{choice}{needed}"),
                11,
                "middle",
            ))
            .add(
                text(
                    px,
                    py + 22.0 + shift,
                    &format_lsn(segment.lsn),
                    11,
                    "middle",
                )
                .set("fill", "#555555"),
            );
    }

    let legend_y = f64::from(height) - 20.0;
    document = document
        .add(line(LEFT, legend_y, LEFT + 30.0, legend_y, "#2e86c1", 6.0))
        .add(text(LEFT + 36.0, legend_y + 4.0, "WAL kept", 11, "start"))
        .add(circle(LEFT + 140.0, legend_y, 7, "#e74c3c"))
        .add(text(
            LEFT + 152.0,
            legend_y + 4.0,
            "snapshot (logical size)",
            11,
            "start",
        ))
        .add(
            line(
                LEFT + 320.0,
                legend_y - 8.0,
                LEFT + 320.0,
                legend_y + 8.0,
                "#c0392b",
                1.5,
            )
            .set("stroke-dasharray", "6,4"),
        )
        .add(text(
            LEFT + 328.0,
            legend_y + 4.0,
            "retention cutoff",
            11,
            "start",
        ))
        .add(text(
            WIDTH - RIGHT,
            legend_y + 4.0,
            &format!("LSN {} – {}", format_lsn(min_lsn), format_lsn(max_lsn)),
            11,
            "end",
        ));
    document.to_string()
}

/// A branch name that fits the lane margin: long names (a timeline id) keep their first 12
/// characters; the full name is the label's tooltip.
fn lane_label(name: &str) -> String {
    if name.chars().count() <= 14 {
        name.to_string()
    } else {
        format!("{}…", name.chars().take(12).collect::<String>())
    }
}

/// An LSN the way PostgreSQL prints it (`16/B374D848`).
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Bytes with a binary unit, one decimal (`350 B`, `1.5 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn lsn_range(model: &StorageModel) -> (u64, u64) {
    let lsns = model.segments.iter().map(|s| s.lsn);
    (lsns.clone().min().unwrap_or(0), lsns.max().unwrap_or(0))
}

fn line(x1: f64, y1: f64, x2: f64, y2: f64, colour: &str, width: f64) -> Line {
    Line::new()
        .set("x1", format!("{x1:.1}"))
        .set("y1", format!("{y1:.1}"))
        .set("x2", format!("{x2:.1}"))
        .set("y2", format!("{y2:.1}"))
        .set("stroke", colour)
        .set("stroke-width", width)
        .set("stroke-linecap", "round")
}

fn circle(cx: f64, cy: f64, r: u32, fill: &str) -> Circle {
    Circle::new()
        .set("cx", format!("{cx:.1}"))
        .set("cy", format!("{cy:.1}"))
        .set("r", r)
        .set("fill", fill)
}

fn text(x: f64, y: f64, content: &str, size: u32, anchor: &str) -> Text {
    Text::new(content)
        .set("x", format!("{x:.1}"))
        .set("y", format!("{y:.1}"))
        .set("font-size", size)
        .set("text-anchor", anchor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calculate;
    use crate::tests::worked_example;

    /// Compares with the committed picture; `UPDATE_SNAPSHOTS=1` rewrites it instead. The files
    /// are also what test_runner's Chromium test renders.
    fn check_snapshot(name: &str, svg: &str) {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, svg).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_SNAPSHOTS=1 to create it)"));
        assert!(
            expected == svg,
            "{path} differs from the rendered picture (UPDATE_SNAPSHOTS=1 rewrites it)"
        );
    }

    #[test]
    fn worked_examples_render_as_committed() {
        for (wal, name) in [
            (200, "worked_example_900.svg"),
            (1000, "worked_example_1050.svg"),
        ] {
            let model = worked_example(wal);
            let result = calculate(&model).unwrap();
            let svg = render_svg(&model, &result);
            assert!(svg.contains(&format!("({} bytes)", result.total_size)));
            for segment in &model.segments {
                assert!(svg.contains(&format_lsn(segment.lsn)), "{}", segment.lsn);
            }
            assert!(svg.contains("retention cutoff"));
            let (width, height) = picture_size(model.branches.len());
            assert!(svg.contains(&format!("width=\"{width}\"")), "{svg}");
            assert!(svg.contains(&format!("height=\"{height}\"")), "{svg}");
            check_snapshot(name, &svg);
        }
    }

    #[test]
    fn names_are_escaped_and_empty_models_render() {
        let mut model = worked_example(200);
        model.branches[1].name = "<child & \"co\">".into();
        let result = calculate(&model).unwrap();
        let svg = render_svg(&model, &result);
        assert!(svg.contains("&lt;child &amp;"), "{svg}");
        let empty = StorageModel::default();
        let svg = render_svg(&empty, &calculate(&empty).unwrap());
        assert!(svg.contains("(1 bytes)"));
    }

    #[test]
    fn formats() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(human_bytes(350), "350 B");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
        assert_eq!(lane_label("main"), "main");
        assert_eq!(
            lane_label("3aa8fcc61f6d357410b7de754b1d9001"),
            "3aa8fcc61f6d…"
        );
    }
}
