//! A fake GitHub REST API that serves only what GitHub's official OpenAPI description
//! (`@octokit/openapi`) says: each request is matched to an operation and checked
//! against it (path and query parameters, the JSON body's schema, the headers GitHub
//! requires), answered with the description's own example, and recorded. What fails a
//! check is answered 400 and kept in [`FakeGitHub::violations`]. Also GitHub's webhook
//! examples (`@octokit/webhooks-examples`) and their signatures.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

/// The description's package and version: pinned, so a test's expectations hold.
pub const OPENAPI_PACKAGE: (&str, &str) = ("@octokit/openapi", "23.0.2");
/// The webhook examples' package and version.
pub const WEBHOOKS_PACKAGE: (&str, &str) = ("@octokit/webhooks-examples", "7.6.1");

/// The operation whose answer is a redirect to the log's storage.
const JOB_LOGS: &str = "actions/download-job-logs-for-workflow-run";
/// Where the fake's log storage is: the path the log redirect points to.
const STORAGE: &str = "/_storage/logs/";
/// What a job's log holds unless a test sets it.
const DEFAULT_LOG: &str = "2024-01-01T00:00:00.0000000Z Run make test\n\
    2024-01-01T00:00:01.0000000Z test parser ... FAILED\n\
    2024-01-01T00:00:02.0000000Z error: 1 test failed\n\
    2024-01-01T00:00:02.1000000Z ##[error]Process completed with exit code 1.\n";

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The operation's `operationId` (`pulls/create`), `_storage` for the log storage,
    /// or empty when nothing matched.
    pub operation: String,
    /// The JSON body (`null` without one).
    pub body: Value,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
}

/// One path segment of a path template.
#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One operation of the description.
struct Operation {
    method: String,
    template: String,
    segments: Vec<Segment>,
    id: String,
    /// The operation object, with its path item's parameters merged into `parameters`.
    op: Value,
}

/// A path's parameters by name, decoded.
type PathParams = Vec<(String, String)>;

/// The description, indexed.
struct Description {
    operations: Vec<Operation>,
    /// `#/components`, for `$ref`s.
    components: Value,
}

/// The description's parts the fake reads: the rest (its webhooks, tags) is skipped
/// while parsing.
#[derive(serde::Deserialize)]
struct Document {
    paths: serde_json::Map<String, Value>,
    components: Value,
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// The description, read once per process.
fn description() -> &'static Description {
    static DESCRIPTION: OnceLock<Description> = OnceLock::new();
    DESCRIPTION.get_or_init(|| {
        let (name, version) = OPENAPI_PACKAGE;
        let file = crate::projects::npm_file(name, version, "generated/api.github.com.json");
        let text = std::fs::read(&file).expect("read GitHub's OpenAPI description");
        let doc: Document =
            serde_json::from_slice(&text).expect("parse GitHub's OpenAPI description");
        let mut operations = Vec::new();
        for (template, item) in doc.paths {
            let shared = item.get("parameters").cloned().unwrap_or(json!([]));
            let segments = template
                .trim_start_matches('/')
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(p) => Segment::Param(p.to_string()),
                        None => Segment::Literal(s.to_string()),
                    },
                )
                .collect::<Vec<_>>();
            for method in METHODS {
                let Some(op) = item.get(method) else {
                    continue;
                };
                let mut op = op.clone();
                let mut params = shared.as_array().cloned().unwrap_or_default();
                params.extend(op["parameters"].as_array().cloned().unwrap_or_default());
                op["parameters"] = Value::Array(params);
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    segments: segments.clone(),
                    id: op["operationId"].as_str().unwrap_or_default().to_string(),
                    op,
                });
            }
        }
        Description {
            operations,
            components: doc.components,
        }
    })
}

impl Description {
    /// `value` with `$ref`s (to `#/components/...`) followed.
    fn deref<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        for _ in 0..32 {
            let Some(r) = value.get("$ref").and_then(Value::as_str) else {
                return value;
            };
            let Some(pointer) = r.strip_prefix("#/components") else {
                return &Value::Null;
            };
            value = self.components.pointer(pointer).unwrap_or(&Value::Null);
        }
        value
    }

    fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }

    /// The operation a method and path are, and the path's parameters: of the templates
    /// the path fits, the one with literals earliest (`/pulls/comments` before
    /// `/pulls/{pull_number}`).
    fn find(&self, method: &str, path: &str) -> Result<(&Operation, PathParams), String> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut best: Option<(&Operation, Vec<bool>)> = None;
        let mut other_methods = Vec::new();
        for op in &self.operations {
            if op.segments.len() != parts.len() {
                continue;
            }
            let fits = op.segments.iter().zip(&parts).all(|(s, p)| match s {
                Segment::Literal(l) => l == p,
                Segment::Param(_) => !p.is_empty(),
            });
            if !fits {
                continue;
            }
            if op.method != method {
                other_methods.push(format!("{} {}", op.method, op.template));
                continue;
            }
            let shape: Vec<bool> = op
                .segments
                .iter()
                .map(|s| matches!(s, Segment::Literal(_)))
                .collect();
            if best.as_ref().is_none_or(|(_, b)| shape > *b) {
                best = Some((op, shape));
            }
        }
        let Some((op, _)) = best else {
            return Err(if other_methods.is_empty() {
                format!("no operation of the description is {method} {path}")
            } else {
                format!(
                    "no operation of the description is {method} {path} (the path is {})",
                    other_methods.join(", ")
                )
            });
        };
        let params = op
            .segments
            .iter()
            .zip(&parts)
            .filter_map(|(s, p)| match s {
                Segment::Param(name) => Some((name.clone(), percent_decode(p))),
                Segment::Literal(_) => None,
            })
            .collect();
        Ok((op, params))
    }

    /// The operation's parameters, `$ref`s followed.
    fn parameters<'a>(&'a self, op: &'a Operation) -> Vec<&'a Value> {
        op.op["parameters"]
            .as_array()
            .map(|ps| ps.iter().map(|p| self.deref(p)).collect())
            .unwrap_or_default()
    }

    /// The response object for `status`.
    fn response<'a>(&'a self, op: &'a Operation, status: u16) -> Option<&'a Value> {
        op.op["responses"]
            .get(status.to_string())
            .map(|r| self.deref(r))
    }

    /// The operation's success status: its lowest 2xx or 3xx.
    fn success(&self, op: &Operation) -> u16 {
        op.op["responses"]
            .as_object()
            .into_iter()
            .flat_map(|r| r.keys())
            .filter_map(|k| k.parse::<u16>().ok())
            .filter(|s| (200..400).contains(s))
            .min()
            .unwrap_or(200)
    }

    /// The description's example of the answer to `op` with `status`: one of its
    /// `examples` (the first), its `example`, else (error answers have none) a value
    /// made from the schema: its required properties, the message being the response's
    /// own description. `None` for an answer without a JSON body.
    fn example(&self, op: &Operation, status: u16) -> Option<Value> {
        let response = self.response(op, status)?;
        let content = response.pointer("/content/application~1json")?;
        if let Some(first) = content
            .get("examples")
            .and_then(Value::as_object)
            .and_then(|e| e.values().next())
        {
            return Some(
                self.deref(first)
                    .get("value")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
        }
        if let Some(e) = content.get("example") {
            return Some(e.clone());
        }
        let message = response["description"].as_str().unwrap_or("");
        Some(self.synthesize(&content["schema"], message, 0))
    }

    fn synthesize(&self, schema: &Value, message: &str, depth: usize) -> Value {
        let schema = self.deref(schema);
        if depth > 8 {
            return Value::Null;
        }
        if let Some(e) = schema.get("example") {
            return e.clone();
        }
        if let Some(e) = schema.get("enum").and_then(|e| e.get(0)) {
            return e.clone();
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            if let Some(first) = schema.get(key).and_then(|s| s.get(0)) {
                return self.synthesize(first, message, depth + 1);
            }
        }
        match schema["type"].as_str() {
            Some("object") | None if schema.get("properties").is_some() => {
                let mut out = serde_json::Map::new();
                for name in schema["required"].as_array().into_iter().flatten() {
                    let Some(name) = name.as_str() else { continue };
                    let value = match name {
                        "message" => Value::String(message.to_string()),
                        _ => self.synthesize(&schema["properties"][name], message, depth + 1),
                    };
                    out.insert(name.to_string(), value);
                }
                Value::Object(out)
            }
            Some("object") => json!({}),
            Some("array") => json!([]),
            Some("string") => json!(""),
            Some("integer") | Some("number") => json!(0),
            Some("boolean") => json!(false),
            _ => Value::Null,
        }
    }

    /// Checks `value` against `schema`, pushing what is wrong (at `at`, a JSON path).
    fn validate(&self, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
        let schema = self.deref(schema);
        if !schema.is_object() {
            return;
        }
        let nullable = schema["nullable"].as_bool() == Some(true);
        if value.is_null() && nullable {
            return;
        }
        if let Some(all) = schema["allOf"].as_array() {
            for s in all {
                self.validate(s, value, at, errs);
            }
        }
        // oneOf is read as anyOf: GitHub's alternatives overlap (a string and a nullable
        // string), so "exactly one" would refuse what GitHub accepts.
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = schema[key].as_array() {
                let fits = alts.iter().any(|s| {
                    let mut e = Vec::new();
                    self.validate(s, value, at, &mut e);
                    e.is_empty()
                });
                if !fits {
                    errs.push(format!("{at} fits none of the {key} alternatives"));
                }
            }
        }
        if let Some(t) = schema["type"].as_str() {
            let ok = match t {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                "null" => value.is_null(),
                _ => true,
            };
            if !ok {
                errs.push(format!("{at} is {}, not {t}", kind(value)));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                errs.push(format!(
                    "{at} is {value}, not one of {}",
                    Value::Array(allowed.clone())
                ));
            }
        }
        if let Some(s) = value.as_str() {
            let n = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|m| n < m) {
                errs.push(format!("{at} is shorter than its minLength"));
            }
            if schema["maxLength"].as_u64().is_some_and(|m| n > m) {
                errs.push(format!("{at} is longer than its maxLength"));
            }
        }
        if let Some(n) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|m| n < m) {
                errs.push(format!("{at} is below its minimum"));
            }
            if schema["maximum"].as_f64().is_some_and(|m| n > m) {
                errs.push(format!("{at} is above its maximum"));
            }
        }
        if let Some(items) = value.as_array() {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    self.validate(s, v, &format!("{at}[{i}]"), errs);
                }
            }
        }
        if let Some(obj) = value.as_object() {
            for name in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    if !obj.contains_key(name) {
                        errs.push(format!("{at}.{name} is required but missing"));
                    }
                }
            }
            let props = schema["properties"].as_object();
            for (name, v) in obj {
                match props.and_then(|p| p.get(name)) {
                    Some(s) => self.validate(s, v, &format!("{at}.{name}"), errs),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errs.push(format!("{at}.{name} is not a property the schema has"))
                        }
                        Some(s @ Value::Object(_)) => {
                            self.validate(s, v, &format!("{at}.{name}"), errs)
                        }
                        _ => {}
                    },
                }
            }
        }
    }

    /// Checks a path or query parameter's text against its schema.
    fn validate_text(&self, schema: &Value, text: &str, at: &str, errs: &mut Vec<String>) {
        let schema = self.deref(schema);
        let value = match schema["type"].as_str() {
            Some("integer") => match text.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errs.push(format!("{at} is `{text}`, not an integer"));
                    return;
                }
            },
            Some("number") => match text.parse::<f64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errs.push(format!("{at} is `{text}`, not a number"));
                    return;
                }
            },
            Some("boolean") => match text {
                "true" => json!(true),
                "false" => json!(false),
                _ => {
                    errs.push(format!("{at} is `{text}`, not a boolean"));
                    return;
                }
            },
            // An array in a query is its items joined with commas (GitHub's `form`
            // style); checked item by item.
            Some("array") => Value::Array(
                text.split(',')
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
            _ => Value::String(text.to_string()),
        };
        self.validate(schema, &value, at, errs);
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// An answer a test queued for an operation's next request.
struct Queued {
    status: u16,
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    violations: Vec<String>,
    queued: HashMap<String, VecDeque<Queued>>,
    logs: HashMap<u64, String>,
}

/// A fake GitHub on 127.0.0.1, served from its own thread and runtime (so sync and async
/// tests alike can use it); it stops when dropped.
pub struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeGitHub {
    pub fn start() -> FakeGitHub {
        // Read before serving, so a first request does not wait on it.
        let _ = description();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake GitHub");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let served = state.clone();
        let shutdown = crate::upstream::serve_http1(listener, move |req| {
            let state = served.clone();
            async move { serve(req, addr, &state).await }
        });
        FakeGitHub {
            addr,
            state,
            _shutdown: shutdown,
        }
    }

    /// The API's base URL, `http://127.0.0.1:PORT`.
    pub fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request so far, the storage's included, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// What was wrong with the requests so far (and with answers tests queued), each
    /// naming its operation.
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Answers the next request for `operation_id` with `status`, `body` (`None`: the
    /// description's example for that status) and `headers`. A body that does not fit
    /// the description's schema for that answer (a wrong type, a value outside an enum,
    /// a property the schema forbids) is a violation; a status the operation does not
    /// list is one too, but for 429 and 5xx, which GitHub may answer to anything. Queued
    /// answers are used in order.
    pub fn answer_next(
        &self,
        operation_id: &str,
        status: u16,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) {
        let d = description();
        let op = d
            .operation(operation_id)
            .unwrap_or_else(|| panic!("the description has no operation {operation_id}"));
        let mut state = self.state();
        match d.response(op, status) {
            // GitHub answers any operation so when rate-limited or failing, though the
            // description lists these per operation only here and there.
            None if status == 429 || status >= 500 => {}
            None => state.violations.push(format!(
                "{operation_id}: a test queued a {status} answer, which the description \
                 does not list"
            )),
            Some(response) => {
                if let (Some(body), Some(schema)) =
                    (&body, response.pointer("/content/application~1json/schema"))
                {
                    let mut errs = Vec::new();
                    d.validate(schema, body, "answer", &mut errs);
                    // GitHub's own examples leave out properties their schemas require
                    // (`requested_teams[].type`): an answer made from one is checked for
                    // what it holds, not for what it lacks.
                    errs.retain(|e| !e.ends_with("is required but missing"));
                    for e in errs {
                        state.violations.push(format!(
                            "{operation_id}: the {status} answer a test queued: {e}"
                        ));
                    }
                }
            }
        }
        state
            .queued
            .entry(operation_id.to_string())
            .or_default()
            .push_back(Queued {
                status,
                body,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            });
    }

    /// The description's example answer to `operation_id` with `status`, for a test to
    /// change a field of.
    pub fn example(&self, operation_id: &str, status: u16) -> Value {
        let d = description();
        let op = d
            .operation(operation_id)
            .unwrap_or_else(|| panic!("the description has no operation {operation_id}"));
        d.example(op, status).unwrap_or_else(|| {
            panic!("the description has no JSON answer {status} for {operation_id}")
        })
    }

    /// What the storage serves as job `job_id`'s log.
    pub fn set_job_log(&self, job_id: u64, log: &str) {
        self.state().logs.insert(job_id, log.to_string());
    }
}

fn text_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp
}

/// Answers one request: checks it against its operation, records it, and answers with
/// a queued answer or the description's example.
async fn serve(
    req: Request<Incoming>,
    addr: SocketAddr,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let mut recorded = Recorded {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        operation: String::new(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        authorization: header("authorization"),
    };
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());

    if let Some(job) = path.strip_prefix(STORAGE) {
        recorded.operation = "_storage".into();
        let log = job
            .parse::<u64>()
            .ok()
            .map(|id| lock().logs.get(&id).cloned().unwrap_or(DEFAULT_LOG.into()));
        lock().requests.push(recorded);
        return match log {
            Some(log) => text_response(200, log),
            None => text_response(404, "no such log".into()),
        };
    }

    let d = description();
    let (op, path_params) = match d.find(&method, &path) {
        Ok(found) => found,
        Err(e) => {
            let mut s = lock();
            s.violations.push(e.clone());
            s.requests.push(recorded);
            return text_response(400, e);
        }
    };
    recorded.operation = op.id.clone();
    let mut errs = Vec::new();
    check_request(
        d,
        op,
        &path_params,
        &query,
        &parts.headers,
        &body,
        &mut errs,
    );
    if !errs.is_empty() {
        let errs: Vec<String> = errs
            .into_iter()
            .map(|e| format!("{} ({method} {}): {e}", op.id, op.template))
            .collect();
        let mut s = lock();
        s.violations.extend(errs.iter().cloned());
        s.requests.push(recorded);
        return text_response(400, errs.join("\n"));
    }
    let queued = {
        let mut s = lock();
        s.requests.push(recorded);
        s.queued.get_mut(&op.id).and_then(VecDeque::pop_front)
    };
    let (status, body, headers) = match queued {
        Some(q) => (q.status, q.body, q.headers),
        None => (d.success(op), None, Vec::new()),
    };
    let body = body.or_else(|| d.example(op, status));
    let mut resp = match &body {
        Some(b) => {
            let mut r = text_response(status, b.to_string());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        None => text_response(status, String::new()),
    };
    if op.id == JOB_LOGS && status == 302 {
        let job = path_params
            .iter()
            .find(|(k, _)| k == "job_id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let location = format!("http://{addr}{STORAGE}{job}");
        if let Ok(v) = location.parse() {
            resp.headers_mut().insert(hyper::header::LOCATION, v);
        }
    }
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// What is wrong with a request for `op`: its path and query parameters, its body, and
/// the headers GitHub requires.
fn check_request(
    d: &Description,
    op: &Operation,
    path_params: &[(String, String)],
    query: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
    errs: &mut Vec<String>,
) {
    let params = d.parameters(op);
    for (name, value) in path_params {
        match params
            .iter()
            .find(|p| p["in"] == "path" && p["name"] == name.as_str())
        {
            Some(p) => {
                d.validate_text(&p["schema"], value, &format!("path parameter {name}"), errs)
            }
            None => errs.push(format!("path parameter {name} is not described")),
        }
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (name, value) in &pairs {
        match params
            .iter()
            .find(|p| p["in"] == "query" && p["name"] == name.as_str())
        {
            Some(p) => d.validate_text(
                &p["schema"],
                value,
                &format!("query parameter {name}"),
                errs,
            ),
            None => errs.push(format!(
                "query parameter {name} is not one the operation has"
            )),
        }
    }
    for p in &params {
        if p["in"] == "query" && p["required"] == true {
            let name = p["name"].as_str().unwrap_or_default();
            if !pairs.iter().any(|(k, _)| k == name) {
                errs.push(format!("query parameter {name} is required but missing"));
            }
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match header("authorization") {
        Some(a)
            if a.strip_prefix("Bearer ")
                .is_some_and(|t| !t.trim().is_empty()) => {}
        Some(_) => errs.push("the Authorization header is not `Bearer <token>`".into()),
        None => errs.push("the Authorization header is missing".into()),
    }
    match header("x-github-api-version") {
        Some(v) if !v.trim().is_empty() => {}
        _ => errs.push("the X-GitHub-Api-Version header is missing".into()),
    }
    let request_body = op.op.get("requestBody").map(|b| d.deref(b));
    let schema = request_body.and_then(|b| b.pointer("/content/application~1json/schema"));
    match (schema, body.is_empty()) {
        (None, true) => {}
        (None, false) => errs.push("the operation takes no JSON body, yet one was sent".into()),
        (Some(_), true) => {
            if request_body.is_some_and(|b| b["required"] == true) {
                errs.push("the operation requires a JSON body".into());
            }
        }
        (Some(schema), false) => {
            let is_json = header("content-type").is_some_and(|c| c.starts_with("application/json"));
            if !is_json {
                errs.push("the body is not sent as application/json".into());
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => d.validate(schema, &v, "body", errs),
                Err(e) => errs.push(format!("the body is not JSON: {e}")),
            }
        }
    }
}

/// GitHub's example deliveries of webhook event `event` (`issue_comment`, ...).
pub fn webhook_examples(event: &str) -> Vec<Value> {
    static INDEX: OnceLock<Vec<Value>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let (name, version) = WEBHOOKS_PACKAGE;
        let file = crate::projects::npm_file(name, version, "api.github.com/index.json");
        let text = std::fs::read(&file).expect("read the webhook examples");
        serde_json::from_slice(&text).expect("parse the webhook examples")
    });
    index
        .iter()
        .find(|e| e["name"] == event)
        .and_then(|e| e["examples"].as_array().cloned())
        .unwrap_or_else(|| panic!("the webhook examples have no event {event}"))
}

/// The `X-Hub-Signature-256` GitHub sends for `body` under `secret`: `sha256=<hex>` of
/// its HMAC-SHA256.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests the fake must refuse, each with the words its violation must hold.
    #[test]
    fn requests_outside_the_description_are_refused() {
        let gh = FakeGitHub::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let send = |method: &str, path: &str, body: Option<&str>, auth: bool| {
            rt.block_on(async {
                let tcp = tokio::net::TcpStream::connect(gh.addr).await.unwrap();
                let (mut s, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "x")
                    .header("content-type", "application/json");
                if auth {
                    req = req
                        .header("authorization", "Bearer t")
                        .header("x-github-api-version", "2022-11-28");
                }
                let req = req
                    .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
                    .unwrap();
                s.send_request(req).await.unwrap().status().as_u16()
            })
        };
        let check = |method, path, body, auth, expected: Option<&str>| {
            let before = gh.violations().len();
            let status = send(method, path, body, auth);
            let new = gh.violations()[before..].to_vec();
            match expected {
                None => assert!(new.is_empty() && status < 400, "{method} {path}: {new:?}"),
                Some(words) => {
                    assert_eq!(status, 400, "{method} {path}");
                    assert!(
                        new.iter().any(|v| v.contains(words)),
                        "{method} {path}: {new:?}"
                    );
                }
            }
        };
        check("GET", "/repos/o/r", None, true, None);
        check(
            "GET",
            "/repos/o/r",
            None,
            false,
            Some("Authorization header is missing"),
        );
        check(
            "GET",
            "/repos/o/r/nothing/here",
            None,
            true,
            Some("no operation"),
        );
        check(
            "PATCH",
            "/repos/o/r/pulls",
            None,
            true,
            Some("no operation"),
        );
        check(
            "GET",
            "/repos/o/r/pulls/abc",
            None,
            true,
            Some("not an integer"),
        );
        check(
            "GET",
            "/repos/o/r/pulls?state=opened",
            None,
            true,
            Some("not one of"),
        );
        check(
            "GET",
            "/repos/o/r/pulls?colour=red",
            None,
            true,
            Some("colour"),
        );
        check(
            "POST",
            "/repos/o/r/issues/1/comments",
            Some(r#"{"text":"x"}"#),
            true,
            Some("body.body is required"),
        );
        check(
            "POST",
            "/repos/o/r/pulls/1/reviews",
            Some(r#"{"body":"x","event":"LGTM"}"#),
            true,
            Some("body.event"),
        );
        check(
            "POST",
            "/repos/o/r/pulls",
            Some(r#"{"title":"t","head":"h","base":"b","draft":"yes"}"#),
            true,
            Some("body.draft is a string, not boolean"),
        );
        check(
            "POST",
            "/repos/o/r/pulls",
            Some("{"),
            true,
            Some("not JSON"),
        );
        check(
            "POST",
            "/repos/o/r/issues/1/comments",
            Some(r#"{"body":"x"}"#),
            true,
            None,
        );
        assert!(gh.requests().iter().any(|r| r.operation == "pulls/create"));
    }

    #[test]
    fn a_queued_answer_must_fit_the_description() {
        let gh = FakeGitHub::start();
        gh.answer_next("pulls/get", 200, Some(json!({"number": "one"})), &[]);
        assert!(
            gh.violations().iter().any(|v| v.contains("pulls/get")),
            "{:?}",
            gh.violations()
        );
        let gh = FakeGitHub::start();
        gh.answer_next("pulls/get", 418, None, &[]);
        assert!(gh.violations().iter().any(|v| v.contains("418")));
        let gh = FakeGitHub::start();
        let mut pull = gh.example("pulls/get", 200);
        pull["number"] = json!(7);
        gh.answer_next("pulls/get", 200, Some(pull), &[]);
        assert_eq!(gh.violations(), Vec::<String>::new());
    }

    #[test]
    fn error_answers_are_made_from_their_schema() {
        let gh = FakeGitHub::start();
        let e = gh.example("pulls/create", 422);
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        assert!(e.get("documentation_url").is_some(), "{e}");
    }

    #[test]
    fn signatures_are_githubs() {
        // GitHub's documented example.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
