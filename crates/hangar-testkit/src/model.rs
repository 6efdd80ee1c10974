//! A scripted model server for the harness tests: it speaks the OpenAI Responses API, Chat
//! Completions and Anthropic Messages (streamed as SSE, or whole), and answers from a
//! script instead of a model. It is stateless: the number of tool results already in the
//! conversation says which turn comes next, so retries, probes and side requests get
//! sensible answers. Every request is recorded.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

/// One step of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Run this command through whichever shell-like tool the request offers.
    Shell(String),
    /// Create `path` holding `content`: a shell command where a shell tool is offered,
    /// else an edit block in the reply (aider's SEARCH/REPLACE format, empty SEARCH).
    Write { path: String, content: String },
    /// The final answer.
    Text(String),
}

/// What the server does with a model request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    Script(Vec<Turn>),
    /// Every model request fails with this status and message, in the API's error shape.
    Fail {
        status: u16,
        message: String,
    },
    /// Every model request is read and never answered.
    Hang,
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::upstream::find_header(&self.headers, name)
    }

    /// Whether this was a request to a model (not a probe of the server).
    pub fn is_model_call(&self) -> bool {
        self.method == "POST" && api_of(&self.path).is_some()
    }
}

struct State {
    behavior: Mutex<Behavior>,
    recorded: Mutex<Vec<Recorded>>,
}

pub struct ModelServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ModelServer {
    /// Serves on `ip` (port chosen by the system) from its own thread and runtime.
    pub fn start(ip: IpAddr, behavior: Behavior) -> ModelServer {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the model server");
        Self::serve(listener, behavior)
    }

    /// Serves on `ip` outside the host ([`crate::upstream::outside_address`]): a public
    /// model provider, which the proxy does not refuse as one of the host's addresses.
    pub fn start_outside(ip: IpAddr, behavior: Behavior) -> ModelServer {
        let ns = crate::upstream::outside_address(ip);
        let listener = hangar_sandbox::netns::listen_in(&ns, std::net::SocketAddr::new(ip, 0))
            .expect("bind the model server outside the host");
        Self::serve(listener, behavior)
    }

    /// Serves a listener the caller bound.
    pub fn serve(listener: std::net::TcpListener, behavior: Behavior) -> ModelServer {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            behavior: Mutex::new(behavior),
            recorded: Mutex::default(),
        });
        let served = state.clone();
        let shutdown = crate::upstream::serve_http1(listener, move |req| {
            let state = served.clone();
            async move { answer(req, &state).await }
        });
        ModelServer {
            addr,
            state,
            _shutdown: shutdown,
        }
    }

    /// `http://ip:port`, with no path.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.behavior.lock().expect("behavior") = behavior;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().expect("recorded").clone()
    }

    pub fn clear(&self) {
        self.state.recorded.lock().expect("recorded").clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    Responses,
    Chat,
    Anthropic,
}

fn api_of(path: &str) -> Option<Api> {
    let path = path.trim_end_matches('/');
    if path.ends_with("/responses") {
        Some(Api::Responses)
    } else if path.ends_with("/chat/completions") {
        Some(Api::Chat)
    } else if path.ends_with("/messages") {
        Some(Api::Anthropic)
    } else {
        None
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn body(status: StatusCode, content_type: &str, text: String) -> Response<Body> {
    let mut resp = Response::new(BodyExt::boxed(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", content_type.parse().expect("header"));
    resp
}

async fn answer(req: Request<hyper::body::Incoming>, state: &State) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let bytes = incoming
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: crate::upstream::header_list(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    state.recorded.lock().expect("recorded").push(rec.clone());
    let json = |v: Value| body(StatusCode::OK, "application/json", v.to_string());
    if rec.path.ends_with("/count_tokens") {
        return json(json!({ "input_tokens": 1 }));
    }
    let Some(api) = api_of(&rec.path).filter(|_| rec.method == "POST") else {
        if rec.method == "GET" && rec.path.ends_with("/models") {
            return json(json!({ "object": "list", "data": [] }));
        }
        return body(
            StatusCode::NOT_FOUND,
            "application/json",
            json!({ "error": { "message": format!("no route for {} {}", rec.method, rec.path) } })
                .to_string(),
        );
    };
    let request: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let behavior = state.behavior.lock().expect("behavior").clone();
    let turns = match behavior {
        Behavior::Script(turns) => turns,
        Behavior::Hang => return futures_util::future::pending().await,
        Behavior::Fail { status, message } => {
            let error = match api {
                Api::Anthropic => json!({
                    "type": "error",
                    "error": { "type": "invalid_request_error", "message": message },
                }),
                _ => json!({
                    "error": { "message": message, "type": "invalid_request_error", "code": null },
                }),
            };
            return body(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                "application/json",
                error.to_string(),
            );
        }
    };
    let reply = decide(api, &request, &turns);
    let model = request["model"].as_str().unwrap_or("scripted").to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    let (content_type, text) = match (api, stream) {
        (Api::Responses, _) => ("text/event-stream", responses_sse(&reply)),
        (Api::Chat, true) => ("text/event-stream", chat_sse(&reply, &model)),
        (Api::Chat, false) => ("application/json", chat_whole(&reply, &model)),
        (Api::Anthropic, true) => ("text/event-stream", anthropic_sse(&reply, &model)),
        (Api::Anthropic, false) => ("application/json", anthropic_whole(&reply, &model)),
    };
    body(StatusCode::OK, content_type, text)
}

/// The model's answer to one request.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Call {
        tool: String,
        /// The arguments, as a JSON object.
        arguments: Value,
    },
    Text(String),
}

/// The next turn: as many actions are done as the conversation holds tool results.
fn decide(api: Api, request: &Value, turns: &[Turn]) -> Reply {
    let done = tool_results(api, request);
    let actions: Vec<&Turn> = turns
        .iter()
        .filter(|t| !matches!(t, Turn::Text(_)))
        .collect();
    let final_text = turns
        .iter()
        .rev()
        .find_map(|t| match t {
            Turn::Text(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "done".into());
    let shell = shell_tool(api, request);
    match (actions.get(done), shell) {
        (Some(action), Some((tool, arg, array))) => {
            let command = match action {
                Turn::Shell(c) => c.clone(),
                Turn::Write { path, content } => write_command(path, content),
                Turn::Text(_) => unreachable!("actions hold no text"),
            };
            let value = if array {
                json!(["bash", "-lc", command])
            } else {
                json!(command)
            };
            let mut arguments = serde_json::Map::new();
            arguments.insert(arg, value);
            Reply::Call {
                tool,
                arguments: Value::Object(arguments),
            }
        }
        (Some(_), None) if done == 0 => {
            // No tools offered: edits travel as text, in aider's edit format.
            let mut text = String::new();
            for t in &actions {
                if let Turn::Write { path, content } = t {
                    text.push_str(&format!(
                        "{path}\n```\n<<<<<<< SEARCH\n=======\n{content}>>>>>>> REPLACE\n```\n\n"
                    ));
                }
            }
            text.push_str(&final_text);
            Reply::Text(text)
        }
        _ => Reply::Text(final_text),
    }
}

fn write_command(path: &str, content: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    format!("printf '%s' {} > {}", quote(content), quote(path))
}

/// How many tool results the conversation already holds.
fn tool_results(api: Api, request: &Value) -> usize {
    let items = |key: &str| request[key].as_array().cloned().unwrap_or_default();
    match api {
        Api::Responses => items("input")
            .iter()
            .filter(|i| {
                matches!(
                    i["type"].as_str(),
                    Some("function_call_output" | "custom_tool_call_output")
                )
            })
            .count(),
        Api::Chat => items("messages")
            .iter()
            .filter(|m| m["role"] == "tool")
            .count(),
        Api::Anthropic => items("messages")
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .count(),
    }
}

/// Names of shell-like tools, best first; versions rename them, so the request decides.
const SHELL_TOOLS: &[&str] = &[
    "exec_command",
    "shell",
    "Bash",
    "bash",
    "terminal",
    "exec",
    "run_shell_command",
    "execute_command",
];

/// The shell-like tool offered: its name, the argument that takes the command, and
/// whether that argument is an argv array.
fn shell_tool(api: Api, request: &Value) -> Option<(String, String, bool)> {
    let tools = request["tools"].as_array()?;
    let described: Vec<(String, &Value)> = tools
        .iter()
        .filter_map(|t| {
            let (name, schema) = match api {
                Api::Responses => (t["name"].as_str()?, &t["parameters"]),
                Api::Chat => (
                    t["function"]["name"].as_str()?,
                    &t["function"]["parameters"],
                ),
                Api::Anthropic => (t["name"].as_str()?, &t["input_schema"]),
            };
            Some((name.to_string(), schema))
        })
        .collect();
    let (name, schema) = SHELL_TOOLS
        .iter()
        .find_map(|want| described.iter().find(|(n, _)| n == want))?;
    let props = &schema["properties"];
    let arg = ["command", "cmd"]
        .into_iter()
        .find(|a| !props[*a].is_null())
        .unwrap_or("command");
    let array = props[arg]["type"] == "array";
    Some((name.clone(), arg.to_string(), array))
}

fn sse(events: &[(Option<&str>, Value)]) -> String {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            out.push_str(&format!("event: {n}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    out
}

fn responses_sse(reply: &Reply) -> String {
    let item = match reply {
        Reply::Call { tool, arguments } => json!({
            "type": "function_call", "id": "fc_1", "call_id": "call_1", "status": "completed",
            "name": tool, "arguments": arguments.to_string(),
        }),
        Reply::Text(text) => json!({
            "type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{ "type": "output_text", "text": text, "annotations": [] }],
        }),
    };
    let usage = json!({
        "input_tokens": 1, "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens": 1, "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": 2,
    });
    let name = |n: &'static str| Some(n);
    sse(&[
        (
            name("response.created"),
            json!({ "type": "response.created", "response": { "id": "resp_1" } }),
        ),
        (
            name("response.output_item.done"),
            json!({ "type": "response.output_item.done", "output_index": 0, "item": item }),
        ),
        (
            name("response.completed"),
            json!({ "type": "response.completed", "response": { "id": "resp_1", "usage": usage } }),
        ),
    ])
}

fn chat_message(reply: &Reply) -> (Value, &'static str) {
    match reply {
        Reply::Call { tool, arguments } => (
            json!({
                "role": "assistant", "content": null,
                "tool_calls": [{
                    "index": 0, "id": "call_1", "type": "function",
                    "function": { "name": tool, "arguments": arguments.to_string() },
                }],
            }),
            "tool_calls",
        ),
        Reply::Text(text) => (json!({ "role": "assistant", "content": text }), "stop"),
    }
}

fn chat_usage() -> Value {
    json!({ "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 })
}

fn chat_sse(reply: &Reply, model: &str) -> String {
    let (delta, finish) = chat_message(reply);
    let chunk = |choices: Value, usage: Value| {
        (
            None,
            json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": choices, "usage": usage,
            }),
        )
    };
    let mut out = sse(&[
        chunk(
            json!([{ "index": 0, "delta": delta, "finish_reason": null }]),
            Value::Null,
        ),
        chunk(
            json!([{ "index": 0, "delta": {}, "finish_reason": finish }]),
            chat_usage(),
        ),
    ]);
    out.push_str("data: [DONE]\n\n");
    out
}

fn chat_whole(reply: &Reply, model: &str) -> String {
    let (message, finish) = chat_message(reply);
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": chat_usage(),
    })
    .to_string()
}

fn anthropic_block(reply: &Reply) -> (Value, &'static str) {
    match reply {
        Reply::Call { tool, arguments } => (
            json!({ "type": "tool_use", "id": "toolu_1", "name": tool, "input": arguments }),
            "tool_use",
        ),
        Reply::Text(text) => (json!({ "type": "text", "text": text }), "end_turn"),
    }
}

fn anthropic_sse(reply: &Reply, model: &str) -> String {
    let stop = anthropic_block(reply).1;
    let (start, delta) = match reply {
        Reply::Call { tool, arguments } => (
            json!({ "type": "tool_use", "id": "toolu_1", "name": tool, "input": {} }),
            json!({ "type": "input_json_delta", "partial_json": arguments.to_string() }),
        ),
        Reply::Text(text) => (
            json!({ "type": "text", "text": "" }),
            json!({ "type": "text_delta", "text": text }),
        ),
    };
    let e = |n: &'static str, v: Value| (Some(n), v);
    sse(&[
        e(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 1, "output_tokens": 1 },
            }}),
        ),
        e(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": start }),
        ),
        e(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
        ),
        e(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 0 }),
        ),
        e(
            "message_delta",
            json!({ "type": "message_delta",
                    "delta": { "stop_reason": stop, "stop_sequence": null },
                    "usage": { "output_tokens": 1 } }),
        ),
        e("message_stop", json!({ "type": "message_stop" })),
    ])
}

fn anthropic_whole(reply: &Reply, model: &str) -> String {
    let (block, stop) = anthropic_block(reply);
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [block], "stop_reason": stop, "stop_sequence": null,
        "usage": { "input_tokens": 1, "output_tokens": 1 },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> Vec<Turn> {
        vec![
            Turn::Write {
                path: "hello.txt".into(),
                content: "hi\n".into(),
            },
            Turn::Text("created hello.txt".into()),
        ]
    }

    fn check(api: Api, request: Value, expected: &str) {
        let got = match decide(api, &request, &script()) {
            Reply::Call { tool, arguments } => format!("call {tool} {arguments}"),
            Reply::Text(t) => format!("text {t}"),
        };
        assert_eq!(got, expected, "{request}");
    }

    #[test]
    fn the_next_turn_comes_from_the_request() {
        let cmd = "printf '%s' 'hi\n' > 'hello.txt'";
        let cmd_json = serde_json::to_string(cmd).unwrap();
        check(
            Api::Responses,
            json!({"input": [{"type": "message"}], "tools": [
                {"type": "function", "name": "exec_command",
                 "parameters": {"properties": {"cmd": {"type": "string"}}}}]}),
            &format!("call exec_command {{\"cmd\":{cmd_json}}}"),
        );
        check(
            Api::Responses,
            json!({"input": [{"type": "function_call_output"}], "tools": [
                {"type": "function", "name": "exec_command", "parameters": {}}]}),
            "text created hello.txt",
        );
        check(
            Api::Responses,
            json!({"input": [], "tools": [{"type": "function", "name": "shell",
                "parameters": {"properties": {"command": {"type": "array"}}}}]}),
            &format!("call shell {{\"command\":[\"bash\",\"-lc\",{cmd_json}]}}"),
        );
        check(
            Api::Chat,
            json!({"messages": [{"role": "user"}], "tools": [{"type": "function",
                "function": {"name": "terminal",
                 "parameters": {"properties": {"command": {"type": "string"}}}}}]}),
            &format!("call terminal {{\"command\":{cmd_json}}}"),
        );
        check(
            Api::Chat,
            json!({"messages": [{"role": "user"}, {"role": "tool"}], "tools": []}),
            "text created hello.txt",
        );
        check(
            Api::Anthropic,
            json!({"messages": [], "tools": [{"name": "Read", "input_schema": {}},
                {"name": "Bash", "input_schema": {"properties": {"command": {}}}}]}),
            &format!("call Bash {{\"command\":{cmd_json}}}"),
        );
        check(
            Api::Anthropic,
            json!({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
                   "tools": [{"name": "Bash", "input_schema": {}}]}),
            "text created hello.txt",
        );
        // aider offers no tools: the edit is text.
        check(
            Api::Chat,
            json!({"messages": [{"role": "user"}]}),
            "text hello.txt\n```\n<<<<<<< SEARCH\n=======\nhi\n>>>>>>> REPLACE\n```\n\ncreated hello.txt",
        );
    }

    #[test]
    fn the_write_command_quotes_what_it_writes() {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "cd {} && {}",
                std::env::temp_dir().display(),
                write_command("hangar-model-quote.txt", "it's $HOME `x`\n")
            ))
            .status()
            .unwrap();
        assert!(out.success());
        let path = std::env::temp_dir().join("hangar-model-quote.txt");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "it's $HOME `x`\n");
        std::fs::remove_file(path).unwrap();
    }
}
