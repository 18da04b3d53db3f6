//! `beatd man DIR`: the man pages. beatd(1) and one page per subcommand come from the command
//! line's own definition (clap_mangen), so they cannot drift from `--help`; beatd.toml(5), the
//! config reference, comes from the keys of the config's JSON Schema (`config::schema`), each
//! with its kind, default and doc line.

use std::path::PathBuf;

use clap::CommandFactory;
use roff::{Roff, bold, italic, roman};

use super::{Cli, Failed, fail};
use crate::config::schema;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder the pages are written to (made if missing).
    dir: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failed> {
    let cannot = |e: std::io::Error| fail(format!("cannot write man pages to {}: {e}", args.dir.display()));
    std::fs::create_dir_all(&args.dir).map_err(cannot)?;
    let command = Cli::command().version(super::VERSION.as_str());
    clap_mangen::generate_to(command, &args.dir).map_err(cannot)?;
    std::fs::write(args.dir.join("beatd.toml.5"), config_page()).map_err(cannot)?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.dir)
        .map_err(cannot)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("beatd"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", args.dir.join(page).display());
    }
    Ok(())
}

/// beatd.toml(5).
pub fn config_page() -> String {
    let mut page = Roff::new();
    let version = format!("beatd {}", env!("CARGO_PKG_VERSION"));
    page.control("TH", ["BEATD.TOML", "5", "", version.as_str(), "File Formats"]);
    page.control("SH", ["NAME"]).text([roman("beatd.toml - the configuration of the beatd scheduler")]);
    page.control("SH", ["SYNOPSIS"]).text([bold("/etc/beatd/beatd.toml")]);
    page.control("SH", ["DESCRIPTION"]).text([roman(
        "A TOML file of jobs (cron or interval schedules and what each does) and of what they need: \
         notifiers, message brokers, databases. The scheduler's own sections ([scheduler], [api], \
         [cluster]) are only read from the main file; [scheduler] include names drop-in files with more \
         jobs, notifiers, brokers and databases. Durations are written like 90s, 5m, 1h30m or 2d. Relative \
         paths are relative to the config's folder.",
    )]);
    page.control("PP", []).text([
        bold("beatd check"),
        roman(" validates a file and reports every error as FILE:LINE:COL. "),
        bold("beatd schema"),
        roman(" prints this reference as a JSON Schema, for editors: a first line "),
        italic("#:schema /usr/share/beatd/beatd.schema.json"),
        roman(" makes Taplo and Even Better TOML validate and complete the file."),
    ]);
    for section in schema::reference() {
        page.control("SH", [section.heading]).text([roman(section.doc)]);
        for (key, kind, doc) in &section.keys {
            page.control("TP", []).text([bold(*key), roman(format!(" ({kind})"))]);
            page.text([roman(doc.as_str())]);
        }
    }
    page.control("SH", ["FILES"]).text([roman("/etc/beatd/beatd.toml, /usr/share/beatd/beatd.schema.json")]);
    page.control("SH", ["SEE ALSO"]).text([bold("beatd"), roman("(1), "), bold("beatd-check"), roman("(1)")]);
    page.render()
}
