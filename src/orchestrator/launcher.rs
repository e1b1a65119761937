//! Spawns one service process and tells when it is up.
//!
//! Every child runs in its own process group (so a signal reaches whatever it forks, and a
//! Ctrl-C at the terminal reaches only the supervisor), is told the supervisor's pid (so it
//! exits if the supervisor dies), and prints `listening on ADDRESS` as its first line of
//! stdout, which is how a child asked for port 0 reports the port it got.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::services::Kind;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start `{program}` for `{instance}`: {cause}")]
    Spawn { instance: String, program: String, cause: std::io::Error },
    #[error("cannot open log file `{path}` for `{instance}`: {cause}")]
    Log { instance: String, path: PathBuf, cause: std::io::Error },
    #[error(
        "`{instance}` exited before it was listening{} (see its log{})",
        said.as_ref().map(|s| format!(": {s}")).unwrap_or_default(),
        log.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default()
    )]
    Exited {
        instance: String,
        log: Option<PathBuf>,
        /// The last `error:` line it wrote, which says why (a database it cannot write, say).
        said: Option<String>,
    },
    #[error("`{instance}` did not report its address within {timeout:?}")]
    NoAddress { instance: String, timeout: Duration },
}

/// How to run one built-in service.
#[derive(Clone, Debug)]
pub struct ServeCommand {
    /// The `shop` binary to run.
    pub binary: PathBuf,
    pub kind: Kind,
    pub instance: String,
    pub port: u16,
    pub db: PathBuf,
    pub registry: String,
    pub fixtures: Option<PathBuf>,
    /// Extra environment, e.g. the `SHOP_*` tuning derived from stack.yaml.
    pub env: Vec<(String, String)>,
    /// Where stderr (the service's log) goes; discarded when `None`.
    pub log: Option<PathBuf>,
}

impl ServeCommand {
    /// Forks the service; see [`start`].
    pub fn start(&self, die_with_parent: bool) -> Result<Starting, LaunchError> {
        start(self.command(), &self.instance, &self.binary.display().to_string(), self.log.as_deref(), die_with_parent)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .arg(self.kind.name())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--db")
            .arg(&self.db)
            .arg("--registry")
            .arg(&self.registry)
            .arg("--instance")
            .arg(&self.instance);
        if let Some(f) = &self.fixtures {
            cmd.arg("--fixtures").arg(f);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// A running child process that reported its address.
#[derive(Debug)]
pub struct ServiceProcess {
    pub instance: String,
    pub address: SocketAddr,
    child: Child,
}

impl ServiceProcess {
    /// Starts `cmd` and waits (up to `timeout`) for its `listening on` line.
    pub fn spawn(cmd: &ServeCommand, timeout: Duration) -> Result<ServiceProcess, LaunchError> {
        cmd.start(false)?.wait_address(timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.try_wait() {
            Ok(status) => status,
            // Already reaped elsewhere: it is gone either way.
            Err(_) => Some(std::os::unix::process::ExitStatusExt::from_raw(0)),
        }
    }

    /// SIGKILL to the whole group: a crash, as far as anyone can tell.
    pub fn kill(&mut self) {
        signal_group(self.child.id(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        signal_group(self.child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }

    /// Sends `signal` to the group (SIGSTOP, SIGCONT, …).
    pub fn signal(&self, signal: Signal) {
        signal_group(self.child.id(), signal);
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Signals a process group; a group that is already gone is not an error.
pub fn signal_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

/// A child that has been forked but has not yet said where it listens.
pub struct Starting {
    instance: String,
    log: Option<PathBuf>,
    child: Child,
    first_line: mpsc::Receiver<Option<String>>,
}

impl Starting {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `timeout`) for the `listening on ADDRESS` line.
    pub fn wait_address(mut self, timeout: Duration) -> Result<ServiceProcess, LaunchError> {
        let instance = self.instance.clone();
        let exited = |child: &mut Child, log: &Option<PathBuf>| {
            signal_group(child.id(), Signal::SIGKILL);
            let _ = child.wait();
            let said = log.as_deref().and_then(last_error);
            LaunchError::Exited { instance: instance.clone(), log: log.clone(), said }
        };
        match self.first_line.recv_timeout(timeout) {
            Ok(Some(line)) => match line.strip_prefix("listening on ").and_then(|a| a.trim().parse().ok()) {
                Some(address) => Ok(ServiceProcess { instance: self.instance, address, child: self.child }),
                None => Err(exited(&mut self.child, &self.log)),
            },
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => Err(exited(&mut self.child, &self.log)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                signal_group(self.child.id(), Signal::SIGKILL);
                let _ = self.child.wait();
                Err(LaunchError::NoAddress { instance: self.instance, timeout })
            }
        }
    }

    /// For a program that does not report its address (an external `command`): it listens
    /// where it was told to.
    pub fn with_known_address(self, address: SocketAddr) -> ServiceProcess {
        ServiceProcess { instance: self.instance, address, child: self.child }
    }
}

/// Forks `cmd` in its own process group with the supervisor's pid in `SHOP_PARENT_PID`; stderr
/// (and stdout after its first line) go to `log`.
///
/// With `die_with_parent`, the kernel also sends SIGTERM when the forking thread ends
/// (`PR_SET_PDEATHSIG`), which reaches programs that know nothing of `SHOP_PARENT_PID`; call it
/// from a thread that lives as long as the supervisor.
pub fn start(
    mut cmd: Command,
    instance: &str,
    program: &str,
    log: Option<&Path>,
    die_with_parent: bool,
) -> Result<Starting, LaunchError> {
    let stderr = match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|cause| LaunchError::Log { instance: instance.into(), path: path.into(), cause })?;
            Stdio::from(file)
        }
        None => Stdio::null(),
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
    cmd.env("SHOP_PARENT_PID", std::process::id().to_string());
    if die_with_parent {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|cause| LaunchError::Spawn {
        instance: instance.into(),
        program: program.into(),
        cause,
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let log_path = log.map(Path::to_path_buf);
    // The first line is the address; the rest of stdout is kept in the log so nothing a child
    // says is lost.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let mut sink = log_path.and_then(|p| std::fs::OpenOptions::new().append(true).open(p).ok());
        if let (Some(f), Some(line)) = (sink.as_mut(), first.as_ref()) {
            if !line.starts_with("listening on ") {
                let _ = f.write_all(format!("{line}\n").as_bytes()); // one write: lines from several writers never interleave
            }
        }
        let _ = tx.send(first);
        for line in lines.map_while(Result::ok) {
            if let Some(f) = sink.as_mut() {
                let _ = f.write_all(format!("{line}\n").as_bytes()); // one write: lines from several writers never interleave
            }
        }
    });
    Ok(Starting { instance: instance.into(), log: log.map(Path::to_path_buf), child, first_line: rx })
}

/// Polls `http://ADDRESS/PATH` until it answers 2xx or `timeout` passes; the error is the
/// last thing seen.
pub async fn wait_healthy(
    http: &reqwest::Client,
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{address}{path}");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match http.get(&url).timeout(Duration::from_millis(500)).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("{url} answered {}", r.status()),
            Err(e) => format!("{url}: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last line starting `error:` among the last lines of a log: what a service that exits at
/// start-up says about why.
fn last_error(log: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    // Only the end: a log can be large, and this runs at every failed start.
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(8 * 1024))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().collect();
    (lines[lines.len().saturating_sub(5)..].iter().rev())
        .find_map(|l| l.strip_prefix("error: "))
        .map(|l| l.chars().take(300).collect())
}
