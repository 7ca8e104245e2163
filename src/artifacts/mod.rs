//! What remedy generates from the catalog and the config, as pure functions: the Prometheus
//! rules, the Grafana dashboard and the runbook.

pub mod dashboard;
pub mod promql;
pub mod rules;
pub mod runbook;
