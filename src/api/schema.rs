//! OpenAPI schemas of the types `/v1` shows that come from other crates
//! (`tenure-events` stays free of utoipa): the route modules name them with
//! `#[schema(value_type = ...)]`. Each says exactly what the server accepts,
//! so a value valid by its schema is never refused as malformed.
//!
//! **Architecture Invariant:** imports nothing of `api`; route modules and
//! `openapi.rs` import it.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// A schema whose JSON name is `$name` (its `$ref`), built by `$schema`.
macro_rules! named_schema {
    ($(#[$doc:meta])* $type:ident, $name:literal, $schema:expr) => {
        $(#[$doc])*
        pub struct $type;

        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// A string among `values`.
fn one_of_strings(description: &str, values: &[&str]) -> ObjectBuilder {
    string(description).enum_values(Some(values.iter().copied()))
}

/// 1 to 16 hexadecimal digits whose value is a positive signed 64-bit
/// number: `[1-7]` and 15 more, or at most 15 after leading zeros (with at
/// most 16 characters in all, which `maxLength` says).
pub const LEASE_ID_PATTERN: &str = "^([1-7][0-9a-fA-F]{15}|0{0,15}[1-9a-fA-F][0-9a-fA-F]{0,14})$";

named_schema!(
    /// `tenure_events::LeaseId`.
    LeaseId,
    "LeaseId",
    string(
        "A lease ID: a positive 64-bit number in 1 to 16 hexadecimal digits \
         (answers always give 16 lowercase digits, as etcd prints them)."
    )
    .pattern(Some(LEASE_ID_PATTERN))
    .max_length(Some(16))
    .examples(["1a203af6dc400000"])
);

/// An account name: 1 to 63 of a-z, 0-9, `-`, `_`, starting with a letter or digit.
pub const ACCOUNT_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

named_schema!(
    /// `tenure_events::AccountId`.
    AccountName,
    "AccountName",
    string("An account name: 1 to 63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit.")
        .pattern(Some(ACCOUNT_NAME_PATTERN))
        .examples(["alice"])
);

/// Standard base64, padded, canonical (the bits past the last byte are zero).
pub const BASE64_PATTERN: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

named_schema!(
    /// `tenure_events::Bytes`: text, or `{"base64": ...}` for bytes that are not UTF-8.
    Bytes,
    "Bytes",
    OneOfBuilder::new()
        .description(Some(
            "A key or value: a JSON string when it is UTF-8, otherwise {\"base64\": \"...\"} \
             (standard base64). Requests may use either form."
        ))
        .item(string("The bytes as UTF-8 text."))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "base64",
                    string("The bytes in standard base64.").pattern(Some(BASE64_PATTERN)),
                )
                .required("base64")
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        )
);

named_schema!(
    /// `tenure_events::StreamId`.
    StreamName,
    "StreamName",
    string("A stream's name, `{category}/{account}/{entity}`: 1 to 512 characters.")
        .min_length(Some(1))
        .max_length(Some(512))
        .examples(["lease/default/1a203af6dc400000"])
);

named_schema!(
    /// `tenure_events::ChainHash`.
    ChainHash,
    "ChainHash",
    string("A link in the log's hash chain: SHA-256, 64 lowercase hexadecimal digits.")
        .pattern(Some("^[0-9a-f]{64}$"))
);

named_schema!(
    /// `tenure_events::ChainHead`.
    ChainHead,
    "ChainHead",
    string("The last position of the log and its link in the hash chain, `POSITION:HASH`.")
        .pattern(Some("^[0-9]+:[0-9a-f]{64}$"))
);

named_schema!(
    /// `tenure_events::ShareMode`.
    ShareMode,
    "ShareMode",
    one_of_strings(
        "Who reaches a share: anyone (`public`), or requests with an access grant (`private`).",
        &["public", "private"]
    )
);

named_schema!(
    /// `tenure_events::BackendMode`.
    BackendMode,
    "BackendMode",
    one_of_strings(
        "What a share's backend does: reverse-proxy to a URL (`proxy`) or serve a directory (`web`).",
        &["proxy", "web"]
    )
);

named_schema!(
    /// `tenure_events::service::Handler`.
    PortHandler,
    "PortHandler",
    one_of_strings(
        "What the frontend does on a public port: terminate TLS, speak HTTP, or redirect to https.",
        &["tls", "http", "redirect"]
    )
);

named_schema!(
    /// `tenure_events::workload::ResultState`.
    ResultState,
    "ResultState",
    one_of_strings("What a node made of a reservation.", &["ok", "error", "deleted"])
);

named_schema!(
    /// `tenure_events::workload::DeleteReason`.
    DeleteReason,
    "DeleteReason",
    one_of_strings(
        "Why a reservation is to be deleted: its owner asked, or its duration ran out.",
        &["request", "expired"]
    )
);

named_schema!(
    /// A time in answers: RFC 3339, UTC, whole seconds.
    Timestamp,
    "Timestamp",
    string("A time: RFC 3339 in UTC (2026-11-22T16:01:31Z).")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
);

/// `tenure_events::Limits`: an account's limits, each a count or -1 (no limit).
#[derive(ToSchema)]
#[schema(as = Limits)]
#[allow(dead_code)] // a schema only
pub struct Limits {
    /// Live leases at once.
    #[schema(minimum = -1)]
    max_leases: i64,
    /// Keys in the account's key space at once.
    #[schema(minimum = -1)]
    max_keys: i64,
    /// Reserved shares at once.
    #[schema(minimum = -1)]
    max_reserved_shares: i64,
    /// Services at once.
    #[schema(minimum = -1)]
    max_services: i64,
}

/// `domain::account::LimitsUpdate`: a change to some of an account's
/// limits; a limit left out stays as it is.
#[derive(ToSchema)]
#[schema(as = LimitsUpdate)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only
pub struct LimitsUpdate {
    /// Live leases at once; -1: no limit.
    #[schema(minimum = -1)]
    max_leases: Option<i64>,
    /// Keys at once; -1: no limit.
    #[schema(minimum = -1)]
    max_keys: Option<i64>,
    /// Reserved shares at once; -1: no limit.
    #[schema(minimum = -1)]
    max_reserved_shares: Option<i64>,
    /// Services at once; -1: no limit.
    #[schema(minimum = -1)]
    max_services: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_id_schema_admits_exactly_the_ids_the_server_parses() {
        let pattern = regex_lite::Regex::new(LEASE_ID_PATTERN).expect("a valid pattern");
        for s in [
            "1",
            "a",
            "F",
            "0001",
            "00000000000000aa",
            "7fffffffffffffff",
            "8000000000000000",
            "ffffffffffffffff",
            "0",
            "0000",
            "",
            "g",
            "1a203af6dc400000",
            "01a203af6dc40000",
            "000000000000000f",
            "00000000000000000001",
            "0000000000000001",
            "123456789abcdef0",
            "123456789abcdef",
            "0123456789abcdef",
            "00123456789abcdef",
        ] {
            let schema = s.len() <= 16 && pattern.is_match(s);
            assert_eq!(schema, s.parse::<tenure_events::LeaseId>().is_ok(), "{s:?}");
        }
    }

    #[test]
    fn the_base64_schema_admits_exactly_what_the_server_decodes() {
        use base64::Engine;
        let pattern = regex_lite::Regex::new(BASE64_PATTERN).expect("a valid pattern");
        let engine = base64::engine::general_purpose::STANDARD;
        let mut cases: Vec<String> = (0..=6).map(|n| engine.encode(vec![0xa5_u8; n])).collect();
        cases.extend(
            [
                "hvixF0Hxy421R0gfqhl/EV==",
                "hvixF0Hxy421R0gfqhl/EQ==",
                "AB=",
                "AB==",
                "ABC",
                "ABE=",
                "ABC=",
                "====",
                "A",
                " ",
            ]
            .map(String::from),
        );
        for s in cases {
            assert_eq!(pattern.is_match(&s), engine.decode(&s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn the_account_name_schema_admits_exactly_the_names_the_server_parses() {
        let pattern = regex_lite::Regex::new(ACCOUNT_NAME_PATTERN).expect("a valid pattern");
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        for s in [
            "alice",
            "a",
            "0",
            "a-b_c",
            "-a",
            "_a",
            "A",
            "al ice",
            "",
            long.as_str(),
            too_long.as_str(),
        ] {
            assert_eq!(
                pattern.is_match(s),
                s.parse::<tenure_events::AccountId>().is_ok(),
                "{s:?}"
            );
        }
    }
}
