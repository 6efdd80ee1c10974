//! `hangar ui`: a one-time link that signs a browser in to the web UI as the local admin
//! (the daemon makes it; only the Unix socket's caller may ask), printed, and on a
//! desktop opened in the user's browser.

use std::process::{Command, Stdio};

use anyhow::Result;
use hangar_api::client::Client;

use crate::print_json;

pub async fn ui(client: &Client, json: bool) -> Result<()> {
    let links = client.ui_links().await?;
    if json {
        // For a script, which decides where the link goes: opening it here would use it.
        return print_json(&links);
    }
    eprintln!(
        "sign in to the web UI with this link: it works once, until {}",
        links.expires_at
    );
    for url in &links.urls {
        println!("{}", url.expose_str());
    }
    if let Some(first) = links.urls.first() {
        if open(first.expose_str()) {
            eprintln!("opened it in your browser");
        }
    }
    Ok(())
}

/// Opens `url` with `xdg-open` on a desktop session; whether it was started (not when
/// there is no `xdg-open`). Never an error: the link is printed anyway. Not waited for,
/// since xdg-open may run as long as the browser it starts.
fn open(url: &str) -> bool {
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    desktop
        && Command::new("xdg-open")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .is_ok()
}
