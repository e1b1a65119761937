//! The state dir of a running stack (`.shop/` beside the stack file by default): where the
//! supervisor records itself, and where logs, databases and the stack secret live, so every
//! other command can find the running stack from any shell.
//!
//! ```text
//! .shop/
//!   supervisor.json   pid and control address of the live supervisor
//!   supervisor.lock   held by the live supervisor: one per state dir
//!   up.lock           held by a `shop up` while it starts one, so two at once start one stack
//!   secret            the stack secret (mode 0600), required by admin endpoints
//!   logs/INSTANCE.log one per instance, plus supervisor.log
//!   data/SERVICE.db   one per service (replicas share it)
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a live supervisor writes about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupervisorRecord {
    pub pid: u32,
    /// `host:port` of the control API.
    pub control: String,
    pub stack_file: PathBuf,
    pub started_at: String,
}

#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

/// An exclusive advisory lock (`flock`) on a file of the state dir, released when dropped or
/// when the process ends, however it ends: a crashed holder never leaves the dir locked.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Which lock of the state dir.
#[derive(Clone, Copy, Debug)]
pub enum LockKind {
    /// Held by a supervisor for its life.
    Supervisor,
    /// Held by `shop up` from its check for a running supervisor until the one it starts has
    /// recorded itself; a second `up` waits, then finds that supervisor and joins it. `shop down`
    /// holds it too, so an `up` racing a `down` starts a new stack once the old one is gone
    /// instead of joining the one going away.
    Up,
}

impl LockKind {
    const ALL: [LockKind; 2] = [LockKind::Supervisor, LockKind::Up];

    fn file(self) -> &'static str {
        match self {
            LockKind::Supervisor => "supervisor.lock",
            LockKind::Up => "up.lock",
        }
    }
}

const SECRET: &str = "secret";
const RECORD: &str = "supervisor.json";

impl StateDir {
    /// The databases of the first service of each built-in kind in `stack`, for the invariant
    /// checks; the error names a kind the stack lacks.
    pub fn databases(&self, stack: &super::stackfile::Stack) -> Result<crate::invariants::Databases, String> {
        use crate::services::Kind;
        let db = |kind: Kind| {
            let name = stack
                .services_of(kind)
                .into_iter()
                .next()
                .ok_or_else(|| format!("the stack has no `{}` service", kind.name()))?;
            Ok::<_, String>(self.db(&name))
        };
        Ok(crate::invariants::Databases {
            order: db(Kind::Order)?,
            payment: db(Kind::Payment)?,
            inventory: db(Kind::Inventory)?,
            notification: db(Kind::Notification)?,
            gateway: db(Kind::Gateway).ok(),
        })
    }

    /// `--state-dir`/`$SHOP_STATE_DIR` if given, else `.shop/` beside the stack file.
    pub fn resolve(explicit: Option<&Path>, stack_file: &Path) -> StateDir {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => stack_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(".shop"),
        };
        StateDir { root }
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log(&self, instance: &str) -> PathBuf {
        self.logs().join(format!("{instance}.log"))
    }

    pub fn db(&self, service: &str) -> PathBuf {
        self.data().join(format!("{service}.db"))
    }

    fn record_path(&self) -> PathBuf {
        self.root.join(RECORD)
    }

    /// Creates the state dir readable by its owner only: it holds the secret, the databases
    /// and logs with order details.
    pub fn create(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // `--state-dir` may name any directory, and this one is about to be made private: only
        // a new, empty or earlier state dir is taken (`--state-dir /tmp` would lock others out).
        if self.root.exists() && !self.is_ours() {
            return Err(crate::error::Failure::usage(format!(
                "`{}` is neither empty nor a state dir of shop; give --state-dir a new or empty directory",
                self.root.display()
            )));
        }
        for dir in [self.logs(), self.data()] {
            std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", dir.display()))?;
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("cannot restrict `{}` to its owner: {e}", self.root.display()))?;
        Ok(())
    }

    /// Whether the directory is empty or holds what only a state dir holds.
    fn is_ours(&self) -> bool {
        let Ok(mut entries) = std::fs::read_dir(&self.root) else { return false };
        let marks = [SECRET, RECORD].into_iter().chain(LockKind::ALL.map(LockKind::file));
        entries.next().is_none() || marks.into_iter().any(|f| self.root.join(f).is_file())
    }

    /// Deletes the data and logs (the directories deleted are returned), the secret and the
    /// locks, and the state dir itself once empty. Only a directory `up` made is purged:
    /// `--state-dir` may name any directory, and its `data/` and `logs/` are somebody else's
    /// unless the stack secret says the dir is a stack's.
    pub fn purge(&self) -> anyhow::Result<Vec<PathBuf>> {
        if !self.root.join(SECRET).is_file() && (self.data().exists() || self.logs().exists()) {
            return Err(crate::error::Failure::usage(format!(
                "`{}` has no stack secret, so it is not a state dir `shop up` made; nothing was deleted",
                self.root.display()
            )));
        }
        let mut purged = Vec::new();
        for path in [self.data(), self.logs()] {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => purged.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("cannot delete `{}`: {e}", path.display()),
            }
        }
        for file in [SECRET].into_iter().chain(LockKind::ALL.map(LockKind::file)) {
            let _ = std::fs::remove_file(self.root.join(file));
        }
        let _ = std::fs::remove_dir(&self.root);
        Ok(purged)
    }

    /// A new stack secret for the supervisor starting on this dir (which holds its lock, so no
    /// stack of the old secret runs), written with mode 0600.
    pub fn secret(&self) -> anyhow::Result<String> {
        let path = self.root.join(SECRET);
        std::fs::create_dir_all(&self.root)
            .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", self.root.display()))?;
        let secret = {
            use rand::Rng;
            let bytes: [u8; 32] = rand::thread_rng().gen();
            hex::encode(bytes)
        };
        // A new one for every supervisor, never one found in the dir: a file someone else put
        // there (readable by others, weak, or a link to elsewhere) is removed, not trusted, and
        // the new file is created afresh (`create_new`), so no link is followed.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::anyhow!("cannot replace the stack secret `{}`: {e}", path.display()));
            }
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot write the stack secret `{}`: {e}", path.display()))?;
        f.write_all(secret.as_bytes())?;
        Ok(secret)
    }

    /// The secret if the stack has one, without creating it.
    pub fn existing_secret(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(SECRET)).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// Takes the lock `kind` at once, or `None` while another process holds it.
    pub fn try_lock(&self, kind: LockKind) -> anyhow::Result<Option<DirLock>> {
        use nix::fcntl::{Flock, FlockArg};
        let path = self.root.join(kind.file());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open `{}`: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(DirLock(lock))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(anyhow::anyhow!("cannot lock `{}`: {e}", path.display())),
        }
    }

    /// Takes the lock `kind`, waiting up to `wait` for its holder to let go.
    pub async fn lock(&self, kind: LockKind, wait: std::time::Duration) -> anyhow::Result<Option<DirLock>> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(lock) = self.try_lock(kind)? {
                return Ok(Some(lock));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn write_record(&self, record: &SupervisorRecord) -> anyhow::Result<()> {
        let tmp = self.root.join("supervisor.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(record)?)?;
        std::fs::rename(&tmp, self.record_path())?;
        Ok(())
    }

    pub fn remove_record(&self) {
        let _ = std::fs::remove_file(self.record_path());
    }

    /// Removes the record if it is the one supervisor `pid` wrote: a supervisor started since
    /// keeps its own, so every command still finds it.
    pub fn remove_record_of(&self, pid: u32) {
        let Ok(text) = std::fs::read_to_string(self.record_path()) else { return };
        match serde_json::from_str::<SupervisorRecord>(&text) {
            Ok(record) if record.pid != pid => {}
            _ => self.remove_record(),
        }
    }

    /// The live supervisor, if any. A record whose process is gone is stale: it is removed
    /// (with any process of the old stack still holding on) and `None` is returned.
    pub fn live_supervisor(&self) -> Option<SupervisorRecord> {
        let text = std::fs::read_to_string(self.record_path()).ok()?;
        let record: SupervisorRecord = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(_) => {
                self.remove_record();
                return None;
            }
        };
        if process_alive(record.pid) && cmdline(record.pid).is_some_and(|c| c.contains("shop")) {
            return Some(record);
        }
        tracing::warn!(pid = record.pid, "found the state of a dead supervisor; cleaning it up");
        self.kill_leftovers(record.pid);
        self.remove_record();
        None
    }

    /// Kills what is left of the stack of supervisor `supervisor` (gone, or stopping it): every
    /// process that carries its pid in `SHOP_PARENT_PID`, which each child is started with and
    /// the programs an external command starts inherit, with its process group. Built-in
    /// services exit on their own when their supervisor dies, and an external command gets
    /// SIGTERM from the kernel; this is for what could not (the program `sh -c` started, say,
    /// which would hold its port against the next `up`).
    pub fn kill_leftovers(&self, supervisor: u32) {
        let marker = format!("SHOP_PARENT_PID={supervisor}");
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if pid == std::process::id() {
                continue;
            }
            let Ok(environ) = std::fs::read(e.path().join("environ")) else { continue };
            if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
                crate::orchestrator::launcher::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

pub fn process_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" "))
}
