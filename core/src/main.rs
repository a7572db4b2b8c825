//! `vigil`: run the softswitch, check a config, or ask a running one to reload.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil::config::Config;

/// mimalloc instead of glibc's malloc: the workers and the receive threads
/// allocate and free a message's buffers on different threads, and under
/// load glibc's arenas spent a fifth of Vigil's CPU in `_int_malloc`,
/// `malloc_consolidate` and their locks (BENCHMARKS.md, issue 16).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vigil: a SIP B2BUA softswitch that keeps calls honest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the switch in the foreground until SIGTERM or SIGINT. Exits 0 when
    /// every CDR is in the CDR file, 3 when some could not be written (printed
    /// on stderr, or left in the spill file for the next start), 1 when it
    /// could not start.
    Run {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 if it is good, 1 with every problem if
    /// not (including a CDR path that cannot be created or written).
    Check {
        /// The YAML config file to check.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask the daemon running on this config to reload it (as SIGHUP does) and
    /// print the result: exit 0 if it was applied, 1 if it was refused (the
    /// daemon keeps its running config) or no daemon answered.
    Reload {
        /// The YAML config file the daemon runs on (its control socket is
        /// found from it, even if the file is broken).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// CDR database tools (`cdr.postgres`).
    Cdr {
        #[command(subcommand)]
        command: CdrCommand,
    },
    /// Ask the daemon running on this config: `status`, `calls`, `call ID`,
    /// `hangup ID` (BYE both legs, CDR `admin`), `registrations` (the
    /// registrar's contacts), `registrations trunks` (Vigil's own with its
    /// trunks' registrars: state, expires in, last status, failures),
    /// `gateways` (each trunk gateway's health), `reload`,
    /// `trace`, `trace on NAME`, `trace off NAME` (a trunk, or `user:NAME`).
    /// Prints the answer (JSON for queries); exits 1 on an error.
    Ctl {
        /// The YAML config file the daemon runs on (its control socket is
        /// found from it).
        #[arg(long, short)]
        config: PathBuf,
        /// The command and its arguments (a Call-ID; `on`/`off` and a name).
        #[arg(required = true, num_args = 1..=3)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CdrCommand {
    /// Create the CDR table in `cdr.postgres` (`cdr.table`), or migrate it
    /// to this Vigil's schema version; with `--print`, print the SQL of the
    /// whole schema instead and touch no database.
    InitDb {
        /// The YAML config file naming the database.
        #[arg(long, short)]
        config: PathBuf,
        /// Print the SQL (for a DBA to run) instead of running it.
        #[arg(long)]
        print: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => check(&config),
        Command::Reload { config } => reload(&config),
        Command::Ctl { config, command } => ctl(&config, &command.join(" ")),
        Command::Cdr {
            command: CdrCommand::InitDb { config, print },
        } => init_db(&config, print),
        Command::Run { config } => match run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil: {e:#}");
                let code = e
                    .downcast_ref::<vigil::daemon::DaemonError>()
                    .map_or(1, vigil::daemon::DaemonError::exit_code);
                ExitCode::from(code)
            }
        },
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let mut problems: Vec<String> = vigil::policy::check(&c)
                .iter()
                .map(|problem| format!("{}: {problem}", path.display()))
                .collect();
            problems.extend(cdr_problems(&c));
            let (tls_problems, tls_warnings) = tls_problems(&c);
            problems.extend(tls_problems);
            for warning in tls_warnings {
                eprintln!("{warning}");
            }
            if !problems.is_empty() {
                for problem in problems {
                    eprintln!("{problem}");
                }
                return ExitCode::FAILURE;
            }
            println!(
                "{}: OK ({} listen, {} trunks, {} routes)",
                path.display(),
                c.listen.len(),
                c.trunks.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `vigil run` could write its CDRs: the file (and the spill, in
/// `cdr.spool`) can be created and appended to. Tried for real, leaving
/// nothing behind that was not there.
fn cdr_problems(c: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = vigil::cdr::check_path(&c.cdr.path) {
        problems.push(c.problem("cdr.path", e.to_string()).to_string());
    }
    if c.cdr.spool.is_some()
        && let Err(e) = vigil::cdr::check_path(&c.cdr.spill_path())
    {
        problems.push(c.problem("cdr.spool", e.to_string()).to_string());
    }
    if let (Some(sink), Some(dir)) = (&c.cdr.postgres, c.cdr.db_spool_dir()) {
        if let Err(e) = vigil::cdr::check_path(&dir.join("check.cdrs")) {
            problems.push(c.problem("cdr.spool", e.to_string()).to_string());
        }
        let checked = current_thread().map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(vigil::daemon::cdr_database::check_database(sink))
                .map_err(|e| e.to_string())
        });
        if let Err(e) = checked {
            problems.push(c.problem("cdr.postgres", e).to_string());
        }
    }
    problems
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `vigil cdr init-db`: prints the schema's SQL, or applies what the
/// database lacks of it.
fn init_db(path: &std::path::Path, print: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(sink) = &config.cdr.postgres else {
        eprintln!(
            "{}",
            config.problem("cdr.postgres", "not set: no CDR database to initialise")
        );
        return ExitCode::FAILURE;
    };
    if print {
        print!("{}", vigil::cdr::database::schema::full_script(&sink.table));
        return ExitCode::SUCCESS;
    }
    let applied = current_thread().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(vigil::daemon::cdr_database::init_database(sink))
            .map_err(|e| e.to_string())
    });
    match applied {
        Ok(versions) if versions.is_empty() => {
            println!(
                "{}: table {} is up to date (schema version {})",
                sink.shown_url(),
                sink.table,
                vigil::cdr::database::schema::VERSION
            );
            ExitCode::SUCCESS
        }
        Ok(versions) => {
            println!(
                "{}: table {} migrated to schema version {} (applied {versions:?})",
                sink.shown_url(),
                sink.table,
                vigil::cdr::database::schema::VERSION
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `vigil run` could build its TLS configs from the `tls:` files, as
/// the problems that would refuse it and warnings (certificates outside their
/// validity period) that would not.
fn tls_problems(c: &Config) -> (Vec<String>, Vec<String>) {
    use vigil::transport::tls::{self, TlsFileKind};
    let Some(config) = &c.tls else {
        return (Vec::new(), Vec::new());
    };
    let report = tls::check_files(config, std::time::SystemTime::now());
    let problems = report
        .errors
        .iter()
        .map(|e| {
            let key = e.file_kind().map_or("tls", TlsFileKind::config_key);
            c.problem(key, e.to_string()).to_string()
        })
        .collect();
    let warnings = report
        .warnings
        .iter()
        .map(|w| {
            c.problem(w.kind.config_key(), format!("warning: {w}"))
                .to_string()
        })
        .collect();
    (problems, warnings)
}

fn reload(path: &std::path::Path) -> ExitCode {
    use vigil::daemon::control::{self, Command};
    let socket = vigil::config::control_socket_for(path);
    match control::request(&socket, Command::Reload, std::time::Duration::from_secs(30)) {
        Ok(reply) if reply.ok => {
            println!("{}: reloaded: {}", path.display(), reply.text);
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            eprintln!(
                "{}: reload refused, the running config stays:\n{}",
                path.display(),
                reply.text
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ctl(path: &std::path::Path, line: &str) -> ExitCode {
    use vigil::daemon::control::{self, COMMANDS, Command};
    let Some(command) = Command::parse(line) else {
        eprintln!("vigil: unknown command {line:?}; known: {COMMANDS}");
        return ExitCode::FAILURE;
    };
    let socket = vigil::config::control_socket_for(path);
    match control::request(&socket, command, std::time::Duration::from_secs(30)) {
        Ok(reply) if reply.ok => {
            println!("{}", reply.text);
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            eprintln!("vigil: {}", reply.text);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    vigil::daemon::init_logging(&config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(vigil::daemon::run(config))?;
    Ok(())
}
