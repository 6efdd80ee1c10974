//! The per-attempt logs of a task: its output lines (`logs`), its agent's events
//! (`agent_events`) and its proxy's decisions (`network_log`), each numbered by `seq`
//! within its attempt and stored redacted.

use hangar_spec::{Phase, TaskId};

use super::{corrupt, int, query, BackendRow, Db, DbResult};

/// Which stream a log line came from; `hangar` lines are hangar's own notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Hangar,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Hangar => "hangar",
        }
    }

    fn parse(s: &str) -> Option<Stream> {
        [Stream::Stdout, Stream::Stderr, Stream::Hangar]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    pub phase: Phase,
    pub stream: Stream,
    pub line: String,
}

/// One event of an agent's run, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    /// message, command, file, error or final.
    pub kind: String,
    pub text: String,
    pub exit_code: Option<i32>,
    pub detail: Option<String>,
}

/// One decision of an attempt's egress proxy, as stored (redacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEntry {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    pub phase: String,
    pub method: Option<String>,
    /// A request's path (without its query); absent for a connection.
    pub path: Option<String>,
    pub host: String,
    pub port: u16,
    /// `allowed`, `failed`, or the reason it was blocked.
    pub decision: String,
    pub rule: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub note: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LogColumns {
    attempt: i64,
    seq: i64,
    ts_ms: i64,
    phase: String,
    stream: String,
    line: String,
}

impl TryFrom<LogColumns> for LogLine {
    type Error = super::DbError;

    fn try_from(r: LogColumns) -> DbResult<LogLine> {
        Ok(LogLine {
            attempt: int("log attempt", r.attempt)?,
            seq: r.seq,
            ts_ms: r.ts_ms,
            phase: r.phase.parse().map_err(corrupt("log phase"))?,
            stream: Stream::parse(&r.stream)
                .ok_or_else(|| corrupt("log stream")("unknown stream".into()))?,
            line: r.line,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventColumns {
    attempt: i64,
    seq: i64,
    ts_ms: i64,
    kind: String,
    text: String,
    exit_code: Option<i32>,
    detail: Option<String>,
}

impl TryFrom<EventColumns> for EventRow {
    type Error = super::DbError;

    fn try_from(r: EventColumns) -> DbResult<EventRow> {
        Ok(EventRow {
            attempt: int("event attempt", r.attempt)?,
            seq: r.seq,
            ts_ms: r.ts_ms,
            kind: r.kind,
            text: r.text,
            exit_code: r.exit_code,
            detail: r.detail,
        })
    }
}

#[derive(sqlx::FromRow)]
struct NetworkColumns {
    attempt: i64,
    seq: i64,
    ts_ms: i64,
    phase: String,
    method: Option<String>,
    path: Option<String>,
    host: String,
    port: i64,
    decision: String,
    rule: Option<String>,
    bytes_up: i64,
    bytes_down: i64,
    note: Option<String>,
}

impl TryFrom<NetworkColumns> for NetworkEntry {
    type Error = super::DbError;

    fn try_from(r: NetworkColumns) -> DbResult<NetworkEntry> {
        Ok(NetworkEntry {
            attempt: int("network log attempt", r.attempt)?,
            seq: r.seq,
            ts_ms: r.ts_ms,
            phase: r.phase,
            method: r.method,
            path: r.path,
            host: r.host,
            port: int("network log port", r.port)?,
            decision: r.decision,
            rule: r.rule,
            // Stored as the bits of a u64 (no backend has an unsigned 64-bit column).
            bytes_up: r.bytes_up as u64,
            bytes_down: r.bytes_down as u64,
            note: r.note,
        })
    }
}

impl Db {
    /// Appends log lines; `seq` numbers them within the attempt.
    pub async fn append_logs(&self, task: &TaskId, lines: &[LogLine]) -> DbResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for l in lines {
            sqlx::query(
                "INSERT INTO logs (task_id, attempt, seq, ts_ms, phase, stream, line)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(task.as_str())
            .bind(i64::from(l.attempt))
            .bind(l.seq)
            .bind(l.ts_ms)
            .bind(l.phase.as_str())
            .bind(l.stream.as_str())
            .bind(&l.line)
            .execute(&mut *tx)
            .await
            .map_err(query("store log lines"))?;
        }
        tx.commit().await.map_err(query("commit log lines"))
    }

    pub async fn append_network(&self, task: &TaskId, entries: &[NetworkEntry]) -> DbResult<()> {
        let mut tx = self.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO network_log (task_id, attempt, seq, ts_ms, phase, method, path, host,
                 port, decision, rule, bytes_up, bytes_down, note)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(task.as_str())
            .bind(i64::from(e.attempt))
            .bind(e.seq)
            .bind(e.ts_ms)
            .bind(&e.phase)
            .bind(&e.method)
            .bind(&e.path)
            .bind(&e.host)
            .bind(i64::from(e.port))
            .bind(&e.decision)
            .bind(&e.rule)
            .bind(e.bytes_up as i64)
            .bind(e.bytes_down as i64)
            .bind(&e.note)
            .execute(&mut *tx)
            .await
            .map_err(query("store network log entries"))?;
        }
        tx.commit()
            .await
            .map_err(query("commit network log entries"))
    }

    pub async fn append_events(&self, task: &TaskId, events: &[EventRow]) -> DbResult<()> {
        let mut tx = self.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO agent_events (task_id, attempt, seq, ts_ms, kind, text, exit_code, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(task.as_str())
            .bind(i64::from(e.attempt))
            .bind(e.seq)
            .bind(e.ts_ms)
            .bind(&e.kind)
            .bind(&e.text)
            .bind(e.exit_code)
            .bind(&e.detail)
            .execute(&mut *tx)
            .await
            .map_err(query("store the agent's events"))?;
        }
        tx.commit()
            .await
            .map_err(query("commit the agent's events"))
    }

    /// A task's rows of a per-attempt table (one attempt, or all), sorted by `order`'s
    /// columns.
    async fn per_attempt<R>(
        &self,
        table: &'static str,
        order: &'static str,
        task: &TaskId,
        attempt: Option<u32>,
        what: &'static str,
    ) -> DbResult<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, BackendRow> + Send + Unpin,
    {
        sqlx::query_as(&format!(
            "SELECT * FROM {table} WHERE task_id = $1 AND ($2 IS NULL OR attempt = $2)
             ORDER BY {order}"
        ))
        .bind(task.as_str())
        .bind(attempt.map(i64::from))
        .fetch_all(&self.pool)
        .await
        .map_err(query(what))
    }

    /// The agent's events for a task (one attempt, or all), in order.
    pub async fn events(&self, task: &TaskId, attempt: Option<u32>) -> DbResult<Vec<EventRow>> {
        self.per_attempt::<EventColumns>(
            "agent_events",
            "attempt, seq",
            task,
            attempt,
            "read the agent's events",
        )
        .await?
        .into_iter()
        .map(EventRow::try_from)
        .collect()
    }

    /// The proxy's decisions for a task (one attempt, or all), in time order: a
    /// connection's entry is written when it closes, after the requests made inside it.
    pub async fn network_log(
        &self,
        task: &TaskId,
        attempt: Option<u32>,
    ) -> DbResult<Vec<NetworkEntry>> {
        self.per_attempt::<NetworkColumns>(
            "network_log",
            "ts_ms, attempt, seq",
            task,
            attempt,
            "read the network log",
        )
        .await?
        .into_iter()
        .map(NetworkEntry::try_from)
        .collect()
    }

    pub async fn logs(&self, task: &TaskId, attempt: Option<u32>) -> DbResult<Vec<LogLine>> {
        self.per_attempt::<LogColumns>("logs", "attempt, seq", task, attempt, "read logs")
            .await?
            .into_iter()
            .map(LogLine::try_from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use hangar_spec::Phase;

    use crate::db::testing::{db, new_task};
    use crate::db::{EventRow, LogLine, NetworkEntry, Stream};

    #[tokio::test]
    async fn logs_are_read_per_attempt_in_order() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        let line = |seq, text: &str| LogLine {
            attempt: 1,
            seq,
            ts_ms: 10,
            phase: Phase::Setup,
            stream: Stream::Stdout,
            line: text.into(),
        };
        db.append_logs(&t.id, &[line(0, "a"), line(1, "b")])
            .await
            .unwrap();
        let logs = db.logs(&t.id, Some(1)).await.unwrap();
        assert_eq!(logs, vec![line(0, "a"), line(1, "b")]);
        assert!(db.logs(&t.id, Some(2)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn events_are_read_per_attempt_in_order() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        let event = |attempt, seq, kind: &str, exit_code| EventRow {
            attempt,
            seq,
            ts_ms: 100 - seq,
            kind: kind.into(),
            text: format!("{kind} {seq}"),
            exit_code,
            detail: exit_code.map(|_| "cargo test".to_string()),
        };
        let written = [
            event(2, 1, "message", None),
            event(1, 2, "command", Some(101)),
            event(1, 1, "message", None),
        ];
        db.append_events(&t.id, &written).await.unwrap();
        assert_eq!(
            db.events(&t.id, None).await.unwrap(),
            [written[2].clone(), written[1].clone(), written[0].clone()]
        );
        assert_eq!(
            db.events(&t.id, Some(2)).await.unwrap(),
            [written[0].clone()]
        );
    }

    /// Regression: entries came back in the order they were written, and a connection's
    /// entry is written when it closes, after the requests inside it.
    #[tokio::test]
    async fn the_network_log_is_in_time_order() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        let entry = |attempt: u32, seq: i64, ts_ms: i64, path: Option<&str>| NetworkEntry {
            attempt,
            seq,
            ts_ms,
            phase: "agent".into(),
            method: path.map(|_| "GET".into()),
            path: path.map(str::to_string),
            host: "api.test".into(),
            port: 443,
            decision: "allowed".into(),
            rule: None,
            bytes_up: 0,
            bytes_down: 0,
            note: None,
        };
        // As the proxy sends them: two requests inside a connection, then the connection.
        let written = [
            entry(1, 1, 20, Some("/a")),
            entry(1, 2, 30, Some("/b")),
            entry(1, 3, 10, None),
            entry(2, 1, 20, None),
            entry(1, 4, 20, Some("/c")),
        ];
        db.append_network(&t.id, &written).await.unwrap();
        let check = |got: Vec<NetworkEntry>, expected: &[(u32, i64)]| {
            let got: Vec<(u32, i64)> = got.iter().map(|e| (e.attempt, e.seq)).collect();
            assert_eq!(got, expected);
        };
        check(
            db.network_log(&t.id, None).await.unwrap(),
            &[(1, 3), (1, 1), (1, 4), (2, 1), (1, 2)],
        );
        check(
            db.network_log(&t.id, Some(1)).await.unwrap(),
            &[(1, 3), (1, 1), (1, 4), (1, 2)],
        );
        let paths: Vec<Option<String>> = db
            .network_log(&t.id, Some(1))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                None,
                Some("/a".into()),
                Some("/c".into()),
                Some("/b".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_network_entry_round_trips() {
        let (_d, db) = db().await;
        let t = db.create_task(&new_task("web")).await.unwrap();
        let entry = NetworkEntry {
            attempt: 2,
            seq: 7,
            ts_ms: 1234,
            phase: "setup".into(),
            method: Some("POST".into()),
            path: Some("/v1/things".into()),
            host: "api.test".into(),
            port: 8443,
            decision: "not in the allow list".into(),
            rule: Some("*.test".into()),
            bytes_up: u64::MAX,
            bytes_down: 5 << 40,
            note: Some("intercepted".into()),
        };
        db.append_network(&t.id, std::slice::from_ref(&entry))
            .await
            .unwrap();
        assert_eq!(db.network_log(&t.id, Some(2)).await.unwrap(), [entry]);
    }
}
