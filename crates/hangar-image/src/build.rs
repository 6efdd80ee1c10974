//! Local image build from Debian packages with mmdebstrap: no container registry involved.
//! The package mirror comes from the host's own apt configuration, never from a built-in
//! host name, so private mirrors work.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use hangar_store::{Digest, ImageName, ImageRecord, Store};
use oci_spec::image::{
    ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
};

use crate::error::{io_err, ImageError, Result};
use crate::recipe::BuildOptions;
use crate::{record_image, Progress};

/// Where the wheels wait inside the image while its pip installs them.
const WHEELS_IN_IMAGE: &str = "/tmp/hangar-wheels";

/// Builds a one-layer image with `mmdebstrap --variant=minbase` and names it. Nothing of
/// the host's configuration (pip's, its CAs) is left in the image: wheels are fetched on
/// the host and installed offline, so the build makes no HTTPS request from inside.
pub fn build_debian(
    store: &Store,
    name: &ImageName,
    opts: &BuildOptions,
    progress: Progress<'_>,
) -> Result<ImageRecord> {
    let work = store.staging_dir()?;
    let sources = match &opts.sources {
        Some(s) => s.clone(),
        None => host_sources(opts.suite.as_str())?,
    };
    let sources_file = work.path().join("hangar.list");
    fs::write(&sources_file, &sources).map_err(io_err("write", &sources_file))?;
    let tarball = work.path().join("rootfs.tar");

    let packages = opts
        .packages
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let wheels = download_wheels(&opts.wheels, &work.path().join("wheels"), progress)?;
    progress(&format!(
        "building {name}: mmdebstrap {} with {}",
        opts.suite,
        packages.replace(',', ", ")
    ));
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=minbase")
        .arg(format!("--include={packages}"))
        // The runtime provides /dev; a layer may not carry device nodes.
        .arg("--skip=output/dev")
        // A mirror (or the proxy in front of it) that fails one download of hundreds
        // would otherwise fail the whole build.
        .arg("--aptopt=Acquire::Retries \"5\"")
        .arg("--format=tar");
    for hook in customize_hooks(opts, !wheels.is_empty()) {
        cmd.arg(format!("--customize-hook={hook}"));
    }
    let mut child = cmd
        .arg(opts.suite.as_str())
        .arg(&tarball)
        .arg(&sources_file)
        .env("HANGAR_WHEELS", work.path().join("wheels"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ImageError::Build(format!(
                "could not run mmdebstrap ({e}); install it with `apt-get install mmdebstrap`"
            ))
        })?;
    let stderr = child.stderr.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
        progress(&format!("  {line}"));
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let _ = out_thread.join();
    let status = child
        .wait()
        .map_err(|e| ImageError::Build(format!("mmdebstrap: {e}")))?;
    if !status.success() {
        return Err(ImageError::Build(format!(
            "mmdebstrap exited with {status}:\n{}",
            tail.join("\n")
        )));
    }

    progress("compressing the layer");
    let mut layer = crate::pack::LayerWriter::new(store)?;
    io::copy(
        &mut fs::File::open(&tarball).map_err(io_err("open", &tarball))?,
        &mut layer,
    )
    .map_err(io_err("compress", &tarball))?;
    let layer = layer.finish()?;
    let diff_id = layer.diff_id.clone();
    let config = ImageConfigurationBuilder::default()
        .architecture(oci_spec::image::Arch::Amd64)
        .os(oci_spec::image::Os::Linux)
        .created(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .config(
            ConfigBuilder::default()
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                    "LANG=C.UTF-8".to_string(),
                ])
                .working_dir("/")
                .cmd(vec!["/bin/bash".to_string()])
                .build()
                .map_err(spec_err)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(spec_err)?,
        )
        .history(vec![HistoryBuilder::default()
            .created_by(created_by(opts, &packages, &wheels))
            .build()
            .map_err(spec_err)?])
        .build()
        .map_err(spec_err)?;
    let manifest_bytes = write_config_and_manifest(
        store,
        &config,
        vec![descriptor(
            MediaType::ImageLayerGzip,
            &layer.blob,
            layer.size,
        )?],
    )?;

    progress("unpacking the layer");
    let staging = store.staging_dir()?;
    let unpacked = crate::unpack_blob(store, &layer.blob, staging.path())?;
    if unpacked != diff_id {
        return Err(ImageError::Build(format!(
            "layer digest changed while unpacking ({diff_id} vs {unpacked})"
        )));
    }
    store.commit_layer(staging, &diff_id)?;
    let rec = record_image(store, name, &manifest_bytes)?;
    progress(&format!("built {name} {}", rec.manifest));
    Ok(rec)
}

/// Stores `config` as a blob and returns the bytes of a manifest naming it and `layers`
/// (the caller stores or names the manifest).
pub(crate) fn write_config_and_manifest(
    store: &Store,
    config: &ImageConfiguration,
    layers: Vec<oci_spec::image::Descriptor>,
) -> Result<Vec<u8>> {
    let json =
        |e: serde_json::Error| ImageError::Build(format!("an image does not serialize: {e}"));
    let config_bytes = serde_json::to_vec(config).map_err(json)?;
    let (config_digest, config_size) = store.write_blob(&config_bytes[..], None)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_size,
        )?)
        .layers(layers)
        .build()
        .map_err(spec_err)?;
    serde_json::to_vec(&manifest).map_err(json)
}

pub(crate) fn spec_err(e: oci_spec::OciSpecError) -> ImageError {
    ImageError::Build(e.to_string())
}

pub(crate) fn descriptor(
    media: MediaType,
    digest: &Digest,
    size: u64,
) -> Result<oci_spec::image::Descriptor> {
    DescriptorBuilder::default()
        .media_type(media)
        .digest(oci_spec::image::Digest::try_from(digest.as_str()).map_err(spec_err)?)
        .size(size)
        .build()
        .map_err(spec_err)
}

/// mmdebstrap's customize hooks (shell, `$1` is the image's root; run on the host) that
/// install the wheels in `$HANGAR_WHEELS` with the image's pip, then run the commands.
/// Each runs under `env -i` so that nothing of the host's environment (pip's index, CA
/// paths) steers or is recorded by the image's tools.
fn customize_hooks(opts: &BuildOptions, wheels: bool) -> Vec<String> {
    let in_image = |cmd: &str| {
        format!(
            "chroot \"$1\" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 sh -ec {}",
            shell_quote(cmd)
        )
    };
    let mut hooks = Vec::new();
    if wheels {
        hooks.push(format!(
            "mkdir \"$1{WHEELS_IN_IMAGE}\" && cp -- \"$HANGAR_WHEELS\"/*.whl \"$1{WHEELS_IN_IMAGE}/\""
        ));
        hooks.push(in_image(&format!(
            "python3 -m pip install --no-index --no-deps --no-cache-dir --break-system-packages \
             --root-user-action=ignore --disable-pip-version-check {WHEELS_IN_IMAGE}/*.whl"
        )));
        hooks.push(format!("rm -rf \"$1{WHEELS_IN_IMAGE}\""));
    }
    hooks.extend(opts.commands.iter().map(|c| in_image(c)));
    hooks
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Downloads each wheel with the host's pip into `dir` (its index, certificates and
/// proxy are the host's configuration) and returns the files' names.
fn download_wheels(
    wheels: &[String],
    dir: &std::path::Path,
    progress: Progress<'_>,
) -> Result<Vec<String>> {
    if wheels.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    for wheel in wheels {
        progress(&format!(
            "downloading the wheel of {wheel} with the host's pip"
        ));
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
            ])
            .arg(dir)
            .arg(wheel)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ImageError::Wheel {
                wheel: wheel.clone(),
                reason: format!("could not run python3 -m pip ({e})"),
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
            return Err(ImageError::Wheel {
                wheel: wheel.clone(),
                reason: format!(
                    "pip exited with {}:\n{}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            });
        }
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".whl"))
        .collect();
    names.sort();
    Ok(names)
}

/// The image history's account of the build.
fn created_by(opts: &BuildOptions, packages: &str, wheels: &[String]) -> String {
    let mut s = format!(
        "mmdebstrap --variant=minbase --include={packages} {}",
        opts.suite
    );
    if !wheels.is_empty() {
        s.push_str(&format!("; pip install {}", wheels.join(" ")));
    }
    for c in &opts.commands {
        s.push_str(&format!("; {c}"));
    }
    s
}

/// The host's apt sources for its own release, rewritten for `suite`, in one-line format.
fn host_sources(suite: &str) -> Result<String> {
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default();
    let mut files = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        files.push(("sources.list".to_string(), text));
    }
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut names: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".list") || name.ends_with(".sources") {
                if let Ok(text) = fs::read_to_string(&p) {
                    files.push((name, text));
                }
            }
        }
    }
    let out = apt_sources_for(&files, &codename, suite);
    if out.is_empty() {
        return Err(ImageError::Build(format!(
            "found no Debian package sources for release `{codename}` in /etc/apt; give the mirror explicitly with --mirror URL"
        )));
    }
    Ok(out)
}

/// From apt source files (one-line `.list` or deb822 `.sources`), keeps the binary entries
/// of the host's release `codename` (and its `-updates`, `-security` companions) and
/// rewrites them for `suite`. Third-party repositories (other suite names) are left out.
pub fn apt_sources_for(files: &[(String, String)], codename: &str, suite: &str) -> String {
    let rewrite = |s: &str| -> Option<String> {
        if codename.is_empty() {
            return None;
        }
        if s == codename {
            Some(suite.to_string())
        } else {
            s.strip_prefix(codename)
                .filter(|rest| rest.starts_with('-'))
                .map(|rest| format!("{suite}{rest}"))
        }
    };
    let mut lines = Vec::new();
    for (name, text) in files {
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(key)
                            .then(|| v.trim().to_string())
                    })
                };
                if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
                    continue;
                }
                if !field("Types")
                    .unwrap_or_default()
                    .split_whitespace()
                    .any(|t| t == "deb")
                {
                    continue;
                }
                let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
                    continue;
                };
                let components = field("Components").unwrap_or_else(|| "main".into());
                for uri in uris.split_whitespace() {
                    for s in suites.split_whitespace().filter_map(rewrite) {
                        lines.push(format!("deb {uri} {s} {components}"));
                    }
                }
            }
        } else {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                let mut words: Vec<&str> = line.split_whitespace().collect();
                if words.first() != Some(&"deb") {
                    continue;
                }
                // Drop an options block: `deb [signed-by=...] uri suite comps`.
                if words.get(1).is_some_and(|w| w.starts_with('[')) {
                    let end = words.iter().position(|w| w.ends_with(']')).unwrap_or(1);
                    words.drain(1..=end);
                }
                if words.len() < 3 {
                    continue;
                }
                if let Some(s) = rewrite(words[2]) {
                    let comps = if words.len() > 3 {
                        words[3..].join(" ")
                    } else {
                        "main".into()
                    };
                    lines.push(format!("deb {} {s} {comps}", words[1]));
                }
            }
        }
    }
    lines.dedup();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[(&str, &str)], suite: &str, expected: &str) {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(apt_sources_for(&files, "bookworm", suite), expected);
    }

    #[test]
    fn deb822_sources_are_rewritten_for_the_suite() {
        let deb822 = "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\n";
        check(
            &[("debian.sources", deb822)],
            "trixie",
            "deb http://mirror.test/debian trixie main\ndeb http://mirror.test/debian trixie-updates main\ndeb http://mirror.test/debian-security trixie-security main\n",
        );
    }

    #[test]
    fn third_party_and_source_entries_are_left_out() {
        check(
            &[
                ("a.list", "deb [arch=amd64] http://m.test/debian bookworm main contrib\ndeb-src http://m.test/debian bookworm main\n# deb http://x bookworm main\n"),
                ("node.sources", "Types: deb\nURIs: https://third.test/node\nSuites: nodistro\nComponents: main\n"),
                ("off.sources", "Enabled: no\nTypes: deb\nURIs: http://off.test\nSuites: bookworm\n"),
                ("cloud.list", "deb https://cloud.test/apt cloud-sdk-bookworm main\n"),
            ],
            "bookworm",
            "deb http://m.test/debian bookworm main contrib\n",
        );
    }
}
