//! What the CLI's test and bench binaries share: the `hangar` command over a data dir, with the
//! test build of hangar-init; the daemon its commands start stops soon after the last.

// Each test binary compiles this module and uses a different part of it.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]

use std::path::Path;
use std::process::Command;

/// The daemon the commands start stops this long after the last of them (and its tasks).
pub const DAEMON_IDLE: &str = "5s";

/// `hangar` over the data dir `home`.
pub fn hangar(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
    cmd.env("HANGAR_HOME", home)
        .env("HANGAR_INIT", hangar_testkit::init_binary())
        .env("HANGAR_DAEMON_IDLE", DAEMON_IDLE);
    cmd
}

/// `hangar` over the shared test data dir, its Debian image built.
pub fn hangar_shared() -> Command {
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    hangar(store.root())
}
