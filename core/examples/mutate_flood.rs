//! Mutated-datagram flood for `tests/load/mutate.sh`: sends N mutated SIP
//! datagrams (truncated, bit-flipped, oversized, lying Content-Length, absurd
//! Session-Expires/Min-SE/CSeq, headers duplicated, removed or inserted, line
//! endings swapped; see `tests/support/mutate.rs`) over UDP to a switch, paced
//! or as fast as the socket takes them, and reads what comes back on the same
//! socket without ever blocking the sender.
//!
//! ```sh
//! cargo run --release -p vigil-core --example mutate_flood -- \
//!     --target 127.0.0.1:5060 --local 127.0.0.3:0 --count 1000000 --rate 20000 --seed 7
//! ```
//!
//! The same `--seed`, seeds and `--local` IP give the same datagrams, so one
//! that hurt the switch can be written out again with `--dump INDEX --out FILE`.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};

#[path = "../../tests/support/mutate.rs"]
mod mutate;

use mutate::{Flood, Mutator, Report, Seed, builtin_seeds, load_seeds};

/// Port written into the built-in seeds' Via and Contact when `--local` asks
/// for any port: the seeds (and so the datagrams) do not depend on the port
/// the kernel picks. Replies still come back to the real port (rport).
const SEED_PORT: u16 = 5999;

#[derive(Parser, Debug)]
#[command(
    name = "mutate_flood",
    about = "Send mutated SIP datagrams (truncated, bit-flipped, oversized, lying Content-Length, \
absurd Session-Expires/Min-SE/CSeq, mangled headers and line endings) to a SIP switch over UDP",
    after_help = "Seeds: every file of the --seeds-dir folders (default: the repository's copy of the 49 \
RFC 4475 torture messages, tests/data/rfc4475) plus 15 built-in well-formed requests and responses \
with session-timer headers (INVITE, re-INVITE, UPDATE, BYE, ACK, INFO, CANCEL, OPTIONS, REGISTER, \
180/200/422). Every datagram gets a fresh Call-ID, Via branch and From tag.\n\n\
Exit status: 0 when every datagram was sent; 1 when the flood stopped early (the --watch-pid \
process died, or the network refused 1,000 sends in a row); 2 on bad arguments."
)]
struct Args {
    /// The switch's SIP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,

    /// The local address to send from (port 0: any free port).
    #[arg(long, default_value = "127.0.0.3:0")]
    local: SocketAddr,

    /// How many datagrams to send.
    #[arg(long, short = 'n', default_value_t = 1_000_000)]
    count: u64,

    /// Datagrams per second (token bucket, 5 ms bursts); without it, as fast
    /// as the socket takes them.
    #[arg(long)]
    rate: Option<f64>,

    /// PRNG seed: the same seed gives the same datagrams.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// The first datagram's index (to replay the tail of a run).
    #[arg(long, default_value_t = 0)]
    first: u64,

    /// A folder of seed messages, one per file (`*.md` skipped); repeatable.
    /// Replaces the default RFC 4475 folder.
    #[arg(long = "seeds-dir", value_name = "DIR")]
    seeds_dirs: Vec<PathBuf>,

    /// No seed files, only the built-in seeds.
    #[arg(long, conflicts_with = "seeds_dirs")]
    no_rfc4475: bool,

    /// No built-in seeds, only the seed files.
    #[arg(long)]
    no_builtin: bool,

    /// The number the built-in INVITEs dial (keep it unrouted, or they become
    /// real calls).
    #[arg(long, default_value = "7777")]
    number: String,

    /// Do not ACK non-2xx final answers to INVITEs (the switch then
    /// retransmits each for 32 s).
    #[arg(long)]
    no_ack: bool,

    /// Milliseconds to keep reading answers after the last datagram.
    #[arg(long, default_value_t = 1_000)]
    linger_ms: u64,

    /// Stop as soon as this process (the switch) is gone.
    #[arg(long, value_name = "PID")]
    watch_pid: Option<u32>,

    /// Write the last N datagrams sent into --keep-dir at the end (one file
    /// each, named INDEX-SEED+MUTATIONS.sip), to find the one that hurt.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "keep_dir")]
    keep_last: usize,

    /// Where --keep-last writes.
    #[arg(long, value_name = "DIR")]
    keep_dir: Option<PathBuf>,

    /// Send nothing: write datagram INDEX to --out (or stdout) and exit.
    #[arg(long, value_name = "INDEX")]
    dump: Option<u64>,

    /// The file for --dump.
    #[arg(long, value_name = "FILE", requires = "dump")]
    out: Option<PathBuf>,

    /// Also write the summary as `key value` lines to FILE (for scripts).
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,

    /// No progress line every 10 s on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn default_seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rfc4475")
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mutate_flood: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let seeds_me = SocketAddr::new(
        args.local.ip(),
        if args.local.port() == 0 {
            SEED_PORT
        } else {
            args.local.port()
        },
    );
    let (seeds, files) = collect_seeds(args, seeds_me)?;
    if seeds.is_empty() {
        return Err("no seed messages (--no-builtin with --no-rfc4475)".into());
    }
    let mutator = Mutator::new(seeds, args.seed);

    if let Some(index) = args.dump {
        let mutant = mutator.mutant(index);
        eprintln!(
            "datagram {index}: {} bytes, {}",
            mutant.bytes.len(),
            mutant.label(mutator.seeds())
        );
        return match &args.out {
            Some(path) => std::fs::write(path, &mutant.bytes)
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| format!("cannot write {}: {e}", path.display())),
            None => std::io::stdout()
                .write_all(&mutant.bytes)
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| format!("cannot write to stdout: {e}")),
        };
    }

    let socket = bind(args.local).map_err(|e| format!("cannot bind {}: {e}", args.local))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let flood = Flood {
        target: args.target,
        count: args.count,
        first: args.first,
        rate: args.rate,
        ack: !args.no_ack,
        linger: Duration::from_millis(args.linger_ms),
        watch_pid: args.watch_pid,
        keep_last: args.keep_last,
    };
    eprintln!(
        "mutate_flood: {} datagrams from {local} to {} ({}), seed {}, {} seed messages ({files} files, {} built in)",
        args.count,
        args.target,
        args.rate.map_or_else(
            || "as fast as possible".to_string(),
            |r| format!("{r:.0}/s")
        ),
        args.seed,
        mutator.seeds().len(),
        mutator.seeds().len() - files,
    );
    let mut last_progress = 0u64;
    let report = flood
        .run(&socket, &mutator, |r| {
            let secs = r.sending.as_secs();
            if !args.quiet && secs >= last_progress + 10 {
                last_progress = secs;
                eprintln!(
                    "  {secs:>4} s: {} sent ({:.0}/s), {} answers",
                    r.sent,
                    r.rate(),
                    r.replies.responses()
                );
            }
        })
        .map_err(|e| format!("socket {local}: {e}"))?;

    let summary = summary(&report, local, args, files, mutator.seeds().len() - files);
    print!("{summary}");
    if let Some(path) = &args.stats_file {
        std::fs::write(path, stats(&report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(dir) = &args.keep_dir {
        keep(dir, &report, mutator.seeds())?;
    }
    Ok(if report.stopped_early.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Large socket buffers (the kernel caps them at net.core.rmem_max/wmem_max):
/// the switch's answers must not be lost while the sender is busy.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

fn bind(local: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer only means more answers lost, and those
    // are counted anyway.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&local.into())?;
    Ok(socket.into())
}

/// The seed messages, and how many of them came from files.
fn collect_seeds(args: &Args, me: SocketAddr) -> Result<(Vec<Seed>, usize), String> {
    let mut seeds = Vec::new();
    if !args.no_rfc4475 {
        let dirs = if args.seeds_dirs.is_empty() {
            vec![default_seeds_dir()]
        } else {
            args.seeds_dirs.clone()
        };
        for dir in dirs {
            let found = load_seeds(&dir)
                .map_err(|e| format!("cannot read seeds from {}: {e}", dir.display()))?;
            if found.is_empty() {
                return Err(format!("no seed files in {}", dir.display()));
            }
            seeds.extend(found);
        }
    }
    let files = seeds.len();
    if !args.no_builtin {
        seeds.extend(builtin_seeds(me, args.target, &args.number));
    }
    Ok((seeds, files))
}

fn summary(r: &Report, local: SocketAddr, args: &Args, files: usize, builtin: usize) -> String {
    let mut s = String::new();
    let secs = r.sending.as_secs_f64();
    s += &format!(
        "mutate_flood summary: {local} -> {}, seed {}, {files} seed files + {builtin} built-in seeds\n",
        args.target, args.seed
    );
    s += &format!(
        "  sent:        {} datagrams, {} bytes ({:.1} MB), largest {} bytes, in {secs:.1} s: {:.0} datagrams/s, {:.1} MB/s\n",
        r.sent,
        r.bytes,
        r.bytes as f64 / 1e6,
        r.largest,
        r.rate(),
        if secs > 0.0 {
            r.bytes as f64 / 1e6 / secs
        } else {
            0.0
        },
    );
    s += &format!(
        "  send errors: {}{} (full-buffer retries: {})\n",
        r.send_errors,
        r.first_send_error
            .as_ref()
            .map_or_else(String::new, |e| format!(", first: {e}")),
        r.send_retries
    );
    s += "  mutations (datagrams each was applied to; a datagram may carry up to 3):\n";
    s += &format!("    {:<18}{:>10}\n", "unchanged", r.unchanged);
    for (m, n) in r.kinds() {
        s += &format!("    {:<18}{n:>10}\n", m.name());
    }
    let rep = &r.replies;
    s += &format!(
        "  received:    {} responses (1xx {}, 2xx {}, 3xx {}, 4xx {}, 5xx {}, 6xx {}, other codes {}), {} requests, {} other; {} ACKs sent; {} receive errors\n",
        rep.responses(),
        rep.by_class[1],
        rep.by_class[2],
        rep.by_class[3],
        rep.by_class[4],
        rep.by_class[5],
        rep.by_class[6],
        rep.by_class[0],
        rep.requests,
        rep.other,
        rep.acks_sent,
        rep.receive_errors,
    );
    if let Some(why) = &r.stopped_early {
        s += &format!("  STOPPED EARLY: {why}\n");
    }
    s
}

fn stats(r: &Report) -> String {
    let rep = &r.replies;
    let mut lines = vec![
        format!("sent {}", r.sent),
        format!("bytes {}", r.bytes),
        format!("largest {}", r.largest),
        format!("seconds {:.3}", r.sending.as_secs_f64()),
        format!("rate {:.0}", r.rate()),
        format!("send_errors {}", r.send_errors),
        format!("send_retries {}", r.send_retries),
        format!("mutation.unchanged {}", r.unchanged),
    ];
    lines.extend(r.kinds().map(|(m, n)| format!("mutation.{} {n}", m.name())));
    lines.push(format!("responses {}", rep.responses()));
    for class in 1..=6 {
        lines.push(format!("responses.{class}xx {}", rep.by_class[class]));
    }
    lines.push(format!("responses.other {}", rep.by_class[0]));
    lines.push(format!("requests_received {}", rep.requests));
    lines.push(format!("other_received {}", rep.other));
    lines.push(format!("acks_sent {}", rep.acks_sent));
    lines.push(format!("receive_errors {}", rep.receive_errors));
    lines.push(format!(
        "stopped_early {}",
        r.stopped_early.as_deref().unwrap_or("no")
    ));
    lines.join("\n") + "\n"
}

fn keep(dir: &Path, r: &Report, seeds: &[Seed]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for mutant in &r.last {
        let name = format!("{:07}-{}.sip", mutant.index, mutant.label(seeds));
        let path = dir.join(name.replace(['/', ' '], "_"));
        std::fs::write(&path, &mutant.bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
