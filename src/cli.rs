//! The command line: `run`, `validate`, `audit verify`. Each command returns an exit code;
//! errors name the file and key at fault and never end in a panic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "wardgate",
    version,
    about = "Authorization sidecar for clinic records APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: the proxy listener and the admin listener
    Run {
        /// Config file (else $WARDGATE_CONFIG, else ./wardgate.yaml)
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The embedded demo: backend, signing key, shipped policies and the sidecar in one process
    Demo,
    /// Load config, schema and policies and validate them strictly
    Validate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run policy test files (default: the `tests/` folder of `policies.dir`)
    Test {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Test files or folders of them
        paths: Vec<PathBuf>,
    },
    /// Explain one decision: the Cedar request built, the decision, the determining policies
    /// and any evaluation errors
    Explain {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A JWT whose claims to use (its signature is NOT checked: this is an analyst's tool)
        #[arg(long, conflicts_with = "claims", required_unless_present = "claims")]
        token: Option<String>,
        /// The token's claims as JSON, e.g. '{"sub":"dr-ada","roles":["doctor"]}'
        #[arg(long)]
        claims: Option<String>,
        /// A request header, `Name: value` (e.g. `X-Break-Glass: reason`); repeatable
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// HTTP method
        method: String,
        /// Request target, e.g. /patients/p-1
        path: String,
    },
    /// Audit trail tools
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of JSONL audit files, given in order
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `--config`, else `$WARDGATE_CONFIG`, else `./wardgate.yaml`.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("WARDGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("wardgate.yaml"))
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            init_tracing();
            match load_config(&config_path(config)) {
                Ok(c) => block_on("wardgate", crate::app::run(c)),
                Err(code) => code,
            }
        }
        Command::Demo => {
            init_tracing();
            block_on("wardgate demo", crate::demo::run())
        }
        Command::Validate { config } => validate(&config_path(config)),
        Command::Test { config, paths } => policy_tests(&config_path(config), paths),
        Command::Explain {
            config,
            token,
            claims,
            headers,
            method,
            path,
        } => explain(&config_path(config), token, claims, headers, &method, &path),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => match crate::audit::verify::verify_files(&files) {
            Ok(n) => {
                println!("ok: {n} records");
                ExitCode::SUCCESS
            }
            Err(b) => {
                println!("broken: {b}");
                ExitCode::FAILURE
            }
        },
    }
}

/// A tokio runtime for a command: one worker per CPU the process may use to serve (the count
/// honours CPU affinity and a cgroup CPU quota); one thread when that is a single CPU (a
/// sidecar's usual limit, where a work-stealing scheduler only adds cross-thread wake-ups)
/// and for the offline tools.
fn runtime(what: &str, serve: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut b = if serve && cpus > 1 {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("{what}: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Runs a command's future on a multi-threaded runtime; an error is printed with its causes.
fn block_on(what: &str, fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match runtime(what, true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(_) => return ExitCode::FAILURE,
    };
    match crate::policy::load::load(&config.policies, &config.routes) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}", w.text);
            }
            println!(
                "valid: {} policies, version {}",
                loaded.snapshot.policy_count, loaded.snapshot.version
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("invalid: {} error(s)", e.findings.len());
            ExitCode::FAILURE
        }
    }
}

fn explain(
    config: &Path,
    token: Option<String>,
    claims: Option<String>,
    headers: Vec<String>,
    method: &str,
    path: &str,
) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let claims = match (token, claims) {
        (Some(t), _) => {
            eprintln!("note: the token's signature is not checked by `explain`");
            let payload = t.split('.').nth(1).unwrap_or("");
            match crate::auth::jwt::decode_object(payload) {
                Ok(m) => m.into_iter().collect(),
                Err(e) => {
                    eprintln!("wardgate explain: `--token`: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (None, Some(c)) => match serde_json::from_str::<serde_json::Value>(&c) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                eprintln!("wardgate explain: `--claims` must be a JSON object");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("wardgate explain: give `--token` or `--claims`");
            return ExitCode::from(2);
        }
    };
    let mut header_map = std::collections::BTreeMap::new();
    for h in headers {
        match h.split_once(':') {
            Some((k, v)) => {
                header_map.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            None => {
                eprintln!("wardgate explain: `--header {h}` must be `Name: value`");
                return ExitCode::from(2);
            }
        }
    }
    let rt = match runtime("wardgate explain", false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::tester::explain(
        &config, claims, method, path, header_map,
    )) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wardgate explain: {e}");
            ExitCode::from(2)
        }
    }
}

fn policy_tests(path: &Path, paths: Vec<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let paths = if paths.is_empty() {
        crate::tester::default_paths(&config)
    } else {
        paths
    };
    let run = async {
        let files = crate::tester::collect_files(&paths)?;
        crate::tester::run(&config, &files).await
    };
    let rt = match runtime("wardgate test", false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run) {
        Ok(report) => {
            for f in &report.failures {
                println!("{f}");
            }
            println!("{}", crate::tester::summary(&report));
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("wardgate test: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
