//! A reader over one TOML table that remembers which keys were asked for.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key and cannot be combined with the
//! flattened, action-specific keys that share a job's table. This reader lets each part of the
//! config (the job's common keys, then its action) take the keys it knows, reports type errors
//! at the value, and finally reports every key nobody asked for, with a hint.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Diags, hint};

/// One table of the config, being read.
#[derive(Debug)]
pub struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    /// Where errors about the table as a whole (a missing key) point.
    pub span: Range<usize>,
    /// The job this table belongs to, for messages.
    pub job: Option<String>,
    /// A label for errors outside jobs, such as `scheduler` or `broker "main"`.
    pub section: Option<String>,
    asked: Vec<&'static str>,
}

/// A string value with where it sits in the file.
#[derive(Debug, Clone)]
pub struct Str<'t> {
    pub value: &'t str,
    pub span: Range<usize>,
}

impl<'t, 'i> Table<'t, 'i> {
    pub fn new(table: &'t DeTable<'i>, span: Range<usize>, job: Option<&str>) -> Self {
        Table { table, span, job: job.map(str::to_string), section: None, asked: Vec::new() }
    }

    pub fn section(mut self, name: &'static str) -> Self {
        self.section = Some(name.to_string());
        self
    }

    /// A named table of a section, such as `[brokers.main]`: errors say `broker "main": …`.
    pub fn named(mut self, kind: &str, name: &str) -> Self {
        self.section = Some(format!("{kind} \"{name}\""));
        self
    }

    /// Reports an error in this table's context.
    pub fn error(&self, d: &mut Diags, span: Range<usize>, message: impl Into<String>) {
        let message = message.into();
        match &self.section {
            Some(section) if self.job.is_none() => d.error(span, None, format!("{section}: {message}")),
            _ => d.error(span, self.job.as_deref(), message),
        }
    }

    /// Notes that `name` at `span` must be defined in `section`, in any file of the config.
    pub fn refer(&self, d: &mut Diags, span: Range<usize>, section: super::diag::Section, name: &str) {
        d.refer(span, self.job.as_deref(), section, name);
    }

    /// Notes a check of the disk at `span`, made when the config is loaded to run.
    pub fn defer(&self, d: &mut Diags, span: Range<usize>, check: super::DiskCheck) {
        let prefix = if self.job.is_none() { self.section.as_deref() } else { None };
        d.defer(span, self.job.as_deref(), prefix, check);
    }

    /// The raw value of `key`, marking the key as known.
    pub fn get(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.asked.push(key);
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v)
    }

    /// The span of the key `key` itself, if present.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(k, _)| k.span())
    }

    fn typed<T>(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        want: &str,
        f: impl FnOnce(&'t DeValue<'i>) -> Option<T>,
    ) -> Option<(T, Range<usize>)> {
        let v = self.get(key)?;
        match f(v.get_ref()) {
            Some(t) => Some((t, v.span())),
            None => {
                let msg = format!("\"{key}\" must be {want}, not {}", type_name(v.get_ref()));
                self.error(d, v.span(), msg);
                None
            }
        }
    }

    pub fn str(&mut self, d: &mut Diags, key: &'static str) -> Option<Str<'t>> {
        self.typed(d, key, "a string", |v| match v {
            DeValue::String(s) => Some(s.as_ref()),
            _ => None,
        })
        .map(|(value, span)| Str { value, span })
    }

    /// A required string; reports it missing.
    pub fn req_str(&mut self, d: &mut Diags, key: &'static str) -> Option<Str<'t>> {
        let present = self.table.iter().any(|(k, _)| k.get_ref().as_ref() == key);
        if !present {
            self.asked.push(key);
            self.error(d, self.span.clone(), format!("missing key \"{key}\""));
            return None;
        }
        self.str(d, key)
    }

    /// One of a fixed set of words, such as `overlap = "queue"`; `what` names it in errors.
    pub fn choice<T: Copy>(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        what: &str,
        options: &[(&'static str, T)],
    ) -> Option<T> {
        let s = self.str(d, key)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s.value) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let h = match hint(s.value, names.iter().copied()) {
            h if h.is_empty() => format!(" (one of: {})", names.join(", ")),
            h => h,
        };
        self.error(d, s.span, format!("unknown {what} \"{}\"{h}", s.value));
        None
    }

    /// A required http:// or https:// URL.
    pub fn http_url(&mut self, d: &mut Diags, key: &'static str) -> Option<reqwest::Url> {
        let u = self.req_str(d, key)?;
        match reqwest::Url::parse(u.value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            Ok(_) => {
                self.error(d, u.span, format!("\"{key}\" must be http:// or https://, not \"{}\"", u.value));
                None
            }
            Err(e) => {
                self.error(d, u.span, format!("invalid url \"{}\": {e}", u.value));
                None
            }
        }
    }

    pub fn bool(&mut self, d: &mut Diags, key: &'static str) -> Option<bool> {
        self.typed(d, key, "true or false", DeValue::as_bool).map(|(b, _)| b)
    }

    pub fn integer(&mut self, d: &mut Diags, key: &'static str) -> Option<(i64, Range<usize>)> {
        self.typed(d, key, "an integer", |v| match v {
            DeValue::Integer(i) => i64::from_str_radix(
                i.as_str().replace('_', "").trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b"),
                i.radix(),
            )
            .ok(),
            _ => None,
        })
    }

    /// A list of strings, or one string standing for a list of one.
    pub fn str_list(&mut self, d: &mut Diags, key: &'static str) -> Option<(Vec<Str<'t>>, Range<usize>)> {
        let v = self.get(key)?;
        let span = v.span();
        match v.get_ref() {
            DeValue::String(s) => Some((vec![Str { value: s.as_ref(), span: span.clone() }], span)),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(Str { value: s.as_ref(), span: item.span() }),
                        other => {
                            let msg = format!("\"{key}\" must list strings, not {}", type_name(other));
                            self.error(d, item.span(), msg);
                        }
                    }
                }
                Some((out, span))
            }
            other => {
                let msg = format!("\"{key}\" must be a string or a list of strings, not {}", type_name(other));
                self.error(d, span, msg);
                None
            }
        }
    }

    /// Any TOML value as JSON, if `fits` it (else an error saying it must be `what`). JSON has
    /// no infinity or NaN: a TOML `inf` or `nan` anywhere in it is an error at that value.
    pub fn json(
        &mut self,
        d: &mut Diags,
        key: &'static str,
        what: &str,
        fits: fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let v = self.get(key)?;
        if let Some((span, text)) = non_finite(v) {
            let msg = format!("\"{key}\" holds {text}, which JSON cannot carry (a worker would get null)");
            self.error(d, span, msg);
            return None;
        }
        let json = to_json(v.get_ref());
        if fits(&json) {
            return Some(json);
        }
        self.error(d, v.span(), format!("\"{key}\" must be {what}"));
        None
    }

    pub fn table(&mut self, d: &mut Diags, key: &'static str) -> Option<(&'t DeTable<'i>, Range<usize>)> {
        self.typed(d, key, "a table", |v| v.as_table())
    }

    /// A duration written like `90s`, `5m`, `1h30m` or `2d`.
    pub fn duration(&mut self, d: &mut Diags, key: &'static str) -> Option<(Duration, Range<usize>)> {
        let s = self.str(d, key)?;
        match parse_duration(s.value) {
            Ok(v) => Some((v, s.span)),
            Err(e) => {
                self.error(d, s.span, format!("invalid duration \"{}\" for \"{key}\": {e}", s.value));
                None
            }
        }
    }

    /// A path; relative paths resolve against `base` (the config file's folder).
    pub fn path(&mut self, d: &mut Diags, key: &'static str, base: &Path) -> Option<(PathBuf, Range<usize>)> {
        let s = self.str(d, key)?;
        if s.value.is_empty() {
            self.error(d, s.span, format!("\"{key}\" must not be empty"));
            return None;
        }
        if s.value.contains('\0') {
            self.error(d, s.span, format!("\"{key}\" contains a NUL byte, which no path can hold"));
            return None;
        }
        Some((super::resolve(base, s.value), s.span))
    }

    /// Reports every key nobody asked for, with a hint. `also_known` are keys that are valid
    /// elsewhere (every action's keys, when the action itself is wrong): they are not reported,
    /// and they count as hints for keys that are.
    pub fn finish(&self, d: &mut Diags, also_known: &[&str]) {
        for (k, _) in self.table.iter() {
            let key = k.get_ref().as_ref();
            if self.asked.contains(&key) || also_known.contains(&key) {
                continue;
            }
            let candidates = self.asked.iter().chain(also_known).copied();
            let msg = format!("unknown key \"{key}\"{}", hint(key, candidates));
            self.error(d, k.span(), msg);
        }
    }
}

pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Writes `v` as text that ignores layout and key order: the same keys and values give the
/// same text however they are written (inline or as a section, in any order, with comments).
pub fn canonical(v: &DeValue<'_>, out: &mut String) {
    use std::fmt::Write;
    match v {
        DeValue::String(s) => {
            let _ = write!(out, "{:?}", s.as_ref());
        }
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            match i64::from_str_radix(
                digits.trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b"),
                i.radix(),
            ) {
                Ok(n) => {
                    let _ = write!(out, "{n}");
                }
                Err(_) => out.push_str(&digits),
            }
        }
        DeValue::Float(f) => out.push_str(f.as_str()),
        DeValue::Boolean(b) => {
            let _ = write!(out, "{b}");
        }
        DeValue::Datetime(d) => {
            let _ = write!(out, "{d}");
        }
        DeValue::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item.get_ref(), out);
                out.push(',');
            }
            out.push(']');
        }
        DeValue::Table(t) => {
            let mut entries: Vec<_> = t.iter().collect();
            entries.sort_by(|a, b| a.0.get_ref().cmp(b.0.get_ref()));
            out.push('{');
            for (k, v) in entries {
                let _ = write!(out, "{:?}=", k.get_ref().as_ref());
                canonical(v.get_ref(), out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// The first `inf` or `nan` float in `v`, with its span and text.
fn non_finite(v: &Spanned<DeValue<'_>>) -> Option<(Range<usize>, String)> {
    match v.get_ref() {
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            (!text.parse::<f64>().is_ok_and(f64::is_finite)).then(|| (v.span(), text))
        }
        DeValue::Array(items) => items.iter().find_map(non_finite),
        DeValue::Table(t) => t.iter().find_map(|(_, v)| non_finite(v)),
        _ => None,
    }
}

/// A TOML value as JSON (date-times become their TOML text), for message payloads.
pub fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let body = digits.trim_start_matches("0x").trim_start_matches("0o").trim_start_matches("0b");
            i64::from_str_radix(body, i.radix()).map_or(Value::String(digits.clone()), Value::from)
        }
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect()),
        DeValue::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref()))).collect())
        }
    }
}

/// Parses `90s`, `5m`, `1h30m`, `2d`, `1h 30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text.trim())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn duration_forms() {
        assert_eq!(parse_duration("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d").ok(), Some(Duration::from_secs(172_800)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
