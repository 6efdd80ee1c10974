//! Renders the measures the benches reported (`HANGAR_BENCH_REPORT`) as one Markdown
//! table with the machine and the date: `bench-table REPORT DATE`. `scripts/bench` runs it.

use hangar_testkit::bench::{read_report, render, Machine};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(date)) = (args.next(), args.next()) else {
        eprintln!("usage: bench-table REPORT DATE");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("bench-table: failed to read {path}: {e}");
        std::process::exit(1)
    });
    let measures = read_report(&text).unwrap_or_else(|e| {
        eprintln!("bench-table: failed to read {path}: {e}");
        std::process::exit(1)
    });
    print!("{}", render(&measures, &Machine::detect(), &date));
}
