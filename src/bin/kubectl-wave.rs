//! `kubectl wave`: the release manager's kubectl plugin. Put this binary on `PATH` and
//! kubectl finds it (`kubectl wave list`).

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::commands::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls with ring is the one TLS provider compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli, &mut stdout) => result,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
