//! Rendering: aligned tables for people, pretty-printed JSON for scripts.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// What a command prints: its JSON form comes from `Serialize`, its table form from here.
pub trait Render: Serialize {
    fn table(&self) -> String;
}

/// Prints `view` on stdout in `format`.
pub fn emit<T: Render + ?Sized>(format: Format, view: &T) -> Result<(), Error> {
    let text = match format {
        Format::Table => view.table(),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(view).expect("views serialize");
            json.push('\n');
            json
        }
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `overlayctl network ls | head -1`: the reader has all it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Error::Output),
    }
}

/// Columns padded to their widest cell, three spaces apart (as docker's tables).
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "   ";

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            // Padding after the last column is noise in a terminal and in diffs.
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key   value` lines with the keys aligned: the head of `network inspect`.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        out.push_str(format!("{key:<width$}{GAP}{value}").trim_end());
        out.push('\n');
    }
    out
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A list as one cell: comma-separated, `-` when empty, so that every cell has a word in it.
pub fn joined<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Unix seconds as an RFC 3339 UTC time, e.g. `2024-05-01T12:00:00Z`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil: exact for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_carry_no_trailing_blanks() {
        let mut t = Table::new(&["NAME", "VNI", "X"]);
        t.row(vec!["a-long-name".into(), "4096".into(), "".into()]);
        t.row(vec!["b".into(), "1".into(), "z".into()]);
        assert_eq!(
            t.render(),
            "NAME          VNI    X\na-long-name   4096\nb             1      z\n"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(utc(1_714_564_800), "2024-05-01T12:00:00Z");
    }
}
