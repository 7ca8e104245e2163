//! Starts the real `remedy` binary on a config with both listeners on 127.0.0.1:0, reads
//! the bound addresses from its JSON log lines and polls `/-/ready`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Scrape, send, wait_for};

pub struct Remedy {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<String>>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_remedy")
}

/// Writes `yaml` with both listeners on port 0 and a short shutdown, unless it sets them
/// itself.
pub fn write_config(dir: &Path, yaml: impl std::fmt::Display) -> PathBuf {
    let yaml = yaml.to_string();
    let mut text = String::new();
    if !yaml.contains("proxy:") {
        text.push_str("proxy: { listen: 127.0.0.1:0 }\n");
    }
    if !yaml.contains("admin:") {
        text.push_str("admin: { listen: 127.0.0.1:0 }\n");
    }
    if !yaml.contains("shutdown:") {
        text.push_str("shutdown: { drain_timeout: 5s, linger: 0s }\n");
    }
    text.push_str(&yaml);
    let path = dir.join("remedy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Remedy {
    /// Starts remedy on `config`: a [`super::Config`] or YAML text.
    pub fn start(config: impl std::fmt::Display) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Starts remedy with extra environment (`REMEDY_LOG=debug`, say).
    pub fn start_with_env(config: impl std::fmt::Display, env: &[(&str, &str)]) -> Self {
        Self::start_with(config, env, &[])
    }

    /// Starts remedy with extra `run` arguments. With arguments (a web config, say) readiness
    /// is read from the log, since the admin listener may then need TLS and credentials.
    pub fn start_with(config: impl std::fmt::Display, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_under(config, env, args, Command::new(binary()))
    }

    /// Starts remedy with a file descriptor limit of `soft` (hard `hard`), set by util-linux's
    /// `prlimit` before it runs remedy in its place.
    pub fn start_with_nofile(config: impl std::fmt::Display, soft: u64, hard: u64) -> Self {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(binary());
        Self::start_under(config, &[], &[], cmd)
    }

    fn start_under(
        config: impl std::fmt::Display,
        env: &[(&str, &str)],
        args: &[&str],
        mut cmd: Command,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = write_config(dir.path(), config);
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(&config_path)
            .args(args)
            .env_remove("REMEDY_CONFIG")
            .env("REMEDY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("remedy starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let address_of = |logs: &str, message: &str| -> Option<SocketAddr> {
            logs.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == message)
                .and_then(|v| v["address"].as_str()?.parse().ok())
        };
        let (proxy, admin) = wait_for("remedy's listeners", Duration::from_secs(20), || {
            let l = logs.lock().unwrap();
            Some((
                address_of(&l, "proxy listening")?,
                address_of(&l, "admin listening")?,
            ))
        });
        let mut remedy = Remedy {
            child,
            proxy,
            admin,
            logs,
            config_path,
            _dir: dir,
        };
        if args.is_empty() {
            wait_for("/-/ready", Duration::from_secs(10), || {
                (send(remedy.admin, "/-/ready").status == 200).then_some(())
            });
        } else {
            wait_for("the ready log line", Duration::from_secs(10), || {
                remedy
                    .logs()
                    .contains("\"message\":\"ready\"")
                    .then_some(())
            });
        }
        let _ = remedy.child.try_wait();
        remedy
    }

    /// Replaces the config file, as `start` wrote it, for a reload to read.
    pub fn rewrite_config(&self, config: impl std::fmt::Display) {
        let dir = self
            .config_path
            .parent()
            .expect("the config sits in a folder");
        write_config(dir, config);
    }

    pub fn scrape(&self) -> Scrape {
        let r = send(self.admin, "/metrics");
        assert_eq!(r.status, 200);
        Scrape::parse(r.text())
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until `source` has exactly `n` requests in flight.
    pub fn wait_in_flight(&self, source: &str, n: f64) {
        wait_for(
            &format!("{n} requests of {source} in flight"),
            Duration::from_secs(10),
            || (self.scrape().in_flight(source) == n).then_some(()),
        );
    }

    /// Waits until the log holds `needle` (log lines arrive through a pipe, a little later
    /// than the responses they describe).
    pub fn wait_log(&self, needle: &str) {
        wait_for(
            &format!("{needle:?} in the log"),
            Duration::from_secs(10),
            || self.logs().contains(needle).then_some(()),
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a Unix signal by name (`TERM`, `HUP`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = &mut self.child;
        wait_for("remedy to exit", limit, || child.try_wait().ok().flatten()).code()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident memory in KiB since start, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Remedy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
