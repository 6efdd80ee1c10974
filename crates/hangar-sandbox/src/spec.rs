//! The OCI runtime spec (`config.json`) of a sandbox bundle.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Arch;
use oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths, Capability,
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// Where hangar-init is bind-mounted inside every sandbox. It lives in the runtime's
/// `/dev` tmpfs so it never appears in the root filesystem's upper layer.
pub const INIT_PATH: &str = "/dev/hangar-init";

/// CPU, memory, process and disk limits of one sandbox. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub cpus: Option<f64>,
    /// What the upper dir may hold (see [`crate::disk`]); not part of the OCI spec.
    pub disk_bytes: Option<u64>,
}

/// A host path bind-mounted into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Everything the spec needs, gathered by the sandbox.
pub struct BundleSpec<'a> {
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub netns: &'a Path,
    pub cgroups_path: &'a str,
    pub resources: &'a Resources,
    pub init_binary: &'a Path,
    pub mounts: &'a [BindMount],
}

/// Docker's default capability set: enough for package managers (setuid for apt's
/// sandbox user, chown) and nothing that reaches the host (no SYS_ADMIN, NET_ADMIN, ...).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Syscalls refused with EPERM: kernel modules, time, reboot, keyrings, tracing other
/// processes' memory, mount/namespace manipulation that could widen the sandbox, and
/// io_uring (a second way into the kernel that this filter does not see, and a steady
/// source of kernel bugs; Docker's default profile refuses it too).
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    "adjtimex",
];

/// Namespace flags a sandboxed process may not pass to clone(2).
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

pub fn build(b: &BundleSpec<'_>) -> Result<Spec, oci_spec::OciSpecError> {
    let caps: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let process = ProcessBuilder::default()
        .args(vec![INIT_PATH.to_string()])
        // PID 1 holds no environment at all: every exec brings its own, complete one.
        .env(Vec::<String>::new())
        .cwd("/")
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        // No rlimits: the sandbox inherits the daemon's. Raising them needs CAP_SYS_RESOURCE,
        // which hangar may not have (it does not on Firecracker guests).
        .rlimits(Vec::new())
        .build()?;

    let mut mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        // cgroup v1 trees inside the sandbox are of no use to an agent and reveal the host's.
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    mounts.push(bind(b.init_binary, INIT_PATH, true)?);
    for m in b.mounts {
        mounts.push(bind(&m.source, &m.destination, m.read_only)?);
    }

    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?]);
    if let Some(limit) = b.resources.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit as i64).build()?);
    }
    if let Some(pids) = b.resources.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    if let Some(cpus) = b.resources.cpus {
        let period = 100_000u64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpus * period as f64).round() as i64)
                .build()?,
        );
    }

    let ns = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let linux = LinuxBuilder::default()
        .namespaces(vec![
            ns(LinuxNamespaceType::Pid)?,
            ns(LinuxNamespaceType::Mount)?,
            ns(LinuxNamespaceType::Ipc)?,
            ns(LinuxNamespaceType::Uts)?,
            ns(LinuxNamespaceType::Cgroup)?,
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(b.netns)
                .build()?,
        ])
        .cgroups_path(PathBuf::from(b.cgroups_path))
        .resources(resources.build()?)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .seccomp(seccomp()?)
        .build()?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(b.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(b.hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
}

fn bind(
    source: &Path,
    destination: &str,
    read_only: bool,
) -> Result<Mount, oci_spec::OciSpecError> {
    let mut options = vec![
        "rbind".to_string(),
        "nosuid".to_string(),
        "nodev".to_string(),
    ];
    if read_only {
        options.push("ro".to_string());
    }
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
}

/// Allow by default, deny the listed syscalls and clone(2) with namespace flags; clone3
/// answers ENOSYS so libc falls back to clone, where the flags can be inspected.
fn seccomp() -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let eperm = libc::EPERM as u32;
    let mut syscalls = vec![
        LinuxSyscallBuilder::default()
            .names(
                DENIED_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(eperm)
            .build()?,
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    ];
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(eperm)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(flag)
                    .value_two(flag)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?])
                .build()?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        build(&BundleSpec {
            rootfs: Path::new("/r"),
            hostname: "hangar",
            netns: Path::new("/run/netns/x"),
            cgroups_path: "/p/hangar-x",
            resources: &Resources {
                memory_bytes: Some(1 << 20),
                pids: Some(64),
                cpus: Some(0.5),
                disk_bytes: None,
            },
            init_binary: Path::new("/bin/init"),
            mounts: &[],
        })
        .expect("spec builds")
    }

    #[test]
    fn pid1_has_no_environment_and_no_new_privileges() {
        let s = spec();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.env().as_deref(), Some(&[][..]));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.args().as_deref(), Some(&[INIT_PATH.to_string()][..]));
    }

    #[test]
    fn limits_and_isolation_reach_the_spec() {
        let s = spec();
        let json = serde_json::to_value(&s).unwrap();
        let linux = &json["linux"];
        assert_eq!(linux["resources"]["memory"]["limit"], 1 << 20);
        assert_eq!(linux["resources"]["pids"]["limit"], 64);
        assert_eq!(linux["resources"]["cpu"]["quota"], 50_000);
        let kinds: Vec<&str> = linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for k in ["pid", "mount", "ipc", "uts", "network"] {
            assert!(kinds.contains(&k), "namespace {k} missing from {kinds:?}");
        }
        assert_eq!(linux["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(linux["maskedPaths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/kcore"));
        assert!(!json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/sys/fs/cgroup"));
    }
}
