//! Names the revision the binary is built from, for `remedy --version` and
//! `remedy_build_info{revision}`: `REMEDY_REVISION` when the build is given one (the image
//! build, which has no `.git`), else the checkout's `HEAD` (12 hex digits), else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=REMEDY_REVISION");
    let revision = std::env::var("REMEDY_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=REMEDY_REVISION={}", revision.trim());
}

/// `HEAD`'s commit, watching what moves it so that a new commit rebuilds with its revision.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let mut watched = vec![
        Path::new(&dir).join("HEAD"),
        Path::new(&dir).join("packed-refs"),
    ];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(Path::new(&dir).join(branch));
    }
    // A path that does not exist would rerun this script on every build.
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(head)
}
