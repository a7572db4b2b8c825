//! The control socket: how `vigil reload` asks a running daemon to reload, and
//! prints what came of it.
//!
//! It owns the Unix socket file (binding it, refusing to take it from a live
//! daemon, removing it when the server stops) and the line protocol spoken on it.
//! What a command does is the daemon's business: each command goes out on a
//! channel with a `oneshot` for the [`Reply`]. Only the daemon's user (and root)
//! may send commands: the socket is mode 0600, and a peer whose uid is neither
//! is answered with an error, which also covers the instant between `bind` and
//! `chmod`.
//!
//! The wire format, one exchange per connection:
//!
//! ```text
//! client: reload\n                  one line, at most 1 KiB
//! server: ok\n   or   error\n
//!         text, any number of lines (at most 1 MiB in all)
//!         <closes the connection>
//! ```

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// The longest request line accepted, newline excluded.
const MAX_REQUEST_LINE: usize = 1024;
/// The longest reply a client reads, status line included; the server cuts the
/// text to fit, so a daemon's long error list never breaks the client.
const MAX_REPLY: usize = 1024 * 1024;
/// Room kept for the status line and the truncation note.
const REPLY_HEADROOM: usize = 64;
/// How long a connection may take to send its command: a client that connects
/// and says nothing must not hold a handler forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a reply may take before the client is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog. Commands are
/// rare and run one at a time in the daemon anyway.
const MAX_CONNECTIONS: usize = 8;
/// Pause after a failed `accept` (say, out of file descriptors), so that the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A request from an operator's command. Replies to the queries are JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Re-read the config file, scripts and plugins; keep the running state if any
    /// of it fails.
    Reload,
    /// The config's version (reload generation) and the last reload error.
    Status,
    /// Every call in progress with its legs' timers.
    Calls,
    /// One call, by its A- or B-leg Call-ID.
    Call(String),
    /// End one call (BYE both legs, CDR `end_reason: admin`).
    Hangup(String),
    /// Every registered contact.
    Registrations,
    /// Every trunk's gateways with their health and calls in flight.
    Gateways,
    /// Vigil's own registrations with its trunks' registrars.
    TrunkRegistrations,
    /// What is traced.
    Trace,
    /// Start tracing a trunk (`NAME`) or a user (`user:NAME`).
    TraceOn(String),
    /// Stop tracing one.
    TraceOff(String),
}

/// Every command word, for error messages and help.
pub const COMMANDS: &str = "reload, status, calls, call CALL-ID, hangup CALL-ID, registrations, gateways, \
                            registrations trunks, \
                            trace, trace on NAME, trace off NAME (NAME: a trunk, or user:NAME)";

impl Command {
    /// The command word on the wire.
    pub fn word(&self) -> &'static str {
        match self {
            Command::Reload => "reload",
            Command::Status => "status",
            Command::Calls => "calls",
            Command::Call(_) => "call",
            Command::Hangup(_) => "hangup",
            Command::Registrations | Command::TrunkRegistrations => "registrations",
            Command::Gateways => "gateways",
            Command::Trace | Command::TraceOn(_) | Command::TraceOff(_) => "trace",
        }
    }

    /// A request line: a word, and a Call-ID for `call` and `hangup`.
    pub fn parse(line: &str) -> Option<Command> {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["reload"] => Some(Command::Reload),
            ["status"] => Some(Command::Status),
            ["calls"] => Some(Command::Calls),
            ["registrations"] => Some(Command::Registrations),
            ["gateways"] => Some(Command::Gateways),
            ["registrations", "trunks"] => Some(Command::TrunkRegistrations),
            ["call", id] => Some(Command::Call((*id).to_string())),
            ["hangup", id] => Some(Command::Hangup((*id).to_string())),
            ["trace"] => Some(Command::Trace),
            ["trace", "on", name] => Some(Command::TraceOn((*name).to_string())),
            ["trace", "off", name] => Some(Command::TraceOff((*name).to_string())),
            _ => None,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Call(id) | Command::Hangup(id) => write!(f, "{} {id}", self.word()),
            Command::TraceOn(name) => write!(f, "trace on {name}"),
            Command::TraceOff(name) => write!(f, "trace off {name}"),
            Command::TrunkRegistrations => f.write_str("registrations trunks"),
            _ => f.write_str(self.word()),
        }
    }
}

/// What the daemon answers: success or failure, with a human-readable text (may
/// be multi-line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub text: String,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            text: text.into(),
        }
    }

    /// The reply on the wire, its text cut to fit [`MAX_REPLY`].
    fn encode(&self) -> Vec<u8> {
        let status = if self.ok { "ok" } else { "error" };
        let text = truncate(&self.text, MAX_REPLY - REPLY_HEADROOM);
        let mut wire = Vec::with_capacity(status.len() + 1 + text.len());
        wire.extend_from_slice(status.as_bytes());
        wire.push(b'\n');
        wire.extend_from_slice(text.as_bytes());
        wire
    }

    /// Reads a reply off the wire; the error says what is wrong with it.
    fn decode(wire: &[u8]) -> Result<Reply, String> {
        let (status, text) = match wire.iter().position(|&b| b == b'\n') {
            Some(end) => (&wire[..end], &wire[end + 1..]),
            None => (wire, &[][..]),
        };
        let ok = match status {
            b"ok" => true,
            b"error" => false,
            _ if wire.is_empty() => return Err("the connection closed without a reply".into()),
            other => {
                return Err(format!(
                    "status line {:?} is neither `ok` nor `error`",
                    String::from_utf8_lossy(other)
                ));
            }
        };
        Ok(Reply {
            ok,
            text: String::from_utf8_lossy(text).into_owned(),
        })
    }
}

/// `text`, cut on a character boundary to at most `limit` bytes plus a note.
fn truncate(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}\n… (reply cut at {limit} bytes)", &text[..end]))
}

/// What went wrong binding the control socket, or talking to a daemon over it.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another Vigil daemon is already listening on {path}; stop it first, or give this one \
         another `control.socket`"
    )]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it (check `control.socket`)")]
    NotASocket { path: PathBuf },
    #[error("cannot bind the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("no daemon listening at {path} (is `vigil run` running with this config?): {source}")]
    NoDaemon { path: PathBuf, source: io::Error },
    #[error("cannot connect to the daemon at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("the daemon at {path} did not answer within {after:?}")]
    Timeout { path: PathBuf, after: Duration },
    #[error("talking to the daemon at {path} failed: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon at {path} sent a reply that cannot be read: {reason}")]
    MalformedReply { path: PathBuf, reason: String },
}

/// Where commands go: the daemon answers each on its `oneshot`.
pub type Requests = mpsc::Sender<(Command, oneshot::Sender<Reply>)>;

/// A bound control socket, not yet serving: [`ControlServer::run`] serves it.
#[derive(Debug)]
pub struct ControlServer {
    listener: StdUnixListener,
    /// Removes the socket file when the server goes.
    socket: SocketFile,
    requests: Requests,
}

impl ControlServer {
    /// Binds `path` with mode 0600. A socket file left by a dead daemon (nobody
    /// answers on it) is replaced; a live daemon on it, or a file that is not a
    /// socket, is an error. Needs no runtime: serving starts with [`run`].
    ///
    /// [`run`]: ControlServer::run
    pub fn bind(path: &Path, requests: Requests) -> Result<ControlServer, ControlError> {
        clear_stale(path)?;
        let bind_error = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = StdUnixListener::bind(path).map_err(bind_error)?;
        let socket = SocketFile::claim(path).map_err(bind_error)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        Ok(ControlServer {
            listener,
            socket,
            requests,
        })
    }

    /// Serves connections until this future is dropped (abort its task, or let a
    /// `select!` on shutdown drop it); dropping it removes the socket file and
    /// ends the connections in progress. Must run inside a tokio runtime.
    pub async fn run(self) {
        let ControlServer {
            listener,
            socket,
            requests,
        } = self;
        let listener = match UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, path = %socket.path.display(), "control socket unusable");
                return;
            }
        };
        tracing::info!(path = %socket.path.display(), "control socket listening");
        let mut handlers = JoinSet::new();
        loop {
            tokio::select! {
                Some(done) = handlers.join_next(), if !handlers.is_empty() => {
                    if let Err(error) = done {
                        tracing::error!(%error, "control connection handler failed");
                    }
                }
                accepted = listener.accept(), if handlers.len() < MAX_CONNECTIONS => match accepted {
                    Ok((stream, _)) => {
                        handlers.spawn(serve(stream, socket.owner, requests.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "control socket accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }
}

/// Removes what a dead daemon left at `path`, after making sure it is dead.
fn clear_stale(path: &Path) -> Result<(), ControlError> {
    let bind_error = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bind_error(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ControlError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    match StdUnixStream::connect(path) {
        Ok(_probe) => Err(ControlError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale control socket");
            fs::remove_file(path).map_err(bind_error)
        }
        Err(e) => Err(bind_error(e)),
    }
}

/// The socket file this server created; removed on drop, unless another daemon
/// has put its own socket there since (the inode tells).
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// The uid that owns the socket, which is the daemon's own.
    owner: u32,
}

impl SocketFile {
    fn claim(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            owner: meta.uid(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if !ours {
            return;
        }
        if let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(%error, path = %self.path.display(), "cannot remove the control socket");
        }
    }
}

/// One connection: read a command, have the daemon answer it, write the answer.
async fn serve(mut stream: UnixStream, daemon_uid: u32, requests: Requests) {
    let line = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Err(_elapsed) => Err(RequestError::Timeout),
        Ok(read) => read,
    };
    let reply = match line {
        // Connected and closed without a word: another daemon's `bind` checking
        // whether this one is alive.
        Ok(None) => return,
        Ok(Some(line)) => match peer_uid(&stream) {
            Some(uid) if may_control(uid, daemon_uid) => answer(&line, &requests).await,
            uid => {
                tracing::warn!(?uid, "control command from another user refused");
                Reply::error("permission denied: only the daemon's user may control it")
            }
        },
        Err(problem) => Reply::error(problem.to_string()),
    };
    write_reply(&mut stream, &reply).await;
}

/// Why a request line could not be read.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("no command received within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("the command line is longer than {MAX_REQUEST_LINE} bytes")]
    TooLong,
    #[error("the command is not UTF-8")]
    NotUtf8,
    #[error("reading the command failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads one line, at most [`MAX_REQUEST_LINE`] bytes; `None` when the peer
/// closed without sending anything. A last line without its newline counts.
async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<String>, RequestError> {
    let mut line = Vec::with_capacity(64);
    let limit = MAX_REQUEST_LINE as u64 + 1;
    BufReader::new(reader.take(limit))
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_REQUEST_LINE {
        return Err(RequestError::TooLong);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| RequestError::NotUtf8)
}

/// The peer's uid, from the kernel (`SO_PEERCRED`); `None` if it cannot say.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    stream.peer_cred().ok().map(|cred| cred.uid())
}

/// Whether a peer may send commands: the daemon's own user, or root (who could
/// open the 0600 socket anyway).
fn may_control(peer_uid: u32, daemon_uid: u32) -> bool {
    peer_uid == daemon_uid || peer_uid == 0
}

/// Hands a command to the daemon and waits for its answer.
async fn answer(line: &str, requests: &Requests) -> Reply {
    let word = line.trim();
    let Some(command) = Command::parse(word) else {
        return Reply::error(format!("unknown command {word:?}; known: {COMMANDS}"));
    };
    let (reply, answered) = oneshot::channel();
    if requests.send((command, reply)).await.is_err() {
        return Reply::error("the daemon is shutting down");
    }
    answered
        .await
        .unwrap_or_else(|_| Reply::error("the daemon dropped the command without answering"))
}

async fn write_reply(stream: &mut UnixStream, reply: &Reply) {
    let wire = reply.encode();
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&wire).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "control client went away before the reply"),
        Err(_elapsed) => tracing::debug!("control client did not read its reply"),
    }
}

/// Client side, for the CLI: connects to the daemon at `path`, sends `command`
/// and returns the daemon's [`Reply`]. Blocking; gives up after `timeout` in all
/// (a reload that compiles many scripts takes a while: 30 s is a fair value).
pub fn request(path: &Path, command: Command, timeout: Duration) -> Result<Reply, ControlError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(path)?;
    let io_error = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(io_error)?;
    let wire = read_reply(&mut stream, path, deadline, timeout)?;
    Reply::decode(&wire).map_err(|reason| ControlError::MalformedReply {
        path: path.to_path_buf(),
        reason,
    })
}

fn connect(path: &Path) -> Result<StdUnixStream, ControlError> {
    StdUnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NoDaemon {
            path: path.to_path_buf(),
            source,
        },
        _ => ControlError::Connect {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Reads until the daemon closes the connection, at most [`MAX_REPLY`] bytes,
/// before `deadline`.
fn read_reply(
    stream: &mut StdUnixStream,
    path: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, ControlError> {
    let timed_out = || ControlError::Timeout {
        path: path.to_path_buf(),
        after: timeout,
    };
    let mut wire = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|source| ControlError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(wire),
            Ok(n) => wire.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(source) => {
                return Err(ControlError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        if wire.len() > MAX_REPLY {
            return Err(ControlError::MalformedReply {
                path: path.to_path_buf(),
                reason: format!("it is longer than {MAX_REPLY} bytes"),
            });
        }
    }
}

#[cfg(test)]
mod tests;
