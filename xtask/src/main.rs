//! `cargo xtask`: the project's own setup, test and CI tasks, in Rust with only std.
//!
//! Lives here: installing what tests, benches and fuzzing need on a Debian machine
//! (idempotently), running the test suite with the right environment, and the CI sequence.
//! Never here: product logic, or anything a test needs at run time (that is `testkit`).
//!
//! ```text
//! cargo xtask setup [--bench] [--fuzz]   install what is missing
//! cargo xtask test                       setup, then cargo test --workspace
//! cargo xtask ci                         fmt --check, clippy -D warnings, test, fuzz smoke
//! ```

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Garage release the tests run against (crates.io `garage`).
const GARAGE_VERSION: &str = "2.5.0";
/// Where machine-wide caches live (outside any clone, so CI builds Garage once per machine).
const DEFAULT_CACHE: &str = "/var/cache/lifeboat";
/// Environment variable through which `lifeboat-testkit` finds Garage.
const GARAGE_BIN_ENV: &str = "LIFEBOAT_GARAGE_BIN";
/// How long each fuzz target runs in `ci`.
const FUZZ_SECONDS: u32 = 20;

/// Debian packages for `setup --bench`.
const BENCH_PACKAGES: &[&str] = &[
    "time",
    "b3sum",
    "restic",
    "borgbackup",
    "pgbackrest",
    "hyperfine",
    "bc",
    "haproxy",
    "patroni",
    "postgresql-15-auto-failover",
];
/// Debian packages the test suite and its builds need: PostgreSQL 15 for the database
/// tests (its server binaries in /usr/lib/postgresql/15/bin; the default cluster the
/// package creates on port 5432 is left alone), `util-linux` for `runuser`.
const TEST_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "ca-certificates",
    "postgresql-15",
    "postgresql-client-15",
    "util-linux",
    // etcd for the coordinator's tests (ADR 0019), protoc for etcd-client's build script,
    // iproute2 for the network namespaces of the partition tests.
    "etcd-server",
    "protobuf-compiler",
    "iproute2",
    // strace for the tests that prove restores are durable before they report success
    // (syncfs before backup_label, fsync after deletes); e2fsprogs for `chattr +i` in the
    // fence tests (an immutable data directory).
    "strace",
    "e2fsprogs",
];
/// Debian packages `package --install-test` uses (`systemd-analyze`, `readelf`).
const PACKAGE_PACKAGES: &[&str] = &["systemd", "binutils"];
/// Debian packages for building fuzz targets (libFuzzer is C++).
const FUZZ_PACKAGES: &[&str] = &["build-essential"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let started = Instant::now();
    let result = match args.first().map(String::as_str) {
        Some("setup") => Setup::from_args(&args[1..]).and_then(|s| s.run()),
        Some("test") => test(),
        Some("ci") => ci(),
        Some("quickstart") => quickstart(&args[1..]),
        Some("package") => package(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    print_steps();
    match result {
        Ok(()) => {
            eprintln!("xtask: done in {:.0?}", started.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <setup [--bench] [--fuzz] | test | ci | quickstart [ARGS]>
  setup   install what is missing (apt packages, Garage into the machine cache)
  quickstart  install PostgreSQL 15 when missing, build lifeboat, and run
          `lifeboat quickstart --dir /tmp/lifeboat-quickstart --detach` (or ARGS)
  test    setup; cargo test --workspace while Garage builds, then the Garage (S3) tests
  ci      cargo fmt --check, clippy -D warnings, test, package --install-test, then fuzz
          targets for 20 s each
  package [--install-test]  build the .deb (cargo-deb; release binary, man pages,
          completions, systemd units) into target/debian; --install-test then installs it
          with dpkg -i, checks what it put where, verifies the units, and removes it";

/// The workspace's target directory (`CARGO_TARGET_DIR` or `target/`).
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `package [--install-test]`: the .deb a shop installs (docs/packages.md).
fn package(args: &[String]) -> Result {
    let mut install_test = false;
    for a in args {
        match a.as_str() {
            "--install-test" => install_test = true,
            other => return Err(format!("unknown package option {other:?}\n{USAGE}")),
        }
    }
    if install_test {
        step("Debian packages", || apt_install(PACKAGE_PACKAGES))?;
    }
    step("cargo-deb", install_cargo_deb)?;
    step("build lifeboat (release)", || {
        run(cargo().args(["build", "--release", "-p", "lifeboat-cli"]))
    })?;
    let exe = target_dir().join("release/lifeboat");
    let generated = workspace_root().join("packaging/generated");
    step("man pages and completions", || {
        let _ = std::fs::remove_dir_all(&generated);
        let completions = generated.join("completions");
        std::fs::create_dir_all(&completions)
            .map_err(|e| format!("cannot create {}: {e}", completions.display()))?;
        run(Command::new(&exe)
            .arg("--quiet")
            .arg("manpages")
            .arg(generated.join("man")))?;
        for (shell, file) in [
            ("bash", "lifeboat.bash"),
            ("zsh", "_lifeboat"),
            ("fish", "lifeboat.fish"),
        ] {
            let out = Command::new(&exe)
                .args(["completions", shell])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            if !out.status.success() {
                return Err(format!("lifeboat completions {shell} failed"));
            }
            std::fs::write(completions.join(file), out.stdout)
                .map_err(|e| format!("cannot write {file}: {e}"))?;
        }
        Ok(())
    })?;
    let deb = step("cargo deb (stripped binary)", || {
        let out = cargo()
            .args(["deb", "-p", "lifeboat-cli", "--no-build", "--strip"])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo deb: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo deb failed with {}", out.status));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("cargo deb reported {path:?}: {e}"))?
            .len();
        eprintln!("    {path} ({:.1} MiB)", size as f64 / 1048576.0);
        Ok(PathBuf::from(path))
    })?;
    if install_test {
        step("install test: dpkg -i, check, dpkg -r", || {
            deb_install_test(&deb)
        })?;
    }
    Ok(())
}

fn install_cargo_deb() -> Result {
    install_cargo_tool("deb", "cargo-deb")
}

/// Installs the cargo subcommand `cargo SUB` (crate `krate`) unless it runs already.
fn install_cargo_tool(sub: &str, krate: &str) -> Result {
    let works = cargo()
        .args([sub, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        eprintln!("    present: {krate}");
        return Ok(());
    }
    run(cargo().args(["install", "--locked", krate]))
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .map_err(|e| format!("cannot start {}: {e}", show(cmd)))?;
    if !o.status.success() {
        return Err(format!(
            "`{}` failed with {}: {}",
            show(cmd),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Installs `deb`, checks the binary, pages, completions and units it put in place (and
/// that the units are valid), removes it, and checks that none of its files remain.
fn deb_install_test(deb: &Path) -> Result {
    if dpkg_installed("lifeboat") {
        return Err(
            "a lifeboat package is installed already: the install test would replace it; \
             remove it first (dpkg -r lifeboat)"
                .into(),
        );
    }
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let check = (|| -> Result {
        let files = output(Command::new("dpkg").args(["-L", "lifeboat"]))?;
        let version = output(Command::new("/usr/bin/lifeboat").arg("--version"))?;
        eprintln!("    installed: {}", version.trim());
        for wanted in [
            "/usr/bin/lifeboat",
            "/usr/share/man/man1/lifeboat-restore.1",
            "/usr/share/bash-completion/completions/lifeboat",
            "/lib/systemd/system/lifeboat.service",
            "/lib/systemd/system/lifeboat-pg-stream@.service",
            "/lib/systemd/system/lifeboat-backup@.timer",
            "/lib/systemd/system/lifeboat-check.timer",
        ] {
            if !files.lines().any(|l| l.starts_with(wanted)) {
                return Err(format!("the package does not install {wanted}"));
            }
        }
        let size = std::fs::metadata("/usr/bin/lifeboat")
            .map_err(|e| format!("/usr/bin/lifeboat: {e}"))?
            .len();
        let sections = output(Command::new("readelf").args(["-S", "/usr/bin/lifeboat"]))?;
        if sections.contains(".debug_info") {
            return Err(format!(
                "/usr/bin/lifeboat is not stripped ({} MiB)",
                size / 1048576
            ));
        }
        eprintln!(
            "    /usr/bin/lifeboat: {:.1} MiB, stripped",
            size as f64 / 1048576.0
        );
        // Units: systemd checks them (syntax, directives, that ExecStart exists).
        for unit in [
            "lifeboat.service",
            "lifeboat-pg-stream@orders.service",
            "lifeboat-backup@media.service",
            "lifeboat-backup@media.timer",
            "lifeboat-check.service",
            "lifeboat-check.timer",
        ] {
            let o = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(format!("/lib/systemd/system/{}", unit_file(unit)))
                .output()
                .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
            let text = String::from_utf8_lossy(&o.stderr).into_owned();
            // Only the unit's own problems count (verify also reports unrelated host units).
            let own: Vec<&str> = text.lines().filter(|l| l.contains("lifeboat")).collect();
            if !own.is_empty() {
                return Err(format!(
                    "systemd-analyze verify {unit}:\n{}",
                    own.join("\n")
                ));
            }
        }
        eprintln!("    units verified by systemd-analyze");
        Ok(())
    })();
    let files = output(Command::new("dpkg").args(["-L", "lifeboat"])).unwrap_or_default();
    let removed = run(Command::new("dpkg").args(["-r", "lifeboat"]));
    check?;
    removed?;
    let left: Vec<&str> = files.lines().filter(|f| Path::new(f).is_file()).collect();
    if !left.is_empty() {
        return Err(format!("dpkg -r left files behind: {}", left.join(", ")));
    }
    eprintln!("    removed cleanly");
    Ok(())
}

/// The file of a unit name (`x@inst.service` lives in `x@.service`).
fn unit_file(unit: &str) -> String {
    match unit.split_once('@') {
        Some((base, rest)) => {
            let ext = rest.rsplit_once('.').map_or("", |(_, e)| e);
            format!("{base}@.{ext}")
        }
        None => unit.to_string(),
    }
}

/// Debian packages the quickstart needs (PostgreSQL 15's server and client).
const QUICKSTART_PACKAGES: &[&str] = &[
    "postgresql-15",
    "postgresql-client-15",
    "util-linux",
    "protobuf-compiler",
];

/// `quickstart [ARGS]`: the README's first command. Installs what the estate needs, builds
/// the binary, and runs `lifeboat quickstart` (detached unless ARGS say otherwise).
fn quickstart(args: &[String]) -> Result {
    step("Debian packages", || apt_install(QUICKSTART_PACKAGES))?;
    step("build lifeboat (release)", || {
        run(cargo().args(["build", "--release", "-q", "-p", "lifeboat-cli"]))
    })?;
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let exe = target.join("release/lifeboat");
    let args: Vec<String> = if args.is_empty() {
        [
            "quickstart",
            "--dir",
            "/tmp/lifeboat-quickstart",
            "--detach",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    } else {
        std::iter::once("quickstart".to_string())
            .chain(args.iter().cloned())
            .collect()
    };
    let status = Command::new(&exe)
        .args(&args)
        .status()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`lifeboat {}` failed with {status}",
            args.join(" ")
        ))
    }
}

/// The machine cache: `LIFEBOAT_CACHE` or `/var/cache/lifeboat`.
fn cache_dir() -> PathBuf {
    env::var_os("LIFEBOAT_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The Garage binary tests use: `LIFEBOAT_GARAGE_BIN` or the one in the cache.
fn garage_bin() -> PathBuf {
    env::var_os(GARAGE_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("garage/bin/garage"))
}

fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Every step so far: what, how long, whether it succeeded (printed at the end).
static STEPS: std::sync::Mutex<Vec<(String, Duration, bool)>> = std::sync::Mutex::new(Vec::new());

/// Announces a step, runs it, and reports how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("\n==> {what}");
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    match &r {
        Ok(_) => eprintln!("==> ok: {what} ({took:.1?})"),
        Err(_) => eprintln!("==> FAILED: {what} ({took:.1?})"),
    }
    if let Ok(mut steps) = STEPS.lock() {
        steps.push((what.to_string(), took, r.is_ok()));
    }
    r
}

/// The phases and their times, one line each (after `test` and `ci`).
fn print_steps() {
    let Ok(steps) = STEPS.lock() else { return };
    if steps.is_empty() {
        return;
    }
    eprintln!("\nphases:");
    for (what, took, ok) in steps.iter() {
        eprintln!(
            "  {:>7.1} s  {}  {what}",
            took.as_secs_f64(),
            if *ok { "ok    " } else { "FAILED" }
        );
    }
}

/// Runs a command to completion, inheriting stdio; fails on a non-zero exit.
fn run(cmd: &mut Command) -> Result {
    eprintln!("    $ {}", show(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start {}: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed with {status}", show(cmd)))
    }
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// What `setup` installs.
#[derive(Default)]
struct Setup {
    bench: bool,
    fuzz: bool,
}

impl Setup {
    fn from_args(args: &[String]) -> Result<Self> {
        let mut s = Setup::default();
        for a in args {
            match a.as_str() {
                "--bench" => s.bench = true,
                "--fuzz" => s.fuzz = true,
                other => return Err(format!("unknown setup option {other:?}\n{USAGE}")),
            }
        }
        Ok(s)
    }

    fn run(&self) -> Result {
        self.apt()?;
        step("Garage (S3 test server)", || {
            match GarageInstall::start()? {
                Some(install) => install.wait(),
                None => Ok(()),
            }
        })?;
        if self.fuzz {
            step("cargo-fuzz", install_cargo_fuzz)?;
        }
        Ok(())
    }

    fn apt(&self) -> Result {
        let mut wanted: Vec<&str> = TEST_PACKAGES.to_vec();
        if self.bench {
            wanted.extend(BENCH_PACKAGES);
        }
        if self.fuzz {
            wanted.extend(FUZZ_PACKAGES);
        }
        wanted.sort_unstable();
        wanted.dedup();
        step("Debian packages", || apt_install(&wanted))
    }
}

/// Installs the packages of `wanted` that are not installed yet: one `apt-get update`,
/// then one `apt-get install -y`. Does nothing when all are present.
fn apt_install(wanted: &[&str]) -> Result {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("    all present: {}", wanted.join(" "));
        return Ok(());
    }
    eprintln!("    missing: {}", missing.join(" "));
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.arg("-n").arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A Garage build into the machine cache, possibly running in the background.
struct GarageInstall {
    child: Child,
    started: Instant,
    log: PathBuf,
}

impl GarageInstall {
    /// Starts `cargo install garage` into the cache unless a working binary is there.
    /// Returns `None` when nothing needs doing.
    fn start() -> Result<Option<Self>> {
        let bin = garage_bin();
        if let Some(v) = garage_version(&bin) {
            eprintln!("    present: {} ({v})", bin.display());
            return Ok(None);
        }
        if env::var_os(GARAGE_BIN_ENV).is_some_and(|v| !v.is_empty()) {
            return Err(format!(
                "{GARAGE_BIN_ENV}={} does not run; unset it to let setup install Garage",
                bin.display()
            ));
        }
        let cache = cache_dir();
        let root = cache.join("garage");
        std::fs::create_dir_all(cache.join("logs"))
            .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
        let log = cache.join("logs/garage-install.log");
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        // Niced: the workspace build and the tests that overlap it come first; Garage takes
        // what they leave (they wait on servers much of the time).
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "10"])
            .arg(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "--locked", "--version", GARAGE_VERSION, "--root"])
            .arg(&root)
            .arg("garage")
            // Keep the build tree in the cache too, so an interrupted build resumes.
            .env("CARGO_TARGET_DIR", cache.join("garage-build"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        eprintln!(
            "    building Garage {GARAGE_VERSION} (~12 min on 2 cores), log: {}\n    $ {}",
            log.display(),
            show(&cmd)
        );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start cargo install garage: {e}"))?;
        Ok(Some(GarageInstall {
            child,
            started: Instant::now(),
            log,
        }))
    }

    fn wait(mut self) -> Result {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for cargo install garage: {e}"))?;
        let secs = self.started.elapsed().as_secs();
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            return Err(format!(
                "cargo install garage failed with {status} after {secs} s; log tail:\n{tail}"
            ));
        }
        let bin = garage_bin();
        let version = garage_version(&bin)
            .ok_or_else(|| format!("{} was installed but does not run", bin.display()))?;
        let note = format!("{version}\nbuilt in {secs} s\n");
        let _ = std::fs::write(cache_dir().join("garage/VERSION"), note);
        eprintln!("    built {version} in {secs} s");
        Ok(())
    }
}

/// `garage --version` of `bin`, if it runs.
fn garage_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn install_cargo_fuzz() -> Result {
    install_cargo_tool("fuzz", "cargo-fuzz")
}

/// Tests that start Garage (the S3 test server) have this in their name: the others run
/// while Garage builds (16 of a fresh machine's first 40 minutes), these once it is there.
const GARAGE_TESTS: &str = "garage_";

/// `cargo test --workspace` in two phases: everything but the Garage tests while `garage`
/// (a build started earlier, if one was needed) goes on, then the Garage tests. Both phases
/// run to the end, so one run reports every failure.
fn cargo_test(garage: Option<GarageInstall>) -> Result {
    let first = step(
        &format!("cargo test --workspace, all but *{GARAGE_TESTS}* (Garage builds meanwhile)"),
        || {
            run(cargo()
                .args(["test", "--workspace", "--no-fail-fast", "--", "--skip"])
                .arg(GARAGE_TESTS)
                .env(GARAGE_BIN_ENV, garage_bin()))
        },
    );
    let built = match garage {
        Some(install) => step("Garage (S3 test server): wait for build", || install.wait()),
        None => Ok(()),
    };
    let second = built.and_then(|()| {
        step(&format!("cargo test --workspace, *{GARAGE_TESTS}*"), || {
            run(cargo()
                .args(["test", "--workspace", "--tests", "--no-fail-fast", "--"])
                .arg(GARAGE_TESTS)
                .env(GARAGE_BIN_ENV, garage_bin()))
        })
    });
    first.and(second)
}

fn test() -> Result {
    let setup = Setup::default();
    setup.apt()?;
    let garage = step(
        "Garage (S3 test server): start build if missing",
        GarageInstall::start,
    )?;
    cargo_test(garage)
}

fn ci() -> Result {
    let fuzz = Path::new("fuzz/Cargo.toml").is_file();
    let setup = Setup { bench: false, fuzz };
    setup.apt()?;
    // Garage takes longest to build: start it first and let it overlap the lint builds.
    let garage = step(
        "Garage (S3 test server): start build if missing",
        GarageInstall::start,
    )?;
    let lint = (|| {
        step("cargo fmt --all --check", || {
            run(cargo().args(["fmt", "--all", "--check"]))
        })?;
        step("cargo clippy --workspace --all-targets -D warnings", || {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        })
    })();
    lint?;
    cargo_test(garage)?;
    package(&["--install-test".to_string()])?;
    if fuzz {
        step("cargo-fuzz", install_cargo_fuzz)?;
        fuzz_smoke()?;
    } else {
        eprintln!("\n==> no fuzz/Cargo.toml: skipping fuzz targets");
    }
    Ok(())
}

/// Builds every fuzz target and runs each for [`FUZZ_SECONDS`]. The machine has only a
/// stable toolchain; `RUSTC_BOOTSTRAP=1` lets it accept the `-Z` sanitizer flags
/// cargo-fuzz passes.
fn fuzz_smoke() -> Result {
    // The sanitizer build of the fuzz targets takes 10-20 minutes from scratch: keep it in
    // the machine cache so CI on the same machine rebuilds only what changed.
    let target_dir = cache_dir().join("fuzz-target");
    let fuzz = |c: &mut Command| {
        c.env("RUSTC_BOOTSTRAP", "1");
        if env::var_os("CARGO_TARGET_DIR").is_none() {
            c.env("CARGO_TARGET_DIR", &target_dir);
        }
    };
    step("cargo fuzz build", || {
        let mut c = cargo();
        c.args(["fuzz", "build"]);
        fuzz(&mut c);
        run(&mut c)
    })?;
    let out = cargo()
        .args(["fuzz", "list"])
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .map_err(|e| format!("cannot run cargo fuzz list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let targets = String::from_utf8_lossy(&out.stdout).into_owned();
    // `cargo fuzz list` also names the tool binaries of fuzz/Cargo.toml (`seeds`,
    // `format_example`): only what lives in fuzz/fuzz_targets/ is a fuzz target.
    let is_target = |t: &&str| {
        !t.is_empty()
            && Path::new("fuzz/fuzz_targets")
                .join(format!("{t}.rs"))
                .is_file()
    };
    for target in targets.lines().map(str::trim).filter(is_target) {
        step(&format!("fuzz {target} for {FUZZ_SECONDS} s"), || {
            let mut c = cargo();
            c.args(["fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={FUZZ_SECONDS}"));
            fuzz(&mut c);
            run(&mut c)
        })?;
    }
    Ok(())
}
