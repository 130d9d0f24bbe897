//! The `wardgate` binary: command-line dispatch only.

fn main() -> std::process::ExitCode {
    wardgate::cli::main()
}
