//! Sandbox lifecycle benchmark: hangar's create + exec `/bin/true` + destroy, side by side
//! with the raw runtime running the same bundle (`crun run`, `runc run`) with `/bin/true`
//! as its process, in one run. Run with `cargo bench -p hangar-sandbox` (root).
//!
//! The same lifecycle with the limits every attempt's sandbox gets (memory, pids, cpus
//! and the disk watchdog) is measured beside it, so what the limits cost shows.
//!
//! The baseline gets every advantage: its overlay root and network namespace are made
//! once, outside the timing; hangar makes both per iteration, as it does for real.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_sandbox::cgroup::CgroupLayout;
use hangar_sandbox::overlay::{mount_overlay, unmount, OverlayDirs};
use hangar_sandbox::runtime::{runtime, runtime_command};
use hangar_sandbox::spec::{build, BundleSpec, Resources};
use hangar_sandbox::{netns, ExecSpec, OciRuntime, RuntimeKind, Sandbox, SandboxSpec};
use hangar_testkit::bench::{report, summarize, Measure, Row, Stat, Target, Unit};

const ITERATIONS: usize = 100;
const WARMUP: usize = 5;

/// An attempt's limits, as the engine's machine defaults give them.
const LIMITS: Resources = Resources {
    memory_bytes: Some(2 << 30),
    pids: Some(4096),
    cpus: Some(2.0),
    disk_bytes: Some(8 << 30),
};

fn main() {
    let (store, lowers) = hangar_testkit::debian_layers();
    let host = hangar_testkit::host(&store);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let mut measures = Vec::new();
    for kind in RuntimeKind::ALL {
        let mut raw = RawBaseline::new(&store, &host, &lowers, kind);
        let (mut raw_samples, mut ours, mut ready) = (Vec::new(), Vec::new(), Vec::new());
        let mut limited = Vec::new();
        // Raw and hangar iterations alternate, so both run under the same background load
        // (such as the kernel freeing earlier sandboxes' network namespaces).
        for i in 0..(WARMUP + ITERATIONS) {
            let raw_time = raw.run_once(i);
            let (host, lowers) = (&host, &lowers);
            let lifecycle = |resources: Resources| async move {
                let mut spec = SandboxSpec::new(lowers.clone());
                spec.runtime = kind;
                spec.resources = resources;
                let t0 = Instant::now();
                let sb = Sandbox::create(host, spec).await.expect("create");
                let t_ready = t0.elapsed();
                let out = sb.output(ExecSpec::new(["/bin/true"])).await.expect("exec");
                assert!(out.status.success());
                sb.destroy().await.expect("destroy");
                (t0.elapsed(), t_ready)
            };
            let (total, to_ready) = rt.block_on(lifecycle(Resources::default()));
            let (with_limits, _) = rt.block_on(lifecycle(LIMITS));
            if i >= WARMUP {
                raw_samples.push(raw_time);
                ours.push(total);
                ready.push(to_ready);
                limited.push(with_limits);
            }
        }
        raw.finish();
        let measure = Measure {
            measure: format!("sandbox create + exec /bin/true + destroy ({kind})"),
            baseline: Some(format!("raw {kind} run of the same bundle")),
            unit: Unit::Ms,
            ours: Stat::of_durations(&ours),
            base: Some(Stat::of_durations(&raw_samples)),
            target: Target::RatioAtMost {
                p50: 1.1,
                p95: Some(1.1),
            },
            note: None,
        };
        measures.push(measure);
        let raw = summarize(
            &format!("raw {kind} run (same bundle, process /bin/true)"),
            raw_samples,
        );
        let ours = summarize(
            &format!("hangar {kind}: create + exec /bin/true + destroy"),
            ours,
        );
        let ratio50 = ours.p50.as_secs_f64() / raw.p50.as_secs_f64();
        let ratio95 = ours.p95.as_secs_f64() / raw.p95.as_secs_f64();
        rows.push(raw);
        rows.push(ours);
        rows.push(summarize(
            &format!("hangar {kind}: sandbox ready (create only)"),
            ready,
        ));
        rows.push(summarize(
            &format!("hangar {kind}: the same with limits and disk watchdog"),
            limited,
        ));
        rows.push(Row {
            name: format!("ratio hangar/raw {kind} (p50 {ratio50:.2}x, p95 {ratio95:.2}x)"),
            p50: Duration::ZERO,
            p95: Duration::ZERO,
        });
    }
    println!("\nsandbox lifecycle, {ITERATIONS} iterations each (after {WARMUP} warm-up)");
    println!("{:<62} {:>9} {:>9}", "", "p50 ms", "p95 ms");
    for r in rows {
        if r.p50.is_zero() {
            println!("{}", r.name);
        } else {
            println!(
                "{:<62} {:>9.2} {:>9.2}",
                r.name,
                r.p50.as_secs_f64() * 1e3,
                r.p95.as_secs_f64() * 1e3
            );
        }
    }
    println!();
    for m in &measures {
        report(m);
    }
}

/// `<runtime> run` of a bundle whose process is `/bin/true`, on a root and network
/// namespace made once. The runtime runs in a private mount namespace without the hybrid
/// cgroup2 mount, through hangar's own `runtime_command`.
struct RawBaseline {
    _base: tempfile::TempDir,
    rootfs: std::path::PathBuf,
    ns: netns::NetNs,
    ns_name: String,
    bundle: std::path::PathBuf,
    runtime: Arc<dyn OciRuntime>,
    cgroups: CgroupLayout,
}

impl RawBaseline {
    fn new(
        store: &hangar_store::Store,
        host: &hangar_sandbox::HostConfig,
        lowers: &[std::path::PathBuf],
        kind: RuntimeKind,
    ) -> RawBaseline {
        let base = tempfile::tempdir_in(store.path(hangar_store::Bucket::Run)).unwrap();
        let dirs = OverlayDirs {
            lowers: lowers.to_vec(),
            upper: base.path().join("upper"),
            work: base.path().join("work"),
            target: base.path().join("rootfs"),
        };
        for d in [&dirs.upper, &dirs.work, &dirs.target] {
            std::fs::create_dir(d).unwrap();
        }
        mount_overlay("bench", base.path(), &dirs).unwrap();
        let ns_name = format!("hangar-bench-{kind}-{}", std::process::id());
        let ns = netns::NetNs::create(&ns_name).unwrap();
        let bundle = base.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        let cgroup = host.cgroups.sandbox_path(&ns_name);
        let mut spec = build(&BundleSpec {
            rootfs: &dirs.target,
            hostname: "bench",
            netns: ns.path(),
            cgroups_path: &cgroup,
            resources: &Resources::default(),
            init_binary: &host.init_binary,
            mounts: &[],
        })
        .unwrap();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec!["/bin/true".into()]));
        spec.set_process(Some(process));
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        // The runtime is found and invoked exactly as hangar does it (state in its own
        // root), including the private mount namespace on hybrid cgroup machines.
        let runtime = runtime(kind, Path::new("/run/hangar-bench")).unwrap();
        std::fs::create_dir_all(runtime.state_root()).unwrap();
        RawBaseline {
            rootfs: dirs.target,
            _base: base,
            ns,
            ns_name,
            bundle,
            runtime,
            cgroups: host.cgroups.clone(),
        }
    }

    fn run_once(&mut self, i: usize) -> Duration {
        let id = format!("{}-{i}", self.ns_name);
        let args = self.runtime.run_args(&self.bundle, &id, 0);
        let mut cmd = runtime_command(&*self.runtime, &self.cgroups, &args, None);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t0 = Instant::now();
        let status = cmd.status().unwrap();
        let elapsed = t0.elapsed();
        assert!(status.success(), "raw {} run failed", self.runtime.kind());
        elapsed
    }

    fn finish(self) {
        self.ns.remove().unwrap();
        unmount(&self.rootfs).unwrap();
    }
}
