use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use remedy::admin::webconfig::WebConfig;
use remedy::cli::{Cli, Command, LogFormat};
use remedy::config::{self, Config};
use remedy::descriptors::Limit;
use remedy::server::Bound;
use remedy::sidecar::Sidecar;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("remedy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("REMEDY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // Libraries that log through the `log` facade (rustls, tokio-rustls, hyper-rustls) log the
    // handshake's messages and certificates at trace: they stop at debug, whatever the filter
    // asks, so that no TLS data reaches a log line.
    log::set_max_level(log::max_level().min(log::LevelFilter::Debug));
}

/// The config named on the command line, or the built-in defaults for commands that only
/// need the catalog.
fn load_or_default(path: Option<&Path>) -> Result<Config, config::ConfigError> {
    match path {
        Some(p) => config::load(p),
        None => Ok(Config::default()),
    }
}

/// `check-config`'s line on file descriptors: the limit `run` would have (it raises the soft
/// limit to the hard one) against what the proxy may need, with a warning where it falls short.
fn descriptors_line(max_connections: usize) -> String {
    match Limit::current() {
        Ok(now) => {
            let limit = Limit {
                soft: now.hard,
                hard: now.hard,
            };
            let mut line = format!(
                "file descriptors: limit {} (the hard limit, which run raises the soft {} to); \
                 the proxy needs up to {}\n",
                now.hard,
                now.soft,
                remedy::descriptors::needed(max_connections)
            );
            if let Some(short) = remedy::descriptors::shortfall(max_connections, limit) {
                line.push_str(&format!("warning: {short}\n"));
            }
            line
        }
        Err(e) => format!("file descriptors: limit unknown ({e})\n"),
    }
}

fn print(text: &str) -> anyhow::Result<ExitCode> {
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config: path,
            web_config,
        } => {
            let config = match config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("remedy: invalid config: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let web = match web_config.as_deref().map(WebConfig::load).transpose() {
                Ok(w) => w.map(std::sync::Arc::new),
                Err(e) => {
                    eprintln!("remedy: invalid web config: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let bound = Bound::bind(&config)?;
            let sidecar = Sidecar::new(path, config)?;
            remedy::server::run(sidecar, bound, web)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config: path } => match config::load(&path) {
            Ok(c) => {
                print(&config::summary(&c, &path.display().to_string()))?;
                print(&descriptors_line(c.proxy.max_connections))
            }
            Err(e) => {
                eprintln!("remedy: invalid config: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Rules { config, format } => {
            let c = load_or_default(config.as_deref())?;
            print(&remedy::artifacts::rules::render_as(&c, format.into()))
        }
        Command::Dashboard { config } => {
            let c = load_or_default(config.as_deref())?;
            print(&remedy::artifacts::dashboard::render(&c.catalog))
        }
        Command::Runbook { config } => {
            let c = load_or_default(config.as_deref())?;
            print(&remedy::artifacts::runbook::render(&c))
        }
        Command::Explain { code, config } => {
            let c = load_or_default(config.as_deref())?;
            match remedy::catalog::explain_any(&c.catalog, &code) {
                Some(text) => print(&text),
                None => {
                    eprintln!(
                        "remedy: {code} is neither a status code (100-999) nor a gRPC status \
                         name (RESOURCE_EXHAUSTED, UNAUTHENTICATED, ...)"
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
