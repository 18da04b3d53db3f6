//! `beatd state reset --journal|--outbox|--history`: moves a state file aside so beatd starts
//! afresh without it. For a damaged file that `beatd run` refuses to start on; run it with
//! beatd stopped.

use super::{ConfigArg, Failed, fail};
use crate::state::damage::{StateFile, move_aside};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Move a state file aside (as FILE.reset-TIME) so the next start begins afresh.
    Reset(ResetArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("file").required(true).args(["journal", "outbox", "history"])))]
pub struct ResetArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The fire journal: jobs start from now, missed slots are not caught up, paused jobs resume.
    #[arg(long)]
    journal: bool,
    /// The outbox: queue messages not yet delivered are dropped.
    #[arg(long)]
    outbox: bool,
    /// The run history: earlier runs are no longer shown.
    #[arg(long)]
    history: bool,
}

pub fn run(command: Command) -> Result<(), Failed> {
    let Command::Reset(args) = command;
    let config = args.config.read()?;
    let file = match (args.journal, args.outbox) {
        (true, _) => StateFile::Journal,
        (_, true) => StateFile::Outbox,
        _ => StateFile::History,
    };
    let dir = &config.scheduler.state_dir;
    let path = dir.join(file.file());
    if !path.exists() {
        return Err(fail(format!("there is no {} to reset", path.display())));
    }
    let aside = move_aside(dir, file.file(), "reset")
        .map_err(|e| fail(format!("cannot move {} aside: {e}", path.display())))?;
    println!("moved {} aside as {}; beatd starts afresh without it", path.display(), aside.display());
    Ok(())
}
