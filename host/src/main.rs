use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    easgate::memory::limit_arenas();
    let filter = EnvFilter::try_from_env("EASGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // At debug, wasmtime-wasi logs every byte a plugin writes, past the sandbox's caps (a
        // chatty plugin made a 235 MB log): plugin output reaches the log through the capped
        // `plugin` lines only, whatever EASGATE_LOG says.
        .add_directive("wasmtime_wasi=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match easgate::cli::Cli::parse().run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
