//! The two text formats `/metrics` answers in, and which one a scraper asked for.
//!
//! prometheus-client writes OpenMetrics only. Prometheus asks for it first, but `promtool check
//! metrics`, older scrapers and most exporters' tooling speak the classic text format
//! (`text/plain; version=0.0.4`) and read OpenMetrics wrongly: a counter's family is
//! `beatd_fires` there and its sample `beatd_fires_total`, so every counter looks like one with
//! no help text. The classic format is OpenMetrics with the comment lines spelled differently,
//! so [`to_text`] rewrites those and copies every sample line as it is.
//!
//! As Prometheus's own client libraries do, the classic format is the answer unless the
//! `Accept` header prefers OpenMetrics: no header, `*/*` and `text/plain` get text.

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a weight above zero and at least that of
    /// `text/plain`, else text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text { Format::OpenMetrics } else { Format::Text }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The classic text format of prometheus-client's OpenMetrics output: a counter family's
/// `# HELP` and `# TYPE` name its `_total` samples, `unknown` is `untyped`, and the `# UNIT`
/// and `# EOF` lines go. Sample lines (all but a few dozen of the text) are copied in runs.
pub fn to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut rest = openmetrics;
    while !rest.is_empty() {
        if !rest.starts_with('#') {
            // Samples up to the next comment line: a '#' after a newline ('#' is rare in sample
            // lines, and memchr finds it an order of magnitude faster than a two-byte search).
            let bytes = rest.as_bytes();
            let mut from = 0;
            let end = loop {
                match memchr::memchr(b'#', &bytes[from..]) {
                    Some(i) if from + i > 0 && bytes[from + i - 1] == b'\n' => break from + i,
                    Some(i) => from += i + 1,
                    None => break bytes.len(),
                }
            };
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let (line, after) = split_line(rest);
        rest = after;
        if let Some(help) = line.strip_prefix("# HELP ") {
            // prometheus-client writes a family's TYPE right after its HELP.
            let (name, text) = help.split_once(' ').unwrap_or((help, ""));
            let (next, after) = split_line(rest);
            let kind = next.strip_prefix("# TYPE ").and_then(|t| t.split_once(' ')).filter(|(n, _)| *n == name);
            match kind {
                Some((_, kind)) => {
                    let (name, kind) = classic(name, kind);
                    push_lines(&mut out, &[&format!("# HELP {name} {text}"), &format!("# TYPE {name} {kind}")]);
                    rest = after;
                }
                None => push_lines(&mut out, &[line]),
            }
        } else if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|t| t.split_once(' ')) {
            let (name, kind) = classic(name, kind);
            push_lines(&mut out, &[&format!("# TYPE {name} {kind}")]);
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            // Not part of the classic format.
        } else {
            push_lines(&mut out, &[line]);
        }
    }
    out
}

/// A family's name and type in the classic format.
fn classic<'a>(name: &str, kind: &'a str) -> (String, &'a str) {
    match kind {
        "counter" => (format!("{name}_total"), kind),
        "unknown" => (name.to_string(), "untyped"),
        _ => (name.to_string(), kind),
    }
}

/// The first line of `text` without its newline, and what follows it.
fn split_line(text: &str) -> (&str, &str) {
    match text.split_once('\n') {
        Some((line, rest)) => (line, rest),
        None => (text, ""),
    }
}

fn push_lines(out: &mut String, lines: &[&str]) {
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_text() {
        // Prometheus 2.x's scrape header.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain;q=0.9, Application/OpenMetrics-Text;q=0.5")), Format::Text);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0")), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("garbage;;q=x,,")), Format::Text);
    }

    #[test]
    fn counters_are_named_by_their_samples_and_the_openmetrics_only_lines_go() {
        let om = "# HELP beatd_jobs Jobs in the config\n\
                  # TYPE beatd_jobs gauge\n\
                  beatd_jobs 2\n\
                  # HELP beatd_fires Fires by outcome\n\
                  # TYPE beatd_fires counter\n\
                  beatd_fires_total{job_name=\"a\",outcome=\"success\"} 3\n\
                  beatd_fires_total{job_name=\"b\",outcome=\"success\"} 0\n\
                  # HELP beatd_wait_seconds Waits\n\
                  # TYPE beatd_wait_seconds histogram\n\
                  # UNIT beatd_wait_seconds seconds\n\
                  beatd_wait_seconds_sum 0.5\n\
                  beatd_wait_seconds_count 1\n\
                  beatd_wait_seconds_bucket{le=\"+Inf\"} 1\n\
                  # TYPE beatd_odd unknown\n\
                  beatd_odd 1\n\
                  # EOF\n";
        let text = "# HELP beatd_jobs Jobs in the config\n\
                    # TYPE beatd_jobs gauge\n\
                    beatd_jobs 2\n\
                    # HELP beatd_fires_total Fires by outcome\n\
                    # TYPE beatd_fires_total counter\n\
                    beatd_fires_total{job_name=\"a\",outcome=\"success\"} 3\n\
                    beatd_fires_total{job_name=\"b\",outcome=\"success\"} 0\n\
                    # HELP beatd_wait_seconds Waits\n\
                    # TYPE beatd_wait_seconds histogram\n\
                    beatd_wait_seconds_sum 0.5\n\
                    beatd_wait_seconds_count 1\n\
                    beatd_wait_seconds_bucket{le=\"+Inf\"} 1\n\
                    # TYPE beatd_odd untyped\n\
                    beatd_odd 1\n";
        assert_eq!(to_text(om), text);
        assert_eq!(to_text(""), "");
        assert_eq!(to_text("x 1"), "x 1", "a last line without a newline is kept");
        let hash = "# TYPE x gauge\nx{a=\"b#c\"} 1\n# TYPE y gauge\ny 2\n";
        assert_eq!(to_text(hash), hash, "a '#' inside a sample is not a comment");
    }
}
