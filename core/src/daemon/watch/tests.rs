use std::fs;

use tempfile::TempDir;
use tokio::time::{sleep, timeout};

use super::*;

const DEBOUNCE: Duration = Duration::from_millis(250);
/// The longest a test waits for a notification that should come.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test listens for a notification that should not come: four
/// debounce windows.
const QUIET: Duration = Duration::from_secs(1);

/// A temporary config directory holding `vigil.yaml`, watched.
struct Setup {
    dir: TempDir,
    config: PathBuf,
    changes: mpsc::Receiver<()>,
    _watcher: FileWatcher,
}

fn watch_config(trees: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vigil.yaml");
    fs::write(&config, "sip: {}\n").expect("write config");
    let trees: Vec<PathBuf> = trees
        .iter()
        .map(|t| {
            let tree = dir.path().join(t);
            fs::create_dir_all(tree.join("lib")).expect("create tree");
            tree
        })
        .collect();
    let (tx, changes) = mpsc::channel(16);
    let watcher = FileWatcher::start(std::slice::from_ref(&config), &trees, None, DEBOUNCE, tx)
        .expect("watch");
    Setup {
        dir,
        config,
        changes,
        _watcher: watcher,
    }
}

impl Setup {
    async fn notified(&mut self) -> bool {
        timeout(PATIENCE, self.changes.recv()).await.is_ok()
    }

    async fn quiet(&mut self) -> bool {
        timeout(QUIET, self.changes.recv()).await.is_err()
    }
}

#[tokio::test]
async fn a_burst_of_writes_in_place_gives_one_notification() {
    let mut s = watch_config(&[]);
    for n in 0..3 {
        fs::write(&s.config, format!("sip: {{}}\n# edit {n}\n")).expect("write");
        sleep(Duration::from_millis(30)).await;
    }
    assert!(s.notified().await, "no notification for the writes");
    assert!(s.quiet().await, "a second notification for one burst");
}

#[tokio::test]
async fn an_atomic_rename_over_the_file_counts() {
    let mut s = watch_config(&[]);
    let tmp = s.dir.path().join(".vigil.yaml.tmp");
    fs::write(&tmp, "sip: {}\n# saved by an editor\n").expect("write tmp");
    fs::rename(&tmp, &s.config).expect("rename over");
    assert!(s.notified().await, "no notification for the rename");
    assert!(s.quiet().await, "a second notification for one save");
}

#[tokio::test]
async fn a_neighbour_file_does_not_count() {
    let mut s = watch_config(&[]);
    let other = s.dir.path().join("other.yaml");
    fs::write(&other, "a: 1\n").expect("write neighbour");
    fs::write(&other, "a: 2\n").expect("write neighbour");
    assert!(s.quiet().await, "a neighbour's change was taken for ours");
}

/// The reload reads the file: if that counted, every reload would trigger the next.
#[tokio::test]
async fn reading_the_file_does_not_count() {
    let mut s = watch_config(&[]);
    fs::read_to_string(&s.config).expect("read");
    fs::read_to_string(&s.config).expect("read");
    assert!(s.quiet().await, "reading the file was taken for a change");
}

#[tokio::test]
async fn a_change_deep_in_a_tree_counts() {
    let mut s = watch_config(&["scripts"]);
    let script = s.dir.path().join("scripts/lib/route.lua");
    fs::write(&script, "return {}\n").expect("write script");
    assert!(
        s.notified().await,
        "no notification for a file under the tree"
    );
}

#[tokio::test]
async fn a_deleted_and_recreated_file_is_still_watched() {
    let mut s = watch_config(&[]);
    fs::remove_file(&s.config).expect("delete");
    assert!(s.notified().await, "no notification for the deletion");
    fs::write(&s.config, "sip: {}\n# back\n").expect("re-create");
    assert!(s.notified().await, "no notification after re-creation");
    fs::write(&s.config, "sip: {}\n# edited again\n").expect("write");
    assert!(s.notified().await, "no notification for a later write");
}

#[tokio::test]
async fn a_full_channel_drops_the_extra_notification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vigil.yaml");
    let (tx, mut changes) = mpsc::channel(1);
    let _watcher =
        FileWatcher::start(std::slice::from_ref(&config), &[], None, DEBOUNCE, tx).expect("watch");
    fs::write(&config, "one\n").expect("write");
    sleep(DEBOUNCE * 3).await;
    fs::write(&config, "two\n").expect("write");
    sleep(DEBOUNCE * 3).await;
    assert!(timeout(PATIENCE, changes.recv()).await.is_ok());
    assert!(
        timeout(QUIET, changes.recv()).await.is_err(),
        "more than the channel holds"
    );
}

#[test]
fn a_relative_file_is_taken_from_the_current_directory() {
    let cwd = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .expect("cwd");
    let resolved = resolve_file(Path::new("vigil.yaml")).expect("resolve");
    assert_eq!(resolved, cwd.join("vigil.yaml"));
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nowhere/vigil.yaml");
    let (tx, _changes) = mpsc::channel(1);
    let error = FileWatcher::start(std::slice::from_ref(&file), &[], None, DEBOUNCE, tx)
        .expect_err("an error");
    assert!(matches!(error, WatchError::Resolve { .. }), "{error:?}");
    assert!(error.to_string().contains("nowhere"), "{error}");
}

#[test]
fn a_path_without_a_file_name_is_refused() {
    let error = resolve_file(Path::new("..")).expect_err("an error");
    assert!(matches!(error, WatchError::NotAFile { .. }), "{error:?}");
}

#[test]
fn each_directory_is_watched_once_and_trees_cover_their_files() {
    let targets = Targets {
        files: vec![
            PathBuf::from("/etc/vigil/vigil.yaml"),
            PathBuf::from("/etc/vigil/users.yaml"),
            PathBuf::from("/srv/scripts/lib/extra.lua"),
        ],
        trees: vec![PathBuf::from("/srv/scripts")],
        tree_extension: None,
    };
    assert_eq!(
        targets.watches(),
        vec![
            (PathBuf::from("/srv/scripts"), RecursiveMode::Recursive),
            (PathBuf::from("/etc/vigil"), RecursiveMode::NonRecursive),
        ]
    );
    assert!(targets.matches(Path::new("/etc/vigil/vigil.yaml")));
    assert!(targets.matches(Path::new("/srv/scripts/a/b.lua")));
    assert!(!targets.matches(Path::new("/etc/vigil/vigil.yaml.swp")));
    assert!(!targets.matches(Path::new("/srv/scripts-old/a.lua")));
}

#[test]
fn opening_and_reading_are_not_content_changes() {
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind};
    assert!(!changes_content(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(!changes_content(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
    assert!(changes_content(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
        DataChange::Any
    ))));
    assert!(changes_content(&EventKind::Create(CreateKind::File)));
    assert!(changes_content(&EventKind::Remove(RemoveKind::File)));
}
