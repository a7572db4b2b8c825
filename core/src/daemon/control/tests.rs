use std::net::Shutdown;

use tempfile::TempDir;
use tokio::task::JoinHandle;

use super::*;

const PATIENCE: Duration = Duration::from_secs(5);

fn socket_in(dir: &TempDir) -> PathBuf {
    dir.path().join("vigil.sock")
}

/// A server on `path` whose daemon answers every command with `reply`.
fn serve_with(path: &Path, reply: Reply) -> (JoinHandle<()>, JoinHandle<Vec<Command>>) {
    let (requests, mut commands) = mpsc::channel(4);
    let server = ControlServer::bind(path, requests).expect("bind");
    let daemon = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((command, answer)) = commands.recv().await {
            seen.push(command);
            let _ = answer.send(reply.clone());
        }
        seen
    });
    (tokio::spawn(server.run()), daemon)
}

/// `request` is blocking, as the CLI runs it: keep it off the runtime's thread.
async fn ask(path: &Path, timeout: Duration) -> Result<Reply, ControlError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || request(&path, Command::Reload, timeout))
        .await
        .expect("client thread")
}

/// Sends raw bytes and returns all the server wrote back.
async fn exchange(path: &Path, bytes: &'static [u8]) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut stream = StdUnixStream::connect(&path).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream.write_all(bytes).expect("send");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read reply");
        reply
    })
    .await
    .expect("client thread")
}

#[tokio::test]
async fn reload_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let (server, daemon) = serve_with(&path, Reply::ok("reloaded: 2 trunks, 3 routes"));

    let reply = ask(&path, PATIENCE).await.expect("reply");
    assert_eq!(reply, Reply::ok("reloaded: 2 trunks, 3 routes"));

    let mode = fs::metadata(&path).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    server.abort();
    assert!(server.await.expect_err("aborted").is_cancelled());
    assert!(!path.exists(), "the socket file outlived its server");
    assert_eq!(daemon.await.expect("daemon"), vec![Command::Reload]);
}

#[tokio::test]
async fn a_failed_reload_comes_back_as_an_error_with_its_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let text = "vigil.yaml:12: trunks[0].host: missing\nscripts/route.lua:3: syntax error\n";
    let (_server, _daemon) = serve_with(&path, Reply::error(text));

    let reply = ask(&path, PATIENCE).await.expect("reply");
    assert!(!reply.ok);
    assert_eq!(reply.text, text);
}

#[tokio::test]
async fn an_unknown_command_is_answered_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let (_server, _daemon) = serve_with(&path, Reply::ok("reloaded"));

    let wire = exchange(&path, b"frobnicate\n").await;
    let reply = Reply::decode(wire.as_bytes()).expect("a reply");
    assert!(!reply.ok, "{wire}");
    assert!(reply.text.contains("frobnicate"), "{wire}");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    drop(StdUnixListener::bind(&path).expect("a dead daemon's socket"));
    assert!(path.exists());

    let (_server, _daemon) = serve_with(&path, Reply::ok("reloaded"));
    assert_eq!(
        ask(&path, PATIENCE).await.expect("reply"),
        Reply::ok("reloaded")
    );
}

#[tokio::test]
async fn a_live_daemon_keeps_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let (_server, _daemon) = serve_with(&path, Reply::ok("reloaded"));

    let (requests, _commands) = mpsc::channel(1);
    let error = ControlServer::bind(&path, requests).expect_err("a second bind fails");
    assert!(matches!(error, ControlError::InUse { .. }), "{error:?}");
    assert!(error.to_string().contains("already listening"), "{error}");
    assert!(error.to_string().contains("vigil.sock"), "{error}");

    assert_eq!(
        ask(&path, PATIENCE).await.expect("reply"),
        Reply::ok("reloaded")
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    fs::write(&path, "not a socket").expect("write");
    let (requests, _commands) = mpsc::channel(1);
    let error = ControlServer::bind(&path, requests).expect_err("bind refuses");
    assert!(
        matches!(error, ControlError::NotASocket { .. }),
        "{error:?}"
    );
    assert_eq!(
        fs::read_to_string(&path).expect("still there"),
        "not a socket"
    );
}

#[tokio::test]
async fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = ask(&socket_in(&dir), PATIENCE)
        .await
        .expect_err("nobody there");
    assert!(matches!(error, ControlError::NoDaemon { .. }), "{error:?}");
    assert!(
        error.to_string().contains("no daemon listening at"),
        "{error}"
    );
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let (requests, mut commands) = mpsc::channel(1);
    let server = tokio::spawn(ControlServer::bind(&path, requests).expect("bind").run());
    // Holds the answer back until the test ends.
    let daemon = tokio::spawn(async move { commands.recv().await });

    let error = ask(&path, Duration::from_millis(300))
        .await
        .expect_err("no answer");
    assert!(matches!(error, ControlError::Timeout { .. }), "{error:?}");
    server.abort();
    daemon.abort();
}

#[tokio::test]
async fn a_daemon_shutting_down_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = socket_in(&dir);
    let (requests, commands) = mpsc::channel(1);
    let _server = tokio::spawn(ControlServer::bind(&path, requests).expect("bind").run());
    drop(commands);

    let reply = ask(&path, PATIENCE).await.expect("reply");
    assert!(!reply.ok);
    assert!(reply.text.contains("shutting down"), "{}", reply.text);
}

#[tokio::test]
async fn request_lines_are_bounded() {
    let long = vec![b'a'; MAX_REQUEST_LINE + 10];
    let error = read_request(&mut long.as_slice())
        .await
        .expect_err("too long");
    assert!(matches!(error, RequestError::TooLong), "{error:?}");

    let mut crlf: &[u8] = b"reload\r\nextra";
    let line = read_request(&mut crlf).await.expect("a line");
    assert_eq!(line.as_deref(), Some("reload"));

    let mut unterminated: &[u8] = b"reload";
    let line = read_request(&mut unterminated).await.expect("a line");
    assert_eq!(line.as_deref(), Some("reload"));

    let mut nothing: &[u8] = b"";
    assert_eq!(read_request(&mut nothing).await.expect("eof"), None);

    let mut binary: &[u8] = b"\xff\xfe\n";
    let error = read_request(&mut binary).await.expect_err("not UTF-8");
    assert!(matches!(error, RequestError::NotUtf8), "{error:?}");
}

#[test]
fn replies_survive_the_wire() {
    for reply in [
        Reply::ok(""),
        Reply::ok("reloaded"),
        Reply::error("line one\nline two\n"),
    ] {
        assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
    }
    assert!(Reply::decode(b"").is_err());
    assert!(Reply::decode(b"maybe\ntext").is_err());
}

#[test]
fn a_huge_reply_is_cut_to_fit_the_client() {
    let huge = Reply::error("é".repeat(MAX_REPLY));
    let wire = huge.encode();
    assert!(wire.len() <= MAX_REPLY, "{} bytes", wire.len());
    let reply = Reply::decode(&wire).expect("decodes");
    assert!(!reply.ok);
    assert!(reply.text.ends_with("(reply cut at 1048512 bytes)"));
}

#[test]
fn only_the_daemons_user_and_root_may_control_it() {
    assert!(may_control(1000, 1000));
    assert!(may_control(0, 1000));
    assert!(!may_control(1001, 1000));
}
