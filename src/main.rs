//! The `wardgate` binary: command-line dispatch only.

/// mimalloc instead of glibc's malloc: a request's buffers are allocated on the runtime's
/// thread and its audit record freed on the writer's, which glibc serves through locked
/// arenas (`bench/run.sh` measured its malloc and free at ~14 % of the proxy's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wardgate::cli::main()
}
