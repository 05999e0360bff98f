//! The report: one section per scenario (notes and markdown tables), the targets each scenario
//! measured, and the whole document with the machine it ran on.

use std::fmt::Write as _;

/// A markdown table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Optional line printed above the table.
    pub caption: Option<String>,
    /// Column names.
    pub header: Vec<String>,
    /// Rows, as many cells as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names and no rows.
    pub fn new(header: &[&str]) -> Table {
        Table {
            caption: None,
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The same table with a caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Table {
        self.caption = Some(caption.into());
        self
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Markdown: the caption, the header, the rule and the rows.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        if let Some(c) = &self.caption {
            out.push_str(c);
            out.push_str("\n\n");
        }
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.header));
        let rule: Vec<String> = self.header.iter().map(|_| "---".to_string()).collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The measured value is within the target.
    Met,
    /// The measured value is outside the target.
    Missed,
    /// The scenario did not run, failed or was skipped.
    NotMeasured,
}

impl Verdict {
    /// `MET`, `MISSED` or `not measured`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "MET",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One line of the targets table.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is measured, e.g. `host overhead p50 (1 caller)`.
    pub name: String,
    /// The target, e.g. `< 0.2 ms`.
    pub goal: String,
    /// The measured value with its unit.
    pub measured: String,
    /// Met, missed or not measured.
    pub verdict: Verdict,
    /// By how much it was met or missed.
    pub margin: String,
}

impl Target {
    /// A target `measured < limit` (smaller is better).
    pub fn below(name: &str, measured: f64, limit: f64, unit: &str, digits: usize) -> Target {
        let met = measured < limit;
        let diff = with_unit((limit - measured).abs(), digits, unit);
        let margin = if met {
            if limit > 0.0 {
                format!(
                    "{diff} under ({:.0}% of the target)",
                    100.0 * measured / limit
                )
            } else {
                format!("{diff} under")
            }
        } else if limit > 0.0 {
            format!("{diff} over ({:.1}× the target)", measured / limit)
        } else {
            format!("{diff} over")
        };
        Target {
            name: name.to_string(),
            goal: format!("< {}", with_unit(limit, digits, unit)),
            measured: with_unit(measured, digits, unit),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            margin,
        }
    }

    /// A target `measured >= limit` (larger is better).
    pub fn at_least(name: &str, measured: f64, limit: f64, unit: &str, digits: usize) -> Target {
        let met = measured >= limit;
        let margin = if limit > 0.0 {
            let factor = measured / limit;
            if met {
                format!("{factor:.2}× the target")
            } else {
                format!(
                    "{} short ({factor:.2}× the target)",
                    with_unit(limit - measured, digits, unit)
                )
            }
        } else {
            String::new()
        };
        Target {
            name: name.to_string(),
            goal: format!("≥ {}", with_unit(limit, digits, unit)),
            measured: with_unit(measured, digits, unit),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            margin,
        }
    }

    /// A target `measured <= limit` (smaller is better, the limit itself allowed).
    pub fn at_most(name: &str, measured: f64, limit: f64, unit: &str, digits: usize) -> Target {
        let met = measured <= limit;
        let diff = with_unit((limit - measured).abs(), digits, unit);
        let margin = if !met {
            if limit > 0.0 {
                format!("{diff} over ({:.1}× the target)", measured / limit)
            } else {
                format!("{diff} over")
            }
        } else if measured == limit {
            "exactly on target".into()
        } else {
            format!("{diff} under")
        };
        Target {
            name: name.to_string(),
            goal: format!("≤ {}", with_unit(limit, digits, unit)),
            measured: with_unit(measured, digits, unit),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            margin,
        }
    }

    /// A target `measured <= limit` on counts (tokens, 429s).
    pub fn at_most_count(name: &str, measured: u64, limit: u64, unit: &str) -> Target {
        let met = measured <= limit;
        Target {
            name: name.to_string(),
            goal: format!("{limit} {unit}"),
            measured: format!("{measured} {unit}"),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            margin: if met {
                "exactly on target".into()
            } else {
                format!("{} {unit} too many", measured - limit)
            },
        }
    }

    /// A target the run could not measure, with the reason.
    pub fn not_measured(name: &str, goal: &str, why: &str) -> Target {
        Target {
            name: name.to_string(),
            goal: goal.to_string(),
            measured: "—".into(),
            verdict: Verdict::NotMeasured,
            margin: why.to_string(),
        }
    }
}

/// One scenario's part of the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Lines printed under the heading (setup, what is measured, caveats).
    pub notes: Vec<String>,
    /// Result tables.
    pub tables: Vec<Table>,
    /// Targets this scenario measured.
    pub targets: Vec<Target>,
    /// The scenario failed (the notes say why).
    pub failed: bool,
}

impl Section {
    /// Markdown: `## title`, the notes, then the tables.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        for n in &self.notes {
            out.push_str(n);
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for t in &self.tables {
            out.push_str(&t.to_markdown());
            out.push('\n');
        }
        out
    }
}

/// The whole document.
#[derive(Debug, Clone, Default)]
pub struct Document {
    /// Lines of the header (machine, date, commit, options).
    pub header: Vec<String>,
    /// Scenario sections in run order.
    pub sections: Vec<Section>,
    /// Lines after the targets table.
    pub footer: Vec<String>,
}

impl Document {
    /// Markdown of the report: header, sections, targets table, footer.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# defender-soar benchmark report\n\n");
        for h in &self.header {
            let _ = writeln!(out, "- {h}");
        }
        out.push('\n');
        for s in &self.sections {
            out.push_str(&s.to_markdown());
        }
        let mut targets = Table::new(&["target", "goal", "measured", "result", "by how much"]);
        for t in self.sections.iter().flat_map(|s| &s.targets) {
            targets.row(vec![
                t.name.clone(),
                t.goal.clone(),
                t.measured.clone(),
                t.verdict.as_str().to_string(),
                t.margin.clone(),
            ]);
        }
        if !targets.rows.is_empty() {
            out.push_str("## Targets\n\n");
            out.push_str(&targets.to_markdown());
            out.push('\n');
        }
        for f in &self.footer {
            out.push_str(f);
            out.push('\n');
        }
        out
    }
}

/// `x` with `digits` decimals and its unit (`%` and `×` without a space).
fn with_unit(x: f64, digits: usize, unit: &str) -> String {
    match unit {
        "%" | "×" => format!("{x:.digits$}{unit}"),
        _ => format!("{x:.digits$} {unit}"),
    }
}

/// `x` with `digits` decimals.
pub fn num(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// `a / b` as `N.NN×`, or `—` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table() {
        let mut t = Table::new(&["a", "b"]).with_caption("c");
        t.row(vec!["1".into(), "2".into()]);
        assert_eq!(
            t.to_markdown(),
            "c\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"
        );
    }

    #[test]
    fn verdicts_and_margins() {
        let t = Target::below("lag", 0.25, 0.5, "s", 2);
        assert_eq!(t.verdict, Verdict::Met);
        assert_eq!(t.margin, "0.25 s under (50% of the target)");
        let t = Target::below("lag", 1.0, 0.5, "s", 2);
        assert_eq!(t.verdict, Verdict::Missed);
        assert_eq!(t.margin, "0.50 s over (2.0× the target)");
        let t = Target::at_least("x", 5.0, 10.0, "×", 1);
        assert_eq!(t.verdict, Verdict::Missed);
        assert_eq!(t.margin, "5.0× short (0.50× the target)");
        assert_eq!(t.goal, "≥ 10.0×");
        assert_eq!(
            Target::at_most_count("t", 1, 1, "token").verdict,
            Verdict::Met
        );
        assert_eq!(
            Target::at_most_count("t", 3, 1, "token").margin,
            "2 token too many"
        );
        let t = Target::at_most("gets", 1.0, 1.0, "GET", 3);
        assert_eq!(t.verdict, Verdict::Met);
        assert_eq!(t.goal, "≤ 1.000 GET");
        assert_eq!(t.margin, "exactly on target");
        assert_eq!(
            Target::at_most("gets", 0.5, 1.0, "GET", 1).margin,
            "0.5 GET under"
        );
        let t = Target::at_most("gets", 3.0, 1.0, "GET", 1);
        assert_eq!(t.verdict, Verdict::Missed);
        assert_eq!(t.margin, "2.0 GET over (3.0× the target)");
    }

    #[test]
    fn document_has_targets_table() {
        let doc = Document {
            header: vec!["date: x".into()],
            sections: vec![Section {
                title: "s".into(),
                targets: vec![Target::below("n", 1.0, 2.0, "ms", 1)],
                ..Section::default()
            }],
            footer: vec![],
        };
        let md = doc.to_markdown();
        assert!(md.contains("## Targets"));
        assert!(md.contains("| n | < 2.0 ms | 1.0 ms | MET |"));
    }
}
