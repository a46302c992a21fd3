//! The command line: `serve` (the default), `sim` and `check-config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Answers SIP phone calls and bridges each one to an OpenAI Realtime voice agent.
#[derive(Debug, Parser)]
#[command(name = "voxrelay", version, about)]
pub struct Cli {
    /// Log format: text or json (overrides log.format).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the relay (what plain `voxrelay` does).
    Serve {
        /// Config file (default: config/voxrelay.toml if it exists); relative paths in it are
        /// relative to its folder.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs the offline OpenAI Realtime simulator alone.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: std::net::SocketAddr,
        /// Scenario: a bundled one (booking, echo, fault-…: the file names of config/scenarios),
        /// or a scenario file.
        #[arg(long, default_value = "booking")]
        scenario: String,
        /// The one server key accepted; without it any key starting sk- is.
        #[arg(long, env = "VOXRELAY_SIM_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Validates the config and prints the effective values, secrets redacted.
    CheckConfig {
        /// Config file (default: config/voxrelay.toml if it exists); relative paths in it are
        /// relative to its folder.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Parses the command line, runs it, returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let cmd = cli.command.unwrap_or(Command::Serve { config: None });
    let log_override = cli.log_format.as_deref().map(|f| match f {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    });
    match cmd {
        Command::CheckConfig { config } => match Config::load(config.as_deref()).and_then(|cfg| {
            // the TLS files are read and checked as the relay would at start
            crate::sip::tls::TlsFiles::from_config(&cfg.sip).map(|_| cfg)
        }) {
            Ok(cfg) => {
                print!("{}", cfg.to_redacted_toml());
                0
            }
            Err(e) => {
                eprintln!("voxrelay: {e}");
                1
            }
        },
        Command::Serve { config } => {
            let cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("voxrelay: {e}");
                    return 1;
                }
            };
            crate::logging::init(log_override.unwrap_or(cfg.log.format), &cfg.log.level);
            run_async(crate::app::serve(cfg))
        }
        Command::Sim {
            listen,
            scenario,
            api_key,
        } => {
            crate::logging::init(log_override.unwrap_or(LogFormat::Text), "info");
            run_async(crate::sim::run(crate::sim::SimConfig {
                listen,
                scenario,
                api_key: api_key.map(crate::secret::Secret::from),
            }))
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("voxrelay: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("voxrelay: {e:#}");
            1
        }
    }
}
