//! Runs the real tools the tests check artifacts with (remedy itself, promtool, helm, ...)
//! from the repository root, failing clearly when one is missing.

use std::path::Path;
use std::process::{Command, Output};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tool` with a throw-away HOME; returns success and stdout+stderr.
pub fn run(tool: &str, args: &[&str]) -> (bool, String) {
    run_with_input(tool, args, b"")
}

/// Runs `tool` as [`run`] does, with `input` on its standard input.
pub fn run_with_input(tool: &str, args: &[&str], input: &[u8]) -> (bool, String) {
    use std::io::Write;
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(root())
        .env("HOME", home.path())
        .env_remove("REMEDY_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{tool} not runnable ({e}): run the tests through scripts/test, which installs it"
            )
        });
    // A tool that does not read its input closes the pipe: that is not a failure here.
    let _ = child.stdin.take().unwrap().write_all(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `tool`, which must succeed; returns its output.
pub fn must(tool: &str, args: &[&str]) -> String {
    let (ok, out) = run(tool, args);
    assert!(ok, "{tool} {args:?} failed:\n{out}");
    out
}

/// Runs the remedy binary under test.
pub fn remedy(args: &[&str]) -> Output {
    Command::new(super::launcher::binary())
        .args(args)
        .current_dir(root())
        .env_remove("REMEDY_CONFIG")
        .output()
        .expect("remedy runs")
}

/// Runs the remedy binary, which must succeed; returns stdout only.
pub fn remedy_stdout(args: &[&str]) -> String {
    let out = remedy(args);
    assert!(
        out.status.success(),
        "remedy {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares a committed file with freshly generated text, or rewrites it when
/// `REMEDY_UPDATE_GOLDEN` is set.
pub fn assert_golden(path: &str, generated: &str) {
    let file = root().join(path);
    if std::env::var_os("REMEDY_UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} differs from what remedy generates; run REMEDY_UPDATE_GOLDEN=1 cargo test"
    );
}
