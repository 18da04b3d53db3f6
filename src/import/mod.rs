//! Imports: schedules written for other schedulers, printed as beatd configs that `beatd
//! check` accepts and that fire at the same instants. What cannot keep its meaning is refused
//! with its place and the reason, never changed in silence.

pub mod celery;
pub mod crontab;

use std::collections::HashSet;

/// A job name from any text: lowercase letters and digits, runs of anything else one `-`, at
/// most 48 characters; `job` when nothing is left.
pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.to_ascii_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_matches('-').chars().take(48).collect();
    match slug.trim_end_matches('-') {
        "" => "job".to_string(),
        s => s.to_string(),
    }
}

/// `s` as a TOML string, quoted and escaped.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `base`, or `base-2`, `base-3`... the first not taken.
pub fn unique(base: String, names: &mut HashSet<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while !names.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}
