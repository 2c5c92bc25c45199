//! The `switchyard` binary: the operator, and tools around it.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

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
    Run(switchyard::runtime::RunOptions),
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

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Run(options) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .init();
            tokio::runtime::Runtime::new()?.block_on(switchyard::runtime::run(options))?;
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
