//! Watches the config file and the script and plugin trees, so that the daemon
//! can reload by itself when an operator saves a file.
//!
//! It owns one notify watcher and the debouncer thread behind it, and hands out
//! nothing but a `()` on a channel once per burst of changes: deciding to reload,
//! and what a failed reload does, belong to the daemon.
//!
//! Why the parent directory is watched, not the file: editors save in several
//! steps, and many write a temporary file and rename it over the target, which
//! replaces the inode. A watch on the file follows the old inode and goes deaf
//! after the first such save; a watch on its directory sees every step of any
//! editor, and still works after the file was deleted and created again. Events
//! are then kept only when they name a watched file or a path under a watched
//! tree.
//!
//! Why `notify-debouncer-mini` rather than `notify-debouncer-full` (both are kept
//! by the notify authors, in notify's own repository): -full emits each raw event
//! once that event is older than the timeout, and stitches renames together with a
//! file-id cache we do not need; a burst of three writes can straddle one of its
//! ticks and come out as two batches. -mini keeps one entry per path and emits it
//! as `Any` only once the path has been quiet for the whole timeout: a
//! trailing-edge debounce, which is "one notification per burst". Its
//! `AnyContinuous` (a path still busy after one timeout) is ignored, as the `Any`
//! at the end of that burst follows. What -mini drops, the event's kind, is
//! filtered before it by [`ContentWatcher`]: opening or reading a file must not
//! count as a change, or the reload (which reads the file) would trigger the next.
//!
//! Limits: a burst that touches several watched paths whose last events lie more
//! than a timeout apart can give two notifications (a reload is idempotent, and a
//! full channel drops the extra). A watched file is matched by its own name: when
//! it is a symlink, a change to the link's target elsewhere is not seen.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{Event, EventHandler, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind};
use notify_debouncer_mini::{
    Config as DebounceConfig, DebounceEventResult, DebouncedEventKind, Debouncer, new_debouncer_opt,
};
use tokio::sync::mpsc::{self, error::TrySendError};

/// Why watching could not start. Once started, errors are logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The path (or, for a file, its directory) could not be resolved: usually it
    /// does not exist.
    #[error("cannot watch {path}: {source}")]
    Resolve { path: PathBuf, source: io::Error },
    /// A file path that ends in `..` or `/` names no file.
    #[error("cannot watch {path}: it does not name a file")]
    NotAFile { path: PathBuf },
    /// The OS refused a watcher (on Linux: the inotify instance limit).
    #[error("cannot start watching files: {source}")]
    Start { source: notify::Error },
    /// The OS refused to watch this directory (on Linux: the inotify watch limit,
    /// `fs.inotify.max_user_watches`, or permissions).
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// Watches files and trees; dropping it stops watching.
#[derive(Debug)]
pub struct FileWatcher {
    /// Holds the OS watch and the debouncer thread; its `Drop` stops both.
    _debouncer: Debouncer<ContentWatcher>,
}

impl FileWatcher {
    /// Watches `files` (exact files, which need not exist yet, but whose directory
    /// must) and `trees` (directories watched recursively: a change to any file
    /// under them with the extension `tree_extension` counts, or to any file at
    /// all for `None`), and sends `()` on `changed` once per debounced burst of
    /// events that touch any of them. Relative paths are taken from the current
    /// directory, now.
    ///
    /// The extension keeps a tree that also holds busy files (a database, a CDR
    /// file, the control socket next to the scripts) from reloading on each
    /// write to them.
    ///
    /// The send is a `try_send`: when the channel is full a reload is already
    /// pending, and it will read the files as they are by then.
    pub fn start(
        files: &[PathBuf],
        trees: &[PathBuf],
        tree_extension: Option<&str>,
        debounce: Duration,
        changed: mpsc::Sender<()>,
    ) -> Result<FileWatcher, WatchError> {
        let mut targets = Targets::resolve(files, trees)?;
        targets.tree_extension = tree_extension.map(Into::into);
        let watches = targets.watches();
        let config = DebounceConfig::default()
            .with_timeout(debounce)
            .with_batch_mode(true);
        let mut debouncer = new_debouncer_opt::<_, ContentWatcher>(config, move |result| {
            notify_changed(result, &targets, &changed)
        })
        .map_err(|source| WatchError::Start { source })?;
        for (dir, mode) in watches {
            debouncer
                .watcher()
                .watch(&dir, mode)
                .map_err(|source| WatchError::Watch { path: dir, source })?;
        }
        Ok(FileWatcher {
            _debouncer: debouncer,
        })
    }
}

/// Turns one debounced batch into at most one notification: when a watched path
/// has settled (`Any`), or events were lost.
fn notify_changed(result: DebounceEventResult, targets: &Targets, changed: &mpsc::Sender<()>) {
    match result {
        Ok(events) => {
            let settled = events.iter().any(|e| {
                e.kind == DebouncedEventKind::Any
                    && (targets.matches(&e.path) || e.path.as_os_str() == EVENTS_LOST)
            });
            if !settled {
                return;
            }
            match changed.try_send(()) {
                Ok(()) => {}
                Err(TrySendError::Full(())) => {
                    tracing::debug!("watched files changed; a reload is already pending");
                }
                Err(TrySendError::Closed(())) => {
                    tracing::debug!("watched files changed; nobody listens any more");
                }
            }
        }
        Err(error) => tracing::warn!(%error, "file watcher error; still watching"),
    }
}

/// What is watched, as absolute paths in the form the OS reports events in
/// (directories canonicalized, so `/etc/vigil/../vigil/x` and a symlinked
/// directory compare equal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Targets {
    /// Each watched file: its canonical directory joined with its name.
    files: Vec<PathBuf>,
    /// Each watched tree's canonical root.
    trees: Vec<PathBuf>,
    /// Only files with this extension count under a tree (`None`: every file).
    tree_extension: Option<std::ffi::OsString>,
}

impl Targets {
    fn resolve(files: &[PathBuf], trees: &[PathBuf]) -> Result<Targets, WatchError> {
        Ok(Targets {
            files: files
                .iter()
                .map(|f| resolve_file(f))
                .collect::<Result<_, _>>()?,
            trees: trees
                .iter()
                .map(|t| canonical(t))
                .collect::<Result<_, _>>()?,
            tree_extension: None,
        })
    }

    /// Whether a path from an event is one we watch.
    fn matches(&self, path: &Path) -> bool {
        let extension_counts = self
            .tree_extension
            .as_ref()
            .is_none_or(|e| path.extension() == Some(e.as_os_str()));
        self.files.iter().any(|f| f == path)
            || (extension_counts && self.trees.iter().any(|t| path.starts_with(t)))
    }

    /// The OS watches to set up: each tree recursively, and each file's directory
    /// once, unless a tree already covers it.
    fn watches(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut watches: Vec<(PathBuf, RecursiveMode)> = self
            .trees
            .iter()
            .map(|t| (t.clone(), RecursiveMode::Recursive))
            .collect();
        for dir in self.files.iter().filter_map(|f| f.parent()) {
            let covered = self.trees.iter().any(|t| dir.starts_with(t))
                || watches.iter().any(|(w, _)| w == dir);
            if !covered {
                watches.push((dir.to_path_buf(), RecursiveMode::NonRecursive));
            }
        }
        watches
    }
}

/// A file path made absolute, with its directory canonicalized; the file itself
/// may be absent (between an editor's delete and create).
fn resolve_file(file: &Path) -> Result<PathBuf, WatchError> {
    let absolute = std::path::absolute(file).map_err(|source| WatchError::Resolve {
        path: file.to_path_buf(),
        source,
    })?;
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(WatchError::NotAFile {
            path: file.to_path_buf(),
        });
    };
    Ok(canonical(dir)?.join(name))
}

fn canonical(path: &Path) -> Result<PathBuf, WatchError> {
    path.canonicalize().map_err(|source| WatchError::Resolve {
        path: path.to_path_buf(),
        source,
    })
}

/// The path under which [`ContentWatcher`] reports that the OS dropped events (its
/// queue overflowed). Empty, so it names no real file; the debouncer tracks it like
/// any path, and [`notify_changed`] takes it to mean that anything may have changed.
const EVENTS_LOST: &str = "";

/// The platform's watcher behind a filter, so that the debouncer never sees a
/// file being opened or read. The debouncer constructs its watcher itself, from
/// nothing but a handler and a `notify::Config`, so this filter knows only event
/// kinds; paths are filtered after the debouncer, in [`notify_changed`].
#[derive(Debug)]
struct ContentWatcher {
    inner: RecommendedWatcher,
}

impl Watcher for ContentWatcher {
    fn new<F: EventHandler>(mut handler: F, config: notify::Config) -> notify::Result<Self> {
        let inner = RecommendedWatcher::new(
            move |event: notify::Result<Event>| match event {
                Ok(event) if event.need_rescan() => handler
                    .handle_event(Ok(Event::new(EventKind::Other).add_path(EVENTS_LOST.into()))),
                Ok(event) if !changes_content(&event.kind) => {}
                other => handler.handle_event(other),
            },
            config,
        )?;
        Ok(ContentWatcher { inner })
    }

    fn watch(&mut self, path: &Path, recursive_mode: RecursiveMode) -> notify::Result<()> {
        self.inner.watch(path, recursive_mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.inner.unwatch(path)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// Whether an event kind may mean new content. Opening, reading and closing a
/// file unwritten do not: the reload itself does all three.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests;
