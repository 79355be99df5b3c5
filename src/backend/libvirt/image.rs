//! Base images: the disk every machine's first stage starts from.
//!
//! A debootstrap base is built on this host once per recipe (suite, mirror, packages, disk size,
//! and the guest configuration script) and kept in the images folder (`--images`,
//! `ENVBUILD_IMAGES`, default `STORE/v1/images`):
//!
//! ```text
//! IMAGES/<recipe digest>/{disk.qcow2, vmlinuz, initrd.img, image.json}   read-only, immutable
//! IMAGES/debs/                                                           debootstrap's .deb cache
//! IMAGES/tmp.<pid>.<n>/                                                  an image being built
//! ```
//! Guests boot their kernel directly (`<kernel>`/`<initrd>` in the domain): no bootloader, no
//! firmware wait. The disk's sha256 is recorded in `image.json`; every stage built on it records
//! that digest, so a rebuilt base (same recipe, other bytes) never silently changes a chain.
//!
//! A pinned image (`base = { image = URL, sha256 = ... }`, e.g. a Debian or Ubuntu cloud image)
//! is fetched once with curl, verified against its pin before it is stored, and kept as qcow2
//! (a raw image is converted once). It boots with its own bootloader and gets its keys from a
//! cloud-init NoCloud seed (seed.rs):
//!
//! ```text
//! IMAGES/pinned-<sha256>/{disk.qcow2, image.json}   read-only, immutable
//! IMAGES/pinned-<sha256>.part                        a download in progress (resumed if killed)
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::key::digest::{sha256_bytes, sha256_file};
use crate::spec::model::{Debootstrap, Machine, PinnedImage};
use crate::store::lock::FileLock;
use crate::store::{RemoveOnDrop, remove_tree};

pub(crate) use super::qemu_img::*;

const CONFIGURE: &str = include_str!("configure-base.sh");

/// What every envbuild guest needs besides the recipe's own packages.
pub const GUEST_PACKAGES: [&str; 6] = [
    "systemd-sysv",
    "udev",
    "openssh-server",
    "linux-image-amd64",
    "iproute2",
    "busybox",
];

/// The first line of a pinned image's record (`image.json`'s `recipe`).
const PINNED_RECIPE: &str = "envbuild-pinned-1\n";

/// A built base image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseImage {
    pub disk: PathBuf,
    /// The kernel and initrd a debootstrap base boots directly; None for a pinned image, which
    /// boots with its own bootloader and reads a cloud-init seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    /// sha256 of disk.qcow2.
    pub sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageRecord {
    recipe: String,
    sha256: String,
    built: String,
    seconds: f64,
}

/// The digest of a machine's debootstrap recipe: what its base image is built from.
pub fn recipe_digest(machine: &Machine) -> String {
    let recipe = machine
        .base
        .debootstrap
        .as_ref()
        .expect("called for debootstrap bases");
    sha256_bytes(recipe_text(recipe, machine.resources.disk_mib).as_bytes())
}

fn recipe_text(recipe: &Debootstrap, disk_mib: u64) -> String {
    let mut packages: Vec<&str> = GUEST_PACKAGES.to_vec();
    packages.extend(recipe.packages.iter().map(String::as_str));
    packages.sort();
    packages.dedup();
    format!(
        "envbuild-debootstrap-1\nsuite={}\nmirror={}\nvariant=minbase\npackages={}\ndisk_mib={disk_mib}\nconfigure={}\n",
        recipe.suite,
        recipe.mirror,
        packages.join(","),
        sha256_bytes(CONFIGURE.as_bytes())
    )
}

/// The machine's base image, built first if the images folder does not have it.
pub fn ensure(images: &Path, machine: &Machine, note: &dyn Fn(&str)) -> Result<BaseImage> {
    let Some(recipe) = &machine.base.debootstrap else {
        let pinned = machine
            .base
            .image
            .as_ref()
            .expect("a libvirt machine has a debootstrap recipe or a pinned image");
        let image = ensure_pinned(images, machine, pinned, note)?;
        check_fits(machine, pinned, &image)?;
        return Ok(image);
    };
    let digest = recipe_digest(machine);
    let dir = images.join(&digest);
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    std::fs::create_dir_all(images).ctx(|| format!("creating {}", images.display()))?;
    let _lock = FileLock::acquire(&images.join(format!("{digest}.lock")), || {
        note("waiting for another envbuild building the same base image")
    })?;
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    check_can_build(machine)?;
    note(&format!(
        "building base image {} (debootstrap {}, once per recipe; kept in {})",
        &digest[..12],
        recipe.suite,
        images.display()
    ));
    build(images, &dir, recipe, machine.resources.disk_mib)?;
    load(&dir)?.ok_or_else(|| Error::Failed(format!("{} was not written", dir.display())))
}

pub fn load(dir: &Path) -> Result<Option<BaseImage>> {
    let record = dir.join("image.json");
    let Ok(bytes) = std::fs::read(&record) else {
        return Ok(None);
    };
    let record: ImageRecord = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Failed(format!("{} is damaged: {e}", record.display())))?;
    // A debootstrap base boots its kernel directly; a pinned image its own bootloader.
    let direct = !record.recipe.starts_with(PINNED_RECIPE);
    Ok(Some(BaseImage {
        disk: dir.join("disk.qcow2"),
        kernel: direct.then(|| dir.join("vmlinuz")),
        initrd: direct.then(|| dir.join("initrd.img")),
        sha256: record.sha256,
    }))
}

fn check_can_build(machine: &Machine) -> Result<()> {
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("chroot", "coreutils"),
    ] {
        if crate::process::find_program(program).is_none() {
            return Err(Error::MissingTool {
                machine: machine.name.clone(),
                what: format!("program `{program}` (to build its debootstrap base image)"),
                fix: format!("apt-get install {package}"),
            });
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::input(
            format!(
                "machine `{}`: building a debootstrap base image needs root (debootstrap chroots and keeps file owners).",
                machine.name
            ),
            "run this build once as root, or point --images at a folder that already holds the image",
        ));
    }
    Ok(())
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh `IMAGES/tmp.<pid>.<n>` path, removed with its guard.
fn temp_dir(images: &Path) -> (PathBuf, RemoveOnDrop) {
    let tmp = images.join(format!(
        "tmp.{}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    (tmp.clone(), RemoveOnDrop(tmp))
}

fn build(images: &Path, dir: &Path, recipe: &Debootstrap, disk_mib: u64) -> Result<()> {
    let started = std::time::Instant::now();
    let (tmp, _cleanup) = temp_dir(images);
    let root = tmp.join("root");
    let debs = images.join("debs");
    std::fs::create_dir_all(&debs).ctx(|| format!("creating {}", debs.display()))?;
    std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let log = tmp.join("build.log");
    let mut packages: Vec<&str> = GUEST_PACKAGES.to_vec();
    packages.extend(recipe.packages.iter().map(String::as_str));
    let script = tmp.join("configure-base.sh");
    std::fs::write(&script, CONFIGURE).ctx(|| format!("writing {}", script.display()))?;
    let raw = tmp.join("disk.raw");
    let steps = [
        format!(
            "debootstrap --variant=minbase --cache-dir={} --include={} {} {} {}",
            debs.display(),
            packages.join(","),
            recipe.suite,
            root.display(),
            recipe.mirror
        ),
        format!("sh {} {}", script.display(), root.display()),
        format!(
            "cp -L {r}/vmlinuz {t}/vmlinuz && cp -L {r}/initrd.img {t}/initrd.img",
            r = root.display(),
            t = tmp.display()
        ),
        format!(
            "mkfs.ext4 -q -F -L envbuild-root -d {} {} {disk_mib}M",
            root.display(),
            raw.display()
        ),
        format!(
            "qemu-img convert -f raw -O qcow2 {} {}/disk.qcow2",
            raw.display(),
            tmp.display()
        ),
    ];
    let env = crate::process::base_env(Path::new("/root"));
    for step in &steps {
        let mut out = std::fs::File::create(&log).ctx(|| format!("creating {}", log.display()))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let end = crate::process::run_step(step, &tmp, &env, deadline, |line| {
            use std::io::Write;
            let _ = writeln!(out, "{line}");
        })?;
        if end != crate::process::StepEnd::Exited(0) {
            return Err(Error::Failed(format!(
                "building the base image failed at `{step}` ({end:?}).\n  last lines:\n{}",
                crate::process::tail(&log, 20)
            )));
        }
    }
    remove_tree(&root).ctx(|| format!("removing {}", root.display()))?;
    std::fs::remove_file(&raw).ctx(|| format!("removing {}", raw.display()))?;
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&log);
    let disk = tmp.join("disk.qcow2");
    let record = ImageRecord {
        recipe: recipe_text(recipe, disk_mib),
        sha256: sha256_file(&disk)?,
        built: crate::clock::now_rfc3339(),
        seconds: started.elapsed().as_secs_f64(),
    };
    commit(&tmp, dir, &record, &["disk.qcow2", "vmlinuz", "initrd.img"])
}

/// Writes `image.json`, makes the files read-only and renames the folder into place.
fn commit(tmp: &Path, dir: &Path, record: &ImageRecord, files: &[&str]) -> Result<()> {
    std::fs::write(
        tmp.join("image.json"),
        serde_json::to_vec_pretty(record).expect("record serializes"),
    )
    .ctx(|| "writing image.json".into())?;
    for file in files.iter().chain(&["image.json"]) {
        let path = tmp.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))
            .ctx(|| format!("making {} read-only", path.display()))?;
    }
    std::fs::rename(tmp, dir).ctx(|| format!("storing {}", dir.display()))?;
    Ok(())
}

/// The folder of a pinned image: named by its pin, whatever URL it came from.
pub fn pinned_dir(images: &Path, pinned: &PinnedImage) -> PathBuf {
    images.join(format!("pinned-{}", pinned.sha256))
}

/// A pinned image, fetched and verified first if the images folder does not have it.
fn ensure_pinned(
    images: &Path,
    machine: &Machine,
    pinned: &PinnedImage,
    note: &dyn Fn(&str),
) -> Result<BaseImage> {
    let dir = pinned_dir(images, pinned);
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    std::fs::create_dir_all(images).ctx(|| format!("creating {}", images.display()))?;
    let name = dir.file_name().expect("named above").to_string_lossy();
    let _lock = FileLock::acquire(&images.join(format!("{name}.lock")), || {
        note("waiting for another envbuild fetching the same image")
    })?;
    if let Some(image) = load(&dir)? {
        return Ok(image);
    }
    for (program, package) in [("curl", "curl"), ("qemu-img", "qemu-utils")] {
        if crate::process::find_program(program).is_none() {
            return Err(Error::MissingTool {
                machine: machine.name.clone(),
                what: format!("program `{program}` (to fetch its pinned base image)"),
                fix: format!("apt-get install {package} (or run dev/setup)"),
            });
        }
    }
    let started = std::time::Instant::now();
    let part = images.join(format!("{name}.part"));
    note(&format!(
        "fetching base image {} (once; verified against its sha256 and kept in {})",
        pinned.url,
        images.display()
    ));
    download(&pinned.url, &part, machine, pinned)?;
    let actual = sha256_file(&part)?;
    if actual != pinned.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(Error::input(
            format!(
                "{}: machine `{}`: the image downloaded from {} does not match its pin\n  expected sha256 {}\n  actual   sha256 {}\n  nothing was kept.",
                pinned.pinned_at, machine.name, pinned.url, pinned.sha256, actual
            ),
            "if the image was updated upstream, check its published checksum and put its sha256 in the spec; otherwise the download is damaged or was tampered with: do not use it",
        ));
    }
    let (tmp, _cleanup) = temp_dir(images);
    std::fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let download = tmp.join("download");
    std::fs::rename(&part, &download).ctx(|| format!("moving {}", part.display()))?;
    let disk = tmp.join("disk.qcow2");
    let info = &qemu_img_info(&download, false)?[0];
    match info["format"].as_str() {
        Some("qcow2")
            if info["backing-filename"].is_null()
                && info["format-specific"]["data"]["data-file"].is_null() =>
        {
            std::fs::rename(&download, &disk).ctx(|| format!("moving {}", download.display()))?
        }
        Some("qcow2") => {
            return Err(Error::Input(format!(
                "{}: machine `{}`: the image {} is a qcow2 that refers to another file (backing file {}, data file {}); pin a self-contained image",
                pinned.pinned_at,
                machine.name,
                pinned.url,
                info["backing-filename"],
                info["format-specific"]["data"]["data-file"]
            )));
        }
        Some("raw") => {
            note("converting the raw image to qcow2 (once)");
            convert_to_qcow2(&download, &disk)?;
            std::fs::remove_file(&download).ctx(|| format!("removing {}", download.display()))?;
        }
        other => {
            return Err(Error::Input(format!(
                "{}: machine `{}`: the image {} is in format {}; the libvirt backend boots qcow2 or raw images",
                pinned.pinned_at,
                machine.name,
                pinned.url,
                other.unwrap_or("unknown")
            )));
        }
    }
    let sha256 = if info["format"] == "qcow2" {
        actual
    } else {
        sha256_file(&disk)?
    };
    let record = ImageRecord {
        recipe: format!(
            "{PINNED_RECIPE}url={}\nsha256={}\nformat={}\n",
            pinned.url, pinned.sha256, info["format"]
        ),
        sha256,
        built: crate::clock::now_rfc3339(),
        seconds: started.elapsed().as_secs_f64(),
    };
    commit(&tmp, &dir, &record, &["disk.qcow2"])?;
    note(&format!(
        "fetched base image in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    load(&dir)?.ok_or_else(|| Error::Failed(format!("{} was not written", dir.display())))
}

/// `curl` into `part`, resuming what a killed fetch left there. Progress on a terminal only.
fn download(url: &str, part: &Path, machine: &Machine, pinned: &PinnedImage) -> Result<()> {
    use std::io::IsTerminal;
    let mut curl = Command::new("curl");
    curl.args([
        "--fail",
        "--location",
        "--retry",
        "3",
        "--retry-delay",
        "2",
        "--connect-timeout",
        "20",
        "--proto",
        "=http,https",
        "--continue-at",
        "-",
        "--output",
    ])
    .arg(part)
    .arg(url)
    .stdin(std::process::Stdio::null());
    if std::io::stderr().is_terminal() {
        curl.arg("--progress-bar")
            .stderr(std::process::Stdio::inherit());
    } else {
        curl.args(["--silent", "--show-error"]);
    }
    let mut out = curl.output().ctx(|| "running curl".into())?;
    // 33: the server cannot resume (no byte ranges): start the download over, once.
    if out.status.code() == Some(33) {
        let _ = std::fs::remove_file(part);
        out = curl.output().ctx(|| "running curl".into())?;
    }
    if out.status.success() {
        return Ok(());
    }
    // A download that was already complete cannot be resumed; its digest decides.
    if sha256_file(part).is_ok_and(|d| d == pinned.sha256) {
        return Ok(());
    }
    Err(Error::input(
        format!(
            "{}: machine `{}`: cannot fetch its base image {url}: {}",
            pinned.pinned_at,
            machine.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        "check the URL and that this host reaches it; or fetch the image by other means and serve it from a local URL (http://127.0.0.1:PORT/...) with the same sha256",
    ))
}

/// `qemu-img convert -O qcow2`: a raw image stored once as qcow2 (sparse, overlay-ready).
fn convert_to_qcow2(raw: &Path, qcow2: &Path) -> Result<()> {
    qemu_img(&[
        "convert".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-O".as_ref(),
        "qcow2".as_ref(),
        raw.as_os_str(),
        qcow2.as_os_str(),
    ])
}

/// A pinned image is grown to `resources.disk`, never shrunk: a smaller size is bad input.
fn check_fits(machine: &Machine, pinned: &PinnedImage, image: &BaseImage) -> Result<()> {
    let base = virtual_mib(&image.disk)?;
    if machine.resources.disk_mib < base {
        return Err(Error::input(
            format!(
                "machine `{}`: resources.disk ({} MiB) is smaller than its pinned image {} ({base} MiB, {}); a disk is grown, never shrunk",
                machine.name, machine.resources.disk_mib, pinned.url, pinned.pinned_at
            ),
            format!(
                "set `disk` in the machine's `resources` to at least \"{}GiB\"",
                base.div_ceil(1024)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small qcow2 "base image" with a 1 MiB payload.
    pub fn base_disk(dir: &Path) -> PathBuf {
        let raw = dir.join("base.raw");
        std::fs::write(&raw, vec![7u8; 1 << 20]).unwrap();
        let disk = dir.join("base.qcow2");
        let ok = Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&disk)
            .status()
            .unwrap();
        assert!(ok.success());
        disk
    }

    /// Serves `body` over HTTP on 127.0.0.1 for each connection; counts the requests.
    fn serve(body: Vec<u8>) -> (String, std::sync::Arc<AtomicU64>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let url = format!("http://{}/image.raw", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                counter.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (url, hits)
    }

    fn pinned_machine(url: &str, sha256: &str) -> Machine {
        Machine {
            name: "box".into(),
            description: None,
            backend: crate::spec::model::BackendKind::Libvirt,
            base: crate::spec::model::Base {
                image: Some(PinnedImage {
                    url: url.into(),
                    sha256: sha256.into(),
                    pinned_at: "demo.toml:4:9".into(),
                }),
                ..Default::default()
            },
            resources: crate::spec::model::Resources {
                disk_mib: 1,
                ..Default::default()
            },
            requires: vec![],
            ports: vec![],
            prestart: vec![],
            stages: vec![],
            services: vec![],
            vm: Default::default(),
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pinned_raw_image_is_fetched_once_verified_and_stored_as_qcow2() {
        let body = vec![5u8; 1 << 20];
        let (url, hits) = serve(body.clone());
        let images = tempfile::tempdir().unwrap();
        let machine = pinned_machine(&url, &sha256_bytes(&body));
        let image = ensure(images.path(), &machine, &|_| {}).unwrap();
        assert_eq!(image.kernel, None, "a pinned image boots from its disk");
        assert_eq!(
            image.disk,
            images
                .path()
                .join(format!("pinned-{}/disk.qcow2", sha256_bytes(&body)))
        );
        assert_eq!(
            qemu_img_info(&image.disk, false).unwrap()[0]["format"],
            "qcow2"
        );
        assert_eq!(image.sha256, sha256_file(&image.disk).unwrap());
        let again = ensure(images.path(), &machine, &|_| {}).unwrap();
        assert_eq!(again, image);
        assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once");
        let mut names = listing(images.path());
        names.retain(|n| !n.ends_with(".lock"));
        assert_eq!(names, vec![format!("pinned-{}", sha256_bytes(&body))]);
        // Grown, never shrunk: a disk smaller than the image is bad input naming the key.
        let mut small = machine.clone();
        small.resources.disk_mib = 0;
        let refused = ensure(images.path(), &small, &|_| {}).unwrap_err();
        assert_eq!(refused.exit_code(), 2);
        assert!(
            refused.to_string().contains("resources.disk (0 MiB)"),
            "{refused}"
        );
    }

    #[test]
    fn a_partial_download_is_resumed_or_started_over_when_the_server_cannot_resume() {
        let body = vec![9u8; 1 << 18];
        let (url, hits) = serve(body.clone());
        let images = tempfile::tempdir().unwrap();
        let pin = sha256_bytes(&body);
        // A killed fetch left the first half; this server ignores Range, so curl cannot resume.
        std::fs::write(
            images.path().join(format!("pinned-{pin}.part")),
            &body[..body.len() / 2],
        )
        .unwrap();
        let image = ensure(images.path(), &pinned_machine(&url, &pin), &|_| {}).unwrap();
        assert_eq!(image.sha256, sha256_file(&image.disk).unwrap());
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "one refused resume, one full fetch"
        );
        assert!(!images.path().join(format!("pinned-{pin}.part")).exists());
    }

    #[test]
    fn a_wrong_pin_is_refused_with_both_digests_and_nothing_is_kept() {
        let body = vec![6u8; 1 << 16];
        let (url, _) = serve(body.clone());
        let images = tempfile::tempdir().unwrap();
        let wrong = "ab".repeat(32);
        let err = ensure(images.path(), &pinned_machine(&url, &wrong), &|_| {}).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(text.starts_with("demo.toml:4:9: machine `box`"), "{text}");
        assert!(text.contains(&format!("expected sha256 {wrong}")), "{text}");
        assert!(
            text.contains(&format!("actual   sha256 {}", sha256_bytes(&body))),
            "{text}"
        );
        assert!(text.contains("fix:"), "{text}");
        let mut names = listing(images.path());
        names.retain(|n| !n.ends_with(".lock"));
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn an_unreachable_url_is_bad_input_with_a_fix() {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/gone.qcow2");
        let images = tempfile::tempdir().unwrap();
        let err = ensure(
            images.path(),
            &pinned_machine(&url, &"0".repeat(64)),
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("cannot fetch") && text.contains(&url),
            "{text}"
        );
        assert!(text.contains("fix:"), "{text}");
    }

    #[test]
    fn overlays_chain_down_to_the_base_and_stay_thin() {
        let dir = tempfile::tempdir().unwrap();
        let base = base_disk(dir.path());
        let one = dir.path().join("one.qcow2");
        let two = dir.path().join("two.qcow2");
        create_overlay(&base, &one, None).unwrap();
        create_overlay(&one, &two, None).unwrap();
        assert_eq!(
            backing_chain(&two).unwrap(),
            vec![two.clone(), one.clone(), base]
        );
        assert_eq!(backing_file(&two).unwrap(), Some(one.clone()));
        // Thin: an overlay of a 1 MiB disk is a few hundred KiB of metadata, not a copy.
        assert!(std::fs::metadata(&two).unwrap().len() < 512 << 10);
        // The backing file is read from the header without opening it: a missing parent is
        // still reported (and then refused by the chain check), not an error here.
        std::fs::remove_file(&one).unwrap();
        assert_eq!(backing_file(&two).unwrap(), Some(one));
        assert!(backing_chain(&two).is_err());
    }

    #[test]
    fn recipe_digest_covers_suite_packages_mirror_and_size() {
        let recipe = Debootstrap {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["curl".into()],
        };
        let base = recipe_text(&recipe, 3072);
        assert!(base.contains("packages=busybox,curl,iproute2,"));
        for other in [
            recipe_text(
                &Debootstrap {
                    suite: "trixie".into(),
                    ..recipe.clone()
                },
                3072,
            ),
            recipe_text(
                &Debootstrap {
                    mirror: "http://other/debian".into(),
                    ..recipe.clone()
                },
                3072,
            ),
            recipe_text(
                &Debootstrap {
                    packages: vec![],
                    ..recipe.clone()
                },
                3072,
            ),
            recipe_text(&recipe, 4096),
        ] {
            assert_ne!(
                sha256_bytes(other.as_bytes()),
                sha256_bytes(base.as_bytes())
            );
        }
        // Package order does not matter.
        let reordered = Debootstrap {
            packages: vec!["curl".into(), "busybox".into()],
            ..recipe.clone()
        };
        assert_eq!(recipe_text(&reordered, 3072), base);
    }
}
