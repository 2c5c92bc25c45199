//! The `switchyard` binary: the operator, and tools around it.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use switchyard::runtime::LogFormat;

/// Switchyard moves users from a legacy system to its replacement, one cohort at a time.
#[derive(Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster).
    Run(Box<switchyard::runtime::RunOptions>),
    /// Print the admission policies (ValidatingAdmissionPolicy and binding) as YAML.
    Policies,
    /// Print the CustomResourceDefinitions as YAML, or write one file per kind.
    Crds {
        /// Write one file per kind into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: {err}");
            let mut source = std::error::Error::source(err.as_ref());
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    // Colours only for a terminal: a pod's log is a file.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Run(options) => {
            init_logging(options.log_format);
            // Before any client is built: rustls with ring, never aws-lc.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(switchyard::runtime::run(*options));
            // Whatever still runs (a stuck blocking task) must not delay the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
        }
        Command::Policies => print!("{}", switchyard::policies::yaml()),
        Command::Crds { out_dir: None } => {
            print!("{}", switchyard::crdgen::all_yaml()?);
        }
        Command::Crds { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in switchyard::crdgen::all()? {
                let path = dir.join(&crd.file_name);
                std::fs::write(&path, crd.to_yaml()?)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
