//! The words of a task's life: statuses and phases, with their stored spellings.

spelled_enum! {
    /// A task's status, derived from its attempts.
    TaskStatus {
        Pending = "pending",
        Running = "running",
        Ready = "ready",
        Error = "error",
        Cancelled = "cancelled",
    }
}

spelled_enum! {
    /// One attempt's status.
    AttemptStatus {
        Pending = "pending",
        Running = "running",
        Ready = "ready",
        Error = "error",
        Cancelled = "cancelled",
    }
}

spelled_enum! {
    /// A step of an attempt. Logs and timings are kept per phase; network policy and
    /// secrets are decided per phase (setup, maintenance, agent).
    Phase {
        Prepare = "prepare",
        Install = "install",
        Checkout = "checkout",
        Setup = "setup",
        Maintenance = "maintenance",
        Agent = "agent",
        Collect = "collect",
    }
}

impl TaskStatus {
    /// A task's status from its attempts': running while any runs, ready when any
    /// succeeded, cancelled when all were cancelled, else error.
    pub fn from_attempts(attempts: &[AttemptStatus]) -> TaskStatus {
        use AttemptStatus as A;
        if attempts.is_empty() || attempts.iter().all(|a| *a == A::Pending) {
            TaskStatus::Pending
        } else if attempts
            .iter()
            .any(|a| matches!(a, A::Running | A::Pending))
        {
            TaskStatus::Running
        } else if attempts.contains(&A::Ready) {
            TaskStatus::Ready
        } else if attempts.iter().all(|a| *a == A::Cancelled) {
            TaskStatus::Cancelled
        } else {
            TaskStatus::Error
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskStatus::Ready | TaskStatus::Error | TaskStatus::Cancelled
        )
    }
}

/// The directory name of a repository: the last path component of its URL or path,
/// without `.git`. The workspace lives at `/workspace/<this>`.
pub fn repo_name(repo: &str) -> String {
    let trimmed = repo.trim_end_matches('/');
    let last = trimmed
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(trimmed)
        .trim_end_matches(".git");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "repo".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptStatus as A;

    fn check(attempts: &[AttemptStatus], expected: TaskStatus) {
        assert_eq!(
            TaskStatus::from_attempts(attempts),
            expected,
            "{attempts:?}"
        );
    }

    #[test]
    fn task_status_from_attempts() {
        check(&[], TaskStatus::Pending);
        check(&[A::Pending, A::Pending], TaskStatus::Pending);
        check(&[A::Ready, A::Pending], TaskStatus::Running);
        check(&[A::Running], TaskStatus::Running);
        check(&[A::Error, A::Ready], TaskStatus::Ready);
        check(&[A::Cancelled, A::Cancelled], TaskStatus::Cancelled);
        check(&[A::Cancelled, A::Error], TaskStatus::Error);
    }

    #[test]
    fn repo_names() {
        for (input, want) in [
            ("https://git.example.com/acme/payments.git", "payments"),
            ("git@github.com:acme/web.git", "web"),
            ("/srv/repos/tools/", "tools"),
            ("..", "repo"),
            ("/x/we ird", "we_ird"),
        ] {
            assert_eq!(repo_name(input), want, "{input}");
        }
        assert_eq!("ready".parse::<TaskStatus>().unwrap(), TaskStatus::Ready);
        assert!("done".parse::<Phase>().unwrap_err().contains("setup"));
    }
}
