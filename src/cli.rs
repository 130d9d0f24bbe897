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

/// Runs a command's future on a multi-threaded runtime; an error is printed with its causes.
fn block_on(what: &str, fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardgate test: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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
