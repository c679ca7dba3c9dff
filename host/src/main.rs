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
            eprintln!("error: {}", explain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many of the library's errors carry their cause's
/// text in their own message (so that the admin API and the logs show it), and `{:#}` would
/// repeat it ("…(os error 2): …(os error 2)").
fn explain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
