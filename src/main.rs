//! The `dbgrant` binary: parse settings, then run the operator or print the CRDs.

use std::process::ExitCode;

use clap::Parser;
use dbgrant::settings::{Cli, Command, CrdArgs};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd(args) => print_crds(&args),
        Command::Run(args) => {
            if let Err(error) = dbgrant::telemetry::init_logging(args.log_format, &args.log_filter)
            {
                eprintln!("dbgrant: {error:#}");
                return ExitCode::FAILURE;
            }
            match dbgrant::azure_access(&args).await {
                Ok(backends) => dbgrant::run(args, backends, dbgrant::shutdown_signal()).await,
                Err(error) => Err(error),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "dbgrant stopped");
            eprintln!("dbgrant: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds(args: &CrdArgs) -> anyhow::Result<()> {
    match &args.out_dir {
        None => {
            print!("{}", dbgrant::api::crds_yaml()?);
            Ok(())
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for crd in dbgrant::api::crds() {
                let path = dir.join(dbgrant::api::crd_file_name(&crd));
                std::fs::write(&path, serde_saphyr::to_string(&crd)?)?;
            }
            Ok(())
        }
    }
}
