//! Aligned text columns for the CLI's tables (`lbd status`, `lbd table`):
//! one printer, so every table lines up the same way. Like `cilium-dbg bpf
//! lb list`, each view is one data set printed either as JSON or through
//! this.

use std::fmt::Write;

/// A header and rows of cells; each column is as wide as its widest cell
/// (or its header, or its minimum), two spaces apart; the last column is
/// not padded, so no line ends in spaces.
pub struct Columns {
    headers: Vec<String>,
    min: Vec<usize>,
    rows: Vec<Row>,
}

enum Row {
    Cells(Vec<String>),
    /// A line under the previous row, outside the columns (a detail).
    Note(String),
}

const GAP: usize = 2;

impl Columns {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            min: vec![0; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Sets column minimum widths (a short table keeps the usual layout).
    pub fn min_widths(mut self, widths: &[usize]) -> Self {
        for (m, &w) in self.min.iter_mut().zip(widths) {
            *m = w;
        }
        self
    }

    /// One row; missing cells are empty, extra ones are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(Row::Cells(cells));
    }

    /// A free line after the last row, indented by two spaces.
    pub fn note(&mut self, text: impl Into<String>) {
        self.rows.push(Row::Note(text.into()));
    }

    pub fn write(&self, out: &mut String) {
        let mut width: Vec<usize> = self
            .headers
            .iter()
            .zip(&self.min)
            .map(|(h, &m)| h.chars().count().max(m))
            .collect();
        for r in &self.rows {
            if let Row::Cells(cells) = r {
                for (w, c) in width.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
                if i + 1 == cells.len() {
                    text += c;
                } else {
                    let _ = write!(text, "{c:<0$}", w + GAP);
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(out, &self.headers);
        for r in &self.rows {
            match r {
                Row::Cells(cells) => line(out, cells),
                Row::Note(text) => {
                    let _ = writeln!(out, "  {text}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut c = Columns::new(&["Node", "Buckets", "Note"]).min_widths(&[6]);
        c.row(["1", "1365", ""]);
        c.row(["12", "7", "long note here"]);
        c.note("a detail");
        let mut out = String::new();
        c.write(&mut out);
        assert_eq!(
            out,
            "Node    Buckets  Note\n\
             1       1365\n\
             12      7        long note here\n  \
             a detail\n"
        );
    }
}
