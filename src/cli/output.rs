//! What the client commands print: etcdctl's words, byte for byte.

use tenure_events::LeaseId;

pub fn granted(id: LeaseId, ttl_s: i64) -> String {
    format!("lease {id} granted with TTL({ttl_s}s)")
}

pub fn revoked(id: LeaseId) -> String {
    format!("lease {id} revoked")
}

pub fn kept_alive(id: LeaseId, ttl_s: i64) -> String {
    format!("lease {id} keepalived with TTL({ttl_s})")
}

pub fn keep_alive_ended(id: LeaseId) -> String {
    format!("lease {id} expired or revoked.")
}

pub fn time_to_live(id: LeaseId, granted_ttl_s: i64, remaining_s: i64, keys: Option<&[String]>) -> String {
    let mut line = format!("lease {id} granted with TTL({granted_ttl_s}s), remaining({remaining_s}s)");
    if let Some(keys) = keys {
        line.push_str(&format!(", attached keys([{}])", keys.join(" ")));
    }
    line
}

pub fn already_expired(id: LeaseId) -> String {
    format!("lease {id} already expired")
}

pub fn lease_list(ids: &[LeaseId]) -> String {
    let mut out = format!("found {} leases", ids.len());
    for id in ids {
        out.push_str(&format!("\n{id}"));
    }
    out
}

/// `reserve`: zrok's words, without its log prefix.
pub fn reserved_token(token: &str) -> String {
    format!("your reserved share token is '{token}'")
}

pub fn reserved_frontend(url: &str) -> String {
    format!("your reserved share frontend is '{url}'")
}

/// `share reserved`, once the session is up.
pub fn sharing_target(target: &str) -> String {
    format!("sharing target endpoint: '{target}'")
}

/// `release`.
pub fn released(token: &str) -> String {
    format!("reserved share '{token}' released")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> LeaseId {
        raw.parse().expect("valid lease ID")
    }

    /// The lines of the etcd seed transcript.
    #[test]
    fn prints_what_etcdctl_prints() {
        let check = |got: String, expect: &str| assert_eq!(got, expect);
        check(
            granted(id("525b80fbbf3b906e"), 100),
            "lease 525b80fbbf3b906e granted with TTL(100s)",
        );
        check(revoked(id("525b80fbbf3b98cb")), "lease 525b80fbbf3b98cb revoked");
        check(
            kept_alive(id("525b80fbbf3b9dc2"), 20),
            "lease 525b80fbbf3b9dc2 keepalived with TTL(20)",
        );
        check(
            time_to_live(id("525b80fbbf3ba39b"), 300, 281, None),
            "lease 525b80fbbf3ba39b granted with TTL(300s), remaining(281s)",
        );
        check(
            time_to_live(id("525b80fbbf3ba39b"), 300, 274, Some(&["key5".into(), "key6".into()])),
            "lease 525b80fbbf3ba39b granted with TTL(300s), remaining(274s), attached keys([key5 key6])",
        );
        check(
            time_to_live(id("1"), 10, 3, Some(&[])),
            "lease 0000000000000001 granted with TTL(10s), remaining(3s), attached keys([])",
        );
        check(
            already_expired(id("525b80fbbf3ba39b")),
            "lease 525b80fbbf3ba39b already expired",
        );
        check(
            lease_list(&[id("1"), id("2")]),
            "found 2 leases\n0000000000000001\n0000000000000002",
        );
        check(lease_list(&[]), "found 0 leases");
    }
}
