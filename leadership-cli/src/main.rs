//! `leadership`: operate on leadership stores and run the demo.
//!
//! Exit codes: 0 success, 1 a leadership answer that is "no" (claim denied, not leader, lease
//! not held), 2 usage or validation error, 3 store unavailable or failing, 130 cancelled by
//! Ctrl-C.

mod cli;
mod demo;
mod output;
mod track;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("leadership: cannot start the async runtime: {err}");
            return ExitCode::from(3);
        }
    };
    let code = runtime.block_on(cli::run(args));
    // Drop blocked store tasks without waiting for them.
    runtime.shutdown_background();
    ExitCode::from(code)
}
