//! Helpers that drive the external tools CI installs (`.ci/deps.sh`): python's xmlschema for
//! JUnit files, headless Chromium for HTML reports. A missing tool fails the test, naming it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Validates `xml` against tests/schemas/junit.xsd with python's xmlschema; panics with the
/// validator's reason.
pub fn assert_valid_junit(xml: &Path) {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/junit.xsd");
    let script = "import sys, xmlschema\nxmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&xsd)
        .arg(xml)
        .output()
        .expect("python3 is needed to validate JUnit files (installed by .ci/deps.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("No module named 'xmlschema'"), "python's xmlschema is missing: run .ci/deps.sh");
    assert!(
        out.status.success(),
        "{} is not valid JUnit: {stderr}\n{}",
        xml.display(),
        std::fs::read_to_string(xml).unwrap_or_default()
    );
}

/// What headless Chromium made of a page.
pub struct Rendered {
    /// The DOM after load.
    pub dom: String,
    /// Chromium's log with console messages (`--enable-logging=stderr --v=0`).
    pub log: String,
}

/// Opens `page` in headless Chromium: dumps its DOM, and screenshots it to `png`.
pub fn chromium(page: &Path, png: &Path) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[String]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=900,1600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium is needed to check HTML reports (installed by .ci/deps.sh)")
    };
    let dumped = run(&["--dump-dom".to_string()]);
    assert!(dumped.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dumped.stderr));
    let shot = run(&[format!("--screenshot={}", png.display())]);
    assert!(shot.status.success(), "chromium failed: {}", String::from_utf8_lossy(&shot.stderr));
    let log = format!("{}{}", String::from_utf8_lossy(&dumped.stderr), String::from_utf8_lossy(&shot.stderr));
    Rendered { dom: String::from_utf8_lossy(&dumped.stdout).into_owned(), log }
}

impl Rendered {
    /// Console errors and uncaught exceptions Chromium logged for the page.
    pub fn console_errors(&self) -> Vec<&str> {
        (self.log.lines())
            .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("console"))
            .collect()
    }
}

/// Polls `probe` every 100 ms until it holds; panics naming `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
