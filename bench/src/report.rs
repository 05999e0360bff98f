//! A benchmark's result as a markdown table.

/// One benchmark's result: a title, context lines and a table.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Heading.
    pub title: String,
    /// Lines printed under the heading (setup, machine).
    pub notes: Vec<String>,
    /// Column names.
    pub header: Vec<String>,
    /// Table rows, as many cells as the header.
    pub rows: Vec<Vec<String>>,
}

impl Report {
    /// Markdown: `### title`, the notes, then the table.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        for n in &self.notes {
            out.push_str(n);
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push('\n');
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table() {
        let r = Report {
            title: "t".into(),
            notes: vec!["n".into()],
            header: vec!["a".into(), "b".into()],
            rows: vec![vec!["1".into(), "2".into()]],
        };
        assert_eq!(
            r.to_markdown(),
            "### t\n\nn\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"
        );
    }
}
