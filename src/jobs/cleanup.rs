//! `cleanup`: deletes files older than `older_than` under a folder.
//!
//! Deleting files is where a scheduler can do the most harm, so the walk is built to be safe
//! against everything a hostile or merely busy folder can do:
//! - `path` itself is opened one component at a time from `/` without following any symbolic
//!   link ([`crate::nofollow`]): a link anywhere in it, a trailing `/` or `/.` after a link,
//!   `/proc/self/root/`, or anything that resolves to `/` is refused, by `beatd check` and
//!   again at every run (a link swapped in after the check is caught then).
//! - Every step is relative to an open directory descriptor (`openat`, `fstatat`,
//!   `unlinkat`): a path is never resolved twice, so a component swapped for a symbolic link
//!   between check and use is never followed.
//! - Directories are opened with `O_NOFOLLOW | O_DIRECTORY` and must be the same inode that
//!   was examined; a symlink swapped in mid-walk fails to open and counts as an error.
//! - Symbolic links are never followed and never deleted; they are counted as left alone.
//!   Deleting a name that was swapped for a symlink after it was examined removes the link,
//!   never its target.
//! - The walk stays on the file system of `path` and never goes above it.
//! - A file that cannot be deleted is counted as an error and the walk goes on.
//!
//! A file's age is its modification time, compared with the fire's own time.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{RunContext, RunResult};
use crate::fire::Fire;
use crate::job::Details;
use crate::nofollow::{self, PathError};

#[derive(Debug, Clone)]
pub struct Cleanup {
    pub path: PathBuf,
    pub older_than: Duration,
    /// Globs on the file name; `None` matches every file.
    pub pattern: Option<GlobSet>,
    pub recursive: bool,
    pub remove_empty_dirs: bool,
    pub dry_run: bool,
}

/// What one walk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub files_deleted: u64,
    pub bytes_freed: u64,
    pub errors: u64,
    pub dirs_removed: u64,
    pub links_left: u64,
}

/// Test hooks, called at the two moments a swap can hurt. The daemon passes none.
#[derive(Default)]
pub struct Hooks<'a> {
    pub before_descend: Option<&'a mut dyn FnMut(&Path)>,
    pub before_unlink: Option<&'a mut dyn FnMut(&Path)>,
    /// Told how far the walk is: the share of the top folder's entries done.
    pub progress: Option<crate::runs::Progress>,
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("before_descend", &self.before_descend.is_some())
            .field("before_unlink", &self.before_unlink.is_some())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Cleanup {
    pub async fn run(&self, fire: &Fire, cx: &RunContext) -> RunResult {
        let me = self.clone();
        let job = fire.job.name.clone();
        let cutoff = fire.fired_at - chrono::Duration::from_std(self.older_than).unwrap_or(chrono::Duration::MAX);
        let progress = cx.progress.clone();
        let walked = tokio::task::spawn_blocking(move || {
            me.walk(&job, cutoff.timestamp(), Hooks { progress: Some(progress), ..Hooks::default() })
        })
        .await;
        let stats = match walked {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => return RunResult::failed(e.to_string()),
            Err(e) => return RunResult::failed(format!("cleanup task failed: {e}")),
        };
        let details = Details {
            files_deleted: Some(stats.files_deleted),
            bytes_freed: Some(stats.bytes_freed),
            errors: Some(stats.errors),
            ..Details::default()
        };
        tracing::info!(
            job = %fire.job.name,
            "{} {} file(s), {} byte(s); {} error(s), {} empty folder(s) removed, {} symbolic link(s) left alone",
            if self.dry_run { "would delete" } else { "deleted" },
            stats.files_deleted, stats.bytes_freed, stats.errors, stats.dirs_removed, stats.links_left
        );
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        cx.progress
            .report(Some(100), &format!("{verb} {} file(s), {} byte(s)", stats.files_deleted, stats.bytes_freed));
        let result = if stats.errors == 0 {
            RunResult::ok()
        } else {
            RunResult::failed(format!("{} file(s) or folder(s) could not be cleaned up", stats.errors))
        };
        result.with_details(details)
    }

    /// Walks the tree and deletes what is due. `cutoff` is in Unix seconds: files modified
    /// before it go. An error about `path` itself fails the run; errors below it are counted.
    pub fn walk(&self, job: &str, cutoff: i64, mut hooks: Hooks<'_>) -> Result<Stats, Refused> {
        let root = nofollow::open_dir(&self.path).map_err(|e| match e {
            PathError::Missing(_) => Refused::Missing(self.path.clone()),
            e => Refused::from(e),
        })?;
        let dev = rustix::fs::fstat(&root)
            .map_err(|errno| Refused::Path(PathError::Io { at: self.path.clone(), errno }))?
            .st_dev;
        let mut walk = Walk { cleanup: self, job, cutoff, dev, stats: Stats::default(), hooks: &mut hooks, depth: 0 };
        walk.dir(&root, &self.path);
        Ok(walk.stats)
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// What `beatd check` says of a cleanup path: one that does not exist yet is fine (a run
/// reports it); a link anywhere on the way, `/`, or something that is not a folder is not.
pub fn check_path(path: &Path) -> Result<(), Refused> {
    nofollow::probe(path).map_err(Refused::from)
}

/// Why a cleanup path is refused, as `check` and a run say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("refusing to clean up \"/\"")]
    Root,
    /// The whole path, not only its first missing component.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error(transparent)]
    Path(PathError),
}

impl From<PathError> for Refused {
    fn from(e: PathError) -> Refused {
        match e {
            PathError::Root => Refused::Root,
            e => Refused::Path(e),
        }
    }
}

struct Walk<'a, 'h> {
    cleanup: &'a Cleanup,
    job: &'a str,
    cutoff: i64,
    dev: u64,
    stats: Stats,
    hooks: &'a mut Hooks<'h>,
    /// 0 in the top folder, whose entries measure the progress.
    depth: usize,
}

impl Walk<'_, '_> {
    /// Cleans the open directory `dir` (shown as `shown`); returns whether it is now empty.
    fn dir(&mut self, dir: &OwnedFd, shown: &Path) -> bool {
        let names = match read_names(dir) {
            Ok(names) => names,
            Err(e) => {
                self.error(shown, "cannot list", e);
                return false;
            }
        };
        let total = names.len();
        let mut left = total;
        let mut shown_percent = None;
        for (i, name) in names.into_iter().enumerate() {
            if self.depth == 0
                && let Some(progress) = &self.hooks.progress
            {
                let percent = (i * 100 / total.max(1)) as u8;
                if shown_percent != Some(percent) {
                    shown_percent = Some(percent);
                    let verb = if self.cleanup.dry_run { "would delete" } else { "deleted" };
                    let s = &self.stats;
                    progress.report(
                        Some(percent),
                        &format!("{verb} {} file(s), {} byte(s)", s.files_deleted, s.bytes_freed),
                    );
                }
            }
            let path = shown.join(OsStr::from_bytes(name.as_bytes()));
            let st = match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => {
                    left -= 1; // gone meanwhile
                    continue;
                }
                Err(e) => {
                    self.error(&path, "cannot stat", e);
                    continue;
                }
            };
            let gone = match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    self.stats.links_left += 1;
                    false
                }
                FileType::Directory => self.subdir(dir, &name, &path, &st),
                FileType::RegularFile => self.file(dir, &name, &path, &st),
                _ => false, // sockets, fifos, devices: not ours to delete
            };
            if gone {
                left -= 1;
            }
        }
        left == 0
    }

    /// The folder `name` of `dir`, examined as `st`: cleaned (when recursive, and on our file
    /// system) and, once empty, removed if asked. Returns whether it is gone.
    fn subdir(&mut self, dir: &OwnedFd, name: &CStr, path: &Path, st: &rustix::fs::Stat) -> bool {
        if !self.cleanup.recursive || st.st_dev != self.dev {
            return false;
        }
        if let Some(hook) = self.hooks.before_descend.as_mut() {
            hook(path);
        }
        let sub = match rustix::fs::openat(dir, name, dir_flags(), Mode::empty()) {
            Ok(sub) => sub,
            Err(e) => {
                self.error(path, "cannot open folder (not following it)", e);
                return false;
            }
        };
        // Still the directory we examined, and still on our file system?
        match rustix::fs::fstat(&sub) {
            Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev => {}
            _ => {
                self.error(path, "changed while being cleaned up; skipped", Errno::AGAIN);
                return false;
            }
        }
        self.depth += 1;
        let empty = self.dir(&sub, path);
        self.depth -= 1;
        drop(sub);
        if !empty || !self.cleanup.remove_empty_dirs {
            return false;
        }
        if self.cleanup.dry_run {
            tracing::info!(job = %self.job, "would remove empty folder {}", path.display());
            self.stats.dirs_removed += 1;
            return true;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => {
                self.stats.dirs_removed += 1;
                true
            }
            Err(Errno::NOTEMPTY) => false,
            Err(e) => {
                self.error(path, "cannot remove empty folder", e);
                false
            }
        }
    }

    /// The file `name` of `dir`, examined as `st`: deleted if it is old enough and matches.
    /// Returns whether it is gone.
    fn file(&mut self, dir: &OwnedFd, name: &CStr, path: &Path, st: &rustix::fs::Stat) -> bool {
        if st.st_mtime >= self.cutoff || !self.matches(name) {
            return false;
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if self.cleanup.dry_run {
            tracing::info!(job = %self.job, "would delete {} ({size} bytes)", path.display());
            self.stats.files_deleted += 1;
            self.stats.bytes_freed += size;
            return true;
        }
        if let Some(hook) = self.hooks.before_unlink.as_mut() {
            hook(path);
        }
        // Removes the name only: were it swapped for a symlink, the link goes, not its target.
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) => {
                tracing::debug!(job = %self.job, "deleted {}", path.display());
                self.stats.files_deleted += 1;
                self.stats.bytes_freed += size;
                true
            }
            Err(Errno::NOENT) => true,
            Err(e) => {
                self.error(path, "cannot delete", e);
                false
            }
        }
    }

    fn matches(&self, name: &CStr) -> bool {
        match &self.cleanup.pattern {
            None => true,
            Some(set) => set.is_match(OsStr::from_bytes(name.to_bytes())),
        }
    }

    fn error(&mut self, path: &Path, what: &str, e: Errno) {
        self.stats.errors += 1;
        tracing::warn!(job = %self.job, "{what} {}: {e}", path.display());
    }
}

fn read_names(dir: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
