//! SQLite plumbing: one database file per service, in WAL mode, with migrations versioned in code.
//!
//! rusqlite is blocking, so a service never touches its connection from an async worker: each
//! database has one writer thread that owns the write connection, and a few reader threads with
//! read-only connections (WAL lets them read beside the writer). Transactions queued at the same
//! time are committed together (group commit): each runs inside its own savepoint, so one that
//! fails is rolled back alone, and every caller hears back only after the shared commit, so
//! "persisted" still means on disk before the caller acts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// Most transactions one commit carries.
const GROUP: usize = 64;
/// Reader threads per database.
const READERS: usize = 2;

impl DbError {
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
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

/// What runs inside a group transaction: the caller's work, returning what to send once the
/// group's commit is known.
/// The bool says whether the work succeeded (and stands) or failed (and is rolled back).
type TxJob = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
/// Tells the caller the outcome once the group's commit is known.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Work that runs alone on a connection (reads, single statements).
type PlainJob = Box<dyn FnOnce(&mut Connection) + Send>;

enum Job {
    Tx(TxJob),
    Plain(PlainJob),
}

/// A service's database: cheap to clone, safe to share between handlers.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Job>,
    readers: Arc<Vec<mpsc::Sender<PlainJob>>>,
    next_reader: Arc<AtomicUsize>,
    path: Arc<PathBuf>,
}

impl Db {
    /// Opens (creating if needed) the file and brings its schema up to `migrations.len()`.
    ///
    /// `migrations[i]` takes the schema from version `i` to `i + 1`; the version lives in
    /// `PRAGMA user_version`, so a restart applies only what is new.
    pub fn open(path: &Path, migrations: &[&str]) -> Result<Db, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        // Replicas sharing a new file race to set it up; SQLite answers "busy" to some of those
        // races without waiting (changing the journal mode), so the loser tries again.
        let mut attempt = 0;
        let conn = loop {
            match open_writer(path, migrations) {
                Err(e) if e.is_busy() && attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let (writer, jobs) = mpsc::channel();
        let name = format!("db-writer {}", path.display());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || write_loop(conn, jobs))
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
                        job(&mut conn);
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
            let result = f(conn).map_err(DbError::from);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed: Result<(), String>| {
                let _ = tx.send(match (committed, result) {
                    // A failed job was rolled back: its own error is the answer.
                    (_, Err(e)) => Err(e),
                    (Ok(()), ok) => ok,
                    (Err(e), _) => Err(DbError::Task(format!("commit failed: {e}"))),
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
        let _ = tx.send(f(conn).map_err(DbError::from));
    });
    (job, rx)
}

fn open_writer(path: &Path, migrations: &[&str]) -> Result<Connection, DbError> {
    let open_err = |cause| DbError::Open { path: path.to_path_buf(), cause };
    let mut conn = Connection::open(path).map_err(open_err)?;
    // First, so that switching to WAL waits for a replica doing the same instead of failing.
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
    // WAL lets readers (shop inspect) run beside the writer; NORMAL is durable across
    // process crashes, which is the failure this lab injects.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

/// The writer thread: runs plain jobs one by one, and every transaction queued meanwhile in one
/// `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint.
fn write_loop(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut group = Vec::new();
        for job in batch {
            match job {
                Job::Plain(f) => f(&mut conn),
                Job::Tx(f) => group.push(f),
            }
        }
        if group.is_empty() {
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        let began = conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string());
        if let Err(e) = began {
            // Nothing may run outside a transaction: each caller learns it could not start.
            drop(group);
            tracing::error!(error = %e, "cannot begin a transaction");
            continue;
        }
        for f in group {
            // A savepoint per caller: a failing one is rolled back without touching the others.
            if conn.execute_batch("SAVEPOINT job").is_err() {
                continue; // the job is dropped unrun; its caller gets "dropped a call"
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&conn))) {
                Ok((true, reply)) => {
                    let _ = conn.execute_batch("RELEASE job");
                    replies.push(reply);
                }
                Ok((false, reply)) => {
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    replies.push(reply);
                }
                Err(_) => {
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    tracing::error!("a database job panicked; its work was rolled back");
                }
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), DbError> {
    // The version is read inside the write transaction: replicas sharing one file start at the
    // same moment, and only one of them may apply a migration.
    let open_err = |cause| DbError::Open { path: path.to_path_buf(), cause };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(open_err)?;
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
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
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

    #[tokio::test]
    async fn migrations_apply_once_and_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let v1 = ["CREATE TABLE a (x INTEGER);"];
        Db::open(&path, &v1).unwrap();
        // Reopening with one more migration applies only the new one (the first would fail twice).
        let v2 = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];
        let db = Db::open(&path, &v2).unwrap();
        let n: i64 = db
            .call(|c| c.query_row("SELECT count(*) FROM sqlite_master WHERE type='table'", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(n, 2);
        let mode: String = db.call(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).await.unwrap();
        assert_eq!(mode, "wal");
        assert!(matches!(Db::open(&path, &v1), Err(DbError::TooNew { found: 2, known: 1, .. })));
    }
}
