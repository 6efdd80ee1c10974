//! Progress on the terminal: one status line (a bar, what is happening, the time so far)
//! redrawn in place under the output while stderr is a terminal; plain lines otherwise,
//! so logs and pipes read the same as before.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Columns of the bar itself.
const BAR: usize = 20;

/// The status line of one long command.
pub struct Status {
    tty: bool,
    started: Instant,
    step_started: Instant,
    text: String,
    fraction: Option<(u64, u64)>,
}

impl Status {
    pub fn new() -> Status {
        Status {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            step_started: Instant::now(),
            text: String::new(),
            fraction: None,
        }
    }

    /// A new step (a phase, a layer): its words and how far along the whole it is.
    pub fn step(&mut self, text: impl Into<String>, fraction: Option<(u64, u64)>) {
        self.text = text.into();
        self.fraction = fraction;
        self.step_started = Instant::now();
        self.draw();
    }

    /// Prints a line of output above the status line.
    pub fn line(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{line}");
        drop(err);
        self.draw();
    }

    /// Redraws the status line (call it now and then so the time moves).
    pub fn draw(&self) {
        if !self.tty || self.text.is_empty() {
            return;
        }
        let line = render(
            &self.text,
            self.fraction,
            self.step_started.elapsed(),
            self.started.elapsed(),
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// Takes the status line away.
    pub fn finish(&mut self) {
        if self.tty && !self.text.is_empty() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
        self.text.clear();
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `[#######.............] 2/6 setup 12.3s (total 14.0s)`.
pub fn render(text: &str, fraction: Option<(u64, u64)>, step: Duration, total: Duration) -> String {
    let bar = match fraction {
        Some((done, all)) if all > 0 => {
            let filled = (done.min(all) as usize * BAR) / all as usize;
            format!(
                "[{}{}] {done}/{all} ",
                "#".repeat(filled),
                ".".repeat(BAR - filled)
            )
        }
        _ => String::new(),
    };
    format!(
        "{bar}{text} {:.1}s (total {:.1}s)",
        step.as_secs_f64(),
        total.as_secs_f64()
    )
}

/// The first `N/M` in a progress line (`pulling layer 2/5 3f2a...`), as a fraction.
pub fn fraction(line: &str) -> Option<(u64, u64)> {
    line.split_whitespace().find_map(|word| {
        let (done, all) = word.split_once('/')?;
        let done = done.parse().ok()?;
        let all: u64 = all.parse().ok()?;
        (all > 0 && done <= all).then_some((done, all))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: (&str, Option<(u64, u64)>, u64, u64), expected: &str) {
        let (text, fraction, step, total) = input;
        let got = render(
            text,
            fraction,
            Duration::from_millis(step),
            Duration::from_millis(total),
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn status_lines() {
        check(
            ("setup", Some((1, 4)), 1234, 5600),
            "[#####...............] 1/4 setup 1.2s (total 5.6s)",
        );
        check(
            ("queued, position 3", None, 0, 900),
            "queued, position 3 0.0s (total 0.9s)",
        );
        check(
            ("collect", Some((4, 4)), 50, 10_000),
            "[####################] 4/4 collect 0.1s (total 10.0s)",
        );
        check(
            ("x", Some((9, 4)), 0, 0),
            "[####################] 9/4 x 0.0s (total 0.0s)",
        );
    }

    #[test]
    fn fractions_in_progress_lines() {
        assert_eq!(fraction("pulling layer 2/5 3f2a"), Some((2, 5)));
        assert_eq!(fraction("layer 1/1 blobs/sha256/ab"), Some((1, 1)));
        assert_eq!(fraction("unpacking /usr/lib/x"), None);
        assert_eq!(fraction("6/0 nothing"), None);
        assert_eq!(fraction("7/3 more done than all"), None);
    }
}
