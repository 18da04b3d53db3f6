//! Diagnostics: config errors that point at the spot in the file.
//!
//! Every error carries a byte span and, when it belongs to a job, the job's name; it renders as
//! `FILE:LINE:COL: job "NAME": message`, the form editors and humans both read. Errors are
//! collected, not returned at the first one, so `beatd check` reports all of them in one run.

use std::fmt;
use std::ops::Range;

/// One config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line and column (in characters); `None` for errors about the whole file.
    pub position: Option<(usize, usize)>,
    pub job: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, "{line}:{col}:")?;
        }
        if let Some(job) = &self.job {
            write!(f, " job \"{job}\":")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every error found in a config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![Diagnostic { file: file.to_string(), position: None, job: None, message: message.into() }])
    }
}

/// Collects diagnostics for one source text.
#[derive(Debug)]
pub struct Diags<'s> {
    file: String,
    text: &'s str,
    /// Byte offsets of line starts (a config is at most 4 MiB: `u32`, half the memory of a
    /// 100 000-job schedule's five drop-ins).
    line_starts: Vec<u32>,
    found: Vec<(usize, Diagnostic)>,
    /// Checks of the disk, made only when the config is loaded to run: (where, what).
    deferred: Vec<(usize, Diagnostic, super::DiskCheck)>,
    /// Names of other sections that a job refers to, checked once every file is read.
    references: Vec<(usize, Diagnostic, Section, String)>,
}

/// The sections whose entries jobs refer to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Notifiers,
    Jobs,
    Brokers,
    Databases,
}

impl Section {
    /// The table's key: `notifiers`.
    pub fn key(self) -> &'static str {
        match self {
            Section::Notifiers => "notifiers",
            Section::Jobs => "jobs",
            Section::Brokers => "brokers",
            Section::Databases => "databases",
        }
    }

    /// What one entry is called: `notifier`.
    pub fn kind(self) -> &'static str {
        match self {
            Section::Notifiers => "notifier",
            Section::Jobs => "job",
            Section::Brokers => "broker",
            Section::Databases => "database",
        }
    }
}

impl<'s> Diags<'s> {
    pub fn new(file: &str, text: &'s str) -> Self {
        let line_starts =
            std::iter::once(0).chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i as u32 + 1)).collect();
        Diags {
            file: file.to_string(),
            text,
            line_starts,
            found: Vec::new(),
            deferred: Vec::new(),
            references: Vec::new(),
        }
    }

    /// The diagnostics without the text, once the file is read: every position is worked out
    /// when its error is noted, so what is left to check (references, the disk) needs none.
    pub fn close(self) -> Diags<'static> {
        Diags {
            file: self.file,
            text: "",
            line_starts: vec![0],
            found: self.found,
            deferred: self.deferred,
            references: self.references,
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn text(&self) -> &'s str {
        self.text
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s as usize <= offset) - 1;
        let start = self.line_starts[line] as usize;
        let col = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub fn error(&mut self, span: Range<usize>, job: Option<&str>, message: impl Into<String>) {
        let d = Diagnostic {
            file: self.file.clone(),
            position: Some(self.position(span.start)),
            job: job.map(str::to_string),
            message: message.into(),
        };
        self.found.push((span.start, d));
    }

    /// Notes `check` to be made on the disk when the config is loaded to run; its error, if
    /// any, is reported at `span` with `prefix` before it.
    pub fn defer(&mut self, span: Range<usize>, job: Option<&str>, prefix: Option<&str>, check: super::DiskCheck) {
        let at = Diagnostic {
            file: self.file.clone(),
            position: Some(self.position(span.start)),
            job: job.map(str::to_string),
            message: prefix.map(|p| format!("{p}: ")).unwrap_or_default(),
        };
        self.deferred.push((span.start, at, check));
    }

    /// Notes that `name` at `span` must be defined in `section` (in this file or another);
    /// checked by [`Diags::check_references`] once every file is read.
    pub fn refer(&mut self, span: Range<usize>, job: Option<&str>, section: Section, name: &str) {
        let at = Diagnostic {
            file: self.file.clone(),
            position: Some(self.position(span.start)),
            job: job.map(str::to_string),
            message: String::new(),
        };
        self.references.push((span.start, at, section, name.to_string()));
    }

    /// Checks the names noted by [`Diags::refer`]: `missing` gives the error for a name that
    /// is not defined.
    pub fn check_references(&mut self, missing: impl Fn(Section, &str) -> Option<String>) {
        for (at, mut diagnostic, section, name) in std::mem::take(&mut self.references) {
            if let Some(message) = missing(section, &name) {
                diagnostic.message = message;
                self.found.push((at, diagnostic));
            }
        }
    }

    /// Makes the disk checks noted so far; each failure becomes an error at its place.
    pub fn check_disk(&mut self) {
        for (at, mut diagnostic, check) in std::mem::take(&mut self.deferred) {
            if let Err(e) = check.run() {
                diagnostic.message.push_str(&e);
                self.found.push((at, diagnostic));
            }
        }
    }

    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found.sort_by_key(|(at, _)| *at);
        Err(ConfigErrors(self.found.into_iter().map(|(_, d)| d).collect()))
    }
}

/// `(did you mean "X"?)` for the closest candidate, when one is close enough to be a typo.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let lower = word.to_lowercase();
    let best = candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let d = Diags::new("f", "a = 1\nüb = \"x\"\n");
        assert_eq!(d.position(0), (1, 1));
        assert_eq!(d.position(6), (2, 1));
        // "ü" is two bytes and one column.
        assert_eq!(d.position(9), (2, 3));
    }

    #[test]
    fn hints_only_for_near_misses() {
        assert_eq!(hint("comand", ["command", "noop"]), " (did you mean \"command\"?)");
        assert_eq!(hint("Europe/Berln", ["Europe/Berlin", "Europe/Bern"]), " (did you mean \"Europe/Berlin\"?)");
        assert_eq!(hint("frobnicate", ["command", "noop"]), "");
    }
}
