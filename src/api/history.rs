//! `/v1/events`, `/v1/events/stream`, `/v1/audit`, `/v1/projections`: the
//! log itself, read. An account reads its own events only; the admin (and
//! local mode) reads all of them.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tenure_events::{AccountId, RecordedEvent, StreamId};
use utoipa::{IntoParams, ToSchema};

use super::auth::{AdminCaller, HistoryReader};
use super::error::{ApiError, ErrorBody};
use super::extract::QueryArgs;
use super::schema;
use crate::control::Control;
use crate::history::filter::{EventFilter, EventView, HistoryScope};
use crate::history::ServerDigests;

/// How often a live stream says it is still there when nothing happens
/// (an SSE frame with the position looked at so far): proxies keep the
/// connection open, and a client that reconnects resumes from there.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Events per page when the caller does not say.
const DEFAULT_LIMIT: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::routing::resource;
    cfg.service(resource("/events").route(web::get().to(events)))
        .service(resource("/events/stream").route(web::get().to(stream)))
        .service(resource("/audit").route(web::get().to(audit)))
        .service(resource("/projections").route(web::get().to(projections)));
}

/// Which events: every filter given must match.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The first position to look at (default: 1; the live stream: the next event).
    #[serde(default)]
    #[param(maximum = 18_446_744_073_709_551_615_u64)]
    from: Option<u64>,
    /// At most this many events (1 to 1,000; default 100). Pages only: the live stream has no limit.
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// One stream, by name.
    #[serde(default)]
    #[param(min_length = 1, max_length = 512)]
    stream: Option<String>,
    /// One entity (a lease ID, a share token, a service name...).
    #[serde(default)]
    entity: Option<String>,
    /// One kind of entity: a stream category (`lease`, `keyspace`, `account`...).
    #[serde(default)]
    kind: Option<String>,
    /// Event types, comma-separated.
    #[serde(default, rename = "type")]
    types: Option<String>,
    /// One account's events (an account may name only itself).
    #[serde(default)]
    #[param(value_type = Option<schema::AccountName>)]
    account: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    /// Events at or before this time (RFC 3339; not before `since`).
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

fn forbidden_account() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "account: an account reads its own events only",
    )
}

/// The account a query names, within the caller's scope: an account may
/// name only itself.
fn scoped_account(scope: &HistoryScope, named: Option<&str>) -> Result<Option<AccountId>, ApiError> {
    let named = named
        .map(|a| a.parse::<AccountId>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", format!("account: {e}")))?;
    match (scope, named) {
        (HistoryScope::All, named) => Ok(named),
        (HistoryScope::Account(own), Some(named)) if named != *own => Err(forbidden_account()),
        (HistoryScope::Account(own), _) => Ok(Some(own.clone())),
    }
}

impl EventsQuery {
    fn filter(&self, scope: &HistoryScope) -> Result<EventFilter, ApiError> {
        let invalid =
            |field: &str, e: &dyn std::fmt::Display| ApiError::bad_request("invalid_query", format!("{field}: {e}"));
        let stream = self
            .stream
            .as_ref()
            .map(|s| StreamId::new(s.clone()))
            .transpose()
            .map_err(|e| invalid("stream", &e))?;
        let types = self
            .types
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since > until {
                return Err(invalid("since", &"must not be after until"));
            }
        }
        Ok(EventFilter {
            account: scoped_account(scope, self.account.as_deref())?,
            stream,
            kind: self.kind.clone().filter(|k| !k.is_empty()),
            entity: self.entity.clone().filter(|e| !e.is_empty()),
            types,
            since: self.since,
            until: self.until,
        })
    }
}

/// A page of events.
#[derive(Serialize, ToSchema)]
struct EventsAnswer {
    events: Vec<EventView>,
    /// Where the next page starts.
    next: u64,
    /// The newest position when this page was read.
    head: u64,
}

/// A page of the log's events, filtered; an account reads its own only.
#[utoipa::path(get, path = "/v1/events", tag = "history", operation_id = "list_events",
    params(EventsQuery),
    responses(
        (status = 200, description = "The events found, and where the next page starts.", body = EventsAnswer),
        (status = 400, description = "A malformed query (`invalid_query`).", body = ErrorBody),
    ))]
async fn events(
    control: web::Data<Control>,
    reader: HistoryReader,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter(&reader.scope)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > crate::control::EVENTS_PAGE_MAX {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit: must be 1 to {}, got {limit}", crate::control::EVENTS_PAGE_MAX),
        ));
    }
    let page = control.events(&filter, query.from.unwrap_or(1), limit).await?;
    Ok(HttpResponse::Ok().json(EventsAnswer {
        events: page.events.iter().map(EventView::new).collect(),
        next: page.next,
        head: page.head,
    }))
}

/// One SSE frame per event: `id` is its position, `data` its JSON.
fn frames(events: &[RecordedEvent]) -> web::Bytes {
    let mut out = Vec::with_capacity(events.len() * 512);
    for event in events {
        out.extend_from_slice(format!("id: {}\ndata: ", event.position).as_bytes());
        // EventView holds JSON-safe values only; a failure writes an empty object.
        if serde_json::to_writer(&mut out, &EventView::new(event)).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(b"\n\n");
    }
    web::Bytes::from(out)
}

/// The log's events as they are appended: Server-Sent Events whose `id`
/// is the position and `data` an `Event` in JSON. Never ends (a frame
/// with only an `id` every 15 s); resumable with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events/stream", tag = "history", operation_id = "stream_events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position (what an EventSource sends when it reconnects)."),
    ),
    responses(
        (status = 200, description = "The stream: `id: POSITION` and `data: EVENT` frames.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed query or `Last-Event-ID`, or a `limit` (`invalid_query`, `invalid_header`).", body = ErrorBody),
    ))]
async fn stream(
    control: web::Data<Control>,
    reader: HistoryReader,
    req: HttpRequest,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.limit.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit: a live stream has no limit; read pages from /v1/events",
        ));
    }
    let filter = query.filter(&reader.scope)?;
    // A reconnecting EventSource says where it was (the last `id` it saw).
    let resume = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("invalid_header", "Last-Event-ID: must be a log position"))?,
        ),
    };
    let from = match resume {
        Some(last) => last + 1,
        None => query.from.unwrap_or_else(|| control.hub().store.head() + 1),
    };
    let following = control.follow(filter, from)?;
    let mut closing = control.closing();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (following, closing.clone(), heartbeat, false);
    let already_closing = *closing.borrow_and_update();
    let body = futures::stream::unfold(
        state,
        move |(mut following, mut closing, mut heartbeat, done)| async move {
            if done || already_closing {
                return None;
            }
            let frame = tokio::select! {
                biased;
                _ = closing.changed() => return None,
                next = following.next() => match next {
                    Ok(Some(events)) => frames(&events),
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "a live event stream cannot read the log");
                        let frame = web::Bytes::from(format!(": the log cannot be read: {e}\n\n"));
                        return Some((Ok::<_, actix_web::Error>(frame), (following, closing, heartbeat, true)));
                    }
                },
                _ = heartbeat.tick() => web::Bytes::from(format!("id: {}\n\n", following.scanned())),
            };
            Some((Ok::<_, actix_web::Error>(frame), (following, closing, heartbeat, false)))
        },
    );
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .insert_header((
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ))
        .streaming(body))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// `KIND/NAME` (`lease/1a203af6dc400000`, `share/demo`, `service/web`,
    /// `instance/web-1`, `workload/17`, `account/alice`) or a bare name: 16
    /// hexadecimal digits are a lease, digits a reservation, anything else
    /// a share, service, instance or account. Names are 1 to 128 bytes.
    #[param(pattern = "^((lease|workload|share|service|instance|account)/)?[^/]{1,128}$")]
    entity: String,
    /// Whose lease, service or instance (the admin; an account audits its own).
    #[serde(default)]
    #[param(value_type = Option<schema::AccountName>)]
    account: Option<String>,
}

/// An entity's history, with what caused each event.
#[derive(Serialize, ToSchema)]
struct AuditAnswer {
    entity: String,
    /// The entity's own streams.
    #[schema(value_type = Vec<schema::StreamName>)]
    streams: Vec<StreamId>,
    /// Causation links were followed no further than four steps.
    truncated: bool,
    events: Vec<AuditEvent>,
}

#[derive(Serialize, ToSchema)]
struct AuditEvent {
    #[serde(flatten)]
    event: EventView,
    /// The position of the event that caused this one.
    caused_by: Option<u64>,
}

/// An entity's events and what caused them.
#[utoipa::path(get, path = "/v1/audit", tag = "history", operation_id = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The entity's events, with their causes.", body = AuditAnswer),
        (status = 400, description = "A malformed query (`invalid_query`).", body = ErrorBody),
        (status = 404, description = "No such entity (`not_found`).", body = ErrorBody),
    ))]
async fn audit(
    control: web::Data<Control>,
    reader: HistoryReader,
    QueryArgs(query): QueryArgs<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = scoped_account(&reader.scope, query.account.as_deref())?.unwrap_or_else(AccountId::default_account);
    let audit = control.audit(&reader.scope, &account, &query.entity).await?;
    Ok(HttpResponse::Ok().json(AuditAnswer {
        entity: audit.entity,
        streams: audit.streams,
        truncated: audit.truncated,
        events: audit
            .events
            .iter()
            .map(|e| AuditEvent {
                event: EventView::new(&e.event),
                caused_by: e.caused_by,
            })
            .collect(),
    }))
}

/// The digests of the server's projections, all at one position (admin):
/// `tenure verify --endpoint` compares them with the log's.
#[utoipa::path(get, path = "/v1/projections", tag = "history", operation_id = "projection_digests",
    responses((status = 200, description = "The digests, and the position they were taken at.", body = ServerDigests)))]
async fn projections(control: web::Data<Control>, _admin: AdminCaller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(control.digests().await?))
}
