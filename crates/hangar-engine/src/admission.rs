//! Whether one more attempt may start now: the machine's memory, reserved per attempt,
//! and its measured load.
//!
//! Most agents spend their time waiting on a model, so a count of two attempts per core
//! would keep a burst of them queued while the machine idles. An attempt instead reserves
//! memory (its environment's `[resources] memory`, else what its agent holds waiting:
//! [`DEFAULT_RESERVATION`], [`SCRIPT_RESERVATION`] for a plain script) from a budget of
//! three quarters of the machine's. Up to the CPU slots (two per core) that is
//! all; past them an attempt also needs the machine to say it has room: memory available
//! beyond the reservation and a headroom, and no sustained CPU or memory pressure (the
//! kernel's PSI, a ten-second average, so a burst's own start does not stop it), so
//! CPU-bound attempts still run about two per core.

use std::time::{Duration, Instant};

use hangar_spec::{Environment, Harness};

use crate::limits::Machine;

/// What an attempt reserves when its environment sets no memory limit: about what an
/// agent CLI waiting on its model holds, with its sandbox and proxy.
pub const DEFAULT_RESERVATION: u64 = 256 << 20;

/// What an attempt whose agent is a plain script reserves when its environment sets no
/// memory limit: the sandbox, init and proxy, and a shell.
pub const SCRIPT_RESERVATION: u64 = 64 << 20;

/// What an attempt of `env` reserves.
pub(crate) fn reservation(env: &Environment) -> u64 {
    env.resources.memory.unwrap_or(match env.agent.harness {
        Harness::Script => SCRIPT_RESERVATION,
        _ => DEFAULT_RESERVATION,
    })
}

/// CPU pressure (percent of the last ten seconds some task waited for a core) past
/// which no attempt starts beyond the CPU slots.
const CPU_PRESSURE_MAX: f64 = 50.0;
/// Memory pressure (percent of the last ten seconds some task stalled on memory) past
/// which no attempt starts beyond the CPU slots.
const MEMORY_PRESSURE_MAX: f64 = 10.0;
/// How old a reading of the machine's load may be.
const LOAD_TTL: Duration = Duration::from_millis(100);

/// What the engine may run at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    /// Attempts at once, at most (`--max-running`).
    pub max_running: usize,
    /// Memory the running attempts' reservations may add up to.
    pub memory: u64,
    /// Attempts that start on the budget alone; past them the load decides.
    pub cpu_slots: usize,
    /// Memory the machine keeps available beyond a new attempt's reservation.
    pub headroom: u64,
}

impl Budget {
    /// This machine's budget, with `max_running` as the cap.
    pub(crate) fn detect(max_running: usize) -> Budget {
        let machine = Machine::detect();
        Budget::for_machine(machine.memory, machine.cores, max_running)
    }

    pub(crate) fn for_machine(memory: u64, cores: usize, max_running: usize) -> Budget {
        Budget {
            max_running: max_running.max(1),
            memory: memory / 4 * 3,
            cpu_slots: cpu_slots(memory, cores).min(max_running.max(1)),
            headroom: (memory / 16).max(512 << 20),
        }
    }

    /// Whether an attempt reserving `reserve` may start beside `running` attempts that
    /// reserve `reserved` in all. The first always may, however big: it would
    /// otherwise never run.
    pub(crate) fn admits(
        &self,
        running: usize,
        reserved: u64,
        reserve: u64,
        load: impl FnOnce() -> Load,
    ) -> bool {
        if running >= self.max_running {
            return false;
        }
        if running == 0 {
            return true;
        }
        if reserved.saturating_add(reserve) > self.memory {
            return false;
        }
        running < self.cpu_slots || load().has_room(reserve, self.headroom)
    }
}

/// Two attempts per core, and no more than one per 2 GiB of memory (what an agent CLI
/// busy building uses, about): the attempts that start without asking the load, and what
/// the default sandbox limits are shared between.
pub(crate) fn cpu_slots(memory: u64, cores: usize) -> usize {
    (cores * 2).min((memory >> 31) as usize).max(1)
}

/// The default `max_running`: as many attempts as the smallest reservations fit the
/// budget, so the reservations, not this cap, decide.
pub fn default_max_running() -> usize {
    let m = Machine::detect();
    ((m.memory / 4 * 3) / SCRIPT_RESERVATION).max(1) as usize
}

/// The machine's load, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Load {
    /// `MemAvailable`, in bytes.
    pub mem_available: u64,
    /// PSI's `some avg10` for CPU and memory, in percent; `None` without PSI.
    pub cpu_pressure: Option<f64>,
    pub memory_pressure: Option<f64>,
    /// The one-minute load average over the cores: what is read without PSI.
    pub load_per_core: f64,
}

impl Load {
    /// Whether the machine has room for one more attempt reserving `reserve`.
    fn has_room(&self, reserve: u64, headroom: u64) -> bool {
        let memory = self.mem_available >= reserve.saturating_add(headroom)
            && self.memory_pressure.is_none_or(|p| p < MEMORY_PRESSURE_MAX);
        let cpu = match self.cpu_pressure {
            Some(p) => p < CPU_PRESSURE_MAX,
            // Without PSI, a load average of two runnable tasks per core is what the
            // CPU slots would have allowed.
            None => self.load_per_core < 2.0,
        };
        memory && cpu
    }

    /// Reads /proc; what cannot be read counts as no room (`mem_available` 0).
    fn read() -> Load {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Load {
            mem_available: meminfo_available(&read("/proc/meminfo")).unwrap_or(0),
            cpu_pressure: psi_some_avg10(&read("/proc/pressure/cpu")),
            memory_pressure: psi_some_avg10(&read("/proc/pressure/memory")),
            load_per_core: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse::<f64>().ok())
                .map_or(f64::MAX, |l| l / cores as f64),
        }
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib << 10)
}

/// The `some` line's `avg10` of a /proc/pressure file.
fn psi_some_avg10(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// The machine's load, read at most once per [`LOAD_TTL`].
#[derive(Default)]
pub(crate) struct LoadProbe {
    last: std::sync::Mutex<Option<(Instant, Load)>>,
}

impl LoadProbe {
    pub(crate) fn load(&self) -> Load {
        let mut last = self.last.lock().expect("not poisoned");
        match *last {
            Some((at, load)) if at.elapsed() < LOAD_TTL => load,
            _ => {
                let load = Load::read();
                *last = Some((Instant::now(), load));
                load
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn idle() -> Load {
        Load {
            mem_available: 20 * GIB,
            cpu_pressure: Some(2.0),
            memory_pressure: Some(0.0),
            load_per_core: 0.5,
        }
    }

    /// `(running, reserved, reserve, load)` -> admitted, on a 24 GiB, 2-core machine.
    fn check(cases: &[(usize, u64, u64, Load, bool)]) {
        let budget = Budget::for_machine(24 * GIB, 2, 500);
        assert_eq!(budget.cpu_slots, 4);
        assert_eq!(budget.memory, 18 * GIB);
        for (i, &(running, reserved, reserve, load, expected)) in cases.iter().enumerate() {
            let got = budget.admits(running, reserved, reserve, || load);
            assert_eq!(
                got, expected,
                "case {i}: {running} running, {reserved} reserved"
            );
        }
    }

    #[test]
    fn admission_by_reservation_and_load() {
        let r = DEFAULT_RESERVATION;
        let busy_cpu = Load {
            cpu_pressure: Some(80.0),
            ..idle()
        };
        let short_memory = Load {
            mem_available: GIB,
            ..idle()
        };
        let stalling = Load {
            memory_pressure: Some(30.0),
            ..idle()
        };
        let no_psi = Load {
            cpu_pressure: None,
            memory_pressure: None,
            load_per_core: 3.0,
            ..idle()
        };
        check(&[
            // The first runs whatever it reserves and whatever the load.
            (0, 0, 64 * GIB, busy_cpu, true),
            // Within the CPU slots, the budget alone decides.
            (3, 3 * r, r, busy_cpu, true),
            (3, 17 * GIB, 2 * GIB, idle(), false),
            // Past them, the load too: a burst of waiting agents runs side by side.
            (49, 49 * r, r, idle(), true),
            (49, 49 * r, r, busy_cpu, false),
            (49, 49 * r, r, short_memory, false),
            (49, 49 * r, r, stalling, false),
            (49, 49 * r, r, no_psi, false),
            (
                49,
                49 * r,
                r,
                Load {
                    load_per_core: 1.0,
                    ..no_psi
                },
                true,
            ),
            // The reservations never pass the budget.
            (71, 71 * r, r, idle(), true),
            (72, 72 * r, r, idle(), false),
            // An environment's own memory limit is its reservation.
            (4, 4 * 4 * GIB, 4 * GIB, idle(), false),
        ]);
        let capped = Budget::for_machine(24 * GIB, 2, 2);
        assert_eq!(capped.cpu_slots, 2);
        assert!(!capped.admits(2, 2 * r, r, idle), "--max-running caps it");
    }

    #[test]
    fn proc_files_are_read() {
        assert_eq!(
            meminfo_available("MemTotal: 100 kB\nMemAvailable:   2048 kB\n"),
            Some(2 << 20)
        );
        assert_eq!(meminfo_available("MemTotal: 100 kB\n"), None);
        assert_eq!(
            psi_some_avg10(
                "some avg10=1.60 avg60=3.86 avg300=4.27 total=30212322\n\
                 full avg10=9.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
            Some(1.6)
        );
        assert_eq!(psi_some_avg10(""), None);
        assert!(
            Load::read().mem_available > 0,
            "this machine has a /proc/meminfo"
        );
    }

    #[test]
    fn cpu_slots_are_two_per_core_and_one_per_2_gib() {
        assert_eq!(cpu_slots(24 * GIB, 2), 4);
        assert_eq!(cpu_slots(4 * GIB, 8), 2);
        assert_eq!(cpu_slots(GIB, 1), 1);
    }
}
