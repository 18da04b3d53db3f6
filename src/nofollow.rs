//! Folders opened without following symbolic links: for everything beatd deletes in or writes
//! to on behalf of a config.
//!
//! beatd runs as root. If a folder it cleans up or writes reports to can be reached through a
//! symbolic link, whoever can write the link's folder decides where root deletes or writes, up
//! to `/`. A trailing `/` or `/.` is enough to make the usual resolution follow a link the
//! path's last name points at, and `/proc/self/root` is a link to `/`. So these paths are
//! resolved here one component at a time from `/`, each opened relative to the one before with
//! `O_NOFOLLOW | O_DIRECTORY`: a symbolic link anywhere on the way (magic links such as
//! `/proc/1/cwd` included) is refused, never followed. What comes back is an open descriptor:
//! later steps work relative to it, so a link swapped in afterwards changes nothing.
//!
//! Paths are made absolute and normalised lexically first (`.` and empty components dropped,
//! `..` taking off the name before it). Lexical is right because no component may be a link:
//! `a/b/..` is `a` when `b` is a real folder.

use std::fmt;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// This component (and so the path) does not exist.
    Missing(PathBuf),
    /// This component is a symbolic link (to `target`, when it can be read).
    Link {
        at: PathBuf,
        target: Option<PathBuf>,
    },
    /// This component is not a folder.
    NotFolder(PathBuf),
    /// The path is `/`, however it is spelled or reached.
    Root,
    /// A folder other users can write to (with its mode), not sticky and beatd's own.
    Shared {
        at: PathBuf,
        mode: u32,
    },
    Io {
        at: PathBuf,
        errno: Errno,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Missing(at) => write!(f, "{} does not exist", at.display()),
            PathError::Link { at, target } => {
                write!(f, "{} is a symbolic link", at.display())?;
                if let Some(t) = target {
                    write!(f, " (to {})", t.display())?;
                }
                f.write_str("; beatd follows no link in this path: name the real folder")
            }
            PathError::NotFolder(at) => write!(f, "{} is not a folder", at.display()),
            PathError::Root => f.write_str("refusing \"/\""),
            PathError::Shared { at, mode } => write!(
                f,
                "{} can be written by other users (mode {mode:04o}): refusing to write there; make it writable by beatd's user only, or sticky and owned by it",
                at.display()
            ),
            PathError::Io { at, errno } => write!(f, "cannot open {}: {errno}", at.display()),
        }
    }
}

impl std::error::Error for PathError {}

/// `path` made absolute (against the current folder) and normalised lexically.
pub fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| Path::new("/").join(path));
    let mut out = PathBuf::from("/");
    for c in absolute.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the folder `path` names, refusing any symbolic link on the way and `/` itself.
pub fn open_dir(path: &Path) -> Result<OwnedFd, PathError> {
    walk(path, None)
}

/// Like [`open_dir`], creating the folders that are missing (with `mode`), each inside the
/// one before it.
pub fn create_dir(path: &Path, mode: u32) -> Result<OwnedFd, PathError> {
    walk(path, Some(Mode::from_raw_mode(mode)))
}

/// What `beatd check` says about a folder the config names: a path that does not exist (yet)
/// is fine, one that crosses a link, ends at `/` or at something not a folder is not.
pub fn probe(path: &Path) -> Result<(), PathError> {
    match walk(path, None) {
        Ok(_) | Err(PathError::Missing(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn walk(path: &Path, create: Option<Mode>) -> Result<OwnedFd, PathError> {
    let path = normalize(path);
    let mut at = PathBuf::from("/");
    let io = |at: &Path, errno| PathError::Io { at: at.to_path_buf(), errno };
    let mut dir = rustix::fs::openat(CWD, "/", dir_flags(), Mode::empty()).map_err(|e| io(&at, e))?;
    for component in path.components() {
        let Component::Normal(name) = component else { continue };
        at.push(name);
        let opened = match rustix::fs::openat(&dir, name, dir_flags(), Mode::empty()) {
            Err(Errno::NOENT) if let Some(mode) = create => match rustix::fs::mkdirat(&dir, name, mode) {
                Ok(()) | Err(Errno::EXIST) => rustix::fs::openat(&dir, name, dir_flags(), Mode::empty()),
                Err(e) => Err(e),
            },
            other => other,
        };
        dir = match opened {
            Ok(next) => next,
            Err(Errno::NOENT) => return Err(PathError::Missing(at)),
            // A link says ELOOP, or ENOTDIR when O_DIRECTORY is checked first: look.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        let target = rustix::fs::readlinkat(&dir, name, Vec::new())
                            .ok()
                            .map(|t| PathBuf::from(std::ffi::OsStr::from_bytes(t.to_bytes()).to_os_string()));
                        PathError::Link { at, target }
                    }
                    _ => PathError::NotFolder(at),
                });
            }
            Err(e) => return Err(io(&at, e)),
        };
    }
    if is_root(&dir) {
        return Err(PathError::Root);
    }
    Ok(dir)
}

use std::os::unix::ffi::OsStrExt;

/// Whether `dir` is the root folder (the same file, however it was reached).
fn is_root(dir: &OwnedFd) -> bool {
    match (rustix::fs::fstat(dir), rustix::fs::stat("/")) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => true,
    }
}

/// Refuses a folder others can write to (group or world), unless it is sticky and owned by
/// beatd's user: in such a folder another user can plant or swap names.
pub fn check_private(dir: &OwnedFd, shown: &Path) -> Result<(), PathError> {
    let st = rustix::fs::fstat(dir).map_err(|errno| PathError::Io { at: shown.to_path_buf(), errno })?;
    let mode = st.st_mode & 0o7777;
    let sticky_and_ours = mode & 0o1000 != 0 && st.st_uid == rustix::process::geteuid().as_raw();
    if mode & 0o022 != 0 && !sticky_and_ours {
        return Err(PathError::Shared { at: shown.to_path_buf(), mode });
    }
    Ok(())
}

/// Whether `name` exists in `dir` (a link counts, and is not followed).
pub fn exists(dir: &OwnedFd, name: &str) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// Writes `bytes` as `name` in `dir`, never through a name that exists: a new file
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, so not even a link planted under its name is opened) is
/// written, synced and renamed over `name`. Renaming replaces a link planted as `name`, never
/// its target.
pub fn write_new(dir: &OwnedFd, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(mode))?;
    let mut file = std::fs::File::from(fd);
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    let renamed = written.and_then(|()| rustix::fs::renameat(dir, tmp.as_str(), dir, name).map_err(Into::into));
    if renamed.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn normalizing_is_lexical_and_absolute() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d/")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/tmp/..")), Path::new("/"));
        assert_eq!(normalize(Path::new("//.")), Path::new("/"));
        assert!(normalize(Path::new("rel")).is_absolute());
    }

    #[test]
    fn links_anywhere_and_the_root_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("inner")).expect("mkdir");
        symlink(&real, dir.path().join("link")).expect("symlink");
        symlink("/", dir.path().join("rootlink")).expect("symlink");
        std::fs::write(dir.path().join("file"), "x").expect("file");
        assert!(open_dir(&real.join("inner")).is_ok());
        for p in ["link", "link/", "link/.", "link/inner", "rootlink/.", "rootlink/"] {
            let err = open_dir(&dir.path().join(p)).expect_err(p);
            assert!(matches!(&err, PathError::Link { at, .. } if at.to_string_lossy().ends_with("link")), "{p}: {err}");
        }
        assert_eq!(open_dir(Path::new("/")).expect_err("root"), PathError::Root);
        assert_eq!(open_dir(Path::new("/tmp/..")).expect_err("root"), PathError::Root);
        assert!(matches!(open_dir(Path::new("/proc/self/root/")), Err(PathError::Link { .. })));
        assert!(matches!(open_dir(Path::new("/proc/1/cwd/")), Err(PathError::Link { .. })));
        assert!(matches!(open_dir(&dir.path().join("file/")), Err(PathError::NotFolder(_))));
        assert!(matches!(open_dir(&dir.path().join("nope/x")), Err(PathError::Missing(p)) if p.ends_with("nope")));
        assert_eq!(probe(&dir.path().join("nope/x")), Ok(()));
        let text = open_dir(&dir.path().join("link/")).expect_err("link").to_string();
        assert!(
            text.ends_with(&format!(
                "link is a symbolic link (to {}); beatd follows no link in this path: name the real folder",
                real.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn folders_are_created_inside_each_other_and_files_never_written_through_a_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = create_dir(&dir.path().join("a/b"), 0o755).expect("created");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep").expect("write");
        symlink(&target, dir.path().join("a/b/report.md")).expect("plant");
        assert!(exists(&out, "report.md"));
        write_new(&out, "report.md", b"new", 0o644).expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        assert_eq!(std::fs::read_to_string(dir.path().join("a/b/report.md")).expect("read"), "new");
        assert!(!std::fs::symlink_metadata(dir.path().join("a/b/report.md")).expect("stat").file_type().is_symlink());
    }
}
