//! SQLite plumbing: one database file per service, in WAL mode, with migrations versioned in code.
//!
//! rusqlite is blocking, so every call runs on tokio's blocking pool via [`Db::call`]; an async
//! worker thread never waits on the disk. The connection sits behind a std `Mutex` (not an async
//! one) because it is only ever locked on a blocking thread and never held across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

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

/// A service's database: cheap to clone, safe to share between handlers.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
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
        loop {
            match Db::open_once(path, migrations) {
                Err(e) if e.is_busy() && attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, migrations: &[&str]) -> Result<Db, DbError> {
        let open_err = |cause| DbError::Open { path: path.to_path_buf(), cause };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // First, so that switching to WAL waits for a replica doing the same instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        // WAL lets readers (shop inspect) run beside the writer; NORMAL is durable across
        // process crashes, which is the failure this lab injects.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        migrate(&mut conn, path, migrations)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)), path: Arc::new(path.to_path_buf()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic mid-call; the connection itself is still usable
            // because SQLite rolls back the unfinished transaction.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(DbError::from)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction: all of it is committed or none.
    pub async fn tx<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
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
