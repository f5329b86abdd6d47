//! The OpenAPI 3.1 description of `/v1`, built from the code by utoipa and
//! served at `GET /v1/openapi.json` (without a token: it is public).
//!
//! Each handler carries `#[utoipa::path(...)]` (its method, path, parameters,
//! body and answers), its request and answer types derive `ToSchema` (query
//! strings `IntoParams`), and [`Document`] lists the handlers. What every
//! operation shares is added here, once, by [`Shared`]: the bearer scheme
//! and the error answers any operation may give (401, 403, 500, 503), all
//! with the one error body, `ApiError`.
//!
//! **Architecture Invariant:** this module imports the route modules; no
//! route module imports it (they name their schemas through `schema.rs`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::http::header::{HeaderValue, CACHE_CONTROL};
use actix_web::{web, HttpResponse};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Spec, RefOr};
use utoipa::{OpenApi, ToSchema};

use super::error::ErrorBody;
use super::{accounts, history, overview, services, shares, v1, workloads};

/// Where the document is served.
pub const PATH: &str = "/v1/openapi.json";

/// The name of the bearer scheme in `components.securitySchemes`.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenure",
        description = "tenure's native JSON API: leases and keys with etcd 3.4's semantics, accounts, \
            reserved shares, services and instances, workload reservations, and the log of events. \
            Every error answer is an `ApiError`, `{\"code\", \"message\"}`."
    ),
    paths(
        serve,
        v1::grant,
        v1::list_leases,
        v1::time_to_live,
        v1::revoke,
        v1::keep_alive,
        v1::get_keys,
        v1::put_key_query,
        v1::delete_keys,
        v1::get_key_path,
        v1::put_key_path,
        v1::delete_key_path,
        accounts::create,
        accounts::list,
        accounts::get,
        accounts::create_token,
        accounts::list_tokens,
        accounts::revoke_token,
        accounts::set_limits,
        accounts::whoami,
        accounts::register_key,
        shares::reserve,
        shares::list,
        shares::get,
        shares::release,
        shares::start_session,
        shares::stop_session,
        shares::grant_access,
        services::create,
        services::list,
        services::get,
        services::delete,
        services::register,
        services::list_instances,
        services::remove_instance,
        workloads::reserve,
        workloads::list,
        workloads::get,
        workloads::delete,
        workloads::report_result,
        workloads::poll,
        history::events,
        history::stream,
        history::audit,
        history::projections,
        overview::overview,
        overview::leases,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Shared),
    tags(
        (name = "leases", description = "Leases: a TTL, kept alive, revoked or expired with their keys."),
        (name = "keys", description = "The account's key space, etcd-style."),
        (name = "accounts", description = "Accounts, their tokens and limits (admin), and the calling account."),
        (name = "shares", description = "Reserved shares, zrok-style: a token, a backend session held by a lease, access grants."),
        (name = "services", description = "Services and their instances, Unikraft Cloud-style, served by the proxy."),
        (name = "reservations", description = "Workload reservations, zos-style, signed by the owner's key."),
        (name = "nodes", description = "What nodes call (admin): their feed of reservations, and results."),
        (name = "history", description = "The log of events: pages, the live stream, audits, the projections' digests."),
        (name = "dashboard", description = "The operator dashboard's reads: what the caller may see, at once."),
        (name = "meta", description = "This description."),
    )
)]
struct Document;

/// What every operation shares, added to the document once.
struct Shared;

impl utoipa::Modify for Shared {
    fn modify(&self, doc: &mut Spec) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`tenure account token create`) or the admin token. Required when the \
                         server runs with `--auth`; local mode (the default, loopback only) ignores it.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == PATH {
                continue;
            }
            for operation in operations(item) {
                optional_body_is_not_null(operation);
                add_error(
                    operation,
                    "401",
                    "No valid token (`--auth` only): `missing_token`, `invalid_token`, `malformed_authorization`.",
                );
                add_error(operation, "403", "The caller may not do this: an account on an admin route, the admin on an account's (`forbidden`).");
                add_error(operation, "500", "Our fault (`internal`, `store_failure`).");
                add_error(
                    operation,
                    "503",
                    "The server cannot answer now: retry (`unavailable`, `store_unavailable`).",
                );
            }
        }
    }
}

/// The operations of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// A body written `Option<T>` is optional (no body reads as `{}`), but when
/// there is one it is a `T`, never `null`: utoipa writes `oneOf [null, T]`.
fn optional_body_is_not_null(operation: &mut Operation) {
    use utoipa::openapi::schema::{SchemaType, Type};
    let Some(body) = operation.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
        if let [a, b] = one_of.items.as_slice() {
            let other = match (is_null(a), is_null(b)) {
                (true, false) => b.clone(),
                (false, true) => a.clone(),
                _ => continue,
            };
            content.schema = Some(other);
        }
    }
}

/// An error answer with the `ApiError` body.
fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                ErrorBody::name(),
            )))),
        )
        .build()
}

fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if !responses.contains_key(status) {
        responses.insert(status.to_owned(), RefOr::T(error_response(description)));
    }
}

/// The document as the server describes itself: with `--auth` the bearer
/// token is required by every operation but this one; in local mode it is
/// optional (and ignored).
pub fn document(auth: bool) -> Spec {
    let mut doc = Document::openapi();
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    doc.security = Some(if auth {
        vec![bearer]
    } else {
        vec![SecurityRequirement::default(), bearer]
    });
    doc
}

/// The document in JSON, rendered once per mode.
fn rendered(auth: bool) -> web::Bytes {
    static LOCAL: LazyLock<web::Bytes> = LazyLock::new(|| render(false));
    static AUTH: LazyLock<web::Bytes> = LazyLock::new(|| render(true));
    if auth {
        AUTH.clone()
    } else {
        LOCAL.clone()
    }
}

fn render(auth: bool) -> web::Bytes {
    // The document is plain data (strings, maps, numbers): it always serializes.
    web::Bytes::from(serde_json::to_vec(&document(auth)).unwrap_or_default())
}

/// This OpenAPI description.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", operation_id = "get_openapi",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of `/v1` (this document).", content_type = "application/json", body = Object),
        (status = 500, description = "Our fault (`internal`).", body = ErrorBody),
    ))]
async fn serve(control: web::Data<crate::control::Control>) -> HttpResponse {
    let auth = !control.authenticator().is_local();
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(rendered(auth))
}

/// `GET /v1/openapi.json`, registered outside the `/v1` scope so that the
/// authentication middleware does not apply to it.
pub fn resource() -> actix_web::Resource {
    super::routing::resource(PATH).route(web::get().to(serve))
}

/// The methods each path of the document allows (`/v1/keys/{key}` →
/// `GET, PUT, DELETE`), for the `Allow` header of a 405.
pub fn allowed_methods(pattern: &str) -> Option<&'static str> {
    static ALLOWED: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
        document(false)
            .paths
            .paths
            .into_iter()
            .map(|(path, item)| {
                let methods: Vec<&str> = [
                    (item.get.is_some(), "GET"),
                    (item.post.is_some(), "POST"),
                    (item.put.is_some(), "PUT"),
                    (item.delete.is_some(), "DELETE"),
                    (item.patch.is_some(), "PATCH"),
                ]
                .into_iter()
                .filter_map(|(has, method)| has.then_some(method))
                .collect();
                (path, methods.join(", "))
            })
            .collect()
    });
    ALLOWED.get(&template(pattern)).map(String::as_str)
}

/// An actix route pattern as an OpenAPI path template: `{key:.+}` → `{key}`.
pub fn template(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    // Braces open, and whether we are in a segment's regex (`:...`).
    let mut depth = 0usize;
    let mut in_regex = false;
    for c in pattern.chars() {
        match c {
            '{' => {
                depth += 1;
                if !in_regex {
                    out.push(c);
                }
            }
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    in_regex = false;
                }
                if !in_regex {
                    out.push(c);
                }
            }
            ':' if depth == 1 => in_regex = true,
            _ if in_regex => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(auth: bool) -> serde_json::Value {
        serde_json::to_value(document(auth)).expect("the document is JSON")
    }

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = json(false);
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_error_answer_of_every_operation_is_an_api_error() {
        let doc = json(false);
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                let id = op["operationId"].as_str().expect("an operation ID");
                assert!(ids.insert(id.to_owned()), "{id} twice");
                assert!(
                    op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                    "{method} {path}: no tag"
                );
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path}: no success"
                );
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ApiError",
                            "{method} {path} {status}"
                        );
                    }
                }
                if path != PATH {
                    for status in ["401", "403", "500", "503"] {
                        assert!(responses.contains_key(status), "{method} {path}: no {status}");
                    }
                }
            }
        }
        assert_eq!(
            doc["components"]["schemas"]["ApiError"]["required"],
            serde_json::json!(["code", "message"])
        );
    }

    #[test]
    fn the_token_is_required_with_auth_and_optional_without() {
        assert_eq!(json(true)["security"], serde_json::json!([{"bearer": []}]));
        assert_eq!(json(false)["security"], serde_json::json!([{}, {"bearer": []}]));
        assert_eq!(json(true)["paths"][PATH]["get"]["security"], serde_json::json!([{}]));
    }

    #[test]
    fn a_405_names_the_methods_of_its_path() {
        assert_eq!(allowed_methods("/v1/keys/{key:.+}"), Some("GET, PUT, DELETE"));
        assert_eq!(allowed_methods("/v1/leases"), Some("GET, POST"));
        assert_eq!(allowed_methods("/v1/nowhere"), None);
    }

    #[test]
    fn route_patterns_become_path_templates() {
        assert_eq!(template("/v1/keys/{key:.+}"), "/v1/keys/{key}");
        assert_eq!(template("/v1/leases/{id}/keepalive"), "/v1/leases/{id}/keepalive");
        assert_eq!(template("/v1/a/{x:[0-9]{2}}/b/{y}"), "/v1/a/{x}/b/{y}");
    }
}
