//! The SQLite backend: the one module that holds SQLite-only settings and SQL. Many
//! processes (CLI commands, a daemon, tests) may open the same file, so it runs in WAL
//! mode with a busy timeout and they take turns; migrations are SQLite's own
//! (`migrations/`). A PostgreSQL backend would offer the same items: `Backend`, `Pool`,
//! `open` and the fragments below.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::{DbError, DbResult};

/// The sqlx database the table modules' queries run on.
pub(super) type Backend = sqlx::Sqlite;

pub(super) type Pool = sqlx::SqlitePool;

/// Opens (creating if needed) and migrates the database file at `path`.
pub(super) async fn open(path: &Path) -> DbResult<Pool> {
    // Creating the file, switching it to WAL and migrating it are not safe against
    // another process doing the same at the same moment (two CLI commands on a new
    // data dir): take turns.
    let lock_path = path.with_extension("migrate.lock");
    let db_path = path.to_path_buf();
    let lock = tokio::task::spawn_blocking(move || {
        let f = crate::private::create_file(&lock_path)?;
        f.lock()?;
        // The database holds every workspace's environments and logs: its owner's
        // alone, from its first byte, with the WAL and shared memory SQLite makes
        // beside it in the same mode; an older install's are tightened.
        crate::private::create_file(&db_path)?;
        for suffix in ["-wal", "-shm"] {
            let mut beside = db_path.clone().into_os_string();
            beside.push(suffix);
            crate::private::tighten(Path::new(&beside))?;
        }
        Ok::<_, std::io::Error>(f)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(|e| DbError::Open {
        path: path.to_path_buf(),
        source: sqlx::Error::Io(e),
    })?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    let pool = match SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
    {
        Ok(pool) => pool,
        Err(source) => {
            return Err(DbError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let migrated = sqlx::migrate!("./migrations").run(&pool).await;
    drop(lock);
    migrated.map_err(|source| DbError::Migrate {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(pool)
}

/// An SQL expression: the JSON list in the text column `list` with the JSON text
/// `value` (a placeholder) appended. (PostgreSQL would write
/// `(list::jsonb || jsonb_build_array(value::jsonb))::text`.)
pub(super) fn json_list_append(list: &str, value: &str) -> String {
    format!("json_insert({list}, '$[#]', json({value}))")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::db::Db;
    use hangar_spec::Workspace;

    /// In octal, as `ls` and chmod speak of it.
    fn mode(p: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        format!(
            "{:o}",
            std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
        )
    }

    /// Regression: hangar.db was 0644, so any local user read every workspace's
    /// environments and logs.
    #[tokio::test]
    async fn the_database_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangar.db");
        let db = Db::open(&path).await.unwrap();
        // A write, so the WAL and shared memory exist.
        db.create_env(&crate::db::testing::web_env()).await.unwrap();
        let wal = dir.path().join("hangar.db-wal");
        let shm = dir.path().join("hangar.db-shm");
        for p in [&path, &wal, &shm] {
            assert_eq!(mode(p), "600", "{}", p.display());
        }
        db.close().await;
        // An older install's open modes are closed when it opens.
        for p in [&path, &wal, &shm] {
            if p.exists() {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let db = Db::open(&path).await.unwrap();
        db.envs(Workspace::DEFAULT).await.unwrap();
        for p in [&path, &wal, &shm] {
            if p.exists() {
                assert_eq!(mode(p), "600", "{}", p.display());
            }
        }
        assert_eq!(mode(&path), "600");
    }

    #[tokio::test]
    async fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangar.db");
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { Db::open(&path).await.map(|_| ()) })
            })
            .collect();
        for o in opens {
            o.await.unwrap().expect("every concurrent open succeeds");
        }
    }
}
