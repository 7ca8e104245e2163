//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::artifacts::rules;

/// remedy: a Prometheus exporter sidecar that counts a data connector's API responses by
/// source and status, labelled with the FAQ's advised action.
#[derive(Debug, Parser)]
#[command(name = "remedy", version = crate::LONG_VERSION, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr. The level comes from REMEDY_LOG (an env-filter, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Run {
        /// The config file.
        #[arg(long, visible_alias = "config.file", env = "REMEDY_CONFIG")]
        config: PathBuf,
        /// TLS and basic auth for the admin listener, in the Prometheus exporter-toolkit format.
        #[arg(long = "web.config.file")]
        web_config: Option<PathBuf>,
    },
    /// Validate a config file, print a summary, exit 0 (valid) or 1.
    CheckConfig {
        #[arg(long, visible_alias = "config.file", env = "REMEDY_CONFIG")]
        config: PathBuf,
    },
    /// Print the Prometheus alerting and recording rules.
    Rules {
        /// The config whose catalog and alert settings to use; built-in defaults without it.
        #[arg(long, visible_alias = "config.file")]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = RulesFormat::Rules)]
        format: RulesFormat,
    },
    /// Print the Grafana dashboard JSON.
    Dashboard {
        /// The config whose catalog to use; the built-in FAQ without it.
        #[arg(long, visible_alias = "config.file")]
        config: Option<PathBuf>,
    },
    /// Print the runbooks (Markdown), one section per remediation key.
    Runbook {
        #[arg(long, visible_alias = "config.file")]
        config: Option<PathBuf>,
    },
    /// Print the meaning and advised action for a status code, or for a gRPC status.
    Explain {
        /// A three-digit HTTP status code, or a gRPC status name (RESOURCE_EXHAUSTED).
        code: String,
        #[arg(long, visible_alias = "config.file")]
        config: Option<PathBuf>,
    },
}

/// `remedy rules --format`, mapped onto the generator's own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesFormat {
    /// A Prometheus rules file.
    Rules,
    /// A `monitoring.coreos.com/v1` PrometheusRule for the Prometheus Operator.
    Prometheusrule,
}

impl From<RulesFormat> for rules::Format {
    fn from(f: RulesFormat) -> Self {
        match f {
            RulesFormat::Rules => rules::Format::Rules,
            RulesFormat::Prometheusrule => rules::Format::Prometheusrule,
        }
    }
}
