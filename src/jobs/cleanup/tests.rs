//! Cleanup against a real temporary tree: crafted modification times, symbolic links that
//! point outside, links swapped in while the walk runs, a file that cannot be deleted.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Cleanup, Hooks, Stats};

const DAY: Duration = Duration::from_secs(86_400);

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

/// A file of `size` bytes last modified `age` ago.
fn file(path: &Path, size: usize, age: Duration) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(path, vec![b'x'; size]).expect("write");
    File::options().write(true).open(path).expect("open").set_modified(SystemTime::now() - age).expect("set mtime");
}

fn cleanup(path: &Path) -> Cleanup {
    Cleanup {
        path: path.to_path_buf(),
        older_than: 7 * DAY,
        pattern: None,
        recursive: false,
        remove_empty_dirs: false,
        dry_run: false,
    }
}

fn cutoff(c: &Cleanup) -> i64 {
    now() - c.older_than.as_secs() as i64
}

fn run(c: &Cleanup) -> Stats {
    c.walk("test", cutoff(c), Hooks::default()).expect("walk")
}

struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// `root/` to clean and `outside/`, a sibling with old files that must survive.
fn tree() -> Tree {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("uploads");
    let outside = tmp.path().join("precious");
    fs::create_dir_all(&root).expect("mkdir");
    file(&outside.join("keep.txt"), 10, 30 * DAY);
    file(&outside.join("deep/keep.txt"), 10, 30 * DAY);
    Tree { _tmp: tmp, root, outside }
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn deletes_only_old_files_and_counts_bytes() {
    let t = tree();
    file(&t.root.join("old.log"), 100, 8 * DAY);
    file(&t.root.join("older.tmp"), 50, 30 * DAY);
    file(&t.root.join("new.log"), 70, DAY);
    file(&t.root.join("nested/old.log"), 1000, 30 * DAY);
    let stats = run(&cleanup(&t.root));
    assert_eq!(stats, Stats { files_deleted: 2, bytes_freed: 150, ..Stats::default() });
    assert!(!exists(&t.root.join("old.log")) && !exists(&t.root.join("older.tmp")));
    assert!(exists(&t.root.join("new.log")));
    assert!(exists(&t.root.join("nested/old.log")), "not recursive by default");
}

#[test]
fn recursive_with_patterns_and_empty_folders() {
    let t = tree();
    file(&t.root.join("a/b/old.log"), 10, 30 * DAY);
    file(&t.root.join("a/b/old.dat"), 10, 30 * DAY);
    file(&t.root.join("a/c/old.log"), 10, 30 * DAY);
    file(&t.root.join("a/c/new.log"), 10, DAY);
    file(&t.root.join("top.log"), 10, 30 * DAY);
    fs::create_dir_all(t.root.join("empty/already")).expect("mkdir");
    let mut c = cleanup(&t.root);
    c.recursive = true;
    c.remove_empty_dirs = true;
    let mut set = globset::GlobSetBuilder::new();
    set.add(globset::Glob::new("*.log").expect("glob"));
    c.pattern = Some(set.build().expect("set"));
    let stats = run(&c);
    assert_eq!(stats.files_deleted, 3);
    assert_eq!(stats.errors, 0);
    assert!(exists(&t.root.join("a/b/old.dat")), "pattern keeps other files");
    assert!(exists(&t.root.join("a/c/new.log")));
    assert!(!exists(&t.root.join("empty")), "empty folders go");
    assert!(exists(&t.root.join("a/b")), "a folder with a kept file stays");
    assert!(exists(&t.root), "the root itself is never removed");
}

#[test]
fn dry_run_deletes_nothing() {
    let t = tree();
    file(&t.root.join("old.log"), 100, 30 * DAY);
    let mut c = cleanup(&t.root);
    c.dry_run = true;
    let stats = run(&c);
    assert_eq!((stats.files_deleted, stats.bytes_freed), (1, 100));
    assert!(exists(&t.root.join("old.log")));
}

#[test]
fn symlinks_are_never_followed_nor_deleted() {
    let t = tree();
    symlink(&t.outside, t.root.join("link-to-dir")).expect("symlink");
    symlink(t.outside.join("keep.txt"), t.root.join("link-to-file")).expect("symlink");
    symlink("/", t.root.join("link-to-root")).expect("symlink");
    file(&t.root.join("old.log"), 10, 30 * DAY);
    let mut c = cleanup(&t.root);
    c.recursive = true;
    c.remove_empty_dirs = true;
    let stats = run(&c);
    assert_eq!(stats.files_deleted, 1);
    assert_eq!(stats.links_left, 3);
    assert!(exists(&t.outside.join("keep.txt")) && exists(&t.outside.join("deep/keep.txt")));
    assert!(exists(&t.root.join("link-to-dir")) && exists(&t.root.join("link-to-file")));
}

#[test]
fn a_folder_swapped_for_a_symlink_mid_walk_is_not_followed() {
    let t = tree();
    file(&t.root.join("sub/old.log"), 10, 30 * DAY);
    let mut c = cleanup(&t.root);
    c.recursive = true;
    let sub = t.root.join("sub");
    let outside = t.outside.clone();
    // Between examining `sub` and opening it, an attacker swaps it for a link to `precious`.
    let mut swap = |p: &Path| {
        if p == sub {
            fs::rename(&sub, sub.with_extension("moved")).expect("move away");
            symlink(&outside, &sub).expect("symlink");
        }
    };
    let hooks = Hooks { before_descend: Some(&mut swap), before_unlink: None, progress: None };
    let stats = c.walk("test", cutoff(&c), hooks).expect("walk");
    assert_eq!(stats.errors, 1, "the swapped folder is refused and counted");
    assert_eq!(stats.files_deleted, 0);
    assert!(exists(&t.outside.join("keep.txt")) && exists(&t.outside.join("deep/keep.txt")));
}

#[test]
fn a_file_swapped_for_a_symlink_before_deletion_loses_only_the_link() {
    let t = tree();
    file(&t.root.join("old.log"), 10, 30 * DAY);
    let c = cleanup(&t.root);
    let victim = t.root.join("old.log");
    let target = t.outside.join("keep.txt");
    let mut swap = |p: &Path| {
        if p == victim {
            fs::remove_file(&victim).expect("remove");
            symlink(&target, &victim).expect("symlink");
        }
    };
    let hooks = Hooks { before_descend: None, before_unlink: Some(&mut swap), progress: None };
    c.walk("test", cutoff(&c), hooks).expect("walk");
    assert!(!exists(&t.root.join("old.log")), "the link was removed");
    assert!(exists(&t.outside.join("keep.txt")), "its target was not");
}

/// Makes `path` impossible to delete: immutable as root (chattr), else a read-only folder.
/// Returns the undo command.
fn protect(path: &Path) -> Box<dyn FnOnce()> {
    if nix::unistd::Uid::effective().is_root() {
        let ok = std::process::Command::new("chattr").arg("+i").arg(path).status().map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "chattr +i is needed to test an undeletable file as root");
        let p = path.to_path_buf();
        Box::new(move || {
            let _ = std::process::Command::new("chattr").arg("-i").arg(&p).status();
        })
    } else {
        let dir = path.parent().expect("parent").to_path_buf();
        let mut perms = fs::metadata(&dir).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        fs::set_permissions(&dir, perms).expect("chmod");
        Box::new(move || {
            let mut perms = fs::metadata(&dir).expect("stat").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            let _ = fs::set_permissions(&dir, perms);
        })
    }
}

#[test]
fn keeps_going_past_a_file_it_cannot_delete() {
    let t = tree();
    file(&t.root.join("stuck/old.log"), 10, 30 * DAY);
    file(&t.root.join("a-old.log"), 10, 30 * DAY);
    file(&t.root.join("z-old.log"), 10, 30 * DAY);
    let undo = protect(&t.root.join("stuck/old.log"));
    let mut c = cleanup(&t.root);
    c.recursive = true;
    let stats = run(&c);
    undo();
    assert_eq!(stats.errors, 1);
    assert_eq!(stats.files_deleted, 2, "the others still go");
    assert!(exists(&t.root.join("stuck/old.log")));
}

#[test]
fn a_missing_or_linked_root_fails_the_run() {
    let t = tree();
    let missing = cleanup(&t.root.join("nope"));
    assert_eq!(
        missing.walk("test", 0, Hooks::default()).map_err(|e| e.to_string()),
        Err(format!("{} does not exist", t.root.join("nope").display()))
    );
    let link = t.root.with_extension("link");
    symlink(&t.outside, &link).expect("symlink");
    let linked = cleanup(&link);
    let refused = Err(format!(
        "{} is a symbolic link (to {}); beatd follows no link in this path: name the real folder",
        link.display(),
        t.outside.display()
    ));
    assert_eq!(linked.walk("test", 0, Hooks::default()).map_err(|e| e.to_string()), refused);
    // A trailing slash or dot does not make the link followed.
    for spelled in [format!("{}/", link.display()), format!("{}/.", link.display())] {
        assert_eq!(cleanup(Path::new(&spelled)).walk("test", 0, Hooks::default()).map_err(|e| e.to_string()), refused);
    }
    assert!(exists(&t.outside.join("keep.txt")));
}

#[test]
fn the_root_in_any_spelling_is_refused_at_run_time() {
    for p in ["/", "//", "/.", "/tmp/..", "/./tmp/../"] {
        let c = cleanup(Path::new(p));
        assert_eq!(c.walk("test", 0, Hooks::default()), Err(super::Refused::Root), "{p}");
    }
}
