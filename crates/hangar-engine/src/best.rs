//! Best-of-N: the order of a task's attempts. A ready attempt comes before any other; among
//! ready ones, a passing `[agent] check` before a failing one (or none), then the smaller
//! diff (lines added and removed), then the lower index.

use hangar_spec::AttemptStatus;
use hangar_store::db::AttemptRecord;

/// The attempts' indexes, best first.
pub fn rank(attempts: &[AttemptRecord]) -> Vec<u32> {
    let mut order: Vec<&AttemptRecord> = attempts.iter().collect();
    order.sort_by_key(|a| {
        let ready = a.status == AttemptStatus::Ready;
        let passed = a.check.is_some_and(|c| c.passed);
        let size = a
            .summary
            .map(|s| s.lines_added + s.lines_removed)
            .unwrap_or(u32::MAX);
        (!ready, !passed, size, a.index)
    });
    order.into_iter().map(|a| a.index).collect()
}

/// The attempt a task stands for when none is named: the best ready one, else the first.
pub fn default_attempt(attempts: &[AttemptRecord]) -> Option<u32> {
    best(attempts).or(attempts.first().map(|a| a.index))
}

/// The best ready attempt, if any attempt is ready.
pub fn best(attempts: &[AttemptRecord]) -> Option<u32> {
    let first = *rank(attempts).first()?;
    attempts
        .iter()
        .any(|a| a.index == first && a.status == AttemptStatus::Ready)
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_store::db::{CheckResult, DiffSummary};

    /// `spec`: one attempt per word, `status/check/lines` (check: + passed, - failed,
    /// . none; lines: changed lines, or `.` for no diff).
    fn check(spec: &str, expected: &[u32], best_one: Option<u32>) {
        let attempts: Vec<AttemptRecord> = spec
            .split_whitespace()
            .zip(1..)
            .map(|(w, index)| {
                let parts: Vec<&str> = w.split('/').collect();
                AttemptRecord {
                    index,
                    status: parts[0].parse().unwrap(),
                    sandbox: None,
                    cache: None,
                    base_commit: None,
                    result_tree: None,
                    final_message: None,
                    exit_code: None,
                    error: None,
                    phases: Vec::new(),
                    summary: parts[2].parse().ok().map(|n| DiffSummary {
                        files_changed: 1,
                        lines_added: n,
                        lines_removed: 0,
                    }),
                    check: match parts[1] {
                        "+" => Some(CheckResult {
                            passed: true,
                            exit_code: Some(0),
                        }),
                        "-" => Some(CheckResult {
                            passed: false,
                            exit_code: Some(1),
                        }),
                        _ => None,
                    },
                    created_ms: 0,
                    started_ms: None,
                    finished_ms: None,
                }
            })
            .collect();
        assert_eq!(rank(&attempts), expected, "{spec}");
        assert_eq!(best(&attempts), best_one, "{spec}");
    }

    #[test]
    fn ready_then_passing_check_then_smaller_diff() {
        check("ready/-/3 ready/+/10 ready/+/2", &[3, 2, 1], Some(3));
        check("error/./. ready/./40 ready/./4", &[3, 2, 1], Some(3));
        check("ready/+/5 ready/+/5", &[1, 2], Some(1));
        // A failed attempt never wins, whatever its diff.
        check("error/+/1 ready/-/9", &[2, 1], Some(2));
        check("error/./1 cancelled/./.", &[1, 2], None);
        check("ready/./0 ready/+/50", &[2, 1], Some(2));
    }
}
