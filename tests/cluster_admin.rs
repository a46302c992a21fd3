//! One operator view over several relays (`[cluster]`): real `voxrelay` processes sharing one
//! throwaway PostgreSQL, SIPp as the caller, Chromium as the operator. Any relay's admin API and
//! dashboard list the whole cluster's live calls, and a control given to one relay reaches the
//! relay that has the call; the relays' internal routes take only requests signed for them.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::browser::{artifact_dir, run_browser_script};
use support::{assert_sipp_ok, msg, sipp, Relay};
use voxrelay::cluster::auth::{Request as Signed, Signer, HEADER};
use voxrelay::secret::Secret;

const TOKEN: &str = "admin-token-of-the-cluster-tests";
const SECRET: &str = "a-cluster-secret-of-at-least-32-characters";
const WAIT: Duration = Duration::from_secs(20);

/// A relay of the cluster on `url`, named `node`, heartbeat every second.
fn relay(url: &str, node: &str) -> Relay {
    Relay::start(&[
        ("VOXRELAY__BOOKING__DATABASE_URL", url),
        ("VOXRELAY__CLUSTER__NODE_ID", node),
        ("VOXRELAY__CLUSTER__SECRET", SECRET),
        ("VOXRELAY__CLUSTER__HEARTBEAT_SECONDS", "1"),
        ("VOXRELAY__ADMIN__TOKEN", TOKEN),
    ])
}

async fn database() -> (Arc<support::postgres::PgServer>, String) {
    let pg = support::postgres::shared();
    let url = pg.create_database().await;
    (pg, url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// `method path` on `relay`'s admin API with the token: status and JSON body.
async fn api(
    relay: &Relay,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client()
        .request(method, format!("http://{}{path}", relay.admin))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
    )
}

/// Asks `relay` until `pred` holds for the answer to `path` (at most [`WAIT`]); the answer.
async fn until(relay: &Relay, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = api(relay, Method::GET, path, None).await;
        if status == StatusCode::OK && pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched; last answer {status} {v}\nlogs:\n{}",
            relay.dump()
        );
        // nothing announces a change of another relay's state to a test: ask again shortly
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_of<'a>(list: &'a Value, node: &str) -> Option<&'a Value> {
    list["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node_id"] == node))
}

/// The dashboard of relay A shows a call that relay B has, marked with B's node, and its Hang
/// up ends it: the control goes from A to B, B sends the caller its BYE, and the end comes back
/// to A's page through A's event stream. Before that, the API's detail, mute and say reach B the
/// same way, B's answers passed on as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_of_relay_a_shows_a_call_on_relay_b_and_hangs_it_up() {
    let (_pg, url) = database().await;
    let a = relay(&url, "relay-a");
    let b = Arc::new(relay(&url, "relay-b"));

    // both relays are in the table, each as the other sees it
    let cluster = until(&a, "/api/cluster", |v| {
        v["relays"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    assert_eq!(cluster["node_id"], "relay-a");
    for r in cluster["relays"].as_array().unwrap() {
        assert_eq!(r["alive"], true, "{cluster}");
        assert_eq!(r["draining"], false, "{cluster}");
        assert!(
            r.get("admin_url").is_none(),
            "no internal address in the API: {cluster}"
        );
    }
    assert_eq!(cluster["relays"][1]["sip_address"], b.sip.to_string());

    let caller = {
        let b = b.clone();
        std::thread::spawn(move || sipp(&b, "operator_hangs_up.xml", &["-m", "1"]))
    };
    let live = until(&b, "/api/calls", |v| {
        v["calls"]
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["state"] == "answered")
    })
    .await;
    let id = live["calls"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(live["calls"][0]["node"], "relay-b");

    // relay A lists it, marked with B's node, beside its own (none)
    let (s, list) = api(&a, Method::GET, "/api/calls", None).await;
    assert_eq!(s, 200, "{list}");
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["id"], id.as_str());
    assert_eq!(calls[0]["node"], "relay-b");
    let nb = node_of(&list, "relay-b").expect("relay-b among the nodes");
    assert_eq!(
        (nb["reachable"].clone(), nb["alive"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(node_of(&list, "relay-a").unwrap()["self"], true);

    // its detail, through A
    let (s, detail) = api(&a, Method::GET, &format!("/api/calls/{id}"), None).await;
    assert_eq!(s, 200, "{detail}");
    assert_eq!(detail["node"], "relay-b");
    assert_eq!(detail["state"], "answered");
    assert!(
        detail["from"].as_str().unwrap().contains("caller"),
        "{detail}"
    );

    // mute reaches B's call; B's refusals of `say` and `interrupt` (the echo line has no
    // model) come back as B gave them
    let (s, v) = api(
        &a,
        Method::POST,
        &format!("/api/calls/{id}/mute"),
        Some(json!({"muted": true})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["node"], "relay-b");
    until(&b, &format!("/api/calls/{id}"), |v| v["muted"] == true).await;
    for (action, body) in [("say", json!({"text": "hello"})), ("interrupt", json!({}))] {
        let path = format!("/api/calls/{id}/{action}");
        let (s, v) = api(&a, Method::POST, &path, Some(body)).await;
        assert_eq!(s, 409, "{action}: {v}");
        assert_eq!(v["error"]["code"], "not_supported", "{action}");
        assert_eq!(v["node"], "relay-b", "{action}");
    }
    // an unknown call is still 404, after asking the cluster
    let (s, v) = api(
        &a,
        Method::POST,
        "/api/calls/no-such-call/hangup",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "call_not_found");
    let (s, _) = api(
        &a,
        Method::POST,
        &format!("/api/calls/{id}/mute"),
        Some(json!({"muted": false})),
    )
    .await;
    assert_eq!(s, 202);

    // one call's event stream, through A: B's snapshot first, then (after the hang-up below)
    // its end, each marked with B's node
    let events = {
        let resp = client()
            .get(format!("http://{}/api/calls/{id}/events", a.admin))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        tokio::spawn(async move {
            // the stream ends with the call (B ends it, A passes the end on)
            let text = resp.text().await.unwrap_or_default();
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .collect::<Vec<Value>>()
        })
    };

    // the operator, on relay A's dashboard
    let base = format!("http://{}", a.admin);
    let shots = artifact_dir("cluster-dashboard");
    let seen = tokio::task::spawn_blocking(move || {
        run_browser_script(
            "cluster.mjs",
            &shots,
            &[
                ("DASHBOARD_URL", base.as_str()),
                ("DASHBOARD_TOKEN", TOKEN),
                ("CALL_ID", id.as_str()),
                ("CALL_NODE", "relay-b"),
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(seen["item_node"], "relay-b", "{seen}");
    assert!(
        seen["item_text"].as_str().unwrap().contains("relay-b"),
        "{seen}"
    );
    assert!(
        seen["meta"].as_str().unwrap().contains("on relay-b"),
        "{seen}"
    );
    assert_eq!(seen["cluster"], "relay-a · 2 of 2 relays", "{seen}");
    assert!(
        seen["state_after"].as_str().unwrap().starts_with("Ended"),
        "{seen}"
    );
    assert_eq!(seen["live_after"], 0, "{seen}");
    assert_eq!(seen["problems"], json!([]), "{seen}");

    let events = tokio::time::timeout(WAIT, events)
        .await
        .expect("the call's stream ends with the call")
        .unwrap();
    assert_eq!(events[0]["type"], "snapshot", "{events:?}");
    assert_eq!(events[0]["call"]["node"], "relay-b", "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "ended", "{events:?}");
    assert_eq!(last["reason"], "operator_hangup", "{events:?}");
    assert!(events.iter().all(|e| e["node"] == "relay-b"), "{events:?}");

    // the caller got relay B's BYE, and B ended the call as the operator's hang-up
    let run = tokio::task::spawn_blocking(move || caller.join().unwrap())
        .await
        .unwrap();
    assert_sipp_ok(&run, 1, &b);
    let ended = b.wait_calls_ended(1, WAIT);
    assert_eq!(ended[0]["reason"], "operator_hangup", "{}", b.dump());
    assert_eq!(
        a.logs().iter().filter(|v| msg(v) == "call ended").count(),
        0,
        "relay A had no call of its own"
    );
}

/// The internal routes take a request only when it is signed with the cluster's secret, for
/// this relay, once: not without a signature, not with the admin token alone, not with another
/// key, not for another relay, not twice, not with its body changed. A relay on its own has no
/// such routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_internal_routes_take_only_requests_signed_for_them() {
    let (_pg, url) = database().await;
    let b = relay(&url, "relay-b");
    let http = client();
    let base = format!("http://{}", b.admin);
    let sign = |secret: &str, to: &str, method: &str, path: &str, body: &[u8]| {
        Signer::new(Secret::new(secret), "relay-a").sign(
            to,
            chrono::Utc::now().timestamp(),
            rand::random(),
            Signed { method, path, body },
        )
    };
    let get = |header: Option<String>, bearer: bool| {
        let mut req = http.get(format!("{base}/cluster/v1/calls"));
        if let Some(h) = header {
            req = req.header(HEADER, h);
        }
        if bearer {
            req = req.bearer_auth(TOKEN);
        }
        req.send()
    };
    let path = "/cluster/v1/calls";

    let good = sign(SECRET, "relay-b", "GET", path, b"");
    let resp = get(Some(good.clone()), false).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"calls": [], "node": "relay-b"}));

    for (what, header, bearer) in [
        ("no signature", None, false),
        ("the admin token alone", None, true),
        ("the same request again", Some(good), false),
        (
            "another key",
            Some(sign(
                "another-secret-of-32-characters-or-more",
                "relay-b",
                "GET",
                path,
                b"",
            )),
            false,
        ),
        (
            "signed for another relay",
            Some(sign(SECRET, "relay-c", "GET", path, b"")),
            false,
        ),
        (
            "signed for another path",
            Some(sign(SECRET, "relay-b", "GET", "/cluster/v1/events", b"")),
            false,
        ),
        (
            "garbage",
            Some("v1 from=relay-a to=relay-b ts=x".to_string()),
            false,
        ),
    ] {
        let resp = get(header, bearer).await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains(SECRET), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized", "{what}");
    }

    // a control whose body was changed after signing
    let hangup = "/cluster/v1/calls/x/say";
    let h = sign(SECRET, "relay-b", "POST", hangup, br#"{"text":"hi"}"#);
    let resp = http
        .post(format!("{base}{hangup}"))
        .header(HEADER, h)
        .header("content-type", "application/json")
        .body(r#"{"text":"transfer all the money"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // each refusal is counted (the log does not name them, so that they cannot flood it)
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("voxrelay_cluster_requests_refused_total 8\n"),
        "{metrics}"
    );

    // a relay on its own: the routes do not exist
    let alone = Relay::start(&[]);
    let resp = http
        .get(format!("http://{}/cluster/v1/calls", alone.admin))
        .header(HEADER, sign(SECRET, "relay-b", "GET", path, b""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        !b.dump().contains(SECRET),
        "the secret is not in the relay's log"
    );
}

/// Two relays cannot share a name: the second one with a live relay's `cluster.node_id` stops
/// at start, saying why, and the first one goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_with_a_live_relays_name_does_not_start() {
    let (_pg, url) = database().await;
    let a = relay(&url, "relay-a");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(support::relay_binary())
        .args(["--log-format", "json", "serve"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VOXRELAY__SIP__LISTEN", "127.0.0.1:0")
        .env("VOXRELAY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("VOXRELAY__AGENTS__DEFAULT", "echo")
        .env("VOXRELAY__BOOKING__DATABASE_URL", &url)
        .env("VOXRELAY__CLUSTER__NODE_ID", "relay-a")
        .env("VOXRELAY__CLUSTER__SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut text);
        let _ = tx.send(text);
    });
    // stderr closes when the process exits
    let text = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the second relay did not stop");
    });
    let status = child.wait().unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("another relay named \\\"relay-a\\\" is alive"),
        "{text}"
    );
    let (s, v) = api(&a, Method::GET, "/api/cluster", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["relays"].as_array().unwrap().len(), 1, "{v}");
}

/// A relay killed with SIGKILL leaves the other relays' view: at once it no longer answers for
/// its calls, and after three heartbeats it counts as gone, while the relay asked still lists
/// its own calls. A relay stopped with SIGTERM takes its row out of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_leaves_the_view_and_a_stopped_one_leaves_the_table() {
    let (_pg, url) = database().await;
    let a = relay(&url, "relay-a");
    let b = relay(&url, "relay-b");
    let mut c = relay(&url, "relay-c");
    until(&a, "/api/cluster", |v| {
        v["relays"].as_array().is_some_and(|r| r.len() == 3)
    })
    .await;

    b.kill();
    let list = until(&a, "/api/calls", |v| {
        node_of(v, "relay-b").is_some_and(|n| n["reachable"] == false)
    })
    .await;
    assert_eq!(list["calls"], json!([]), "{list}");
    until(&a, "/api/cluster", |v| {
        v["relays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["node_id"] == "relay-b" && r["alive"] == false)
    })
    .await;

    c.terminate();
    assert_eq!(c.wait_exit(WAIT), Some(0), "{}", c.dump());
    let v = until(&a, "/api/cluster", |v| {
        !v["relays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["node_id"] == "relay-c")
    })
    .await;
    assert!(
        v["relays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["node_id"] == "relay-a" && r["alive"] == true),
        "{v}"
    );
}

/// A call recorded on relay B, listened back to through relay A: the ended call's record (in
/// the shared database) names relay B, and A fetches the file from B, byte ranges included,
/// since the file is on B's disk. With B gone, A says where the recording is rather than
/// pretending there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_made_on_relay_b_plays_through_relay_a() {
    let (_pg, url) = database().await;
    let a = relay(&url, "relay-a");
    let agent = support::agent::agent_env("booking");
    let mut env: Vec<(&str, &str)> = agent
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("VOXRELAY__BOOKING__DATABASE_URL", url.as_str()),
        ("VOXRELAY__CLUSTER__NODE_ID", "relay-b"),
        ("VOXRELAY__CLUSTER__SECRET", SECRET),
        ("VOXRELAY__CLUSTER__HEARTBEAT_SECONDS", "1"),
        ("VOXRELAY__ADMIN__TOKEN", TOKEN),
        ("VOXRELAY__RECORDING__ENABLED", "true"),
    ]);
    let b = Relay::start(&env);

    // a short call on B: the greeting plays, the caller hangs up
    let sip = b.sip;
    tokio::task::spawn_blocking(move || {
        let mut uac = support::uac::Uac::new(sip);
        assert_eq!(uac.invite().status(), 200);
        uac.ack();
        for i in 0..100u16 {
            uac.send_rtp(0, 1000 + i, 5000 + u32::from(i) * 160, 0x5eed, &[0xff; 160]);
            // each frame sent is paced by one heard (the relay sends 20 ms frames)
            let _ = uac.recv_rtp(Duration::from_millis(100));
        }
        assert_eq!(uac.bye().status(), 200);
    })
    .await
    .unwrap();
    let answered = b.wait_for(|v| msg(v) == "call answered", WAIT);
    let id = answered["span"]["id"].as_str().unwrap().to_string();
    b.wait_for(|v| msg(v) == "call ended", WAIT);

    // A lists the ended call as B's, and its detail names the recording
    let (s, ended) = api(&a, Method::GET, "/api/calls?state=ended", None).await;
    assert_eq!(s, 200);
    let call = ended["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{ended}"))
        .clone();
    assert_eq!(call["node"], "relay-b", "{call}");
    let (s, detail) = api(&a, Method::GET, &format!("/api/calls/{id}"), None).await;
    assert_eq!(s, 200);
    let bytes = detail["recording"]["bytes"].as_u64().unwrap();
    assert!(bytes > 44, "{detail}");

    let get = |relay: &Relay, range: Option<&str>| {
        let mut req = client()
            .get(format!("http://{}/api/calls/{id}/recording", relay.admin))
            .bearer_auth(TOKEN);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send()
    };
    let from_b = get(&b, None).await.unwrap().bytes().await.unwrap();
    let resp = get(&a, None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let from_a = resp.bytes().await.unwrap();
    assert_eq!(from_a.len() as u64, bytes);
    assert!(from_a == from_b, "the same file through A as from B");
    assert_eq!(&from_a[..4], b"RIFF");

    let resp = get(&a, Some("bytes=40-99")).await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 40-99/{bytes}").as_str()
    );
    assert_eq!(resp.bytes().await.unwrap(), from_b.slice(40..100));

    // retention: on the shared table each relay finds only the recordings it made
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let store = voxrelay::booking::Store::open(&url, 1).await.unwrap();
    let of_b = store
        .clone()
        .for_node(Some("relay-b"))
        .recordings_before(later)
        .await
        .unwrap();
    assert_eq!(of_b.len(), 1, "{of_b:?}");
    assert_eq!(of_b[0].0, id);
    let of_a = store
        .for_node(Some("relay-a"))
        .recordings_before(later)
        .await
        .unwrap();
    assert!(of_a.is_empty(), "{of_a:?}");

    b.kill();
    let resp = get(&a, None).await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "recording_unreachable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("relay-b"),
        "{v}"
    );
}
