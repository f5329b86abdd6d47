//! The node-style quick start through the real binary: make a key, sign and
//! create a workload reservation, poll it as the node, report a result,
//! delete it, and see the deletion in the next poll.

mod common;

use common::binary::{stderr, stdout, ServerProcess};

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn keygen_reserve_poll_report_delete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let key_file = dir.path().join("owner.key");
    let key_arg = key_file.display().to_string();

    let generated = ok(server.cli(&["account", "key", "generate", &key_arg]), "key generate");
    let public_key = generated
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("a public key line")
        .to_owned();
    let out = server.cli(&["account", "key", "generate", &key_arg]);
    assert_eq!(out.status.code(), Some(1), "an existing key file is never overwritten");
    assert_eq!(
        ok(server.cli(&["account", "key", "set", &public_key]), "key set"),
        "public key registered for account 'default'\n"
    );

    let data = r#"{"size": 10, "type": "ssd"}"#;
    let created = ok(
        server.cli(&[
            "reservation",
            "create",
            "--node",
            "node-7",
            "--type",
            "volume",
            "--data",
            data,
            "--duration",
            "3600",
            "--key-file",
            &key_arg,
        ]),
        "reservation create",
    );
    let id: u64 = created
        .strip_prefix("reservation ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {created:?}"));
    assert_eq!(created, format!("reservation {id} created for node 'node-7'\n"));

    // The node polls from 0: one JSON line; the next cursor on stderr.
    let out = server.cli(&["node", "poll", "node-7"]);
    let polled = ok(out.clone(), "node poll");
    let line: serde_json::Value = serde_json::from_str(polled.trim()).expect("one JSON line");
    assert_eq!(line["id"], id);
    assert_eq!(line["type"], "volume");
    assert_eq!(line["data"], serde_json::json!({"size": 10, "type": "ssd"}));
    assert_eq!(line["to_delete"], false);
    let next = stderr(&out)
        .trim()
        .strip_prefix("next: ")
        .and_then(|n| n.parse::<u64>().ok())
        .expect("next cursor");
    assert_eq!(next, id + 1);

    let reported = ok(
        server.cli(&[
            "reservation",
            "result",
            &id.to_string(),
            "ok",
            "--data",
            r#"{"volume_id": "v-1"}"#,
        ]),
        "result",
    );
    assert_eq!(reported, format!("result 'ok' recorded for reservation {id}\n"));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(server.cli(&["reservation", "get", &id.to_string()]), "get")).expect("JSON");
    assert_eq!(shown["result"]["state"], "ok");
    assert_eq!(shown["result"]["data"]["volume_id"], "v-1");
    let listed = ok(server.cli(&["reservation", "list"]), "list");
    assert!(
        listed.starts_with(&format!("{id} volume node-7 active expires ")),
        "{listed}"
    );

    // Nothing new from the cursor; after a delete, the node sees it again.
    assert_eq!(
        ok(
            server.cli(&["node", "poll", "node-7", "--from", &next.to_string()]),
            "poll"
        ),
        ""
    );
    assert_eq!(
        ok(server.cli(&["reservation", "delete", &id.to_string()]), "delete"),
        format!("reservation {id} is to be deleted by node 'node-7'\n")
    );
    let polled = ok(
        server.cli(&["node", "poll", "node-7", "--from", &next.to_string()]),
        "poll",
    );
    let line: serde_json::Value = serde_json::from_str(polled.trim()).expect("one JSON line");
    assert_eq!(
        (line["id"].as_u64(), &line["to_delete"]),
        (Some(id), &serde_json::json!(true))
    );
    assert_eq!(line["delete_reason"], "request");
    server.terminate();
}
