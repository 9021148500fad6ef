//! The shadow marker: what tells the new (and secondary) service that a
//! request is a replay, so that it can keep replayed writes away from
//! storage it shares with production.
//!
//! # Rules
//!
//! - Every replayed request carries the marker header, `X-Parallelrun-Shadow: 1`
//!   unless configured otherwise (`--shadow-header 'NAME: VALUE'`, or none
//!   with `--no-shadow-header`). A captured header of the same name
//!   (case-insensitive) is dropped, so the replay carries the marker exactly
//!   once and a client cannot forge an unmarked replay.
//! - With the host suffix on (`--shadow-host-suffix`), the host the request
//!   is sent with (the captured `Host`/`:authority`, or `--host`) gets
//!   `-shadow` appended to its name, before the port: `api.example:8080`
//!   becomes `api.example-shadow:8080`, as Envoy's request mirroring does,
//!   so services that already tell Envoy's shadows apart tell these too. A
//!   request without a host gets none, and a bracketed IPv6 literal
//!   (`[fd00::1]:80`) is left as it is: a suffix after its `]` is no valid
//!   authority.
//! - Both apply to the new and the secondary service alike: the secondary
//!   is the reference the new version is compared with, so it must see the
//!   same request.

use std::{borrow::Cow, fmt, str::FromStr};

use super::fields;

/// The default marker header.
pub const DEFAULT_HEADER: &str = "X-Parallelrun-Shadow: 1";

/// Appended to the host's name by [`ShadowMarker::host_suffix`].
pub const HOST_SUFFIX: &str = "-shadow";

/// How replayed requests are marked (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowMarker {
    /// Added to every replayed request; `None` adds nothing.
    pub header: Option<MarkerHeader>,
    /// Append [`HOST_SUFFIX`] to the host's name.
    pub host_suffix: bool,
}

impl ShadowMarker {
    /// No marker at all: requests are replayed as captured.
    pub fn none() -> Self {
        Self::default()
    }

    /// The default: the [`DEFAULT_HEADER`], no host suffix.
    pub fn default_header() -> Self {
        Self {
            header: DEFAULT_HEADER.parse().ok(),
            host_suffix: false,
        }
    }

    /// Whether a captured field named `name` is replaced by the marker.
    pub fn replaces(&self, name: &str) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.name.eq_ignore_ascii_case(name))
    }

    /// The host to send: `host_override`, else `captured`, with the suffix
    /// when asked. `None` when there is none.
    pub fn host<'a>(
        &self,
        captured: Option<&'a [u8]>,
        host_override: Option<&'a str>,
    ) -> Option<Cow<'a, [u8]>> {
        let host = host_override.map(str::as_bytes).or(captured)?;
        if !self.host_suffix {
            return Some(Cow::Borrowed(host));
        }
        Some(Cow::Owned(with_suffix(host)))
    }
}

/// `host` with [`HOST_SUFFIX`] after its name, before a `:port`; a
/// bracketed IPv6 literal unchanged.
fn with_suffix(host: &[u8]) -> Vec<u8> {
    let host = host.trim_ascii();
    if host.starts_with(b"[") {
        return host.to_vec();
    }
    let name_end = match host.iter().rposition(|&b| b == b':') {
        // One colon: `name:port`. More: an unbracketed IPv6 literal.
        Some(colon)
            if host[colon + 1..].iter().all(u8::is_ascii_digit)
                && !host[..colon].contains(&b':') =>
        {
            colon
        }
        _ => host.len(),
    };
    let mut out = Vec::with_capacity(host.len() + HOST_SUFFIX.len());
    out.extend_from_slice(&host[..name_end]);
    out.extend_from_slice(HOST_SUFFIX.as_bytes());
    out.extend_from_slice(&host[name_end..]);
    out
}

/// A header field `NAME: VALUE`: a valid field name (an RFC 9110 token)
/// and a value of visible characters, spaces and tabs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerHeader {
    pub name: String,
    pub value: String,
}

impl MarkerHeader {
    /// The name lowercased, as HTTP/2 sends it.
    pub fn lowercase_name(&self) -> String {
        self.name.to_ascii_lowercase()
    }
}

/// Why a marker header cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MarkerError {
    #[error("give the header as 'NAME: VALUE', e.g. '{DEFAULT_HEADER}'")]
    NoColon,
    #[error("'{0}' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")]
    BadName(String),
    #[error("the header value may not contain control characters (CR, LF, NUL)")]
    BadValue,
    #[error("'{0}' belongs to the connection or the framing and cannot mark a request")]
    Reserved(String),
}

impl FromStr for MarkerHeader {
    type Err = MarkerError;

    fn from_str(s: &str) -> Result<Self, MarkerError> {
        let (name, value) = s.split_once(':').ok_or(MarkerError::NoColon)?;
        let name = name.trim();
        let value = value.trim();
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(MarkerError::BadName(name.to_owned()));
        }
        if fields::is_rewritten(name) {
            return Err(MarkerError::Reserved(name.to_owned()));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(MarkerError::BadValue);
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for MarkerHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.value)
    }
}

#[cfg(test)]
mod tests;
