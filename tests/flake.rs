//! flake.nix and flake.lock, checked by Debian's nix (nix-bin, dev/setup) with the network cut:
//! the flake parses, its lock names every input by commit and narHash, and a flake.nix that
//! strays from its lock is refused rather than silently relocked.

use std::path::Path;
use std::process::{Command, Output};

/// `nix flake metadata` of a copy of the flake in `dir`, in a network namespace with only
/// loopback, on a throwaway store and cache: nothing can be fetched, nothing is left behind.
fn metadata(dir: &Path) -> Output {
    Command::new("unshare")
        .args(["--net", "--", "nix", "--store"])
        .arg(dir.join("store"))
        .args([
            "flake",
            "metadata",
            "--offline",
            "--no-update-lock-file",
            "--json",
        ])
        .arg(format!("path:{}", dir.join("flake").display()))
        .env("NIX_CONFIG", "experimental-features = nix-command flakes")
        .env("HOME", dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .expect("nix runs (apt-get install nix-bin; dev/setup installs it)")
}

fn copy_of_the_flake() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flake")).unwrap();
    for file in ["flake.nix", "flake.lock", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file),
            dir.path().join("flake").join(file),
        )
        .unwrap();
    }
    dir
}

#[test]
fn the_flake_is_locked_by_commit_and_nar_hash_and_nix_accepts_it_offline() {
    let dir = copy_of_the_flake();
    let parse = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(dir.path().join("flake/flake.nix"))
        .output()
        .unwrap();
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );

    let out = metadata(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = &meta["locks"]["nodes"];
    let inputs = nodes["root"]["inputs"].as_object().unwrap();
    assert_eq!(inputs.keys().collect::<Vec<_>>(), ["nixpkgs"]);
    for name in inputs.keys() {
        let locked = &nodes[name]["locked"];
        let rev = locked["rev"].as_str().unwrap();
        assert!(
            rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
            "{locked}"
        );
        assert!(
            locked["narHash"].as_str().unwrap().starts_with("sha256-"),
            "{locked}"
        );
    }
    // The branch flake.nix follows is the one the lock was taken from.
    let flake = std::fs::read_to_string(dir.path().join("flake/flake.nix")).unwrap();
    let branch = nodes["nixpkgs"]["original"]["ref"].as_str().unwrap();
    assert!(
        flake.contains(&format!("github:NixOS/nixpkgs/{branch}\"")),
        "{branch}"
    );

    // A flake.nix that no longer matches its lock: nix wants to relock, which it cannot here.
    let nix = dir.path().join("flake/flake.nix");
    std::fs::write(&nix, flake.replace(branch, "nixos-24.11")).unwrap();
    let out = metadata(dir.path());
    assert!(!out.status.success(), "a stale lock was accepted");
}
