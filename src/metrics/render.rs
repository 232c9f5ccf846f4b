//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines, then
//! one line per sample, label values escaped.
//!
//! Only the renderer knows the format; the collectors hand it names, labels and numbers.
//! Names and label names are shelf's own constants; label values come from the tree (pool
//! names, states, error codes) and are escaped here, so no value can break a line.

use std::fmt::Write;

use super::histogram::Snapshot;

/// The content type of this format, for the HTTP reply.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when shelfd restarts).
    Counter,
    /// Any value, read when scraped.
    Gauge,
    /// Observations counted in cumulative buckets, with their sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: an integer is written exactly, a float in the format's spelling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A count or a number of bytes.
    Int(u64),
    /// A ratio, a time in seconds.
    Float(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::Int(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::Float(v)
    }
}

/// An exposition being written. Each family is written whole: its header, then all its
/// samples, before the next family's header (the format requires it).
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

/// Labels of one sample: (name, value) pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Text {
    /// Start a family: its HELP (escaped) and TYPE lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: impl Into<Num>) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.number(value.into());
        self.out.push('\n');
    }

    /// A histogram's samples: cumulative `_bucket{le=...}` lines ending with `+Inf`, which
    /// equals `_count`, then `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &Snapshot) {
        let mut cumulative = 0u64;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            let le = format_float(*bound);
            self.out.push_str(name);
            self.out.push_str("_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let count = h.count();
        self.out.push_str(name);
        self.out.push_str("_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        self.out.push_str(name);
        self.out.push_str("_sum");
        self.labels(labels, None);
        self.out.push(' ');
        self.number(Num::Float(h.sum_seconds));
        self.out.push('\n');
        self.out.push_str(name);
        self.out.push_str("_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: Labels<'_>, le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            debug_assert!(valid_name(k) && !k.starts_with("__"), "label name {k:?}");
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_into(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn number(&mut self, n: Num) {
        match n {
            Num::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Num::Float(v) => self.out.push_str(&format_float(v)),
        }
    }
}

/// A float as the format spells it: `NaN`, `+Inf`, `-Inf`, or Rust's shortest round-trip
/// decimal (which Go's `ParseFloat` reads back exactly).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A label value escaped: backslash, double quote and line feed (the only three the
/// format escapes); everything else, any UTF-8, goes as is.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    escape_label_into(&mut s, v);
    s
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escaped: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric names; label names are the same without `:`, and
/// ours never use one).
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::Histogram;
    use std::time::Duration;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        assert_eq!(escape_label("plain-ümlaut_1.2"), "plain-ümlaut_1.2");
        let mut t = Text::default();
        t.family("shelf_x", Kind::Gauge, "with \\ and\nnewline");
        t.sample("shelf_x", &[("pool", "p\"}\n{"), ("state", "ok")], 3u64);
        assert_eq!(
            t.finish(),
            "# HELP shelf_x with \\\\ and\\nnewline\n# TYPE shelf_x gauge\n\
             shelf_x{pool=\"p\\\"}\\n{\",state=\"ok\"} 3\n"
        );
    }

    #[test]
    fn numbers_are_spelled_as_the_format_reads_them() {
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(20.0), "20");
        let mut t = Text::default();
        t.sample("a", &[], u64::MAX);
        t.sample("b", &[], 1.5);
        assert_eq!(t.finish(), format!("a {}\nb 1.5\n", u64::MAX));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_is_the_count() {
        let h = Histogram::default();
        for ms in [0.05, 0.05, 3.0, 40.0, 120_000.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let snap = h.snapshot();
        let mut t = Text::default();
        t.histogram("shelf_d_seconds", &[("op", "hello")], &snap);
        let text = t.finish();
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter(|l| l.starts_with("shelf_d_seconds_bucket"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                (
                    le.to_string(),
                    l.rsplit(' ').next().unwrap().parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(buckets.len(), snap.bounds.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{text}");
        let inf = buckets.last().unwrap();
        assert_eq!(inf, &("+Inf".to_string(), 5));
        // The two 50 µs observations are under 0.0001 s; 3 ms under 0.005; 40 ms under
        // 0.05; two minutes only under +Inf.
        let at = |le: &str| buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(
            (at("0.0001"), at("0.005"), at("0.05"), at("60")),
            (2, 3, 4, 4)
        );
        assert!(
            text.contains("shelf_d_seconds_count{op=\"hello\"} 5\n"),
            "{text}"
        );
        let sum: f64 = text
            .lines()
            .find(|l| l.starts_with("shelf_d_seconds_sum"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 120.0431).abs() < 1e-6, "{sum}");
        // The `le` label comes after the sample's own labels.
        assert!(text.contains("shelf_d_seconds_bucket{op=\"hello\",le=\"0.0001\"} 2\n"));
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let mut t = Text::default();
        t.histogram("h", &[], &Histogram::default().snapshot());
        let text = t.finish();
        assert!(text.contains("h_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("h_sum 0\nh_count 0\n"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("shelf_pool_free_bytes"));
        assert!(!valid_name("9lives"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
