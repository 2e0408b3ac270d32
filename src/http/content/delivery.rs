//! Delivery Optimization requests on the content listener: the DO wing
//! decides (`crate::delivery`), this answers with the same plans, ranges
//! and followers as update files.

use std::sync::Arc;

use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;

use super::{
    content_type, error_plan, error_response, far_ahead_candidate, plain, respond, ContentService,
    FastSource, Representation,
};
use crate::delivery::{Answer, Delivery, DeliveryError};
use crate::digest::Sha256Digest;
use crate::fetch::{stored_etag, FetchError, Identity, Joined, DOWNLOADING_ETAG};
use crate::http::body::{Part, ResponseBody, Source, UpstreamRange};
use crate::http::conditional::{RequestHeaders, Validators};
use crate::http::error::HttpStatus;
use crate::http::plan::{FileValidators, Plan};
use crate::http::route;
use crate::telemetry::metrics::Outcome;

/// Headers a pass-through relays from the origin.
const RELAYED: [header::HeaderName; 6] = [
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_TYPE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::ACCEPT_RANGES,
];

impl ContentService {
    /// Answers a GET or HEAD under `/filestreamingservice/`.
    pub(super) async fn delivery_answer(
        &self,
        delivery: &Arc<Delivery>,
        method: &Method,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> (Response<ResponseBody>, Outcome) {
        let content_type = content_type(route::extension(uri.path()));
        match delivery.answer(uri.path(), uri.query()).await {
            Err(DeliveryError::Fetch(e)) => (error_response(&e), Outcome::Refused),
            Err(e) => (plain(e.status(), format!("{e}\n")), Outcome::Refused),
            Ok(Answer::Stored { hit, stored }) => {
                let validators = object_validators(&stored.identity, Some(stored.sha256));
                let rep = Representation {
                    len: Some(hit.len()),
                    content_type,
                    validators,
                };
                let source = Source::Stored(hit.into_bytes());
                let r = respond(method, headers, rep, source);
                (mark(r, stored.unverified), Outcome::Hit)
            }
            Ok(Answer::Fetching {
                key,
                joined,
                unverified,
            }) => {
                let (r, outcome) = self
                    .follow_object(method, headers, key.as_str(), joined, content_type)
                    .await;
                (mark(r, unverified), outcome)
            }
            Ok(Answer::PassThrough { url, client }) => {
                pass_through(method, headers, &url, &client, self.fetcher.read_timeout()).await
            }
        }
    }

    /// The fast path's answer to a DO request (see
    /// [`Delivery::answer_fast`]): a stored object sent from the store, or
    /// a running download followed from its temp file, ranges included,
    /// each by `sendfile`. `None` hands the request to the full path: a
    /// refusal, a new download, an unknown length, a far-ahead range.
    pub(super) async fn plan_fast_delivery(
        &self,
        delivery: &Arc<Delivery>,
        path: &str,
        query: Option<&str>,
        req: &impl RequestHeaders,
    ) -> Option<(Plan, FastSource, Outcome, bool)> {
        let content_type = content_type(route::extension(path));
        match delivery.answer_fast(path, query).await? {
            Answer::Stored { hit, stored } => {
                let validators = object_validators(&stored.identity, Some(stored.sha256));
                let plan = Plan::new(req, &validators, content_type, hit.len());
                self.count_fast(&plan, Outcome::Hit);
                Some((
                    plan,
                    FastSource::Stored(hit),
                    Outcome::Hit,
                    stored.unverified,
                ))
            }
            Answer::Fetching {
                key,
                joined,
                unverified,
            } => {
                let dl = joined.download;
                // A download that ended just before the join started anew:
                // the full path, if it answers, counts its miss.
                let hand_over = |dl: &crate::fetch::Download| {
                    if joined.started {
                        dl.hand_over_start();
                    }
                };
                // Only a running download is joined here: it has left the
                // queue, or the full path waits for it.
                if dl.progress().phase == crate::fetch::Phase::Queued {
                    hand_over(&dl);
                    return None;
                }
                let len = match dl.started().await {
                    Ok(Some(len)) => len,
                    // Unknown length: the full path joins the same download.
                    Ok(None) => {
                        hand_over(&dl);
                        return None;
                    }
                    // Failed before its first byte: its 502/504 answered
                    // here, as the full path answers it, and as a catalog
                    // file's is. Handed over, the request found no download
                    // running and started another: the origin asked again,
                    // the client waiting twice as long for the same answer.
                    Err(e) => {
                        let plan = error_plan(&e);
                        let outcome = join_outcome(joined.started);
                        self.count_fast(&plan, outcome);
                        return Some((plan, FastSource::Following(dl.follow()), outcome, false));
                    }
                };
                let identity = self
                    .fetcher
                    .object_identity(key.as_str())
                    .unwrap_or_default();
                let validators = object_validators(&identity, None);
                let plan = Plan::new(req, &validators, content_type, len);
                if let [Part::File(r)] = plan.parts() {
                    let partial = plan.status == StatusCode::PARTIAL_CONTENT;
                    if partial
                        && self.fetcher.far_ahead_room(key.as_str(), r.end - r.start)
                        && self.fetcher.is_far_ahead_object(&dl, r.start).await
                    {
                        hand_over(&dl);
                        return None; // the full path sends it from the origin
                    }
                }
                self.count_fast(&plan, Outcome::Coalesced);
                let follow = dl.follow();
                Some((
                    plan,
                    FastSource::Following(follow),
                    Outcome::Coalesced,
                    unverified,
                ))
            }
            Answer::PassThrough { .. } => None,
        }
    }

    /// Streams an object download as it lands (a far-ahead range straight
    /// from the origin), as `fetch` does for a catalog file.
    async fn follow_object(
        &self,
        method: &Method,
        headers: &HeaderMap,
        key: &str,
        joined: Joined,
        content_type: &'static str,
    ) -> (Response<ResponseBody>, Outcome) {
        let outcome = join_outcome(joined.started);
        let dl = joined.download;
        if !dl.left_queue(self.fetcher.queue_wait()).await {
            let busy = FetchError::Busy("all download slots are taken");
            return (error_response(&busy), Outcome::Refused);
        }
        let len = match dl.started().await {
            Ok(len) => len,
            Err(e) => return (error_response(&e), outcome),
        };
        let identity = self.fetcher.object_identity(key).unwrap_or_default();
        let rep = Representation {
            len,
            content_type,
            validators: object_validators(&identity, None),
        };
        if let Some(range) = far_ahead_candidate(method, headers, &rep) {
            let room = self.fetcher.far_ahead_room(key, range.end - range.start);
            if room && self.fetcher.is_far_ahead_object(&dl, range.start).await {
                let len = rep.len.expect("ranges need a length");
                let body = self
                    .fetcher
                    .object_range_from_upstream(key, range.clone(), len)
                    .await;
                if let Some(body) = body {
                    let source = Source::Upstream(Arc::new(UpstreamRange::new(range, body)));
                    return (respond(method, headers, rep, source), Outcome::Passthrough);
                }
            }
        }
        (
            respond(method, headers, rep, Source::Downloading(dl)),
            outcome,
        )
    }
}

/// A join's outcome: the request that started the download is the miss,
/// every other one rides along.
fn join_outcome(started: bool) -> Outcome {
    if started {
        Outcome::Miss
    } else {
        Outcome::Coalesced
    }
}

/// Marks an unverified object's response for the access log.
fn mark(mut r: Response<ResponseBody>, unverified: bool) -> Response<ResponseBody> {
    if unverified && r.status().is_success() {
        r.extensions_mut().insert(crate::delivery::Unverified);
    }
    r
}

/// An object's validators: the origin's strong `ETag` when it gave one
/// (the same while downloading and once stored, so `If-Range` works
/// across), else the stored SHA-256, else a weak tag (never a range match).
fn object_validators(identity: &Identity, sha256: Option<Sha256Digest>) -> Arc<FileValidators> {
    let strong = identity.etag.clone().filter(|e| !e.starts_with("W/"));
    let etag = strong
        .or_else(|| sha256.as_ref().map(stored_etag))
        .unwrap_or_else(|| DOWNLOADING_ETAG.to_owned());
    let last_modified = identity
        .last_modified
        .as_deref()
        .and_then(|lm| httpdate::parse_http_date(lm).ok());
    let value =
        HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static(DOWNLOADING_ETAG));
    let etags = if etag.starts_with("W/") {
        Vec::new()
    } else {
        vec![etag]
    };
    Arc::new(FileValidators {
        validators: Validators {
            etags,
            last_modified,
        },
        etag: value,
        last_modified: last_modified.map(|lm| {
            HeaderValue::try_from(httpdate::fmt_http_date(lm)).expect("an HTTP date is ASCII")
        }),
    })
}

/// `pass-through`: the client's request (its `Range` only) relayed to the
/// origin, the answer streamed back, nothing stored. An origin's refusal or
/// failure is a 502/504 like any upstream failure.
async fn pass_through(
    method: &Method,
    headers: &HeaderMap,
    url: &str,
    client: &reqwest::Client,
    read_timeout: std::time::Duration,
) -> (Response<ResponseBody>, Outcome) {
    let mut request = client.request(method.clone(), url);
    if let Some(range) = headers.get(header::RANGE) {
        request = request.header(header::RANGE, range);
    }
    let response = match tokio::time::timeout(read_timeout, request.send()).await {
        Err(_) => {
            let e = FetchError::Timeout(format!("no response in {read_timeout:?}"));
            return (error_response(&e), Outcome::Refused);
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "DO pass-through failed");
            let e = FetchError::Connect(e.to_string());
            return (error_response(&e), Outcome::Refused);
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
        let e = FetchError::UpstreamStatus {
            status: status.as_u16(),
            url: String::new(),
        };
        return (error_response(&e), Outcome::Refused);
    }
    let mut r = Response::new(crate::http::body::empty());
    *r.status_mut() = status;
    for name in RELAYED {
        if let Some(v) = response.headers().get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    if method != Method::HEAD {
        let stream = relayed(response.bytes_stream().boxed(), read_timeout)
            .map(|chunk| chunk.map(hyper::body::Frame::data));
        *r.body_mut() = http_body_util::StreamBody::new(stream).boxed_unsync();
    }
    (r, Outcome::Passthrough)
}

/// A relayed body that ends with an error when the origin sends nothing
/// for `read_timeout` (stalled mid-body) or fails: the client's body is
/// cut, as a download's is, instead of waiting for as long as the origin
/// keeps the connection open.
fn relayed(
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    read_timeout: std::time::Duration,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(read_timeout, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Err(_) => {
                tracing::warn!(?read_timeout, "DO pass-through stalled; cutting the body");
                let stalled = format!("the origin sent nothing for {read_timeout:?}");
                Some((Err(std::io::Error::other(stalled)), None))
            }
        }
    })
}
