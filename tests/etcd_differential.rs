//! Differential test: the same `/v3` requests to a real etcd 3.4 and to
//! tenure, and the replies compared once the fields that legitimately
//! differ are normalized: the cluster and member IDs and the raft term, the
//! lease IDs each server picks, the remaining TTL within a second (the two
//! servers are asked a moment apart), and the wording of JSON syntax errors
//! (Go's parser and ours word them differently; the code and status must
//! match). Lists etcd gives in map order (leases, a lease's keys) are
//! compared as sets.
//!
//! etcd comes from Debian's `etcd-server` package (see `common::etcd`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::etcd::start_etcd;
use common::{TestServer, PATIENCE};
use serde_json::{json, Value};
use tenure::clock::SystemClock;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// One server under test, with the lease IDs it picked, by placeholder.
struct Side {
    name: &'static str,
    endpoint: String,
    leases: HashMap<String, String>,
}

impl Side {
    /// The request body with `$L1`-style placeholders replaced by this
    /// server's lease IDs.
    fn body(&self, template: &str) -> String {
        let mut body = template.to_owned();
        let mut names: Vec<&String> = self.leases.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len())); // $L10 before $L1
        for name in names {
            body = body.replace(&format!("${name}"), &self.leases[name]);
        }
        body
    }

    /// Replaces this server's lease IDs in a reply by their placeholders.
    fn normalize(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some((name, _)) = self.leases.iter().find(|(_, id)| *id == s) {
                    *s = format!("${name}");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.normalize(v)),
            Value::Object(map) => {
                if let Some(header) = map.get_mut("header").and_then(Value::as_object_mut) {
                    for field in ["cluster_id", "member_id", "raft_term"] {
                        if header.contains_key(field) {
                            header.insert(field.to_owned(), json!("N"));
                        }
                    }
                }
                let is_parse_error = map.get("code") == Some(&json!(3))
                    && map
                        .get("message")
                        .and_then(Value::as_str)
                        .is_some_and(|m| !m.starts_with("etcdserver:"));
                if is_parse_error {
                    map.insert("error".into(), json!("(malformed request)"));
                    map.insert("message".into(), json!("(malformed request)"));
                }
                map.values_mut().for_each(|v| self.normalize(v));
                // etcd lists leases, and a lease's keys, in map order.
                for list in ["leases", "keys"] {
                    if let Some(Value::Array(items)) = map.get_mut(list) {
                        items.sort_by_key(|l| l.to_string());
                    }
                }
            }
            _ => {}
        }
    }
}

struct Diff {
    http: reqwest::Client,
    etcd: Side,
    tenure: Side,
    mismatches: Vec<String>,
    next_lease: usize,
}

/// A reply: the status and the JSON values of the body (keep-alive answers
/// one value a line).
type Reply = (u16, Vec<Value>);

impl Diff {
    async fn send(&self, side: &Side, path: &str, template: &str) -> Reply {
        let res = self
            .http
            .post(format!("{}{path}", side.endpoint))
            .body(side.body(template))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {path}: {e}", side.name));
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let values = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|_| vec![json!({ "not json": text })]);
        (status, values)
    }

    /// Sends the request to both and records any difference.
    async fn check(&mut self, what: &str, path: &str, template: &str) -> (Reply, Reply) {
        let (mut a, mut b) = (
            self.send(&self.etcd, path, template).await,
            self.send(&self.tenure, path, template).await,
        );
        a.1.iter_mut().for_each(|v| self.etcd.normalize(v));
        b.1.iter_mut().for_each(|v| self.tenure.normalize(v));
        if path.ends_with("timetolive") {
            tolerate_a_second(&a.1, &mut b.1);
        }
        if a != b {
            self.mismatches.push(format!(
                "{what}: POST {path} {template}\n   etcd:   {a:?}\n   tenure: {b:?}"
            ));
        }
        (a, b)
    }

    /// Grants on both with the server picking the ID, and names the IDs.
    async fn grant(&mut self, what: &str, ttl: i64) -> String {
        let body = format!(r#"{{"TTL": {ttl}}}"#);
        let (a, b) = (
            self.send(&self.etcd, "/v3/lease/grant", &body).await,
            self.send(&self.tenure, "/v3/lease/grant", &body).await,
        );
        self.next_lease += 1;
        let name = format!("L{}", self.next_lease);
        for (side, reply) in [(&mut self.etcd, &a), (&mut self.tenure, &b)] {
            let id = reply
                .1
                .first()
                .and_then(|v| v["ID"].as_str())
                .unwrap_or_else(|| panic!("{what}: {} grant: {reply:?}", side.name));
            side.leases.insert(name.clone(), id.to_owned());
        }
        let (mut a, mut b) = (a, b);
        a.1.iter_mut().for_each(|v| self.etcd.normalize(v));
        b.1.iter_mut().for_each(|v| self.tenure.normalize(v));
        if a != b {
            self.mismatches
                .push(format!("{what}: grant TTL {ttl}\n   etcd:   {a:?}\n   tenure: {b:?}"));
        }
        format!("${name}")
    }

    /// Waits until `path` answers the same on both sides (for expiry,
    /// which each server does on its own schedule), then checks it.
    async fn converge(&mut self, what: &str, path: &str, template: &str, done: impl Fn(&Reply) -> bool) {
        let started = Instant::now();
        loop {
            let a = self.send(&self.etcd, path, template).await;
            let b = self.send(&self.tenure, path, template).await;
            if done(&a) && done(&b) {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{what}: no convergence: etcd {a:?} tenure {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.check(what, path, template).await;
    }
}

/// The remaining TTL is read a moment apart on the two servers: accept a
/// difference of one second.
fn tolerate_a_second(etcd: &[Value], tenure: &mut [Value]) {
    for (a, b) in etcd.iter().zip(tenure.iter_mut()) {
        let ttl = |v: &Value| v["TTL"].as_str().and_then(|t| t.parse::<i64>().ok());
        if let (Some(x), Some(y)) = (ttl(a), ttl(b)) {
            if x > 0 && (x - y).abs() <= 1 {
                b["TTL"] = a["TTL"].clone();
            }
        }
    }
}

#[actix_rt::test]
async fn tenure_answers_like_etcd() {
    let Some(etcd) = start_etcd().await else { return };
    let tenure = TestServer::start_with(|c| c.clock = Arc::new(SystemClock)).await;
    let mut d = Diff {
        http: reqwest::Client::new(),
        etcd: Side {
            name: "etcd",
            endpoint: etcd.endpoint.clone(),
            leases: HashMap::new(),
        },
        tenure: Side {
            name: "tenure",
            endpoint: tenure.base.clone(),
            leases: HashMap::new(),
        },
        mismatches: Vec::new(),
        next_lease: 0,
    };
    let (key1, key2, key3, key5, key6) = (b64("key1"), b64("key2"), b64("key3"), b64("key5"), b64("key6"));
    let hello = b64("hello");

    // The seed transcript (etcdctl's lease walkthrough), through /v3.
    let l1 = d.grant("seed: grant 100", 100).await;
    d.check(
        "seed: put key1 with lease",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key1}", "value": "{hello}", "lease": "{l1}"}}"#),
    )
    .await;
    d.check("seed: get key1", "/v3/kv/range", &format!(r#"{{"key": "{key1}"}}"#))
        .await;
    let l2 = d.grant("seed: grant 1000", 1000).await;
    d.check(
        "seed: put key2",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key2}", "value": "{hello}", "lease": {l2}}}"#),
    )
    .await;
    d.check("seed: get key2", "/v3/kv/range", &format!(r#"{{"key": "{key2}"}}"#))
        .await;
    d.check("seed: revoke", "/v3/lease/revoke", &format!(r#"{{"ID": "{l2}"}}"#))
        .await;
    d.check("seed: key2 is gone", "/v3/kv/range", &format!(r#"{{"key": "{key2}"}}"#))
        .await;
    let l3 = d.grant("seed: grant 20", 20).await;
    d.check(
        "seed: put key3",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key3}", "value": "{}", "lease": "{l3}"}}"#, b64("nihao")),
    )
    .await;
    d.check(
        "seed: keep-alive",
        "/v3/lease/keepalive",
        &format!(r#"{{"ID": "{l3}"}}"#),
    )
    .await;
    let l4 = d.grant("seed: grant 300", 300).await;
    d.check(
        "seed: put key5",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key5}", "value": "{}", "lease": "{l4}"}}"#, b64("hehe")),
    )
    .await;
    d.check(
        "seed: put key6",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key6}", "value": "{}", "lease": "{l4}"}}"#, b64("hihi")),
    )
    .await;
    d.check(
        "seed: timetolive",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{l4}"}}"#),
    )
    .await;
    d.check(
        "seed: timetolive --keys",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{l4}", "keys": true}}"#),
    )
    .await;
    d.check("seed: list", "/v3/lease/leases", "{}").await;
    d.check("alias: kv/lease/leases", "/v3/kv/lease/leases", "{}").await;
    d.check(
        "alias: kv/lease/timetolive",
        "/v3/kv/lease/timetolive",
        &format!(r#"{{"ID": "{l4}"}}"#),
    )
    .await;

    // TTLs below the minimum are raised to it; integers as strings.
    for (i, ttl) in ["1", "0", "-5", r#""3""#].into_iter().enumerate() {
        let id = 9000 + i;
        d.check(
            "TTL below the minimum",
            "/v3/lease/grant",
            &format!(r#"{{"TTL": {ttl}, "ID": {id}}}"#),
        )
        .await;
        d.check(
            "its time to live",
            "/v3/lease/timetolive",
            &format!(r#"{{"ID": {id}}}"#),
        )
        .await;
    }

    // Every error case.
    d.check(
        "duplicate lease ID: first",
        "/v3/lease/grant",
        r#"{"TTL": 60, "ID": 777}"#,
    )
    .await;
    d.check(
        "duplicate lease ID: again",
        "/v3/lease/grant",
        r#"{"TTL": 60, "ID": "777"}"#,
    )
    .await;
    d.check("TTL too large", "/v3/lease/grant", r#"{"TTL": 9000000001}"#)
        .await;
    d.check("revoke unknown", "/v3/lease/revoke", r#"{"ID": 123456}"#).await;
    d.check("revoke unknown (alias)", "/v3/kv/lease/revoke", r#"{"ID": 123456}"#)
        .await;
    d.check("keep-alive unknown", "/v3/lease/keepalive", r#"{"ID": 123456}"#)
        .await;
    d.check(
        "timetolive unknown",
        "/v3/lease/timetolive",
        r#"{"ID": 123456, "keys": true}"#,
    )
    .await;
    d.check("timetolive of no ID", "/v3/lease/timetolive", "{}").await;
    d.check(
        "put with unknown lease",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key1}", "value": "{hello}", "lease": 123456}}"#),
    )
    .await;
    d.check("put without key", "/v3/kv/put", &format!(r#"{{"value": "{hello}"}}"#))
        .await;
    d.check("range without key", "/v3/kv/range", "{}").await;
    d.check("delete without key", "/v3/kv/deleterange", r#"{"prev_kv": true}"#)
        .await;
    d.check(
        "ignore_value with a value",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key1}", "value": "{hello}", "ignore_value": true}}"#),
    )
    .await;
    d.check(
        "ignore_lease with a lease",
        "/v3/kv/put",
        &format!(r#"{{"key": "{key1}", "lease": "{l1}", "ignore_lease": true}}"#),
    )
    .await;
    d.check(
        "ignore_value of a missing key",
        "/v3/kv/put",
        &format!(r#"{{"key": "{}", "ignore_value": true}}"#, b64("nope")),
    )
    .await;
    for (path, body) in [
        ("/v3/kv/put", "{bad json"),
        ("/v3/kv/put", r#"{"key": "!!!"}"#),
        ("/v3/kv/range", "[1]"),
        ("/v3/lease/grant", r#"{"TTL": 1.5}"#),
        ("/v3/lease/revoke", r#"{"ID": "x"}"#),
        ("/v3/lease/timetolive", "{"),
    ] {
        d.check("malformed request", path, body).await;
    }
    d.check(
        "unknown fields are ignored",
        "/v3/kv/put",
        &format!(r#"{{"key": "{}", "value": "{hello}", "nope": 1}}"#, b64("extra")),
    )
    .await;

    // Ranges and prefixes.
    for (key, value) in [("a/1", "x"), ("a/2", "yy"), ("a/3", "z"), ("a/4", "w"), ("b/1", "v")] {
        d.check(
            "put for ranges",
            "/v3/kv/put",
            &format!(r#"{{"key": "{}", "value": "{}"}}"#, b64(key), b64(value)),
        )
        .await;
    }
    let (a, a_end) = (b64("a/"), b64("a0"));
    for extra in [
        "",
        r#", "limit": 2"#,
        r#", "limit": "1", "count_only": true"#,
        r#", "keys_only": true"#,
        r#", "countOnly": true"#,
        r#", "sort_order": "DESCEND""#,
        r#", "sort_order": "DESCEND", "sort_target": "VALUE", "limit": 2"#,
        r#", "sort_target": "MOD""#,
        r#", "min_mod_revision": 14"#,
        r#", "max_create_revision": 14"#,
        r#", "limit": -1"#,
        r#", "revision": 999"#,
    ] {
        d.check(
            "prefix range",
            "/v3/kv/range",
            &format!(r#"{{"key": "{a}", "range_end": "{a_end}"{extra}}}"#),
        )
        .await;
    }
    d.check(
        "every key",
        "/v3/kv/range",
        r#"{"key": "AA==", "range_end": "AA==", "keys_only": true}"#,
    )
    .await;
    d.check(
        "keys from a/3 on",
        "/v3/kv/range",
        &format!(r#"{{"key": "{}", "range_end": "AA==", "keys_only": true}}"#, b64("a/3")),
    )
    .await;
    d.check(
        "[a/2, a/4)",
        "/v3/kv/range",
        &format!(r#"{{"key": "{}", "rangeEnd": "{}"}}"#, b64("a/2"), b64("a/4")),
    )
    .await;
    d.check(
        "an empty interval",
        "/v3/kv/range",
        &format!(r#"{{"key": "{}", "range_end": "{}"}}"#, b64("a/4"), b64("a/2")),
    )
    .await;
    d.check(
        "a missing key",
        "/v3/kv/range",
        &format!(r#"{{"key": "{}"}}"#, b64("missing")),
    )
    .await;
    d.check(
        "delete a prefix",
        "/v3/kv/deleterange",
        &format!(r#"{{"key": "{a}", "range_end": "{a_end}", "prev_kv": true}}"#),
    )
    .await;
    d.check(
        "delete nothing",
        "/v3/kv/deleterange",
        &format!(r#"{{"key": "{a}", "range_end": "{a_end}"}}"#),
    )
    .await;
    d.check(
        "delete one key",
        "/v3/kv/deleterange",
        &format!(r#"{{"key": "{}"}}"#, b64("b/1")),
    )
    .await;

    // A key moved from one lease to another.
    let (l5, l6) = (
        d.grant("move: first lease", 60).await,
        d.grant("move: second lease", 60).await,
    );
    let moved = b64("moved");
    d.check(
        "move: put on the first",
        "/v3/kv/put",
        &format!(r#"{{"key": "{moved}", "value": "{hello}", "lease": "{l5}"}}"#),
    )
    .await;
    d.check(
        "move: put on the second",
        "/v3/kv/put",
        &format!(r#"{{"key": "{moved}", "value": "{hello}", "lease": "{l6}", "prev_kv": true}}"#),
    )
    .await;
    d.check(
        "move: the first holds nothing",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{l5}", "keys": true}}"#),
    )
    .await;
    d.check(
        "move: the second holds it",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{l6}", "keys": true}}"#),
    )
    .await;
    d.check(
        "move: revoke the first",
        "/v3/lease/revoke",
        &format!(r#"{{"ID": "{l5}"}}"#),
    )
    .await;
    d.check(
        "move: the key stays",
        "/v3/kv/range",
        &format!(r#"{{"key": "{moved}"}}"#),
    )
    .await;
    d.check(
        "move: keep its lease, new value",
        "/v3/kv/put",
        &format!(
            r#"{{"key": "{moved}", "value": "{}", "ignore_lease": true, "prev_kv": true}}"#,
            b64("v2")
        ),
    )
    .await;
    d.check(
        "move: keep its value, no lease",
        "/v3/kv/put",
        &format!(r#"{{"key": "{moved}", "ignore_value": true}}"#),
    )
    .await;
    d.check(
        "move: now on no lease",
        "/v3/kv/range",
        &format!(r#"{{"key": "{moved}"}}"#),
    )
    .await;
    d.check(
        "move: revoke the second",
        "/v3/lease/revoke",
        &format!(r#"{{"ID": "{l6}"}}"#),
    )
    .await;
    d.check(
        "move: the key stays without a lease",
        "/v3/kv/range",
        &format!(r#"{{"key": "{moved}"}}"#),
    )
    .await;

    // Revoking a lease with many keys: one revision for all the deletions.
    let l7 = d.grant("many: grant", 600).await;
    for i in 0..200 {
        let body = format!(
            r#"{{"key": "{}", "value": "{hello}", "lease": "{l7}"}}"#,
            b64(&format!("many/{i:03}"))
        );
        let ((sa, _), (sb, _)) = (
            d.send(&d.etcd, "/v3/kv/put", &body).await,
            d.send(&d.tenure, "/v3/kv/put", &body).await,
        );
        assert_eq!((sa, sb), (200, 200), "put many/{i}");
    }
    let many = (b64("many/"), b64("many0"));
    d.check(
        "many: count",
        "/v3/kv/range",
        &format!(
            r#"{{"key": "{}", "range_end": "{}", "count_only": true}}"#,
            many.0, many.1
        ),
    )
    .await;
    d.check("many: revoke", "/v3/lease/revoke", &format!(r#"{{"ID": "{l7}"}}"#))
        .await;
    d.check(
        "many: all gone",
        "/v3/kv/range",
        &format!(r#"{{"key": "{}", "range_end": "{}"}}"#, many.0, many.1),
    )
    .await;

    // Keep-alive takes a stream of requests.
    d.check(
        "keep-alive stream",
        "/v3/lease/keepalive",
        &format!(
            r#"{{"ID": "{l3}"}}{{"ID": 99}}
{{"ID": {l4}}}"#
        ),
    )
    .await;

    // Expiry: the lease's keys are deleted when its TTL runs out.
    let l8 = d.grant("expiry: grant the minimum", 2).await;
    let doomed = b64("doomed");
    d.check(
        "expiry: put",
        "/v3/kv/put",
        &format!(r#"{{"key": "{doomed}", "value": "{hello}", "lease": "{l8}"}}"#),
    )
    .await;
    let gone = |reply: &Reply| reply.0 == 200 && reply.1.first().is_some_and(|v| v.get("kvs").is_none());
    d.converge(
        "expiry: the key is gone",
        "/v3/kv/range",
        &format!(r#"{{"key": "{doomed}"}}"#),
        gone,
    )
    .await;
    d.check(
        "expiry: the lease is gone",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{l8}"}}"#),
    )
    .await;
    d.check(
        "expiry: keep-alive finds nothing",
        "/v3/lease/keepalive",
        &format!(r#"{{"ID": "{l8}"}}"#),
    )
    .await;
    d.check(
        "expiry: revoke finds nothing",
        "/v3/lease/revoke",
        &format!(r#"{{"ID": "{l8}"}}"#),
    )
    .await;
    d.check(
        "the whole key space at the end",
        "/v3/kv/range",
        r#"{"key": "AA==", "range_end": "AA=="}"#,
    )
    .await;

    history(&mut d, &key1).await;
    txns(&mut d).await;

    // Where tenure differs on purpose, check tenure's behaviour.
    // 1. Lease IDs must be positive: etcd accepts -3, tenure refuses it.
    let (status, body) = d.send(&d.tenure, "/v3/lease/grant", r#"{"TTL": 60, "ID": -3}"#).await;
    assert_eq!(status, 400, "{body:?}");
    assert_eq!(body[0]["code"], 3);
    // 2. No expiry rate limit (etcd revokes at most 1,000 expired leases a
    //    second): every lease due at once goes at once. How fast is measured
    //    by ops/bench, not here; that they all go is checked in tests/expiry.rs.

    assert!(
        d.mismatches.is_empty(),
        "{} differences from etcd:\n{}",
        d.mismatches.len(),
        d.mismatches.join("\n")
    );
    drop(etcd);
}

/// The revision in a reply's header.
fn header_revision(reply: &Reply) -> i64 {
    reply
        .1
        .first()
        .and_then(|v| v["header"]["revision"].as_str())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no header revision in {reply:?}"))
}

/// Ranges at past revisions: etcd serves every revision it has not
/// compacted, and tenure compacts nothing, so both must answer the key
/// space as it was at each one (with the current revision in the header).
/// Both servers started at revision 1 and have made the same changes, so
/// their revisions name the same states.
async fn history(d: &mut Diff, key1: &str) {
    // A prefix whose keys are created, overwritten, deleted, created again
    // and deleted with their lease; `marks` holds the revision after each step.
    let h = |key: &str| b64(&format!("h/{key}"));
    let put =
        |key: &str, value: &str, more: &str| format!(r#"{{"key": "{}", "value": "{}"{more}}}"#, h(key), b64(value));
    let lease = d.grant("history: a lease", 600).await;
    let on_lease = format!(r#", "lease": "{lease}""#);
    let steps = [
        ("history: put h/a", "/v3/kv/put", put("a", "1", "")),
        ("history: put h/b on a lease", "/v3/kv/put", put("b", "22", &on_lease)),
        ("history: put h/c", "/v3/kv/put", put("c", "3", "")),
        ("history: overwrite h/a", "/v3/kv/put", put("a", "44", "")),
        ("history: put h/d on the lease", "/v3/kv/put", put("d", "5", &on_lease)),
        (
            "history: overwrite h/b, keeping its lease",
            "/v3/kv/put",
            put("b", "6", r#", "ignore_lease": true"#),
        ),
        (
            "history: delete h/c",
            "/v3/kv/deleterange",
            format!(r#"{{"key": "{}"}}"#, h("c")),
        ),
        (
            "history: revoke the lease (h/b and h/d go)",
            "/v3/lease/revoke",
            format!(r#"{{"ID": "{lease}"}}"#),
        ),
        ("history: h/c again, a new key", "/v3/kv/put", put("c", "77", "")),
        ("history: overwrite h/a again", "/v3/kv/put", put("a", "8", "")),
    ];
    let mut marks = Vec::new();
    for (what, path, body) in &steps {
        let (etcd, _) = d.check(what, path, body).await;
        marks.push(header_revision(&etcd));
    }
    let now = *marks.last().expect("steps");
    let before_h = marks[0] - 1;

    // The whole key space at every revision there has been: the seed, the
    // ranges, the moved key, the lease with many keys, the expired key and h/.
    for revision in 1..=now {
        let body = format!(r#"{{"key": "AA==", "range_end": "AA==", "revision": {revision}}}"#);
        let (etcd, _) = d
            .check(&format!("history: every key at {revision}"), "/v3/kv/range", &body)
            .await;
        assert_eq!(etcd.0, 200, "etcd serves revision {revision}: {etcd:?}");
        assert_eq!(header_revision(&etcd), now, "the header has the current revision");
    }

    // The prefix with every option, at each step, before it and at 1.
    let (start, end) = (b64("h/"), b64("h0"));
    let options = [
        String::new(),
        r#", "limit": 2"#.to_owned(),
        r#", "limit": "1", "count_only": true"#.to_owned(),
        r#", "count_only": true"#.to_owned(),
        r#", "keys_only": true"#.to_owned(),
        r#", "keys_only": true, "limit": 1"#.to_owned(),
        r#", "sort_order": "DESCEND""#.to_owned(),
        r#", "sort_order": "DESCEND", "limit": 2"#.to_owned(),
        r#", "sort_order": "ASCEND", "limit": 1"#.to_owned(),
        r#", "sort_target": "VERSION", "sort_order": "DESCEND", "limit": 1"#.to_owned(),
        r#", "sort_target": "CREATE", "sort_order": "DESCEND""#.to_owned(),
        r#", "sort_target": "MOD""#.to_owned(),
        r#", "sort_target": "VALUE", "limit": 2"#.to_owned(),
        format!(r#", "min_mod_revision": {}"#, marks[3]),
        format!(r#", "max_mod_revision": {}"#, marks[2]),
        format!(r#", "min_create_revision": {}"#, marks[1]),
        format!(r#", "max_create_revision": {}, "limit": 1"#, marks[1]),
        format!(
            r#", "min_mod_revision": {}, "max_create_revision": {}, "keys_only": true"#,
            marks[1], marks[2]
        ),
        r#", "limit": -1"#.to_owned(),
    ];
    let mut revisions = vec![1, before_h];
    revisions.extend(&marks);
    for &revision in &revisions {
        for extra in &options {
            d.check(
                &format!("history: h/ at {revision}"),
                "/v3/kv/range",
                &format!(r#"{{"key": "{start}", "range_end": "{end}", "revision": {revision}{extra}}}"#),
            )
            .await;
        }
        for key in ["a", "b", "c", "d"] {
            d.check(
                &format!("history: h/{key} at {revision}"),
                "/v3/kv/range",
                &format!(r#"{{"key": "{}", "revision": "{revision}"}}"#, h(key)),
            )
            .await;
        }
    }

    // A key of the seed at its first revision, the moved key and the many
    // keys at past revisions with options, and revisions that are not past.
    for (what, body) in [
        ("key1 at 2", format!(r#"{{"key": "{key1}", "revision": 2}}"#)),
        ("key1 at 1", format!(r#"{{"key": "{key1}", "revision": 1}}"#)),
        (
            "the many keys, counted, before h/",
            format!(
                r#"{{"key": "{}", "range_end": "{}", "revision": {before_h}, "count_only": true}}"#,
                b64("many/"),
                b64("many0")
            ),
        ),
        (
            "every key at 1",
            r#"{"key": "AA==", "range_end": "AA==", "revision": 1, "count_only": true}"#.to_owned(),
        ),
        (
            "h/ now",
            format!(r#"{{"key": "{start}", "range_end": "{end}", "revision": {now}}}"#),
        ),
        (
            "h/ at a negative revision (now)",
            format!(r#"{{"key": "{start}", "range_end": "{end}", "revision": -1}}"#),
        ),
        (
            "h/ at the next revision (future)",
            format!(r#"{{"key": "{start}", "range_end": "{end}", "revision": {}}}"#, now + 1),
        ),
    ] {
        d.check(&format!("history: {what}"), "/v3/kv/range", &body).await;
    }

    // The prefix at each step really was different: the states checked
    // above are the history, not one state many times.
    let (first, _) = d
        .check(
            "history: h/ at its first step",
            "/v3/kv/range",
            &format!(
                r#"{{"key": "{start}", "range_end": "{end}", "revision": {}}}"#,
                marks[0]
            ),
        )
        .await;
    let (last, _) = d
        .check(
            "history: h/ at its last step",
            "/v3/kv/range",
            &format!(r#"{{"key": "{start}", "range_end": "{end}", "revision": {now}}}"#),
        )
        .await;
    assert_eq!(first.1[0]["count"], "1", "{first:?}");
    assert_eq!(last.1[0]["count"], "2", "{last:?}");
}

/// Txns: compares of every target, both branches, nested txns, ranges
/// and deletes inside, leases, and the errors etcd gives before running one.
async fn txns(d: &mut Diff) {
    let t = |key: &str| b64(&format!("t/{key}"));
    let put = |key: &str, value: &str| {
        format!(
            r#"{{"request_put": {{"key": "{}", "value": "{}"}}}}"#,
            t(key),
            b64(value)
        )
    };
    let get = |key: &str| format!(r#"{{"request_range": {{"key": "{}"}}}}"#, t(key));
    let txn = |compare: &str, success: &str, failure: &str| {
        format!(r#"{{"compare": [{compare}], "success": [{success}], "failure": [{failure}]}}"#)
    };
    let cmp = |key: &str, target: &str, result: &str, field: &str| {
        format!(
            r#"{{"key": "{}", "target": "{target}", "result": "{result}", {field}}}"#,
            t(key)
        )
    };
    let value_is = |key: &str, value: &str| cmp(key, "VALUE", "EQUAL", &format!(r#""value": "{}""#, b64(value)));
    let cases: Vec<(&str, String)> = vec![
        ("a plain put first", txn("", &put("a", "1"), "")),
        (
            "compare-and-swap that holds",
            txn(
                &value_is("a", "1"),
                &format!("{}, {}", put("a", "2"), get("a")),
                &get("a"),
            ),
        ),
        (
            "compare-and-swap that fails",
            txn(&value_is("a", "1"), &put("a", "3"), &get("a")),
        ),
        (
            "create if absent",
            txn(
                &cmp("new", "CREATE", "EQUAL", r#""create_revision": "0""#),
                &put("new", "x"),
                &get("new"),
            ),
        ),
        (
            "create if absent, again: it exists",
            txn(
                &cmp("new", "CREATE", "EQUAL", r#""create_revision": "0""#),
                &put("new", "y"),
                &get("new"),
            ),
        ),
        (
            "version greater, by numbers",
            txn(
                &format!(r#"{{"key": "{}", "target": 0, "result": 1, "version": 1}}"#, t("a")),
                &get("a"),
                "",
            ),
        ),
        (
            "mod revision less than a large one, and not equal to 0",
            txn(
                &format!(
                    "{}, {}",
                    cmp("a", "MOD", "LESS", r#""mod_revision": "100000""#),
                    cmp("a", "MOD", "NOT_EQUAL", r#""mod_revision": 0"#)
                ),
                &get("a"),
                &get("new"),
            ),
        ),
        (
            "a value compare on a missing key fails",
            txn(&value_is("missing", ""), &get("a"), &get("missing")),
        ),
        (
            "a version compare on a missing key sees 0",
            txn(&cmp("missing", "VERSION", "EQUAL", r#""version": 0"#), &get("a"), ""),
        ),
        (
            "a lease compare: no lease is 0",
            txn(&cmp("a", "LEASE", "EQUAL", r#""lease": "0""#), &get("a"), ""),
        ),
        (
            "a compare over a range holds for every key",
            txn(
                &format!(
                    r#"{{"key": "{}", "range_end": "{}", "target": "VERSION", "result": "GREATER", "version": 0}}"#,
                    t(""),
                    b64("t0")
                ),
                &get("a"),
                "",
            ),
        ),
        (
            "a compare over a range fails on one key",
            txn(
                &format!(
                    r#"{{"key": "{}", "range_end": "{}", "target": "VERSION", "result": "GREATER", "version": 1}}"#,
                    t(""),
                    b64("t0")
                ),
                "",
                &get("new"),
            ),
        ),
        (
            "two puts and a range see one revision",
            txn(
                "",
                &format!(
                    r#"{}, {}, {{"request_range": {{"key": "{}", "range_end": "{}"}}}}"#,
                    put("c", "1"),
                    put("d", "1"),
                    t(""),
                    b64("t0")
                ),
                "",
            ),
        ),
        (
            "a range before the puts sees the key space before them",
            txn("", &format!("{}, {}, {}", get("e"), put("e", "1"), get("e")), ""),
        ),
        (
            "a nested txn's compares see the key space before the txn",
            txn(
                "",
                &format!(
                    r#"{}, {{"request_txn": {}}}"#,
                    put("f", "1"),
                    txn(
                        &cmp("f", "CREATE", "EQUAL", r#""create_revision": 0"#),
                        &format!("{}, {}", get("f"), put("g", "1")),
                        &get("a")
                    )
                ),
                "",
            ),
        ),
        (
            "a nested txn on the failure branch, failing too",
            txn(
                &value_is("a", "nope"),
                "",
                &format!(
                    r#"{{"request_txn": {}}}"#,
                    txn(&value_is("a", "nope"), &put("h", "1"), &get("g"))
                ),
            ),
        ),
        (
            "both branches of a nested txn may put one key",
            txn(
                "",
                &format!(
                    r#"{{"request_txn": {}}}"#,
                    txn(&value_is("a", "2"), &put("i", "1"), &put("i", "2"))
                ),
                "",
            ),
        ),
        (
            "delete a range inside a txn, with the previous keys",
            txn(
                "",
                &format!(
                    r#"{{"request_delete_range": {{"key": "{}", "range_end": "{}", "prev_kv": true}}}}, {}"#,
                    t("c"),
                    t("e"),
                    get("c")
                ),
                "",
            ),
        ),
        (
            "delete nothing inside a txn that writes nothing",
            txn(
                "",
                &format!(r#"{{"request_delete_range": {{"key": "{}"}}}}"#, t("zzz")),
                "",
            ),
        ),
        (
            "a put with prev_kv and one keeping the value",
            txn(
                "",
                &format!(
                    r#"{{"request_put": {{"key": "{}", "value": "{}", "prev_kv": true}}}}, {{"request_put": {{"key": "{}", "ignore_value": true}}}}"#,
                    t("a"),
                    b64("9"),
                    t("new")
                ),
                "",
            ),
        ),
        ("a txn with no writes", txn("", &get("a"), "")),
        ("an empty txn", "{}".to_owned()),
        ("an empty body", String::new()),
        (
            "a key put twice",
            txn("", &format!("{}, {}", put("x", "1"), put("x", "2")), ""),
        ),
        (
            "a key deleted and put",
            txn(
                "",
                &format!(
                    r#"{{"request_delete_range": {{"key": "{}", "range_end": "{}"}}}}, {}"#,
                    t(""),
                    b64("t0"),
                    put("x", "1")
                ),
                "",
            ),
        ),
        (
            "a key put here and in a nested txn",
            txn(
                "",
                &format!(
                    r#"{}, {{"request_txn": {}}}"#,
                    put("x", "1"),
                    txn("", &put("x", "2"), "")
                ),
                "",
            ),
        ),
        (
            "a key put twice on the branch that does not run",
            txn("", &get("a"), &format!("{}, {}", put("x", "1"), put("x", "2"))),
        ),
        (
            "a delete to the end of the key space, then a put it covers",
            txn(
                "",
                &format!(
                    r#"{{"request_delete_range": {{"key": "{}", "range_end": "AA=="}}}}, {}"#,
                    t("y"),
                    put("y", "1")
                ),
                "",
            ),
        ),
        (
            "a put, then a delete to the end of the key space",
            txn(
                "",
                &format!(
                    r#"{}, {{"request_delete_range": {{"key": "{}", "range_end": "AA==", "prev_kv": true}}}}"#,
                    put("y", "2"),
                    t("y")
                ),
                "",
            ),
        ),
        (
            "a nested txn gets the operations its parent leaves",
            txn(
                "",
                &format!(
                    r#"{}, {{"request_txn": {}}}"#,
                    get("a"),
                    txn("", &vec![get("a"); 127].join(", "), "")
                ),
                "",
            ),
        ),
        (
            "a nested txn within what its parent leaves",
            txn(
                "",
                &format!(
                    r#"{}, {{"request_txn": {}}}"#,
                    get("a"),
                    txn("", &vec![get("a"); 126].join(", "), "")
                ),
                "",
            ),
        ),
        ("an operation with no request", txn("", "{}", "")),
        ("a compare without a key", txn(r#"{"target": "VALUE"}"#, "", "")),
        (
            "a put keeping the value of a missing key",
            txn(
                "",
                &format!(
                    r#"{{"request_put": {{"key": "{}", "ignore_value": true}}}}"#,
                    t("missing")
                ),
                "",
            ),
        ),
        (
            "a range at a future revision",
            txn(
                "",
                &format!(r#"{{"request_range": {{"key": "{}", "revision": 100000}}}}"#, t("a")),
                "",
            ),
        ),
        (
            "a range at a past revision",
            txn(
                "",
                &format!(r#"{{"request_range": {{"key": "{}", "revision": 2}}}}"#, b64("key1")),
                "",
            ),
        ),
        (
            "too many compares",
            txn(&vec![value_is("a", "1"); 129].join(", "), "", ""),
        ),
        (
            "as many operations as allowed",
            txn("", &vec![get("a"); 128].join(", "), ""),
        ),
        (
            "the keys at the end",
            txn(
                "",
                &format!(
                    r#"{{"request_range": {{"key": "{}", "range_end": "{}"}}}}"#,
                    t(""),
                    b64("t0")
                ),
                "",
            ),
        ),
    ];
    for (what, body) in &cases {
        d.check(&format!("txn: {what}"), "/v3/kv/txn", body).await;
    }

    // A txn without writes leaves the revision.
    let before = header_revision(
        &d.check(
            "txn: the revision before",
            "/v3/kv/range",
            &format!(r#"{{"key": "{}"}}"#, t("a")),
        )
        .await
        .0,
    );
    d.check("txn: read only", "/v3/kv/txn", &txn("", &get("a"), "")).await;
    let after = header_revision(
        &d.check(
            "txn: the revision after",
            "/v3/kv/range",
            &format!(r#"{{"key": "{}"}}"#, t("a")),
        )
        .await
        .0,
    );
    assert_eq!(before, after, "a txn without writes keeps the revision");
    let at_before = |key: &str| format!(r#"{{"request_range": {{"key": "{}", "revision": {after}}}}}"#, t(key));
    d.check(
        "txn: a range at the revision before the txn, after its put",
        "/v3/kv/txn",
        &txn("", &format!("{}, {}, {}", put("a", "10"), at_before("a"), get("a")), ""),
    )
    .await;

    // Leases in a txn.
    let lease = d.grant("txn: a lease", 600).await;
    let other = d.grant("txn: another lease", 600).await;
    let on = |key: &str, lease: &str| {
        format!(
            r#"{{"request_put": {{"key": "{}", "value": "{}", "lease": "{lease}"}}}}"#,
            t(key),
            b64("v")
        )
    };
    let on_lease = |key: &str| on(key, &lease);
    d.check(
        "txn: puts with two leases",
        "/v3/kv/txn",
        &txn("", &format!("{}, {}", on("m1", &other), on_lease("m2")), ""),
    )
    .await;
    d.check(
        "txn: puts with a lease",
        "/v3/kv/txn",
        &txn("", &format!("{}, {}", on_lease("l1"), on_lease("l2")), ""),
    )
    .await;
    d.check(
        "txn: the lease compare",
        "/v3/kv/txn",
        &txn(
            &cmp("l1", "LEASE", "EQUAL", &format!(r#""lease": "{lease}""#)),
            &get("l1"),
            "",
        ),
    )
    .await;
    d.check(
        "txn: the lease's keys",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{lease}", "keys": true}}"#),
    )
    .await;
    d.check(
        "txn: revoke the lease",
        "/v3/lease/revoke",
        &format!(r#"{{"ID": "{lease}"}}"#),
    )
    .await;
    d.check(
        "txn: its keys went",
        "/v3/kv/txn",
        &txn("", &format!("{}, {}", get("l1"), get("l2")), ""),
    )
    .await;
    d.check(
        "txn: a put with the revoked lease",
        "/v3/kv/txn",
        &txn("", &on_lease("l3"), ""),
    )
    .await;
    d.check(
        "txn: the revoked lease beside a live one",
        "/v3/kv/txn",
        &txn("", &format!("{}, {}", on("l4", &other), on_lease("l5")), ""),
    )
    .await;
    d.check(
        "txn: the other lease's keys",
        "/v3/lease/timetolive",
        &format!(r#"{{"ID": "{other}", "keys": true}}"#),
    )
    .await;
    d.check(
        "txn: the revoked lease on the branch that does not run",
        "/v3/kv/txn",
        &txn("", &get("a"), &on_lease("l3")),
    )
    .await;
}
