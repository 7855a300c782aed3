//! Build script: the commit the binaries are built from, for the metric
//! `mailpipe_build_info{version,commit}`.
//!
//! The commit is, in order: the `MAILPIPE_COMMIT` environment variable (the
//! Docker build passes it, as the image's build context has no `.git`), the
//! short hash of `git rev-parse --short HEAD` when these sources are a
//! checkout of mailpipe's repository, else `unknown`. A build from a source
//! tarball, or on a machine without git, therefore works and says
//! `unknown`.
//!
//! Cargo runs this again when `MAILPIPE_COMMIT` changes or when the
//! checkout's HEAD moves (a commit, a checkout, a rebase), so the hash is
//! never stale; the price is that this crate and the crates built on it are
//! rebuilt after each commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MAILPIPE_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let commit = match std::env::var("MAILPIPE_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit(&manifest_dir).unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=MAILPIPE_COMMIT={commit}");
}

/// The short hash of HEAD, when `dir` belongs to a git checkout that tracks
/// this crate (not some unrelated repository a tarball was unpacked into);
/// also tells cargo which files to watch for HEAD moving.
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
    };
    // This crate's manifest must be a file of the repository.
    git(&["ls-files", "--error-unmatch", "Cargo.toml"])?;
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let git_dir = absolute(dir, &git(&["rev-parse", "--git-dir"])?);
    let common_dir = absolute(dir, &git(&["rev-parse", "--git-common-dir"])?);
    let head = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    // On a branch, HEAD names a ref: a commit moves the ref, not HEAD.
    if let Ok(text) = std::fs::read_to_string(&head) {
        // Only the branch's own ref (other worktrees' commits must not
        // rebuild this one), or while the ref is packed, packed-refs and the
        // directory where the next commit writes it. A path that does not
        // exist would make cargo run this every time.
        if let Some(r) = text.trim().strip_prefix("ref: ") {
            let loose = common_dir.join(r);
            let watched = if loose.exists() {
                vec![loose]
            } else {
                let mut v = vec![common_dir.join("packed-refs")];
                v.extend(loose.parent().map(Path::to_path_buf));
                v
            };
            for f in watched.into_iter().filter(|f| f.exists()) {
                println!("cargo:rerun-if-changed={}", f.display());
            }
        }
    }
    (!commit.is_empty()).then_some(commit)
}

fn absolute(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
