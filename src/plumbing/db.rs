//! SQLite plumbing: one database file per service, in WAL mode, with migrations versioned in code.
//!
//! rusqlite is blocking, so a service never touches its connection from an async worker: each
//! database has one writer thread that owns the write connection, and a few reader threads with
//! read-only connections (WAL lets them read beside the writer). Transactions queued at the same
//! time are committed together (group commit): each runs inside its own savepoint, so one that
//! fails is rolled back alone, and every caller hears back only after the shared commit, so
//! "persisted" still means on disk before the caller acts.
//!
//! Health that never lies: [`Db::health`] is a bounded write probe (a real one-row write in its
//! own transaction) that also fails when the connection is read-only or the file at the path is
//! no longer the file that is open (deleted or replaced). Once that file is gone, the writer
//! refuses every job with [`DbError::Unavailable`] instead of committing into an unlinked file,
//! so nothing is confirmed and then lost; a restart opens the file that is at the path. The
//! same holds for the write-ahead log beside it (`-wal`): commits land there first, so a log
//! deleted or replaced under a running service would lose them at its next crash. What the
//! deleted log holds is checkpointed into the database first, then writes are refused.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, DatabaseName};
use tokio::sync::{oneshot, watch};

/// Most transactions one commit carries.
const GROUP: usize = 64;
/// Reader threads per database.
const READERS: usize = 2;

/// The one-row table the write probe updates. It belongs to this module, not to a service's
/// versioned schema, so it is created if missing rather than migrated.
const PROBE_TABLE: &str = "shop_write_probe";

impl DbError {
    /// Whether the failure is the database's environment (gone, read-only, disk, lock) rather
    /// than the request: the caller should hear 503 and try again, not 500.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            DbError::Unavailable(_) | DbError::NotWritable { .. } => true,
            DbError::Sql(cause) => matches!(
                cause.sqlite_error_code(),
                Some(
                    ReadOnly
                        | SystemIoFailure
                        | DiskFull
                        | CannotOpen
                        | PermissionDenied
                        | DatabaseBusy
                        | DatabaseLocked
                )
            ),
            _ => false,
        }
    }

    fn is_busy(&self) -> bool {
        let cause = match self {
            DbError::Open { cause, .. } | DbError::Migrate { cause, .. } | DbError::Sql(cause) => cause,
            _ => return false,
        };
        matches!(
            cause.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database `{path}`: {cause}")]
    Open { path: PathBuf, cause: rusqlite::Error },
    #[error("migration {version} of `{path}` failed: {cause}")]
    Migrate { path: PathBuf, version: usize, cause: rusqlite::Error },
    #[error(
        "database `{path}` is at schema version {found}, newer than this binary knows ({known}); use a newer shop"
    )]
    TooNew { path: PathBuf, found: usize, known: usize },
    #[error(
        "cannot open database `{path}` for writing: {why}; make the file, its `-wal` and `-shm` companions and their directory writable, then start again"
    )]
    NotWritable { path: PathBuf, why: String },
    /// `found` is the file's mark; 0 for an unmarked file whose tables are not ours.
    #[error(
        "database `{path}` belongs to another service (application id {found:#x}); give this one a database of its own"
    )]
    Foreign { path: PathBuf, found: i32 },
    #[error(transparent)]
    Unavailable(#[from] Unready),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

/// Why a database cannot take writes right now: what `/readyz` reports, and what the writer
/// answers every job with while the open file is gone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unready {
    #[error("database `{0}` was deleted: the file open is no longer at its path; a restart creates a new one")]
    Deleted(PathBuf),
    #[error("database `{0}` was replaced: the file at its path is not the file open; a restart opens the new one")]
    Replaced(PathBuf),
    #[error(
        "the write-ahead log of database `{0}` was deleted or replaced: commits would go to a file nobody \
         will read again; what it held was checkpointed into the database, and a restart starts a new log"
    )]
    LogGone(PathBuf),
    #[error("database `{0}` is open read-only")]
    ReadOnly(PathBuf),
    #[error("database `{path}` cannot be written: {why}")]
    Unwritable { path: PathBuf, why: String },
    #[error("the write probe of database `{path}` did not finish within {timeout:?}")]
    TimedOut { path: PathBuf, timeout: Duration },
    #[error("the database thread of `{0}` is gone")]
    Stopped(PathBuf),
}

/// What runs inside a group transaction: the caller's work, returning what to send once the
/// group's commit is known. It is handed the connection, or the reason it may not run.
/// The bool says whether the work succeeded (and stands) or failed (and is rolled back).
type TxJob = Box<dyn FnOnce(Result<&Connection, DbError>) -> (bool, Reply) + Send>;
/// Tells the caller the outcome once the group's commit is known.
type Reply = Box<dyn FnOnce(Result<(), Unready>) + Send>;
/// Work that runs alone on a connection (reads, single statements), or hears why it may not.
type PlainJob = Box<dyn FnOnce(Result<&mut Connection, DbError>) + Send>;
/// A write probe: runs on the writer's connection whatever state the file is in.
type ProbeJob = Box<dyn FnOnce(&Connection, &OpenFile) + Send>;

enum Job {
    Tx(TxJob),
    Plain(PlainJob),
    Probe(ProbeJob),
}

/// The identity of the file the writer opened, checked against the path before every write.
///
/// SQLite does not hand out its file descriptor, so the identity is the path's `(st_dev,
/// st_ino)` taken right after the connection opened it. Holding a descriptor of our own instead
/// would be worse: closing any descriptor of a file drops every POSIX lock the process holds on
/// it, SQLite's included.
pub struct OpenFile {
    path: PathBuf,
    identity: (u64, u64),
    /// The write-ahead log beside it, and its identity once it has been seen (SQLite creates
    /// it on the first access and keeps it while any connection is open).
    log: PathBuf,
    log_identity: std::cell::Cell<Option<(u64, u64)>>,
}

impl OpenFile {
    fn new(path: &Path) -> Result<OpenFile, DbError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| DbError::NotWritable { path: path.to_path_buf(), why: format!("cannot stat it: {e}") })?;
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        let file = OpenFile {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            log: PathBuf::from(log),
            log_identity: std::cell::Cell::new(None),
        };
        // Seen now if the migrations made it; otherwise on the first check after it exists.
        let _ = file.log_at_path();
        Ok(file)
    }

    /// Whether the write-ahead log at the path is still the one this connection writes: gone
    /// or another file once seen means commits go where nobody will read them.
    fn log_at_path(&self) -> Result<(), Unready> {
        let seen = self.log_identity.get();
        match std::fs::metadata(&self.log) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match seen {
                Some(_) => Err(Unready::LogGone(self.path.clone())),
                None => Ok(()),
            },
            Err(e) => Err(Unready::Unwritable { path: self.path.clone(), why: format!("cannot stat its log: {e}") }),
            Ok(m) => match seen {
                None => {
                    self.log_identity.set(Some((m.dev(), m.ino())));
                    Ok(())
                }
                Some(identity) if identity != (m.dev(), m.ino()) => Err(Unready::LogGone(self.path.clone())),
                Some(_) => Ok(()),
            },
        }
    }

    /// Whether the file at the path is still the file open: one `stat`, cheap enough to run
    /// before and after every commit.
    fn still_at_path(&self) -> Result<(), Unready> {
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Unready::Deleted(self.path.clone())),
            Err(e) => Err(Unready::Unwritable { path: self.path.clone(), why: format!("cannot stat it: {e}") }),
            Ok(m) if (m.dev(), m.ino()) != self.identity => Err(Unready::Replaced(self.path.clone())),
            Ok(_) => Ok(()),
        }
    }
}

/// Write probes in flight: at most one is queued at a time, and every caller waiting meanwhile
/// hears its outcome, so a stuck writer does not collect a probe per readiness check.
struct Probes {
    queued: AtomicBool,
    /// How many probes have finished, and the last one's outcome.
    done: watch::Sender<(u64, Result<(), Unready>)>,
}

/// A service's database: cheap to clone, safe to share between handlers.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<Vec<mpsc::Sender<PlainJob>>>,
    next_reader: Arc<AtomicUsize>,
    path: Arc<PathBuf>,
    probes: Arc<Probes>,
}

impl Db {
    /// Opens (creating if needed) the file and brings its schema up to `migrations.len()`.
    ///
    /// `migrations[i]` takes the schema from version `i` to `i + 1`; the version lives in
    /// `PRAGMA user_version`, so a restart applies only what is new. `owner` (non-zero) is the
    /// service's mark in the file's header (`PRAGMA application_id`), set when the file is made:
    /// a file with another mark is another service's database and is refused, before its
    /// schema could be taken for an old one of ours and "migrated". A file made before marks
    /// existed takes ours.
    pub fn open(path: &Path, migrations: &[&str], owner: i32) -> Result<Db, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        // Replicas sharing a new file race to set it up; SQLite answers "busy" to some of those
        // races without waiting (changing the journal mode), so the loser tries again.
        let mut attempt = 0;
        let conn = loop {
            match open_writer(path, migrations, owner) {
                Err(e) if e.is_busy() && attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let file = OpenFile::new(path)?;
        // A service that cannot write must not start: it would serve reads and fail every order.
        probe(&conn, &file).map_err(|u| DbError::NotWritable { path: path.to_path_buf(), why: u.to_string() })?;
        let (writer, jobs) = mpsc::channel();
        let name = format!("db-writer {}", path.display());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || write_loop(conn, file, jobs))
            .map_err(|e| DbError::Task(format!("cannot start the database thread: {e}")))?;
        let mut readers = Vec::new();
        for _ in 0..READERS {
            let conn = open_read_only(path)?;
            let (tx, rx) = mpsc::channel::<PlainJob>();
            std::thread::Builder::new()
                .name(format!("db-reader {}", path.display()))
                .spawn(move || {
                    let mut conn = conn;
                    for job in rx {
                        job(Ok(&mut conn));
                    }
                })
                .map_err(|e| DbError::Task(format!("cannot start a database thread: {e}")))?;
            readers.push(tx);
        }
        Ok(Db {
            writer,
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
            path: Arc::new(path.to_path_buf()),
            probes: Arc::new(Probes { queued: AtomicBool::new(false), done: watch::channel((0, Ok(()))).0 }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the database can take writes now: the file open is the file at its path, the
    /// connection is not read-only, the file is writable, and a one-row write commits, all
    /// within `timeout`. This is what `/readyz` asks.
    pub async fn health(&self, timeout: Duration) -> Result<(), Unready> {
        let mut finished = self.probes.done.subscribe();
        let seen = finished.borrow().0;
        if !self.probes.queued.swap(true, Ordering::SeqCst) {
            let probes = self.probes.clone();
            let job: ProbeJob = Box::new(move |conn, file| {
                probes.queued.store(false, Ordering::SeqCst);
                let outcome = probe(conn, file);
                probes.done.send_modify(|(n, last)| {
                    *n += 1;
                    *last = outcome;
                });
            });
            if self.writer.send(Job::Probe(job)).is_err() {
                self.probes.queued.store(false, Ordering::SeqCst);
                return Err(Unready::Stopped(self.path.to_path_buf()));
            }
        }
        let waited = tokio::time::timeout(timeout, async {
            // The sender lives in `self.probes`, so the wait cannot fail while `self` exists.
            finished.wait_for(|(n, _)| *n > seen).await.map(|done| done.1.clone())
        })
        .await;
        match waited {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Unready::Stopped(self.path.to_path_buf())),
            Err(_) => Err(Unready::TimedOut { path: self.path.to_path_buf(), timeout }),
        }
    }

    /// Runs `f` with the write connection, alone (not in a group transaction).
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (job, answer) = plain_job(f);
        self.writer.send(Job::Plain(job)).map_err(|_| DbError::Task("the database thread is gone".into()))?;
        answer.await.map_err(|_| DbError::Task("the database thread dropped a call".into()))?
    }

    /// Runs `f` on a read-only connection; it sees what was committed before it started.
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (job, answer) = plain_job(f);
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].send(job).map_err(|_| DbError::Task("the database thread is gone".into()))?;
        answer.await.map_err(|_| DbError::Task("the database thread dropped a call".into()))?
    }

    /// Runs `f` inside a transaction: all of it is committed or none, and the result comes
    /// back only once it is committed.
    pub async fn tx<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: TxJob = Box::new(move |conn| {
            let result = conn.and_then(|conn| f(conn).map_err(DbError::from));
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed: Result<(), Unready>| {
                let _ = tx.send(match (committed, result) {
                    // A failed (or refused) job was rolled back: its own error is the answer.
                    (_, Err(e)) => Err(e),
                    (Ok(()), ok) => ok,
                    (Err(e), _) => Err(DbError::Unavailable(e)),
                });
            });
            (ok, reply)
        });
        self.writer.send(Job::Tx(job)).map_err(|_| DbError::Task("the database thread is gone".into()))?;
        rx.await.map_err(|_| DbError::Task("the database thread dropped a call".into()))?
    }
}

/// Wraps `f` as a job for a database thread, with the receiver its result arrives on.
#[allow(clippy::type_complexity)]
fn plain_job<T, F>(f: F) -> (PlainJob, oneshot::Receiver<Result<T, DbError>>)
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: PlainJob = Box::new(move |conn| {
        let _ = tx.send(conn.and_then(|conn| f(conn).map_err(DbError::from)));
    });
    (job, rx)
}

fn open_writer(path: &Path, migrations: &[&str], owner: i32) -> Result<Connection, DbError> {
    let open_err = |cause| DbError::Open { path: path.to_path_buf(), cause };
    let mut conn = Connection::open(path).map_err(open_err)?;
    // SQLite quietly falls back to read-only when it cannot open the file for writing; a
    // service on such a connection would look alive and fail every write.
    if conn.is_readonly(DatabaseName::Main).map_err(open_err)? {
        let why = "SQLite could only open it read-only (the file or its directory is not writable)".to_string();
        return Err(DbError::NotWritable { path: path.to_path_buf(), why });
    }
    // First, so that switching to WAL waits for a replica doing the same instead of failing.
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
    // WAL lets readers (shop inspect) run beside the writer; NORMAL is durable across
    // process crashes, which is the failure this lab injects.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    // SQLite reuses the write-ahead log but never shrinks it: without a bound each database
    // keeps its high-water mark (4 MB and more) on disk for good. Checkpoints every 1 MB of log,
    // and the log cut back to 1 MB when a checkpoint lets it restart, keep it small.
    conn.pragma_update(None, "wal_autocheckpoint", 256).map_err(open_err)?;
    conn.pragma_update(None, "journal_size_limit", 1 << 20).map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path, migrations, owner)?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), probed_at INTEGER NOT NULL)"
    ))
    .map_err(open_err)?;
    Ok(conn)
}

/// The write probe, on the writer's connection: identity, read-only flags, the file's write
/// permission (which catches `chattr +i`, a read-only mount, or a mode the owner lost, even while
/// the WAL still takes writes), then a real one-row write in its own transaction.
fn probe(conn: &Connection, file: &OpenFile) -> Result<(), Unready> {
    let path = || file.path.clone();
    file.still_at_path()?;
    file.log_at_path()?;
    let query_only = conn.pragma_query_value(None, "query_only", |r| r.get::<_, bool>(0));
    if conn.is_readonly(DatabaseName::Main).unwrap_or(true) || query_only.unwrap_or(true) {
        return Err(Unready::ReadOnly(path()));
    }
    nix::unistd::access(&file.path, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| Unready::Unwritable { path: path(), why: format!("the file is not writable ({e})") })?;
    let write = format!(
        "INSERT INTO {PROBE_TABLE} (id, probed_at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at"
    );
    let wrote = conn
        .execute_batch("BEGIN IMMEDIATE")
        .and_then(|()| conn.execute(&write, [crate::plumbing::time::now_ms()]))
        .and_then(|_| conn.execute_batch("COMMIT"));
    if let Err(e) = wrote {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return Err(Unready::Unwritable { path: path(), why: format!("a one-row write failed: {e}") });
    }
    // The write landed in the file that was at the path when it committed.
    file.still_at_path()
}

/// Hands each job of `group` the reason it may not run, and tells its caller.
fn refuse(group: Vec<TxJob>, why: &Unready) {
    for f in group {
        let (_, reply) = f(Err(DbError::Unavailable(why.clone())));
        reply(Err(why.clone()));
    }
}

/// The writer thread: runs plain jobs one by one, and every transaction queued meanwhile in one
/// `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint.
///
/// Before each batch it checks that the file open is still the file at the path; once it is
/// not, every job is refused (the caller hears 503) rather than committed into a file nobody
/// will open again. After each commit it checks again, so a file deleted meanwhile does not
/// confirm what it swallowed.
fn write_loop(mut conn: Connection, file: OpenFile, jobs: mpsc::Receiver<Job>) {
    let mut warned = false;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let gone = match file.still_at_path().and_then(|()| file.log_at_path()) {
            Err(u @ (Unready::Deleted(_) | Unready::Replaced(_) | Unready::LogGone(_))) => Some(u),
            _ => None,
        };
        if let Some(u) = gone.as_ref().filter(|_| !warned) {
            warned = true;
            if let Unready::LogGone(_) = u {
                rescue_log(&conn);
            }
            tracing::error!(error = %u, "refusing every write from now on");
        }
        let mut group = Vec::new();
        for job in batch {
            match job {
                Job::Plain(f) => match &gone {
                    Some(u) => f(Err(DbError::Unavailable(u.clone()))),
                    None => f(Ok(&mut conn)),
                },
                Job::Probe(f) => f(&conn, &file),
                Job::Tx(f) => group.push(f),
            }
        }
        if group.is_empty() {
            continue;
        }
        if let Some(u) = gone {
            refuse(group, &u);
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            // Nothing may run outside a transaction: each caller learns it could not start.
            tracing::error!(error = %e, "cannot begin a transaction");
            let why = Unready::Unwritable { path: file.path.clone(), why: format!("cannot begin a transaction: {e}") };
            refuse(group, &why);
            continue;
        }
        for f in group {
            // A savepoint per caller: a failing one is rolled back without touching the others.
            if let Err(e) = run(&conn, "SAVEPOINT job") {
                let why = Unready::Unwritable { path: file.path.clone(), why: format!("cannot open a savepoint: {e}") };
                refuse(vec![f], &why);
                continue;
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(Ok(&conn)))) {
                Ok((true, reply)) => {
                    let _ = run(&conn, "RELEASE job");
                    replies.push(reply);
                }
                Ok((false, reply)) => {
                    let _ = run(&conn, "ROLLBACK TO job").and_then(|()| run(&conn, "RELEASE job"));
                    replies.push(reply);
                }
                Err(_) => {
                    let _ = run(&conn, "ROLLBACK TO job").and_then(|()| run(&conn, "RELEASE job"));
                    tracing::error!("a database job panicked; its work was rolled back");
                }
            }
        }
        let committed = run(&conn, "COMMIT")
            .map_err(|e| Unready::Unwritable { path: file.path.clone(), why: format!("commit failed: {e}") })
            .and_then(|()| file.still_at_path());
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

/// Copies what a deleted write-ahead log holds into the database file, which is still at its
/// path: the commits it confirmed survive a crash after all.
fn rescue_log(conn: &Connection) {
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(FULL)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match checkpoint {
        Ok((0, frames, copied)) => {
            tracing::warn!(frames, copied, "the write-ahead log was deleted; what it held is in the database now")
        }
        Ok((_, frames, copied)) => {
            tracing::error!(
                frames,
                copied,
                "the write-ahead log was deleted and readers kept it from being copied whole"
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "the write-ahead log was deleted and could not be copied into the database")
        }
    }
}

/// Runs one statement of the writer's own bookkeeping (BEGIN, SAVEPOINT, RELEASE, COMMIT) from
/// the statement cache: they run several times per group commit, and parsing them again each
/// time showed in the writer thread's profile.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str], owner: i32) -> Result<(), DbError> {
    // The version is read inside the write transaction: replicas sharing one file start at the
    // same moment, and only one of them may apply a migration.
    let open_err = |cause| DbError::Open { path: path.to_path_buf(), cause };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(open_err)?;
    if owner != 0 {
        let mark = tx.pragma_query_value(None, "application_id", |r| r.get::<_, i32>(0)).map_err(open_err)?;
        match mark {
            // Made before marks existed (or new): ours only if its tables are the ones our own
            // migrations make at its version, so one wrong start cannot brand another
            // service's data as ours.
            0 => {
                let version =
                    tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(open_err)? as usize;
                if version > 0
                    && tables(&tx).map_err(open_err)? != expected_tables(&migrations[..version.min(migrations.len())])?
                {
                    return Err(DbError::Foreign { path: path.to_path_buf(), found: 0 });
                }
                tx.pragma_update(None, "application_id", owner).map_err(open_err)?
            }
            mark if mark != owner => return Err(DbError::Foreign { path: path.to_path_buf(), found: mark }),
            _ => {}
        }
    }
    let found = tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)).map_err(open_err)? as usize;
    if found > migrations.len() {
        return Err(DbError::TooNew { path: path.to_path_buf(), found, known: migrations.len() });
    }
    for (version, sql) in migrations.iter().enumerate().skip(found) {
        let err = |cause| DbError::Migrate { path: path.to_path_buf(), version: version + 1, cause };
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64).map_err(err)?;
    }
    tx.commit().map_err(open_err)?;
    Ok(())
}

/// The names of a database's own tables, sorted (SQLite's and the write probe's left out).
fn tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != '{PROBE_TABLE}' \
         ORDER BY name"
    ))?;
    let names = stmt.query_map([], |r| r.get(0))?.collect();
    names
}

/// The tables `migrations` make, in a database of their own in memory.
fn expected_tables(migrations: &[&str]) -> Result<Vec<String>, DbError> {
    let sql = |cause| DbError::Sql(cause);
    let conn = Connection::open_in_memory().map_err(sql)?;
    for m in migrations {
        conn.execute_batch(m).map_err(sql)?;
    }
    tables(&conn).map_err(sql)
}

/// Opens another service's database read-only, for `shop inspect` and the invariant checks.
pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|cause| DbError::Open { path: path.to_path_buf(), cause })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Rows per table of any service's database, by table name; `-1` for a table that cannot be
/// counted. Empty when the file cannot be opened: this is a report, not a check.
pub fn table_counts(path: &Path) -> std::collections::BTreeMap<String, i64> {
    let Ok(conn) = open_read_only(path) else { return Default::default() };
    let names: Vec<String> = conn
        .prepare(&format!(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != '{PROBE_TABLE}' ORDER BY name"
        ))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    names
        .into_iter()
        .map(|n| {
            // Table names come from sqlite_master, quoted as identifiers.
            let count = conn
                .query_row(&format!("SELECT count(*) FROM \"{}\"", n.replace('"', "\"\"")), [], |r| r.get(0))
                .unwrap_or(-1);
            (n, count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_marked_by_another_owner_is_refused_and_an_unmarked_one_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let v1 = ["CREATE TABLE a (x INTEGER)"];
        // Made before marks existed: taken, and marked, when its tables are ours.
        drop(Db::open(&path, &v1, 0).unwrap());
        drop(Db::open(&path, &v1, 7).unwrap());
        assert!(matches!(Db::open(&path, &v1, 8), Err(DbError::Foreign { found: 7, .. })));
        drop(Db::open(&path, &v1, 7).unwrap());
        // An unmarked file of another schema is refused, and left unmarked.
        let other = dir.path().join("o.db");
        drop(Db::open(&other, &["CREATE TABLE b (y INTEGER)"], 0).unwrap());
        assert!(matches!(Db::open(&other, &v1, 7), Err(DbError::Foreign { found: 0, .. })));
        let mark: i32 = open_read_only(&other).unwrap().query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
        assert_eq!(mark, 0);
    }

    #[tokio::test]
    async fn migrations_apply_once_and_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let v1 = ["CREATE TABLE a (x INTEGER);"];
        Db::open(&path, &v1, 0).unwrap();
        // Reopening with one more migration applies only the new one (the first would fail twice).
        let v2 = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];
        let db = Db::open(&path, &v2, 0).unwrap();
        let n: i64 = db
            .call(|c| {
                let sql = format!("SELECT count(*) FROM sqlite_master WHERE type='table' AND name != '{PROBE_TABLE}'");
                c.query_row(&sql, [], |r| r.get(0))
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
        let mode: String = db.call(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).await.unwrap();
        assert_eq!(mode, "wal");
        assert!(matches!(Db::open(&path, &v1, 0), Err(DbError::TooNew { found: 2, known: 1, .. })));
    }

    const T: [&str; 1] = ["CREATE TABLE t (x INTEGER);"];
    const PROBE: Duration = Duration::from_secs(2);

    async fn insert(db: &Db) -> Result<usize, DbError> {
        db.tx(|c| c.execute("INSERT INTO t (x) VALUES (1)", [])).await
    }

    #[tokio::test]
    async fn a_writable_database_passes_the_write_probe_by_really_writing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &T, 0).unwrap();
        assert_eq!(db.health(PROBE).await, Ok(()));
        let sql = format!("SELECT probed_at FROM {PROBE_TABLE} WHERE id = 1");
        let first: i64 = db.call(move |c| c.query_row(&sql, [], |r| r.get(0))).await.unwrap();
        assert!(first > 0);
        // Concurrent checks share probes and all hear an outcome.
        let all = futures_join(&db).await;
        assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
    }

    async fn futures_join(db: &Db) -> Vec<Result<(), Unready>> {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let db = db.clone();
            set.spawn(async move { db.health(PROBE).await });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_deleted_file_fails_the_probe_and_every_write_is_refused_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, &T, 0).unwrap();
        insert(&db).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(db.health(PROBE).await, Err(Unready::Deleted(path.clone())));
        let refused = insert(&db).await.unwrap_err();
        assert!(matches!(refused, DbError::Unavailable(Unready::Deleted(_))), "{refused:?}");
        assert!(refused.is_unavailable());
        let plain = db.call(|c| c.execute("INSERT INTO t (x) VALUES (2)", [])).await.unwrap_err();
        assert!(plain.is_unavailable(), "{plain:?}");
    }

    #[tokio::test]
    async fn a_replaced_file_fails_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, &T, 0).unwrap();
        let other = dir.path().join("other.db");
        Db::open(&other, &T, 0).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(db.health(PROBE).await, Err(Unready::Replaced(path)));
        assert!(insert(&db).await.unwrap_err().is_unavailable());
    }

    #[tokio::test]
    async fn a_query_only_connection_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::open(&path, &T, 0).unwrap();
        db.call(|c| c.pragma_update(None, "query_only", true)).await.unwrap();
        assert_eq!(db.health(PROBE).await, Err(Unready::ReadOnly(path)));
    }

    async fn rows(db: &Db) -> Vec<i64> {
        db.call(|c| c.prepare("SELECT x FROM t ORDER BY x")?.query_map([], |r| r.get(0))?.collect()).await.unwrap()
    }

    /// A transaction that writes `x` and then fails when `fail` says so.
    fn write_then<'a>(db: &'a Db, x: i64, fail: bool) -> impl std::future::Future<Output = Result<(), DbError>> + 'a {
        db.tx(move |c| {
            c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            if fail {
                c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            }
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_transaction_that_fails_alone_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &T, 0).unwrap();
        assert!(matches!(write_then(&db, 1, true).await, Err(DbError::Sql(_))));
        write_then(&db, 2, false).await.unwrap();
        assert_eq!(rows(&db).await, [2]);
    }

    #[tokio::test]
    async fn in_a_group_commit_a_failing_transaction_is_rolled_back_without_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &T, 0).unwrap();
        // The writer is held by a plain job until all three transactions are queued, so they
        // are taken as one group.
        let (started, writer_held) = oneshot::channel();
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let writer = db.clone();
        let blocker = tokio::spawn(async move {
            writer
                .call(move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        });
        writer_held.await.unwrap();
        let group = async {
            let (a, b, c) =
                tokio::join!(write_then(&db, 1, false), write_then(&db, 2, true), write_then(&db, 3, false));
            (a, b, c)
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            hold.send(()).unwrap();
        };
        let ((a, b, c), ()) = tokio::join!(group, release);
        blocker.await.unwrap().unwrap();
        a.unwrap();
        assert!(matches!(b, Err(DbError::Sql(_))), "{b:?}");
        c.unwrap();
        assert_eq!(rows(&db).await, [1, 3]);
    }

    #[test]
    fn a_file_sqlite_can_only_open_read_only_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Db::open(&path, &T, 0).unwrap());
        // Root ignores mode bits; the immutable flag stops root too, where the filesystem has it.
        let immutable = std::process::Command::new("chattr").arg("+i").arg(&path).status();
        if !matches!(immutable, Ok(s) if s.success()) {
            panic!("this test needs `chattr +i` (e2fsprogs) on a filesystem that supports it");
        }
        let opened = Db::open(&path, &T, 0);
        let _ = std::process::Command::new("chattr").arg("-i").arg(&path).status();
        let err = opened.err().expect("an immutable database must not open");
        assert!(matches!(err, DbError::NotWritable { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!("cannot open database `{}` for writing", path.display())),
            "{err}"
        );
    }
}
