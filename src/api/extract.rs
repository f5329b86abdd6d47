//! Request extractors shared by the routes: the caller (account and request
//! id) and JSON bodies that are size-limited and name the field at fault.

use actix_web::dev::Payload;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tenure_events::{AccountId, Metadata};

use uuid::Uuid;

use super::error::ApiError;
use super::routing::request_id;

/// The largest request body accepted (etcd's default `--max-request-bytes`).
pub const MAX_BODY_BYTES: usize = 1536 * 1024;

/// Who is calling: the account every command is done for, and the request's id.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: AccountId,
    pub request_id: Uuid,
}

impl Caller {
    /// The metadata of events this caller's commands produce.
    pub fn meta(&self) -> Metadata {
        Metadata {
            account: self.account.clone(),
            request_id: Some(self.request_id),
            causation_id: None,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The account comes from the authenticated principal, never from
        // the request's path or body.
        let account = super::auth::principal(req).and_then(|p| p.account().map_err(ApiError::from));
        std::future::ready(account.map(|account| Caller {
            account,
            request_id: request_id(req),
        }))
    }
}

/// How the request came, for the handlers that may send it on to the node
/// running the timers (keep-alive, time-to-live); the others never copy it.
impl FromRequest for crate::control::Via {
    type Error = ApiError;
    type Future = std::future::Ready<Result<crate::control::Via, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let headers = req.headers();
        std::future::ready(Ok(crate::control::Via {
            authorization: headers
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            forwarded: headers.contains_key(crate::cluster::FORWARDED_HEADER),
        }))
    }
}

/// A JSON request body of type `T`. An empty body reads as `{}`, so a
/// missing required field is reported by name.
pub struct JsonBody<T>(pub T);

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Unreadable(String),
}

/// Reads a whole request body of at most [`MAX_BODY_BYTES`], refusing early
/// when its declared length is already too large.
pub fn read_body(req: &HttpRequest, payload: &mut Payload) -> LocalBoxFuture<'static, Result<BytesMut, BodyError>> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Box::pin(std::future::ready(Err(BodyError::TooLarge)));
    }
    let mut payload = payload.take();
    Box::pin(async move {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<JsonBody<T>, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload);
        Box::pin(async move {
            let body = body.await.map_err(|e| match e {
                BodyError::TooLarge => ApiError::bad_request(
                    "body_too_large",
                    format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                ),
                BodyError::Unreadable(e) => ApiError::bad_request("bad_body", format!("cannot read body: {e}")),
            })?;
            parse_json(&body).map(JsonBody)
        })
    }
}

/// A query string of type `T`; errors name the parameter at fault.
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned> FromRequest for QueryArgs<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<QueryArgs<T>, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        let parsed = serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
            .map(QueryArgs)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::bad_request("invalid_query", format!("{path}: {}", e.into_inner()))
            });
        std::future::ready(parsed)
    }
}

/// Parses a JSON object, naming the field at fault when the JSON is valid
/// but its content is not.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => bytes,
        // serde would read an array as a struct's fields in order: refuse it.
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "request body must be a JSON object",
            ))
        }
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (path, inner) = match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end()
                .map_err(|e| ApiError::bad_request("bad_json", format!("request body is not valid JSON: {e}")))?;
            return Ok(value);
        }
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    if inner.is_syntax() || inner.is_eof() {
        return Err(ApiError::bad_request(
            "bad_json",
            format!("request body is not valid JSON: {inner}"),
        ));
    }
    // Read it again with whole floats as integers, if it has any: then the
    // error (if any) is that reading's.
    let (path, inner) = match with_integral_floats(bytes).map(serde_path_to_error::deserialize) {
        Some(Ok(value)) => return Ok(value),
        Some(Err(e)) => (e.path().to_string(), e.into_inner()),
        None => (path, inner),
    };
    Err(if path == "." {
        ApiError::bad_request("invalid_body", format!("request body: {inner}"))
    } else {
        ApiError::bad_request("invalid_field", format!("{path}: {inner}"))
    })
}

/// JSON has one kind of number, so `10.0` is the integer 10 (JSON Schema
/// agrees), but serde refuses a float where it reads an integer. A body
/// that failed is read again as a JSON value with each float that is a
/// whole number (and fits in 64 bits) written as an integer: `None` if it
/// has none. Only a body that failed pays for this.
fn with_integral_floats(bytes: &[u8]) -> Option<serde_json::Value> {
    fn rewrite(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::Number(n) if n.is_f64() => {
                let whole = n.as_f64().filter(|f| f.fract() == 0.0);
                // -2^63 and 2^64 are exact in an f64.
                let integer = whole.and_then(|f| {
                    if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                        Some(serde_json::Number::from(f as i64))
                    } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                        Some(serde_json::Number::from(f as u64))
                    } else {
                        None
                    }
                });
                integer.map(|i| *n = i).is_some()
            }
            // Every one rewritten (no short circuit).
            serde_json::Value::Array(items) => items.iter_mut().map(rewrite).fold(false, |a, b| a | b),
            serde_json::Value::Object(fields) => fields.values_mut().map(rewrite).fold(false, |a, b| a | b),
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    rewrite(&mut value).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Grant {
        ttl: i64,
        #[serde(default)]
        id: Option<tenure_events::LeaseId>,
    }

    #[test]
    fn errors_name_the_field_at_fault() {
        let check = |body: &str, code: &str, message_has: &str| {
            let err = parse_json::<Grant>(body.as_bytes()).expect_err("invalid");
            assert_eq!(err.code, code, "{body}");
            assert!(err.message.contains(message_has), "{body}: {}", err.message);
        };
        check(r#"{"ttl": "ten"}"#, "invalid_field", "ttl: invalid type");
        check(r#"{"ttl": 1.5}"#, "invalid_field", "ttl:");
        check(r#"{"ttl": 1e300}"#, "invalid_field", "ttl:");
        check(r#"{"ttl": 10.0, "id": "xyz"}"#, "invalid_field", "id: lease ID must be");
        check(r#"{"ttl": 10, "id": "xyz"}"#, "invalid_field", "id: lease ID must be");
        check(r#"{"tll": 10}"#, "invalid_field", "tll: unknown field `tll`");
        check("", "invalid_body", "missing field `ttl`");
        check(r#"{"ttl": 10"#, "bad_json", "not valid JSON");
        check(r#"{"ttl": 10} x"#, "bad_json", "not valid JSON");
        check("[1]", "invalid_body", "must be a JSON object");
        check("12", "invalid_body", "must be a JSON object");
        assert_eq!(parse_json::<Grant>(br#" {"ttl": 10} "#).map(|g| g.ttl), Ok(10));
        // A whole number written as a float is that integer.
        assert_eq!(parse_json::<Grant>(br#"{"ttl": 10.0}"#).map(|g| g.ttl), Ok(10));
        assert_eq!(parse_json::<Grant>(br#"{"ttl": -3.0e2}"#).map(|g| g.ttl), Ok(-300));
    }
}
