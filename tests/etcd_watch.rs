//! Differential test of watches on the gateway (`POST /v3/watch`): the same
//! watches and writes against a real etcd 3.4 and against tenure, and the
//! streamed answers compared once normalized: the cluster and member IDs and
//! the raft term, the lease IDs each server picks. Events are compared as
//! one sequence per watch, not by response (a server may put two
//! revisions in one response; etcd sends one response a write here, tenure
//! one per batch it read from its log).
//!
//! etcd comes from Debian's `etcd-server` package (see `common::etcd`).

mod common;

use std::sync::Arc;

use base64::Engine;
use common::etcd::start_etcd;
use common::{TestServer, PATIENCE};
use serde_json::{json, Value};
use tenure::clock::SystemClock;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A watch stream being read line by line.
struct Stream {
    response: reqwest::Response,
    pending: Vec<u8>,
}

impl Stream {
    async fn open(http: &reqwest::Client, endpoint: &str, request: &Value) -> Stream {
        let response = http
            .post(format!("{endpoint}/v3/watch"))
            .body(request.to_string())
            .send()
            .await
            .expect("watch request");
        assert!(response.status().is_success(), "{}", response.status());
        Stream {
            response,
            pending: Vec::new(),
        }
    }

    /// The next `{"result": ...}` object.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: Value = serde_json::from_slice(&line).expect("a JSON line");
                return value["result"].clone();
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the watch answered in time")
                .expect("the watch stream is readable")
                .expect("the watch stream did not end");
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// Reads responses until `count` events came; answers them.
    async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events.len() < count {
            let result = self.next().await;
            let header_revision: i64 = result["header"]["revision"]
                .as_str()
                .unwrap_or("0")
                .parse()
                .expect("revision");
            for event in result["events"].as_array().cloned().unwrap_or_default() {
                // A response never says a revision below its events'.
                let revision: i64 = event["kv"]["mod_revision"]
                    .as_str()
                    .unwrap_or("0")
                    .parse()
                    .expect("revision");
                assert!(header_revision >= revision, "{result}");
                events.push(event);
            }
        }
        assert_eq!(events.len(), count, "{events:?}");
        events
    }
}

/// One server under test.
struct Side {
    endpoint: String,
    http: reqwest::Client,
    leases: Vec<String>,
}

impl Side {
    async fn call(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.expect("JSON")
    }

    async fn put(&self, key: &str, value: &str) {
        self.call("/v3/kv/put", json!({"key": b64(key), "value": b64(value)}))
            .await;
    }

    /// Replaces this side's lease IDs (decimal strings) by `$Ln`, and drops
    /// what legitimately differs from a response.
    fn normalize(&self, mut v: Value) -> Value {
        if let Some(header) = v.get_mut("header").and_then(Value::as_object_mut) {
            for field in ["cluster_id", "member_id", "raft_term"] {
                header.remove(field);
            }
        }
        let text = v.to_string();
        let mut text = text;
        for (i, lease) in self.leases.iter().enumerate() {
            text = text.replace(&format!("\"{lease}\""), &format!("\"$L{}\"", i + 1));
        }
        serde_json::from_str(&text).expect("JSON")
    }

    /// Runs the scenario: every watch opened, then the writes; answers
    /// what each watch saw, normalized.
    async fn scenario(&mut self) -> Vec<Value> {
        self.put("a", "1").await;
        self.put("zz", "0").await;
        let watches = [
            // A prefix from now, with the values before.
            (
                json!({"create_request": {"key": b64("a"), "range_end": b64("b"), "prev_kv": true}}),
                7,
            ),
            // One key.
            (json!({"create_request": {"key": b64("ab")}}), 5),
            // Deletes only, from the first revision (history first).
            (
                json!({"create_request": {"key": b64("a"), "range_end": b64("b"), "start_revision": "1", "filters": ["NOPUT"]}}),
                3,
            ),
            // Everything, from revision 2, puts only.
            (
                json!({"create_request": {"key": "AA==", "range_end": "AA==", "start_revision": 2, "filters": [1]}}),
                6,
            ),
        ];
        let mut streams = Vec::new();
        let mut created = Vec::new();
        for (request, _) in &watches {
            let mut stream = Stream::open(&self.http, &self.endpoint, request).await;
            created.push(self.normalize(stream.next().await));
            streams.push(stream);
        }
        // The writes: a put that creates, one that updates, a range delete
        // (two keys, one revision), a lease's keys deleted by its revoke.
        self.put("a", "2").await;
        self.put("ab", "x").await;
        self.put("ab", "y").await;
        self.call("/v3/kv/deleterange", json!({"key": b64("a"), "range_end": b64("b")}))
            .await;
        let granted = self.call("/v3/lease/grant", json!({"TTL": 60})).await;
        let lease = granted["ID"].as_str().expect("lease id").to_owned();
        self.leases.push(lease.clone());
        self.call(
            "/v3/kv/put",
            json!({"key": b64("ab"), "value": b64("leased"), "lease": lease}),
        )
        .await;
        self.call("/v3/lease/revoke", json!({"ID": lease})).await;
        let mut seen = created;
        for (stream, (_, count)) in streams.iter_mut().zip(&watches) {
            let events = stream.events(*count).await;
            seen.push(self.normalize(json!({ "events": events })));
        }
        // A watch from a negative revision: etcd 3.4 watches from now.
        let mut refused = Stream::open(
            &self.http,
            &self.endpoint,
            &json!({"create_request": {"key": b64("a"), "start_revision": "-1"}}),
        )
        .await;
        seen.push(self.normalize(refused.next().await));
        seen
    }
}

#[actix_rt::test]
async fn gateway_watches_see_what_etcd_s_see() {
    let Some(etcd) = start_etcd().await else { return };
    let tenure = TestServer::start_with(|c| c.clock = Arc::new(SystemClock)).await;
    let mut theirs = Side {
        endpoint: etcd.endpoint.clone(),
        http: reqwest::Client::new(),
        leases: Vec::new(),
    };
    let mut ours = Side {
        endpoint: tenure.base.clone(),
        http: reqwest::Client::new(),
        leases: Vec::new(),
    };
    let expected = theirs.scenario().await;
    let got = ours.scenario().await;
    for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, expected, "step {i}: tenure (left) and etcd (right) differ");
    }
    assert_eq!(got.len(), expected.len());
    // It compared something: the first watch saw the range delete's two
    // keys at one revision, with their values before.
    let deletes: Vec<&Value> = expected[4]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 3, "{}", expected[4]);
    assert_eq!(deletes[0]["kv"]["mod_revision"], deletes[1]["kv"]["mod_revision"]);
    assert!(deletes.iter().all(|d| d.get("prev_kv").is_some()));
}
