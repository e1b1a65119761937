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
    #[error("cannot start `{program}` for `{instance}`: {source}")]
    Spawn { instance: String, program: String, source: std::io::Error },
    #[error("cannot open log file `{path}` for `{instance}`: {source}")]
    Log { instance: String, path: PathBuf, source: std::io::Error },
    #[error("`{instance}` exited before it was listening (see its log{})", log.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default())]
    Exited { instance: String, log: Option<PathBuf> },
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
        spawn_command(cmd.command(), &cmd.instance, &cmd.binary.display().to_string(), cmd.log.as_deref(), timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
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

/// Spawns any command the same way (own group, supervisor pid, address on stdout).
pub fn spawn_command(
    mut cmd: Command,
    instance: &str,
    program: &str,
    log: Option<&Path>,
    timeout: Duration,
) -> Result<ServiceProcess, LaunchError> {
    let stderr = match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LaunchError::Log { instance: instance.into(), path: path.into(), source })?;
            Stdio::from(file)
        }
        None => Stdio::null(),
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
    cmd.env("SHOP_PARENT_PID", std::process::id().to_string());
    let mut child =
        cmd.spawn().map_err(|source| LaunchError::Spawn { instance: instance.into(), program: program.into(), source })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let log_path = log.map(Path::to_path_buf);
    // The first line is the address; the rest of stdout (services print nothing else) is kept
    // in the log so nothing a child says is lost.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = tx.send(first);
        let mut sink = log_path.and_then(|p| std::fs::OpenOptions::new().append(true).open(p).ok());
        for line in lines.map_while(Result::ok) {
            if let Some(f) = sink.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let exited = |child: &mut Child| {
        let _ = child.wait();
        LaunchError::Exited { instance: instance.into(), log: log.map(Path::to_path_buf) }
    };
    match rx.recv_timeout(timeout) {
        Ok(Some(line)) => match line.strip_prefix("listening on ").and_then(|a| a.trim().parse().ok()) {
            Some(address) => Ok(ServiceProcess { instance: instance.into(), address, child }),
            None => {
                signal_group(child.id(), Signal::SIGKILL);
                Err(exited(&mut child))
            }
        },
        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => Err(exited(&mut child)),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            signal_group(child.id(), Signal::SIGKILL);
            let _ = child.wait();
            Err(LaunchError::NoAddress { instance: instance.into(), timeout })
        }
    }
}

/// Polls `http://ADDRESS/PATH` until it answers 2xx or `timeout` passes; the error is the
/// last thing seen.
pub async fn wait_healthy(http: &reqwest::Client, address: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
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
