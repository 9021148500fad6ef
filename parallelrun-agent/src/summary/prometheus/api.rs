//! Prometheus's HTTP API, the part [`super::read`] needs: instant queries
//! (`POST /api/v1/query`, form-encoded) over plain HTTP/1.1, one
//! connection per query.
//!
//! Bounded: each answer is read up to [`MAX_ANSWER`] bytes, and each query
//! (connecting included) gets [`TIMEOUT`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::{FleetError, Sample};

/// Bytes of one answer read at most.
pub const MAX_ANSWER: usize = 32 << 20;
/// How long one query may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of an error answer quoted in an error.
const QUOTED: usize = 500;

/// A Prometheus server's API.
#[derive(Clone, Debug)]
pub struct Client {
    /// As given, for errors.
    url: String,
    /// `HOST:PORT`.
    authority: String,
    /// The path prefix (without a trailing `/`), e.g. `/prometheus`.
    prefix: String,
}

/// The API's envelope.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

impl Client {
    /// A client of the server at `url` (`http://HOST[:PORT][/PREFIX]`).
    pub fn new(url: &str) -> Result<Self, FleetError> {
        let bad = || FleetError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") || uri.query().is_some() {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            url: url.to_owned(),
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The instant vector `promql` evaluates to at `time` (Unix seconds).
    pub async fn query(&self, promql: &str, time: f64) -> Result<Vec<Sample>, FleetError> {
        match tokio::time::timeout(TIMEOUT, self.ask(promql, time)).await {
            Ok(answer) => answer,
            Err(_) => Err(FleetError::Unreachable {
                url: self.url.clone(),
                why: format!("no answer to {promql} within {} s", TIMEOUT.as_secs()),
            }),
        }
    }

    async fn ask(&self, promql: &str, time: f64) -> Result<Vec<Sample>, FleetError> {
        let unreachable = |why: String| FleetError::Unreachable {
            url: self.url.clone(),
            why,
        };
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(format!("connecting to {}: {e}", self.authority)))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", promql)
            .append_pair("time", &format!("{time:.3}"))
            .finish();
        let request = Request::post(format!("{}/api/v1/query", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| FleetError::BadUrl(self.url.clone()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FleetError::TooLarge {
                        query: promql.to_owned(),
                        limit: MAX_ANSWER,
                    }
                } else {
                    unreachable(e.to_string())
                }
            })?
            .to_bytes();
        conn.abort();
        decode(&self.url, status.as_u16(), promql, &body)
    }
}

/// The samples of an answer of HTTP status `status` from the server at
/// `url`. Prometheus answers a refused query with 400 or 422 and its JSON.
pub fn decode(
    url: &str,
    status: u16,
    promql: &str,
    body: &[u8],
) -> Result<Vec<Sample>, FleetError> {
    let envelope: Result<Envelope, _> = serde_json::from_slice(body);
    match envelope {
        Ok(e) if e.status == "success" => vector(promql, e.data),
        Ok(e) => Err(FleetError::Refused {
            query: promql.to_owned(),
            error: format!(
                "{}: {}",
                e.error_type.unwrap_or_default(),
                e.error.unwrap_or_default()
            ),
        }),
        Err(_) if !(200..300).contains(&status) => Err(FleetError::Status {
            url: url.to_owned(),
            status,
            query: promql.to_owned(),
            body: String::from_utf8_lossy(&body[..body.len().min(QUOTED)]).into_owned(),
        }),
        Err(e) => Err(FleetError::BadAnswer {
            query: promql.to_owned(),
            why: e.to_string(),
        }),
    }
}

/// The samples of a successful answer, which must be an instant vector.
fn vector(promql: &str, data: Option<Data>) -> Result<Vec<Sample>, FleetError> {
    let data = data.ok_or_else(|| FleetError::BadAnswer {
        query: promql.to_owned(),
        why: "no data".to_owned(),
    })?;
    if data.result_type != "vector" {
        return Err(FleetError::BadAnswer {
            query: promql.to_owned(),
            why: format!(
                "a {} where an instant vector was expected",
                data.result_type
            ),
        });
    }
    Ok(data.result)
}
