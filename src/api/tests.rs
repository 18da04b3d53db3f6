//! The API over real HTTP on 127.0.0.1: health states, and the OpenAPI description kept in
//! step with the router and the JSON it answers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{ApiState, ROUTES, view};
use crate::clock::Clock;
use crate::config::parse_str;
use crate::jobs::{Actions, Services};
use crate::metrics::Metrics;
use crate::scheduler::runner::Runner;
use crate::state::history::History;
use crate::status::Board;

fn state(board: Arc<Board>) -> ApiState {
    let services = Arc::new(Services::new(Clock::System, "unused".into(), Default::default()));
    ApiState {
        board,
        runner: Runner::new(Actions, services, History::disabled(), None),
        clock: Clock::System,
        state_dir: "unused".into(),
        guard: Arc::new(super::auth::Guard::open()),
        cluster: None,
        dashboard: true,
        rates: Default::default(),
    }
}

async fn serve(board: Arc<Board>) -> String {
    let state = state(board);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let listener = super::server::Listener::Tcp(listener);
    tokio::spawn(super::serve(listener, state, 64, tokio_util::sync::CancellationToken::new()));
    base
}

fn board() -> Arc<Board> {
    let toml = "[jobs.a]\nevery = \"1m\"\naction = \"noop\"\n[jobs.b]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\naction = \"command\"\ncommand = \"true\"\nenabled = false\n";
    let config = parse_str(toml, Path::new("t.toml"), Path::new(".")).expect("valid");
    Board::new(config.jobs, Metrics::default())
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[tokio::test]
async fn healthz_is_ok_degraded_or_stuck() {
    let board = board();
    let base = serve(board.clone()).await;
    assert_eq!(get(&format!("{base}/healthz")).await, (200, serde_json::json!({ "status": "ok" })));

    board.health.reload_failed.store(true, std::sync::atomic::Ordering::Relaxed);
    let (code, body) = get(&format!("{base}/healthz")).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("degraded")));
    assert_eq!(body["reason"], "the last config reload failed; the previous config is still running");

    board.health.set_overdue(std::time::Duration::from_secs(30));
    let (code, body) = get(&format!("{base}/healthz")).await;
    assert_eq!((code, body["status"].as_str()), (503, Some("stuck")));
    assert!(body["reason"].as_str().is_some_and(|r| r.starts_with("the timer loop should have woken 30.")), "{body}");
}

#[tokio::test]
async fn unknown_endpoints_and_methods_answer_json() {
    let base = serve(board()).await;
    assert_eq!(get(&format!("{base}/nope")).await, (404, serde_json::json!({ "error": "no such endpoint" })));
    let resp = reqwest::Client::new().delete(format!("{base}/api/jobs/a")).send().await.expect("answer");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.json::<Value>().await.expect("json"), serde_json::json!({ "error": "method not allowed here" }));
}

#[tokio::test]
async fn rejected_parameters_answer_json_too() {
    let base = serve(board()).await;
    let (code, body) = get(&format!("{base}/api/jobs/a/runs?limit=1&limit=2")).await;
    assert_eq!(
        (code, body),
        (400, serde_json::json!({ "error": "limit must be given once, a whole number from 1 to 1000" }))
    );
    let (code, body) = get(&format!("{base}/api/jobs/%FF")).await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().is_some_and(|e| e.starts_with("invalid job name in the path: ")), "{body}");
    let resp = reqwest::Client::new().post(format!("{base}/api/jobs/%FF/run")).send().await.expect("answer");
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.json::<Value>().await.expect("json")["error"].is_string());
}

fn openapi() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn openapi_lists_exactly_the_routes() {
    let spec = openapi();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| ops.as_object().expect("ops").keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, served);
}

/// The router serves every route of [`ROUTES`] with its method and no other: the list the
/// OpenAPI test checks is the list that is served.
#[tokio::test]
async fn the_router_serves_exactly_the_listed_routes() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    // Pausing saves to the state folder: a temporary one, not the working directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let app = super::router(ApiState { state_dir: dir.path().to_path_buf(), ..state(board()) });
    let ask = |method: &str, path: &str| {
        let request = Request::builder()
            .method(method)
            .uri(path.replace("{name}", "a"))
            .header("host", "127.0.0.1")
            .body(Body::empty())
            .expect("request");
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.expect("answer");
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // The fallback's answer; a route may answer 404 too (no such job, no cluster).
    let unrouted = (404, r#"{"error":"no such endpoint"}"#.to_string());
    for (method, path) in ROUTES {
        let (status, body) = ask(method, path).await;
        assert!(status != 405 && (status, body.clone()) != unrouted, "{method} {path}: {status} {body}");
        let other = if *method == "GET" { "POST" } else { "GET" };
        assert_eq!(ask(other, path).await.0, 405, "{other} {path}");
    }
    assert_eq!(ask("GET", "/api/jobs/a/other").await, unrouted);
    assert_eq!(ask("GET", "/api").await, unrouted);
}

/// Keys of a schema: `(required, all properties)`.
fn schema_keys(spec: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = &spec["components"]["schemas"][name];
    let required =
        s["required"].as_array().expect("required").iter().map(|v| v.as_str().expect("str").to_string()).collect();
    let all = s["properties"].as_object().expect("properties").keys().cloned().collect();
    (required, all)
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

#[test]
fn openapi_schemas_match_what_the_api_answers() {
    let spec = openapi();
    let board = board();
    let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
    board.jobs().jobs[0].status.finished(t, Some(t), t, crate::job::RunOutcome::Success, None);
    let job = serde_json::to_value(view(&board.jobs().jobs[0])).expect("json");
    let (required, all) = schema_keys(&spec, "Job");
    assert_eq!(keys(&job), all);
    assert_eq!(required, all, "every Job field is always present (null when unknown)");
    assert_eq!(keys(&job["last_run"]), schema_keys(&spec, "LastRun").1);

    let run = crate::state::history::RunRecord {
        job: "a".into(),
        fire_id: "x".into(),
        scheduled_at: t,
        started_at: Some(t),
        finished_at: t,
        outcome: crate::job::RunOutcome::Success,
        attempt: 1,
        exit_code: None,
        error: None,
        details: Default::default(),
    };
    assert_eq!(keys(&serde_json::to_value(run).expect("json")), schema_keys(&spec, "Run").1);
    let outcomes: Vec<&str> = spec["components"]["schemas"]["Outcome"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let all: Vec<&str> = crate::job::RunOutcome::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(outcomes, all);
    let actions: Vec<&str> = spec["components"]["schemas"]["Job"]["properties"]["action"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(actions, crate::jobs::ACTIONS);
}
