//! The environment pages: the list, a new environment, and one environment's page (its
//! file in an editor saved through the API's validation with each problem at its line,
//! its secrets by name, its cache and its recent tasks).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use hangar_api::wire::{Diagnostic, EnvFile, EnvView, Secret, SecretList, SnapshotList, TaskQuery};
use hangar_api::{Api, ApiError};
use maud::{html, Markup};
use serde::Deserialize;

use super::tasks::task_rows;
use super::{age, answer, bytes, see_other, time, OrPage, Page};
use crate::auth::Session;
use crate::layout::{csrf_field, page, Section};

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/ui/environments", get(list).post(create))
        .route("/ui/environments/new", get(new_form))
        .route("/ui/environments/{name}", get(show).post(save))
        .route("/ui/environments/{name}/secrets", post(set_secret))
        .route(
            "/ui/environments/{name}/secrets/{secret}/remove",
            post(remove_secret),
        )
        .route("/ui/environments/{name}/cache/reset", post(reset_cache))
}

/// What a browser's edit is named in messages: there is no file on disk.
fn file_name(env: &str) -> String {
    format!("{env}.toml")
}

/// The file as saved from a browser: its text, named after the environment; a relative
/// local path would have no directory to be relative to, so `/` is given.
fn env_file(file: String, text: &str) -> EnvFile {
    EnvFile {
        file,
        source: super::unix_lines(text),
        base_dir: "/".to_string(),
    }
}

async fn list(State(api): State<Api>, Extension(s): Extension<Session>) -> Page {
    let envs = api
        .envs(&s.caller, None)
        .await
        .or_page(&s, Section::Environments)?;
    let body = html! {
        div.toolbar { a.button #new-env href="/ui/environments/new" { "New environment" } }
        @if envs.environments.is_empty() {
            p.empty { "No environments yet." }
        } @else {
            div.scroll {
                table #environments {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Version" } th scope="col" { "Repository" }
                        th scope="col" { "Image" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for e in &envs.environments {
                            tr data-env=(e.name) {
                                td.name { a href={ "/ui/environments/" (e.name) } { (e.name) } }
                                td { (e.version) }
                                td { code { (e.repo) } }
                                td { (e.image) }
                                td { (age(&e.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(answer(
        StatusCode::OK,
        page("Environments", Section::Environments, Some(&s), body),
    ))
}

/// The editor's form: the text as typed.
#[derive(Debug, Deserialize)]
struct FileForm {
    #[serde(default)]
    file: String,
}

const TEMPLATE: &str = "name = \"my-env\"\nrepo = \"https://git.example.com/team/project.git\"\n\n[setup]\nscript = \"\"\"\n\"\"\"\n";

async fn new_form(Extension(s): Extension<Session>) -> Page {
    Ok(answer(StatusCode::OK, new_page(&s, TEMPLATE, None)))
}

fn new_page(s: &Session, text: &str, error: Option<&ApiError>) -> Markup {
    let body = html! {
        @if let Some(e) = error {
            @if e.diagnostics().is_empty() { p.error role="alert" { (e.message()) } }
        }
        form #env-file.stack method="post" action="/ui/environments" {
            (csrf_field(&s.csrf))
            (editor(text, error.map(ApiError::diagnostics).unwrap_or_default()))
            button type="submit" { "Create" }
        }
    };
    page("New environment", Section::Environments, Some(s), body)
}

async fn create(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Form(f): Form<FileForm>,
) -> Page {
    match api
        .create_env(&s.caller, &env_file("new environment".into(), &f.file))
        .await
    {
        Ok(env) => Ok(see_other(&format!("/ui/environments/{}", env.name))),
        Err(e) => Ok(answer(e.status(), new_page(&s, &f.file, Some(&e)))),
    }
}

/// The editor: the file's lines numbered beside it, the lines with a problem marked, and
/// the problems listed, each linking to its line.
fn editor(text: &str, diagnostics: &[Diagnostic]) -> Markup {
    let lines = text.lines().count().max(1);
    let bad = |n: usize| diagnostics.iter().any(|d| d.line == n);
    html! {
        @if !diagnostics.is_empty() {
            div.error role="alert" {
                p { "The file was not saved: " (diagnostics.len()) (if diagnostics.len() == 1 { " problem" } else { " problems" }) "." }
                ol #diagnostics {
                    @for d in diagnostics {
                        li data-line=(d.line) {
                            a href={ "#ln-" (d.line) } data-goto-line=(d.line) { "line " (d.line) } ": " (d.message)
                        }
                    }
                }
            }
        }
        div.editor {
            pre.gutter aria-hidden="true" {
                @for n in 1..=lines {
                    span.ln.error[bad(n)] id=(format!("ln-{n}")) { (n) "\n" }
                }
            }
            label.visually-hidden for="env-text" { "Environment file" }
            textarea #env-text name="file" rows=(lines.clamp(12, 40)) spellcheck="false" wrap="off" autocapitalize="off" { (text) }
        }
    }
}

/// `?saved=N`: the page a save lands on says which version it made.
#[derive(Debug, Default, Deserialize)]
struct ShowParams {
    saved: Option<i64>,
}

async fn show(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
    Query(p): Query<ShowParams>,
) -> Page {
    let env = api
        .env(&s.caller, &name)
        .await
        .or_page(&s, Section::Environments)?;
    let saved = p.saved.filter(|v| *v == env.version);
    env_page(&api, &s, env, Editing::Stored { saved }).await
}

async fn save(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
    Form(f): Form<FileForm>,
) -> Page {
    match api
        .update_env(&s.caller, &name, &env_file(file_name(&name), &f.file))
        .await
    {
        Ok(env) => Ok(see_other(&format!(
            "/ui/environments/{}?saved={}",
            env.name, env.version
        ))),
        Err(e) => {
            let env = api
                .env(&s.caller, &name)
                .await
                .or_page(&s, Section::Environments)?;
            let editing = Editing::Refused {
                text: &f.file,
                error: &e,
            };
            env_page(&api, &s, env, editing).await
        }
    }
}

/// What the environment page's editor holds.
enum Editing<'a> {
    /// The stored file; `saved`: the version a save just made.
    Stored { saved: Option<i64> },
    /// What was typed, which saving refused for `error`.
    Refused { text: &'a str, error: &'a ApiError },
}

/// The environment's page, its editor as `editing` says.
async fn env_page(api: &Api, s: &Session, env: EnvView, editing: Editing<'_>) -> Page {
    let (text, error, saved) = match editing {
        Editing::Stored { saved } => (env.source.as_str(), None, saved),
        Editing::Refused { text, error } => (text, Some(error), None),
    };
    let recent = TaskQuery {
        environment: Some(env.name.clone()),
        limit: Some(10),
        ..TaskQuery::default()
    };
    let (secrets, snapshots, tasks) = tokio::try_join!(
        api.secrets(&s.caller, &env.name),
        api.snapshots(&s.caller),
        api.tasks(&s.caller, recent)
    )
    .or_page(s, Section::Environments)?;
    let status = error.map_or(StatusCode::OK, ApiError::status);
    let body = html! {
        dl.meta {
            dt { "Version" } dd { (env.version) }
            dt { "Repository" } dd { code { (env.repo) } }
            dt { "Updated" } dd { (time(&env.updated_at)) }
        }
        a.button href={ "/ui/tasks/new?environment=" (env.name) } { "New task here" }
        h2 { "File" }
        @if let Some(v) = saved {
            p.notice #saved role="status" { "Saved as version " (v) "." }
        }
        @if let Some(e) = error {
            @if e.diagnostics().is_empty() { p.error role="alert" { (e.message()) } }
        }
        form #env-file.stack method="post" action={ "/ui/environments/" (env.name) } {
            (csrf_field(&s.csrf))
            (editor(text, error.map(ApiError::diagnostics).unwrap_or_default()))
            button type="submit" { "Save" }
        }
        h2 { "Secrets" }
        (secrets_part(s, &env.name, &secrets))
        h2 { "Cache" }
        (cache_part(s, &env.name, &snapshots))
        h2 { "Recent tasks" }
        (task_rows(&tasks.tasks))
    };
    Ok(answer(
        status,
        page(&env.name, Section::Environments, Some(s), body),
    ))
}

/// The secrets by name: set or not, when, for which phases; never a value.
fn secrets_part(s: &Session, env: &str, secrets: &SecretList) -> Markup {
    html! {
        @if secrets.secrets.is_empty() {
            p.empty { "The file declares no secrets (`[secrets.NAME]`)." }
        } @else {
            ul #secrets.secrets {
                @for sec in &secrets.secrets {
                    li data-secret=(sec.name) {
                        code { (sec.name) } " "
                        @if sec.set { span.badge.status-ready { "set" } } @else { span.badge.status-pending { "not set" } }
                        " for " (sec.phases.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "))
                        @if let Some(ms) = sec.updated_ms {
                            " · updated " (time(&hangar_api::wire::rfc3339(ms)))
                        }
                        @if sec.set {
                            form.secret-remove.inline method="post" action={ "/ui/environments/" (env) "/secrets/" (sec.name) "/remove" } {
                                (csrf_field(&s.csrf))
                                button.danger type="submit" aria-label={ "Remove " (sec.name) } { "Remove" }
                            }
                        }
                    }
                }
            }
        }
        form #secret-set.row method="post" action={ "/ui/environments/" (env) "/secrets" } autocomplete="off" {
            (csrf_field(&s.csrf))
            label {
                "Name"
                input name="name" required list="secret-names" autocomplete="off";
                datalist #secret-names {
                    @for sec in &secrets.secrets { option value=(sec.name) {} }
                }
            }
            label {
                "Value"
                input type="password" name="value" required autocomplete="new-password";
            }
            button type="submit" { "Set secret" }
        }
        p.hint { "A value is stored encrypted and is never shown again, here or anywhere." }
    }
}

fn cache_part(s: &Session, env: &str, snapshots: &SnapshotList) -> Markup {
    let mine: Vec<_> = snapshots
        .snapshots
        .iter()
        .filter(|sn| sn.environment == env)
        .collect();
    html! {
        div #cache {
            @if mine.is_empty() {
                p.empty { "No snapshot: the next task runs setup and makes one." }
            } @else {
                div.scroll {
                    table.snapshots {
                        thead { tr {
                            th scope="col" { "Snapshot" } th scope="col" { "Built" } th scope="col" { "Expires" }
                            th scope="col" { "Hits" } th scope="col" { "Size" } th scope="col" { "State" }
                        } }
                        tbody {
                            @for sn in &mine {
                                tr {
                                    td { code { (sn.key.chars().take(12).collect::<String>()) } }
                                    td { (time(&sn.built_at)) }
                                    td { (time(&sn.expires_at)) }
                                    td { (sn.hits) }
                                    td { (bytes(sn.size)) }
                                    td { @if sn.reset { "reset" } @else { "current" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        form #cache-reset method="post" action={ "/ui/environments/" (env) "/cache/reset" } {
            (csrf_field(&s.csrf))
            button type="submit" { "Reset cache" }
            " The next task runs setup afresh."
        }
    }
}

#[derive(Deserialize)]
struct SecretForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

async fn set_secret(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(env): Path<String>,
    Form(f): Form<SecretForm>,
) -> Page {
    let SecretForm { name, value } = f;
    let value = Secret::new(value.into_bytes())
        .map_err(|e| ApiError::bad_request(format!("failed to set secret `{name}`: {e}")))
        .or_page(&s, Section::Environments)?;
    api.set_secret(&s.caller, &env, name.trim(), &value)
        .await
        .or_page(&s, Section::Environments)?;
    Ok(see_other(&format!("/ui/environments/{env}#secrets")))
}

async fn remove_secret(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path((env, secret)): Path<(String, String)>,
) -> Page {
    api.remove_secret(&s.caller, &env, &secret)
        .await
        .or_page(&s, Section::Environments)?;
    Ok(see_other(&format!("/ui/environments/{env}#secrets")))
}

async fn reset_cache(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(env): Path<String>,
) -> Page {
    api.reset_cache(&s.caller, &env)
        .await
        .or_page(&s, Section::Environments)?;
    Ok(see_other(&format!("/ui/environments/{env}#cache")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::hostile::{self, assert_inert};

    fn diagnostic(line: usize, message: &str) -> Diagnostic {
        Diagnostic {
            file: "web.toml".into(),
            line,
            message: message.into(),
        }
    }

    #[test]
    fn each_problem_is_shown_at_its_line() {
        let text = "name = \"web\"\nrepo = 3\nimage = \"x\"\n[network]\nmode = \"sideways\"\n";
        let html = editor(
            text,
            &[
                diagnostic(2, "`repo`: expected a string"),
                diagnostic(5, "`network.mode`: unknown mode"),
            ],
        )
        .into_string();
        for n in 1..=5 {
            let marked = format!(r#"<span class="ln error" id="ln-{n}">"#);
            assert_eq!(
                html.contains(&marked),
                n == 2 || n == 5,
                "line {n} in {html}"
            );
        }
        assert!(html.contains(r##"<li data-line="2"><a href="#ln-2" data-goto-line="2">line 2</a>: `repo`: expected a string</li>"##), "{html}");
        assert!(html.contains(r#"<li data-line="5">"#));
        // What was typed stays in the editor, as text.
        assert!(html.contains("mode = &quot;sideways&quot;"), "{html}");
        // No problems: no list.
        assert!(!editor(text, &[]).into_string().contains("diagnostics"));
    }

    #[test]
    fn a_hostile_file_and_its_messages_render_as_text() {
        let html = editor(&hostile::all(), &[diagnostic(1, &hostile::all())]).into_string();
        assert_inert(&html);
        // The textarea cannot be closed early by what it holds.
        assert_eq!(html.matches("</textarea>").count(), 1);
        let closing = editor("</textarea><script>x</script>", &[]).into_string();
        assert_eq!(closing.matches("</textarea>").count(), 1, "{closing}");
    }
}
